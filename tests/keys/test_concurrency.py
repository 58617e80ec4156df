"""Money flows under real concurrency: threads, each with its own PostgreSQL connection,
released together by a barrier. Only PostgreSQL has the row locks these rules rely on
(SQLite runs one writer at a time and would prove nothing), so the module is skipped on it.

Each test ends with the ledger audit: balances equal the sum of entries, reservation totals
equal the held reservations, and no wallet is overdrawn.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from billing.exceptions import InsufficientFunds, ReservationRefused
from billing.models import LedgerEntry, Reservation, Wallet
from billing.money import Usage, parse_usd
from billing.selectors import ledger_mismatches, wallet_for_tenant
from billing.services import reservations_expire, wallet_credit
from keys.exceptions import ClientKeyStateConflict
from keys.models import ClientKey
from keys.services import key_create, key_delete, key_top_up
from tests.metering import reserve, settle

pytestmark = pytest.mark.postgres

BARRIER_TIMEOUT_SECONDS = 30
# $1 input / $2 output per 1M tokens (conftest ``price``): the worst case costs $0.009.
WORST = Usage(input_tokens=1_000, output_tokens=4_000)
WORST_COST = 9_000_000
ACTUAL = Usage(input_tokens=1_000, output_tokens=1_000)
ACTUAL_COST = 3_000_000


def run_together(count: int, work: Callable[[int], Any]) -> list[tuple[str, Any]]:
    """Run ``work(i)`` for i in range(count) on ``count`` threads released at the same
    moment; each outcome is ("ok", result) or ("error", exception)."""
    barrier = threading.Barrier(count)

    def run(index: int) -> tuple[str, Any]:
        try:
            connection.ensure_connection()  # connect first, so the barrier releases real work
            barrier.wait(timeout=BARRIER_TIMEOUT_SECONDS)
            return ("ok", work(index))
        except Exception as exc:  # every outcome, error or not, is asserted by the caller
            return ("error", exc)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def successes(outcomes: list[tuple[str, Any]]) -> list[Any]:
    return [value for status, value in outcomes if status == "ok"]


def errors_by_type(outcomes: list[tuple[str, Any]]) -> Counter[type]:
    return Counter(type(value) for status, value in outcomes if status == "error")


def assert_books_balance() -> None:
    assert ledger_mismatches() == []
    call_command("check_ledger")
    for wallet in Wallet.objects.all():
        assert 0 <= wallet.reserved_nanos <= wallet.balance_nanos
        entries = LedgerEntry.objects.filter(wallet=wallet).aggregate(total=Sum("amount_nanos"))
        assert wallet.balance_nanos == (entries["total"] or 0)


def fund(tenant, usd: str) -> None:
    wallet_credit(tenant=tenant, amount_nanos=parse_usd(usd), reason="test funds")


def test_parallel_key_creations_fund_only_what_the_wallet_holds(transactional_db, tenant):
    fund(tenant, "75")  # enough for 7 keys at $10 of cost each

    outcomes = run_together(
        20,
        lambda i: key_create(
            tenant=tenant,
            actor=None,
            label=f"key-{i}",
            client_budget_nanos=parse_usd("20"),
            your_cost_nanos=parse_usd("10"),
        ),
    )

    assert len(successes(outcomes)) == 7
    assert errors_by_type(outcomes) == {InsufficientFunds: 13}
    assert ClientKey.objects.filter(tenant=tenant).count() == 7
    wallet = wallet_for_tenant(tenant=tenant)
    assert wallet.balance_nanos == parse_usd("5")
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.KEY_FUNDING).count() == 7
    assert_books_balance()


def test_parallel_credits_with_one_idempotency_key_credit_once(transactional_db, tenant):
    """A client retrying a top-up on several connections at once: every call answers with
    the one entry that was posted (none fails), and the wallet is credited once."""
    fund(tenant, "10")

    outcomes = run_together(
        8,
        lambda i: wallet_credit(
            tenant=tenant,
            amount_nanos=parse_usd("25"),
            reason="wire transfer",
            idempotency_key="wire-2026-12-01",
        ),
    )

    assert errors_by_type(outcomes) == {}
    assert len({entry.pk for entry in successes(outcomes)}) == 1
    assert LedgerEntry.objects.filter(idempotency_key="wire-2026-12-01").count() == 1
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("35")
    assert_books_balance()


def test_parallel_deletes_of_one_key_refund_exactly_once(transactional_db, tenant):
    fund(tenant, "200")
    key = key_create(
        tenant=tenant,
        actor=None,
        label="k",
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("60"),
    ).key

    outcomes = run_together(10, lambda i: key_delete(tenant=tenant, actor=None, key_id=key.pk))

    deleted = successes(outcomes)
    assert len(deleted) == 1
    assert deleted[0].refunded_nanos == parse_usd("60")
    assert errors_by_type(outcomes) == {ClientKeyStateConflict: 9}
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.KEY_REFUND).count() == 1
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("200")
    assert_books_balance()


def test_parallel_top_ups_never_overdraw_the_wallet(transactional_db, tenant):
    fund(tenant, "160")
    keys = [
        key_create(
            tenant=tenant,
            actor=None,
            label=f"k{i}",
            client_budget_nanos=parse_usd("100"),
            your_cost_nanos=parse_usd("60"),
        ).key
        for i in range(2)
    ]  # wallet $40 left: six top-ups of $10 (cost $6) fit

    outcomes = run_together(
        20,
        lambda i: key_top_up(
            tenant=tenant, actor=None, key_id=keys[i % 2].pk, client_amount_nanos=parse_usd("10")
        ),
    )

    assert len(successes(outcomes)) == 6
    assert errors_by_type(outcomes) == {InsufficientFunds: 14}
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("4")
    funded = ClientKey.objects.aggregate(
        cost=Sum("cost_funded_nanos"), client=Sum("client_budget_nanos")
    )
    assert funded == {"cost": parse_usd("156"), "client": parse_usd("260")}
    assert_books_balance()


def test_parallel_reservations_never_exceed_a_prepaid_budget(transactional_db, tenant, price):
    fund(tenant, "1")
    # Ratio 0.6: a worst case is $0.009 of cost, $0.015 client; five fit in $0.076, six do not.
    key = key_create(
        tenant=tenant,
        actor=None,
        label="k",
        client_budget_nanos=parse_usd("0.076"),
        your_cost_nanos=parse_usd("0.0456"),
    ).key

    outcomes = run_together(
        50,
        lambda i: reserve(key=key, price=price, request_id=f"req-{i}", worst_case=WORST),
    )

    assert len(successes(outcomes)) == 5
    assert errors_by_type(outcomes) == {ReservationRefused: 45}
    key.refresh_from_db()
    held = Reservation.objects.filter(status=Reservation.Status.HELD).aggregate(
        client=Sum("client_nanos"), cost=Sum("cost_nanos")
    )
    assert held == {"client": key.client_reserved_nanos, "cost": key.cost_reserved_nanos}
    assert key.client_reserved_nanos == 5 * 15_000_000 <= key.client_budget_nanos
    assert key.cost_reserved_nanos == 5 * WORST_COST <= key.cost_funded_nanos
    assert_books_balance()


def test_parallel_reservations_on_wallet_keys_never_hold_more_than_the_wallet(
    transactional_db, tenant, price
):
    fund(tenant, "0.05")  # five worst cases fit, six do not
    keys = [
        key_create(tenant=tenant, actor=None, label=f"k{i}", funding=ClientKey.Funding.WALLET).key
        for i in range(5)
    ]

    outcomes = run_together(
        50,
        lambda i: reserve(key=keys[i % 5], price=price, request_id=f"req-{i}", worst_case=WORST),
    )

    reserved = successes(outcomes)
    assert len(reserved) == 5
    assert errors_by_type(outcomes) == {ReservationRefused: 45}
    wallet = wallet_for_tenant(tenant=tenant)
    assert wallet.reserved_nanos == 5 * WORST_COST <= wallet.balance_nanos
    assert_books_balance()

    # Settle them all at once too: each posts exactly its usage.
    key_of = {key.pk: key for key in keys}
    outcomes = run_together(
        5,
        lambda i: settle(
            key=key_of[reserved[i].key_id], hold=reserved[i], price=price, usage=ACTUAL
        ),
    )

    assert len(successes(outcomes)) == 5
    wallet.refresh_from_db()
    assert (wallet.balance_nanos, wallet.reserved_nanos) == (parse_usd("0.05") - 5 * ACTUAL_COST, 0)
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE).count() == 5
    assert_books_balance()


@pytest.mark.parametrize("funding", ["wallet", "deleted prepaid"])
def test_concurrent_settle_and_expire_charge_each_reservation_at_most_once(
    transactional_db, tenant, price, funding
):
    fund(tenant, "100")
    if funding == "wallet":
        key = key_create(tenant=tenant, actor=None, label="k", funding=ClientKey.Funding.WALLET).key
    else:
        key = key_create(
            tenant=tenant,
            actor=None,
            label="k",
            client_budget_nanos=parse_usd("10"),
            your_cost_nanos=parse_usd("10"),
        ).key
    an_hour_ago = timezone.now() - timedelta(hours=1)  # every hold is already past its expiry
    count = 10
    holds = [
        reserve(key=key, price=price, request_id=f"req-{i}", worst_case=WORST, now=an_hour_ago)
        for i in range(count)
    ]
    if funding != "wallet":
        key_delete(tenant=tenant, actor=None, key_id=key.pk)

    def settle_or_sweep(i: int) -> Any:
        if i < count:
            return settle(key=key, hold=holds[i], price=price, usage=ACTUAL)
        return reservations_expire()

    outcomes = run_together(2 * count, settle_or_sweep)

    assert errors_by_type(outcomes) == {}
    statuses = Counter(Reservation.objects.values_list("status", flat=True))
    settled = sum(1 for value in successes(outcomes)[:count] if value is not None)
    expired = sum(successes(outcomes)[count:])
    assert statuses == Counter({"settled": settled, "expired": expired})
    assert settled + expired == count
    key.refresh_from_db()
    assert (key.client_reserved_nanos, key.cost_reserved_nanos) == (0, 0)
    assert key.cost_spent_nanos == settled * ACTUAL_COST
    assert Reservation.objects.filter(status="expired", charged_cost_nanos__gt=0).count() == 0
    if funding == "wallet":
        assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE).count() == settled
        assert (
            wallet_for_tenant(tenant=tenant).balance_nanos
            == parse_usd("100") - settled * ACTUAL_COST
        )
    else:
        # Everything not spent came back to the wallet, once.
        assert key.cost_refunded_nanos == key.cost_funded_nanos - key.cost_spent_nanos
        assert (
            wallet_for_tenant(tenant=tenant).balance_nanos
            == parse_usd("100") - settled * ACTUAL_COST
        )
    assert_books_balance()
