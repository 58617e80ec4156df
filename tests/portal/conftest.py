"""Portal sessions for tests: a browser (the Django test client) signed in as an email
address, as the code step leaves it, and keys bound to it."""

from __future__ import annotations

import time

from django.test import Client

from keys.models import ClientKey
from portal.access import SESSION_CLIENT, SESSION_SEEN
from portal.models import PortalBinding, PortalClient


def portal_session(
    email: str = "client@example.com", *, enforce_csrf_checks: bool = False
) -> tuple[Client, PortalClient]:
    """A browser signed in to the portal as ``email`` (the client row made if new)."""
    client, _ = PortalClient.objects.get_or_create(email=email.lower())
    browser = Client(enforce_csrf_checks=enforce_csrf_checks)
    session = browser.session
    session[SESSION_CLIENT] = client.pk
    session[SESSION_SEEN] = int(time.time())
    session.save()
    return browser, client


def bound(client: PortalClient, key: ClientKey, **alerts: object) -> PortalBinding:
    """``key`` bound by ``client`` (as pasting its secret does), with alert choices."""
    return PortalBinding.objects.create(client=client, key=key, **alerts)
