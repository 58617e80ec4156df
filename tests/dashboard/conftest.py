"""Signed-in browser sessions for the dashboard's tests (the Django test client)."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import Tenant


def sign_in(tenant: Tenant, *, enforce_csrf_checks: bool = False) -> Client:
    """A client signed in as the tenant's owner (a session, as the sign-in form opens)."""
    client = Client(enforce_csrf_checks=enforce_csrf_checks)
    client.force_login(tenant.owner, backend="accounts.backends.EmailBackend")
    return client


@pytest.fixture
def page(tenant: Tenant) -> Client:
    """The tenant's owner, signed in."""
    return sign_in(tenant)
