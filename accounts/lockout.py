"""How django-axes sees a sign-in: the client's address, and the answer to a locked-out one.

Wired in settings (``AXES_CLIENT_IP_CALLABLE``, ``AXES_LOCKOUT_CALLABLE``); the counting and
the locks are django-axes' own (see "Sign-in throttling" in config/settings.py).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

LOCKED_OUT = "Too many failed sign-ins for this account or from this address; try again later."


def client_address(request: HttpRequest) -> str | None:
    """The peer's address as the server saw it: uvicorn rewrites it from X-Forwarded-For
    only for a peer in FORWARDED_ALLOW_IPS, so no client can choose what is counted."""
    return request.META.get("REMOTE_ADDR")


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any
) -> HttpResponse:
    """429 with Retry-After: the cool-off, which restarts at each further failure."""
    response = HttpResponse(LOCKED_OUT, status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response
