"""A worker's key cache (``proxy.admission.Catalog``) and the announcements that drop it.

Run against the test database through the development driver (``DjangoDatabase``); the
real servers, with two workers and Redis, are exercised in ``test_suspension``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.utils import timezone

from accounts.models import Tenant
from accounts.services import tenant_suspend
from keys.models import ClientKey
from keys.services import IssuedKey, key_create
from proxy.admission import Catalog, ProxyError, authenticate
from proxy.db import DjangoDatabase, Rows

pytestmark = pytest.mark.django_db(transaction=True)


class PausingDatabase(DjangoDatabase):
    """Reads the row, then waits until told: a key read that is still in flight."""

    def __init__(self) -> None:
        self.read = asyncio.Event()
        self.resume = asyncio.Event()
        self.pausing = False

    async def fetch(self, sql: str, params: dict[str, Any]) -> Rows:
        rows = await super().fetch(sql, params)
        if self.pausing:
            self.read.set()
            await self.resume.wait()
        return rows


def run[T](scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(scenario())``, closing the database connection ``DjangoDatabase``
    opened in its worker thread (PostgreSQL will not drop a test database still in use)."""

    async def closing() -> T:
        try:
            return await scenario()
        finally:
            await sync_to_async(connections.close_all)()

    return asyncio.run(closing())


def wallet_key(tenant: Tenant) -> IssuedKey:
    return key_create(tenant=tenant, actor=None, label="k", funding=ClientKey.Funding.WALLET)


def headers(issued: IssuedKey) -> dict[str, str]:
    return {"authorization": f"Bearer {issued.secret}"}


def test_a_tenant_message_drops_that_tenants_keys_and_no_others(tenant, outsider):
    mine = [wallet_key(tenant), wallet_key(tenant)]
    theirs = wallet_key(outsider[0])

    async def scenario() -> tuple[set[str], list[bool]]:
        catalog = Catalog(DjangoDatabase())
        for issued in [*mine, theirs]:
            await authenticate(catalog, headers(issued), timezone.now())
        cached_before = set(catalog.keys.entries)
        await sync_to_async(tenant_suspend)(tenant=tenant, actor=None)
        catalog.on_config_changed(f"tenant:{tenant.pk}")
        cached_after = set(catalog.keys.entries)
        refused = []
        for issued in mine:
            try:
                await authenticate(catalog, headers(issued), timezone.now())
                refused.append(False)
            except ProxyError as exc:
                refused.append((exc.status, exc.code) == (401, "account_suspended"))
        return cached_before - cached_after, refused

    dropped, refused = run(scenario)

    assert dropped == {issued.key.prefix for issued in mine}
    assert refused == [True, True]


def test_a_suspended_tenants_key_is_cached_as_refused_until_reinstatement_is_heard(tenant):
    issued = wallet_key(tenant)
    tenant_suspend(tenant=tenant, actor=None)

    async def scenario() -> list[str]:
        catalog = Catalog(DjangoDatabase())
        codes = []
        for _ in range(2):
            try:
                await authenticate(catalog, headers(issued), timezone.now())
                codes.append("served")
            except ProxyError as exc:
                codes.append(exc.code)
        # Reinstated in the database, unannounced: the cache still refuses it...
        await sync_to_async(Tenant.objects.filter(pk=tenant.pk).update)(is_active=True)
        with pytest.raises(ProxyError):
            await authenticate(catalog, headers(issued), timezone.now())
        # ...until the announcement is heard.
        catalog.on_config_changed(f"tenant:{tenant.pk}")
        await authenticate(catalog, headers(issued), timezone.now())
        return codes

    assert run(scenario) == ["account_suspended", "account_suspended"]


def test_a_key_read_in_flight_when_a_change_is_heard_is_used_once_but_not_cached(tenant):
    """The read may predate the change it overlaps: caching it would serve the stale row
    for the cache's whole lifetime, which no later announcement would correct."""
    issued = wallet_key(tenant)

    async def scenario() -> tuple[bool, bool, bool]:
        db = PausingDatabase()
        catalog = Catalog(db)
        db.pausing = True
        reading = asyncio.create_task(catalog.key_for_secret(issued.secret))
        await db.read.wait()  # the row is read: tenant active
        await sync_to_async(tenant_suspend)(tenant=tenant, actor=None)
        catalog.on_config_changed(f"tenant:{tenant.pk}")  # heard before the read returns
        db.pausing = False
        db.resume.set()
        in_flight = await reading
        assert in_flight is not None
        again = await catalog.key_for_secret(issued.secret)
        assert again is not None
        return (
            in_flight.tenant_active,
            issued.key.prefix in catalog.keys.entries,
            again.tenant_active,
        )

    in_flight_active, cached, now_active = run(scenario)

    assert in_flight_active is True  # that one request was admitted before the change
    assert cached is True  # the second read, after the change, is cached
    assert now_active is False
