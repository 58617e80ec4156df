"""200 simultaneous requests on a key that can afford only a few, against two server
workers sharing PostgreSQL and Redis: the sum of charges never exceeds the budget, cap or
wallet, the rest are refused with 402, and the books balance.

The model's price is all output, and each request asks for exactly the output the fake
produces, so a request's hold equals its charge: the budget fits exactly
``AFFORDABLE`` requests, whatever order they arrive in.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator

import aiohttp
import pytest
from django.conf import settings

from billing.models import LedgerEntry, Reservation
from billing.selectors import wallet_for_tenant
from billing.services import reseller_open, wallet_credit
from keys.services import IssuedKey
from tests.proxy.conftest import (
    USD,
    Price,
    ProxyServer,
    World,
    assert_books_clean,
    expected_charge,
    key_row,
    wait_for,
)
from tests.proxy.upstream_fake import DEFAULT_CHUNKS

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (set REDIS_URL)"),
]

REQUESTS = 200
AFFORDABLE = 6
# $1,000 per 1M output tokens, input free: 5 output tokens cost exactly $0.005.
ALL_OUTPUT = Price(input=0, output=1_000 * USD, cached=0)
CHARGE = expected_charge(ALL_OUTPUT, input_tokens=0, output_tokens=DEFAULT_CHUNKS)
UNLIMITED = {"rpm": 100_000, "max_concurrency": 1_000}


@pytest.fixture(scope="module")
def proxy_server(start_proxy_server: Callable[..., ProxyServer]) -> Iterator[ProxyServer]:
    """Two workers: holds and limits must hold across processes, not just within one."""
    server = start_proxy_server(workers=2)
    yield server
    server.stop()


async def fire(url: str, secret: str) -> list[int]:
    """Send REQUESTS requests at once (every other one streamed); their statuses."""
    connector = aiohttp.TCPConnector(limit=REQUESTS)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(index: int) -> int:
            body = {
                "model": "all-output",
                "messages": [{"role": "user", "content": f"request {index}"}],
                "max_tokens": DEFAULT_CHUNKS,
                "stream": index % 2 == 0,
            }
            headers = {"Authorization": f"Bearer {secret}"}
            async with session.post(
                f"{url}/v1/chat/completions", json=body, headers=headers
            ) as response:
                await response.read()
                return response.status

        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


def run_burst(world: World, issued: IssuedKey) -> Counter[int]:
    world.route("all-output", "fake-openai", ALL_OUTPUT)
    statuses = Counter(asyncio.run(fire(world.url, issued.secret)))
    # Every request has finished and been traced (the refused ones included).
    from usage.models import Trace

    wait_for(lambda: Trace.objects.filter(client_key=issued.key).count() == REQUESTS, timeout=15)
    return statuses


def assert_exactly_affordable_served(
    world: World, issued: IssuedKey, statuses: Counter[int]
) -> None:
    assert statuses == {200: AFFORDABLE, 402: REQUESTS - AFFORDABLE}
    assert len(world.fake.for_model("all-output")) == AFFORDABLE
    assert (
        Reservation.objects.filter(client_key=issued.key, status=Reservation.Status.SETTLED).count()
        == AFFORDABLE
    )
    assert not Reservation.objects.filter(status=Reservation.Status.HELD).exists()
    key = key_row(issued)
    assert key.cost_spent_nanos == AFFORDABLE * CHARGE.cost_nanos
    assert (key.cost_reserved_nanos, key.client_reserved_nanos) == (0, 0)
    assert_books_clean()


def test_prepaid_budget_is_never_exceeded_under_200_simultaneous_requests(world: World) -> None:
    # $0.05 of client budget for $0.03: six requests of $0.005 cost ($0.008333333 client).
    issued = world.key(client_budget_nanos=50_000_000, your_cost_nanos=30_000_000, **UNLIMITED)
    client_charge = expected_charge(
        ALL_OUTPUT, input_tokens=0, output_tokens=DEFAULT_CHUNKS, ratio=(30_000_000, 50_000_000)
    )

    statuses = run_burst(world, issued)

    assert_exactly_affordable_served(world, issued, statuses)
    key = key_row(issued)
    assert (
        key.client_spent_nanos == AFFORDABLE * client_charge.client_nanos <= key.client_budget_nanos
    )
    assert key.cost_spent_nanos <= key.cost_funded_nanos


def test_wallet_never_goes_negative_under_200_simultaneous_requests(world: World) -> None:
    small, _ = reseller_open(email="small@example.com")
    wallet_credit(tenant=small, amount_nanos=AFFORDABLE * CHARGE.cost_nanos, reason="test funds")
    issued = world.key(tenant=small, funding="wallet", **UNLIMITED)

    statuses = run_burst(world, issued)

    assert_exactly_affordable_served(world, issued, statuses)
    wallet = wallet_for_tenant(tenant=small)
    assert (wallet.balance_nanos, wallet.reserved_nanos) == (0, 0)
    assert (
        LedgerEntry.objects.filter(wallet=wallet, kind=LedgerEntry.Kind.USAGE).count() == AFFORDABLE
    )


def test_spend_cap_is_never_exceeded_under_200_simultaneous_requests(world: World) -> None:
    issued = world.key(
        funding="wallet", spend_cap_nanos=AFFORDABLE * CHARGE.client_nanos, **UNLIMITED
    )
    balance = wallet_for_tenant(tenant=world.tenant).balance_nanos

    statuses = run_burst(world, issued)

    assert_exactly_affordable_served(world, issued, statuses)
    key = key_row(issued)
    assert key.period_client_spent_nanos == key.spend_cap_nanos
    assert (
        wallet_for_tenant(tenant=world.tenant).balance_nanos
        == balance - AFFORDABLE * CHARGE.cost_nanos
    )
