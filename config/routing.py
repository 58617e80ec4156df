"""Wiring shared by the apps' ``urls.py``: one path, one ``APIView`` per HTTP method."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

View = Callable[..., HttpResponseBase]


def by_method(**views: View) -> View:
    """A view that hands each HTTP method to its own APIView.

    Other methods go to the GET view (else the first), so DRF still authenticates before
    it answers 405 (or OPTIONS); the ``Allow`` header of either then lists the methods of
    the whole path, not only that view's.
    """
    fallback = views.get("GET") or next(iter(views.values()))
    allowed = ", ".join([*views, "OPTIONS"])

    # Safe: every target is a DRF APIView, which exempts itself and authenticates by token.
    @csrf_exempt
    def view(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponseBase:
        response = views.get(request.method or "", fallback)(request, *args, **kwargs)
        if response.status_code == HTTPStatus.METHOD_NOT_ALLOWED or request.method == "OPTIONS":
            response["Allow"] = allowed
        return response

    # config.openapi documents each method of the path from its own view.
    view.views_by_method = views  # type: ignore[attr-defined]
    return view
