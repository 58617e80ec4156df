"""Who a portal page speaks to: the email address this session signed in as, or no one.

A portal session is two values in Django's session (beside, and independent of, a
reseller's dashboard sign-in in the same browser): the signed-in client's id and when it
last made a request. ``client_page`` wraps every page behind the sign-in: a visitor who is
not signed in, or whose session has been idle longer than ``PORTAL_SESSION_IDLE_SECONDS``,
is sent to ``/portal/?next=<path>`` to ask for a code; the view reads the client with
``page_client(request)``. Every key a page shows is one the client bound
(``portal.selectors.binding_get``), so any other key id answers 404.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponseBase
from django.middleware.csrf import rotate_token
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode

from portal.models import PortalClient

View = Callable[..., HttpResponseBase]

SESSION_CLIENT = "portal_client_id"
SESSION_SEEN = "portal_seen_at"
# The last-seen time is written back at most this often (not on every page).
SEEN_RESOLUTION_SECONDS = 60


def portal_sign_in(request: HttpRequest, client: PortalClient) -> None:
    """Start a portal session for ``client`` under a new session key (no fixation) and a
    new CSRF secret, as ``django.contrib.auth.login`` gives: a token planted before the
    sign-in must not work after it."""
    request.session.cycle_key()
    rotate_token(request)
    request.session[SESSION_CLIENT] = client.pk
    request.session[SESSION_SEEN] = int(time.time())


def portal_sign_out(request: HttpRequest) -> None:
    """End the portal session; a dashboard sign-in in the same browser stays."""
    request.session.pop(SESSION_CLIENT, None)
    request.session.pop(SESSION_SEEN, None)
    request.session.cycle_key()


def session_client(request: HttpRequest) -> PortalClient | None:
    """The client this session is signed in as, or None (not signed in, idle too long, or
    the client is gone); an idle session is signed out here."""
    client_id = request.session.get(SESSION_CLIENT)
    if client_id is None:
        return None
    now = int(time.time())
    seen = int(request.session.get(SESSION_SEEN, 0))
    if now - seen > settings.PORTAL_SESSION_IDLE_SECONDS:
        portal_sign_out(request)
        messages.info(request, "You were signed out after a while without activity.")
        return None
    client = PortalClient.objects.filter(pk=client_id).first()
    if client is None:
        portal_sign_out(request)
        return None
    if now - seen >= SEEN_RESOLUTION_SECONDS:
        request.session[SESSION_SEEN] = now
    return client


def client_page(view: View) -> View:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        client = session_client(request)
        if client is None:
            # Back here after the code (a link from an alert email, a bookmark); the
            # sign-in honours only paths under /portal/.
            query = urlencode({"next": request.get_full_path()})
            return redirect(f"{reverse('portal:home')}?{query}")
        request.portal_client = client  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapped


def page_client(request: HttpRequest) -> PortalClient:
    """The client ``client_page`` resolved for this request."""
    return request.portal_client  # type: ignore[attr-defined]
