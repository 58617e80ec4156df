"""Which price a request is charged: the proxy's own admission (``proxy.admission.reserve``)
and settlement (``proxy.settlement.settle``), run against the test database through the
development driver (``DjangoDatabase``).

A hold is priced at the dearest route the request may take; the charge is the reported
usage at the price of the route that served it, in the version read at admission.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.utils import timezone

from billing.models import LedgerEntry, ModelPrice, Reservation
from billing.money import Usage, parse_usd, request_charge
from billing.selectors import wallet_for_tenant
from billing.services import price_set, upstream_save, wallet_credit
from keys.models import ClientKey
from keys.services import IssuedKey, key_create
from proxy.admission import Admitted, Catalog, RouteInfo, authenticate, reserve, routes_for_request
from proxy.db import DjangoDatabase
from proxy.settlement import settle

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("books_balance")]

# conftest ``price``: mock-gpt at $1 input / $2 output per 1M tokens.
INPUT_BOUND, MAX_OUTPUT = 1_000, 4_000
ACTUAL = Usage(input_tokens=1_000, output_tokens=1_000)


def run[T](scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(scenario())``, closing the database connection ``DjangoDatabase``
    opened in its worker thread (PostgreSQL will not drop a test database still in use)."""

    async def closing() -> T:
        try:
            return await scenario()
        finally:
            await sync_to_async(connections.close_all)()

    return asyncio.run(closing())


def wallet_key(tenant) -> IssuedKey:  # type: ignore[no-untyped-def]
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("10"), reason="test funds")
    return key_create(tenant=tenant, actor=None, label="k", funding=ClientKey.Funding.WALLET)


async def admit(catalog: Catalog, issued: IssuedKey, request_id: str) -> Admitted:
    """Authenticate, find mock-gpt's routes and reserve, as a chat completion would."""
    now = timezone.now()
    key = await authenticate(catalog, {"authorization": f"Bearer {issued.secret}"}, now)
    routes = await routes_for_request(catalog, key, "mock-gpt", "openai")
    return await reserve(
        catalog.db,
        key=key,
        routes=routes,
        request_id=request_id,
        input_bound=INPUT_BOUND,
        requested_max_output=MAX_OUTPUT,
        now=now,
    )


async def settle_on(catalog: Catalog, issued: IssuedKey, admitted: Admitted, route: RouteInfo):  # type: ignore[no-untyped-def]
    key = await catalog.key_for_secret(issued.secret)
    assert key is not None
    return await settle(
        catalog.db, key=key, route=route, hold=admitted.hold, usage=ACTUAL, now=timezone.now()
    )


def test_a_request_held_at_the_dearest_route_is_charged_at_the_route_that_served(
    tenant, price: ModelPrice
) -> None:
    dearer = price_set(
        model="mock-gpt",
        upstream=upstream_save(name="mock-backup", kind="openai", base_url="http://127.0.0.1:9/v1"),
        input_per_mtok_nanos=parse_usd("3"),
        output_per_mtok_nanos=parse_usd("6"),
    )
    issued = wallet_key(tenant)

    async def scenario():  # type: ignore[no-untyped-def]
        catalog = Catalog(DjangoDatabase())
        admitted = await admit(catalog, issued, "req-1")
        # The dearer route failed before any output; the cheaper one served.
        (served,) = [
            route
            for route in await catalog.routes_for("mock-gpt", "openai")
            if route.price_id == price.pk
        ]
        return admitted, served, await settle_on(catalog, issued, admitted, served)

    admitted, served, (charged, settlement) = run(scenario)

    # Held at $3 / $6 (the dearest route), charged at $1 / $2 (the route that served).
    assert admitted.price_route.price_id == dearer.pk
    worst = Usage(input_tokens=INPUT_BOUND, output_tokens=MAX_OUTPUT)
    assert (
        admitted.hold.cost_nanos
        == request_charge(worst, dearer.as_prices(), issued.key.ratio).cost_nanos
    )
    assert charged == request_charge(ACTUAL, price.as_prices(), issued.key.ratio)
    assert charged.cost_nanos == 3_000_000
    assert settlement is not None and settlement.charged_cost_nanos == charged.cost_nanos
    reservation = Reservation.objects.get(request_id="req-1")
    assert (reservation.status, reservation.price_id) == (Reservation.Status.SETTLED, price.pk)
    assert reservation.charged_cost_nanos == charged.cost_nanos
    entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.USAGE)
    assert (entry.amount_nanos, entry.reference) == (-charged.cost_nanos, "req-1")
    wallet = wallet_for_tenant(tenant=tenant)
    assert (wallet.balance_nanos, wallet.reserved_nanos) == (
        parse_usd("10") - charged.cost_nanos,
        0,
    )
    assert served.price_id == price.pk


def test_a_price_posted_while_a_request_runs_does_not_change_its_charge(
    tenant, upstream, price: ModelPrice
) -> None:
    """A request is charged the price version in force when it was admitted; the next
    request, once the change is announced, pays the new one."""
    issued = wallet_key(tenant)

    async def scenario():  # type: ignore[no-untyped-def]
        catalog = Catalog(DjangoDatabase())
        admitted = await admit(catalog, issued, "req-1")
        newer = await sync_to_async(price_set)(
            model="mock-gpt",
            upstream=upstream,
            input_per_mtok_nanos=parse_usd("10"),
            output_per_mtok_nanos=parse_usd("20"),
        )
        charged, _ = await settle_on(catalog, issued, admitted, admitted.price_route)
        catalog.on_config_changed("routes")
        (next_route,) = await catalog.routes_for("mock-gpt", "openai")
        return charged, newer, next_route

    charged, newer, next_route = run(scenario)

    assert charged == request_charge(ACTUAL, price.as_prices(), issued.key.ratio)
    assert Reservation.objects.get(request_id="req-1").price_id == price.pk
    assert next_route.price_id == newer.pk
