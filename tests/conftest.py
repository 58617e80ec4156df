"""Shared fixtures. Tenants come in pairs (``tenant`` and ``outsider``) so every test can
check that one reseller never reaches another's rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.events import config_listen, config_unlisten
from accounts.models import Tenant
from accounts.services import IssuedToken
from billing.models import ModelPrice, Upstream
from billing.money import parse_usd
from billing.selectors import ledger_mismatches
from billing.services import price_set, reseller_open, upstream_save, wallet_credit

# The test process stands in for many server workers at once (threads racing, each on its
# own connection, up to 50 in tests/keys/test_concurrency.py): on PostgreSQL its pool gets
# room for them. The servers the tests start (tests/proxy/conftest.py) keep DB_POOL_MAX.
TEST_PROCESS_POOL_MAX = 60


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> None:
    from django.db import connections

    database = connections["default"]
    pool = database.settings_dict.get("OPTIONS", {}).get("pool")
    if pool:
        pool["max_size"] = TEST_PROCESS_POOL_MAX
        database.close_pool()  # type: ignore[attr-defined] # the next one opens a new pool


@pytest.fixture
def make_reseller(db: None) -> Callable[..., tuple[Tenant, IssuedToken]]:
    counter = iter(range(1, 10_000))

    def make(email: str | None = None, balance: str | None = None) -> tuple[Tenant, IssuedToken]:
        tenant, token = reseller_open(email=email or f"reseller{next(counter)}@example.com")
        if balance is not None:
            wallet_credit(tenant=tenant, amount_nanos=parse_usd(balance), reason="test funds")
        return tenant, token

    return make


@pytest.fixture
def reseller(
    make_reseller: Callable[..., tuple[Tenant, IssuedToken]],
) -> tuple[Tenant, IssuedToken]:
    return make_reseller(email="alice@example.com")


@pytest.fixture
def tenant(reseller: tuple[Tenant, IssuedToken]) -> Tenant:
    return reseller[0]


@pytest.fixture
def outsider(
    make_reseller: Callable[..., tuple[Tenant, IssuedToken]],
) -> tuple[Tenant, IssuedToken]:
    """A second reseller who must never see or touch the first one's rows."""
    return make_reseller(email="mallory@example.com", balance="500")


@pytest.fixture
def api(reseller: tuple[Tenant, IssuedToken]) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {reseller[1].secret}")
    return client


@pytest.fixture
def outsider_api(outsider: tuple[Tenant, IssuedToken]) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {outsider[1].secret}")
    return client


@pytest.fixture
def upstream(db: None) -> Upstream:
    return upstream_save(name="mock-openai", kind="openai", base_url="http://127.0.0.1:9/v1")


@pytest.fixture
def price(upstream: Upstream) -> ModelPrice:
    """mock-gpt at $1 input / $2 output / $0.50 cached per 1M tokens."""
    return price_set(
        model="mock-gpt",
        upstream=upstream,
        input_per_mtok_nanos=parse_usd(Decimal("1")),
        output_per_mtok_nanos=parse_usd(Decimal("2")),
        cached_input_per_mtok_nanos=parse_usd(Decimal("0.5")),
    )


@pytest.fixture
def books_balance(db: None) -> Iterator[None]:
    """Use in every test that moves money: the ledger must add up afterwards."""
    yield
    assert ledger_mismatches() == []
    call_command("check_ledger")


@pytest.fixture
def announced_changes() -> Iterator[list[str]]:
    """The configuration changes (``accounts.events`` topics) announced to this process's
    listeners once their transactions commit, as a proxy worker hears them."""
    topics: list[str] = []
    config_listen(topics.append)
    yield topics
    config_unlisten(topics.append)


@pytest.fixture
def api_throttle_reset(
    reseller: tuple[Tenant, IssuedToken], outsider: tuple[Tenant, IssuedToken]
) -> None:
    """Forget the REST API's courtesy-throttle counts of both resellers' users.

    DRF counts requests per user id in the cache, and a SQLite test database hands the same
    ids out again in every test, so without this a long run could hit 429 mid-suite.
    """
    from django.core.cache import cache
    from rest_framework.throttling import UserRateThrottle

    for tenant, _ in (reseller, outsider):
        ident = {"scope": UserRateThrottle.scope, "ident": tenant.owner_id}
        cache.delete(UserRateThrottle.cache_format % ident)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``postgres`` (real row locks, real concurrency) need PostgreSQL: they are
    skipped on SQLite, whose one-writer-at-a-time transactions would prove nothing."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
    for item in items:
        if item.get_closest_marker("postgres") is not None:
            item.add_marker(skip)
