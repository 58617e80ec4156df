"""How django-axes sees a sign-in: the client's address, the account's name, the answer to a
locked-out one; and the few calls the dashboard makes to it beyond passwords (a wrong
two-factor code counts as a failed sign-in; a password reset by email forgets the account's
failures).

Wired in settings (``AXES_CLIENT_IP_CALLABLE``, ``AXES_USERNAME_CALLABLE``,
``AXES_LOCKOUT_CALLABLE``); the counting and the locks are django-axes' own (see "Sign-in
throttling" in config/settings.py).
"""

from __future__ import annotations

from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse

LOCKED_OUT = "Too many failed sign-ins for this account or from this address; try again later."


def client_address(request: HttpRequest) -> str | None:
    """The peer's address as the server saw it: uvicorn rewrites it from X-Forwarded-For
    only for a peer in FORWARDED_ALLOW_IPS, so no client can choose what is counted."""
    return request.META.get("REMOTE_ADDR")


def client_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str | None:
    """The account a sign-in is counted against: the email typed, in lower case (a user's
    email matches whatever its case, so its failures must add up whatever the case)."""
    source = credentials if credentials is not None else request.POST
    typed = source.get("username")
    return typed.strip().lower() if isinstance(typed, str) and typed.strip() else None


def sign_in_allowed(*, request: HttpRequest, username: str) -> bool:
    """Whether neither the account nor the client's address is locked out now."""
    return bool(AxesProxyHandler.is_allowed(request, {"username": username}))


def sign_in_failure_record(*, request: HttpRequest, username: str) -> None:
    """Count a failed sign-in step other than the password (a wrong two-factor code) as
    axes counts a wrong password; at the limit axes marks ``request`` locked out and its
    middleware answers with ``lockout_response``."""
    user_login_failed.send(sender=__name__, credentials={"username": username}, request=request)


def sign_in_failures_forget(*, username: str) -> None:
    """Forget the account's failed sign-ins (from every address), and so lift its lock:
    for a password just reset through the account's own email. Failures at other accounts
    stay, so an address guessing at them stays locked."""
    AxesProxyHandler.reset_attempts(username=username.strip().lower())


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any
) -> HttpResponse:
    """429 with Retry-After: the cool-off, which restarts at each further failure."""
    response = HttpResponse(LOCKED_OUT, status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response
