"""The front page at ``/``: what Tollgate is, and the three ways in: the resellers' sign-in,
the client portal and the API reference. Public, and without the dashboard's navigation."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe


@require_safe
def landing(request: HttpRequest) -> HttpResponse:
    # Where this server answers, as the visitor reached it: the SDKs' base URLs start here.
    origin = request.build_absolute_uri("/").rstrip("/")
    return render(request, "dashboard/landing.html", {"origin": origin})
