"""Signing in to the portal with an emailed code, and out."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from portal.access import portal_sign_out, session_client


def home(request: HttpRequest) -> HttpResponse:
    """``/portal/``: the signed-in client's keys, or the form that asks for an email."""
    client = session_client(request)
    request.portal_client = client  # type: ignore[attr-defined]
    return render(request, "portal/home.html", {"client": client})


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    portal_sign_out(request)
    return redirect("portal:home")
