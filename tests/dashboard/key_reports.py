"""Shared by the tests of a key's reports in the dashboard (``test_key_reports*.py``)."""

from __future__ import annotations

from django.test import Client

from accounts.models import Tenant


def signed_in(tenant: Tenant) -> Client:
    """A browser session of the tenant's owner (signing in is ``test_access``'s business)."""
    client = Client()
    client.force_login(tenant.owner)
    return client


def page_url(key_id: int, report: str) -> str:
    """``/dashboard/keys/<id>/<report>/``."""
    return f"/dashboard/keys/{key_id}/{report}/"


def api_url(key_id: int, report: str) -> str:
    """``/api/v1/keys/<id>/<report>``."""
    return f"/api/v1/keys/{key_id}/{report}"
