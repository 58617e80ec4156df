"""Helpers shared by the tests of ``usage.apis``: the trace reports under ``/api/v1/`` and
the sub-account API's usage reports (``test_apis``), and what they and the sub-account API
let another tenant or a bad token reach (``test_access``).

Trace rows are written with ``TraceFactory`` as the proxy would batch them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from accounts.models import Tenant
from keys.models import ClientKey
from tests.usage.factories import TraceFactory
from usage.models import Trace

KEYS = "/api/v1/keys"
BY_TAG = "/api/v1/usage/by-tag"
EARNINGS = "/api/v1/earnings"
SUB_ACCOUNT_BY_TAG = "/v1/usage/by-tag"


def requests_url(key_id: int) -> str:
    return f"{KEYS}/{key_id}/requests"


def usage_url(key_id: int) -> str:
    return f"{KEYS}/{key_id}/usage"


def today_midnight() -> datetime:
    return timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)


def recently(key: ClientKey) -> datetime:
    """A few minutes ago, but never before midnight of the key's tenant's today: a test's
    "recent" request falls on the local day (and month) its pages call today, even when the
    test runs in the first minutes after that midnight."""
    now = timezone.now()
    zone = Tenant.objects.get(pk=key.tenant_id).zone
    midnight = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(now - timedelta(minutes=5), midnight)


def trace(key: ClientKey, at: datetime | None = None, **fields: Any) -> Trace:
    return TraceFactory.create(client_key=key, created_at=at or recently(key), **fields)
