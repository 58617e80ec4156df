"""Django's database connections under a burst, through the real server on PostgreSQL.

ASGI Django runs every request in a thread of its own and a connection belongs to a thread,
so without a bound a burst of REST calls opened a connection per call and PostgreSQL's
``max_connections`` turned the excess into 500s. These tests count the server's backends in
``pg_stat_activity`` while a burst is in flight (the server's Django connections carry an
``application_name`` of the test's own, through libpq's ``PGAPPNAME``; the proxy's pool
names its own ``tollgate-proxy``) and check every answer and the money.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore

from billing.models import Wallet
from billing.money import parse_usd
from billing.services import reseller_open, wallet_credit
from config.capacity import BUSY_CODE, GATE_BUSY, POOL_BUSY
from keys.models import ClientKey
from proxy.db import APPLICATION_NAME as PROXY_APPLICATION_NAME
from proxy.db import postgres_conninfo
from tests.proxy.conftest import ProxyServer, start_proxy_server, wait_for

__all__ = ["start_proxy_server"]  # the fixture, used here as in tests/proxy

pytestmark = pytest.mark.postgres

WORKERS = 2
POOL_MAX = 3
BURST_READS = 100
BURST_CREATES = 50
# A prepaid key of $1 client budget costs the reseller $0.60.
KEY_BODY = {"label": "burst", "client_budget": "1", "your_cost": "0.6"}
KEY_COST_NANOS = parse_usd("0.6")
FUNDS = "100"


@dataclass
class Census:
    """The most backends of each application seen at once while it ran."""

    peak: Counter[str] = field(default_factory=Counter)
    samples: int = 0


@contextmanager
def connection_census(interval: float = 0.01) -> Iterator[Census]:
    """Sample ``pg_stat_activity`` of the test database every ``interval`` seconds."""
    census = Census()
    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(postgres_conninfo(), autocommit=True) as conn:
            while not done.is_set():
                rows = conn.execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() GROUP BY 1"
                ).fetchall()
                for name, count in rows:
                    census.peak[name] = max(census.peak[name], count)
                census.samples += 1
                time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield census
    finally:
        done.set()
        sampler.join(10)


def start_server(
    start: Callable[..., ProxyServer], *, workers: int, **env: str
) -> tuple[ProxyServer, str]:
    """A server whose Django connections are named by a fresh ``application_name``."""
    app_name = f"tollgate-test-{uuid.uuid4().hex[:12]}"
    return start(workers=workers, PGAPPNAME=app_name, **env), app_name


async def burst(url: str, token: str) -> list[httpx.Response]:
    """BURST_READS wallet reads and BURST_CREATES key creations, all sent at once."""
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=BURST_READS + BURST_CREATES)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as c:
        calls = [c.get("/api/v1/wallet") for _ in range(BURST_READS)]
        calls += [c.post("/api/v1/keys", json=KEY_BODY) for _ in range(BURST_CREATES)]
        return list(await asyncio.gather(*calls))


def test_a_burst_of_rest_calls_stays_within_the_pool_and_gets_no_500(
    transactional_db: None, start_proxy_server: Callable[..., ProxyServer], books_balance: None
) -> None:
    tenant, token = reseller_open(email="burst@example.com")
    wallet_credit(tenant=tenant, amount_nanos=parse_usd(FUNDS), reason="test funds")
    server, app_name = start_server(start_proxy_server, workers=WORKERS, DB_POOL_MAX=str(POOL_MAX))

    with connection_census() as census:
        responses = asyncio.run(burst(server.url, token.secret))

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 201, 429, 503}, statuses
    for response in responses:
        if response.status_code in (429, 503):
            assert response.headers["Retry-After"].isdigit(), response.text
            assert "detail" in response.json()
    # The burst fits the default wait: every call is answered, none refused.
    assert statuses[200] == BURST_READS and statuses[201] == BURST_CREATES, statuses
    assert census.samples > 5
    assert 0 < census.peak[app_name] <= WORKERS * POOL_MAX, census.peak
    proxy_pool_max = WORKERS * settings.PROXY_DB_POOL_MAX
    assert census.peak[PROXY_APPLICATION_NAME] <= proxy_pool_max, census.peak

    created = statuses[201]
    assert ClientKey.objects.filter(tenant=tenant).count() == created
    wallet = Wallet.objects.get(tenant=tenant)
    assert wallet.balance_nanos == parse_usd(FUNDS) - created * KEY_COST_NANOS
    reads = {r.json()["balance"] for r in responses if r.status_code == 200}
    assert reads <= {f"{100 - 0.6 * n:.2f}" for n in range(created + 1)}


@contextmanager
def wallet_row_locked(tenant_id: int) -> Iterator[None]:
    """Hold the wallet's row lock from outside the server, as a long transaction would."""
    with psycopg.connect(postgres_conninfo()) as conn:
        conn.execute("SELECT 1 FROM billing_wallet WHERE tenant_id = %s FOR UPDATE", [tenant_id])
        yield
        conn.rollback()


def backends_waiting_on_a_lock(app_name: str) -> int:
    with psycopg.connect(postgres_conninfo(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type = 'Lock'",
            [app_name],
        ).fetchone()
    assert row is not None
    return int(row[0])


def operator_session_cookie() -> str:
    """A signed-in operator's session, as the admin's login would leave it."""
    user = get_user_model().objects.create_superuser(
        username="op@example.com", email="op@example.com", password="not-used-here-1"
    )
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = settings.AUTHENTICATION_BACKENDS[-1]
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.save()
    assert session.session_key is not None
    return session.session_key


@pytest.mark.parametrize(
    ("concurrency", "detail"),
    [
        # A gate wider than the pool: the request waits for a connection, then 503.
        ({"DJANGO_CONCURRENCY": "4"}, POOL_BUSY),
        # The default gate (the pool's size): the request waits for its turn, then 503.
        ({}, GATE_BUSY),
    ],
    ids=["pool-exhausted", "gate-full"],
)
def test_no_free_connection_is_a_503_with_retry_after_on_every_django_path(
    transactional_db: None,
    start_proxy_server: Callable[..., ProxyServer],
    books_balance: None,
    concurrency: dict[str, str],
    detail: str,
) -> None:
    tenant, token = reseller_open(email="pool@example.com")
    wallet_credit(tenant=tenant, amount_nanos=parse_usd(FUNDS), reason="test funds")
    cookie = operator_session_cookie()
    server, app_name = start_server(
        start_proxy_server, workers=1, DB_POOL_MAX="1", DB_POOL_TIMEOUT="1", **concurrency
    )
    auth = {"Authorization": f"Bearer {token.secret}"}
    outcome: dict[str, Any] = {}

    def create_key() -> None:
        outcome["create"] = httpx.post(
            f"{server.url}/api/v1/keys", json=KEY_BODY, headers=auth, timeout=30
        )

    with wallet_row_locked(tenant.pk):
        # The key creation takes the worker's one connection and waits on the wallet's lock.
        creator = threading.Thread(target=create_key)
        creator.start()
        wait_for(lambda: backends_waiting_on_a_lock(app_name) == 1, timeout=10)

        for path in ("/api/v1/wallet", "/v1/sub-accounts"):
            started = time.monotonic()
            response = httpx.get(f"{server.url}{path}", headers=auth, timeout=30)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["Retry-After"].isdigit()
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {"detail": detail, "code": BUSY_CODE}
            assert time.monotonic() - started >= 0.9  # it waited DB_POOL_TIMEOUT first
        page = httpx.get(f"{server.url}/admin/", cookies={"sessionid": cookie}, timeout=30)
        assert page.status_code == 503, page.text
        assert page.headers["Retry-After"].isdigit()
        assert page.text == detail
    creator.join(30)

    # Once the lock is gone the held request completes, and so does everything after it.
    assert outcome["create"].status_code == 201, outcome["create"].text
    wallet = httpx.get(f"{server.url}/api/v1/wallet", headers=auth, timeout=30)
    assert wallet.status_code == 200
    assert wallet.json()["balance"] == "99.40"
    assert Wallet.objects.get(tenant=tenant).balance_nanos == parse_usd("99.4")
    assert "Traceback" not in server.log()


def test_pooled_connections_that_died_are_replaced_not_lent(
    transactional_db: None, start_proxy_server: Callable[..., ProxyServer]
) -> None:
    """As after a PostgreSQL restart: every idle pooled connection is gone."""
    _, token = reseller_open(email="restart@example.com")
    server, app_name = start_server(start_proxy_server, workers=1, DB_POOL_MAX="2")
    auth = {"Authorization": f"Bearer {token.secret}"}
    url = f"{server.url}/api/v1/wallet"
    assert httpx.get(url, headers=auth, timeout=30).status_code == 200

    with psycopg.connect(postgres_conninfo(), autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
            " FROM pg_stat_activity WHERE application_name = %s",
            [app_name],
        ).fetchone()
    assert killed is not None and killed[0] >= 1

    for _ in range(3):
        response = httpx.get(url, headers=auth, timeout=30)
        assert response.status_code == 200, response.text
