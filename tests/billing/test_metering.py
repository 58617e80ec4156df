"""Reserve → settle / release / expire: the operations of ``billing.metering`` that the proxy
runs, here on the sync driver (``tests.metering``), and the expiry sweep of
``billing.services``. A settlement charges the price of the route that served, which may
not be the one its hold was priced at. Every test ends with the books audited
(``books_balance``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import IntegrityError

from billing import metering
from billing.exceptions import KeyInactive, ReservationRefused
from billing.metering import hold_extend_op, settle_op
from billing.models import LedgerEntry, ModelPrice, Reservation, Wallet
from billing.money import Charge, Usage, affordable_output_tokens, parse_usd, request_charge
from billing.periods import period_index
from billing.selectors import wallet_for_tenant
from billing.services import price_set, reservations_expire, upstream_save, wallet_credit
from billing.sqlops import run_sync
from keys.models import ClientKey
from keys.services import deleted_keys_refund, key_create, key_delete, key_update
from keys.tasks import reservations_expire_task
from tests.metering import release, reserve, settle

pytestmark = pytest.mark.usefixtures("books_balance")

# Prices (conftest ``price``): $1 input / $2 output per 1M tokens. At ratio 0.6 (cost $60
# for a $100 client budget) the worst case below costs $0.009 and $0.015 in client price,
# the actual usage $0.003 and $0.005.
WORST = Usage(input_tokens=1_000, output_tokens=4_000)
WORST_COST, WORST_CLIENT = 9_000_000, 15_000_000
ACTUAL = Usage(input_tokens=1_000, output_tokens=1_000)
ACTUAL_COST, ACTUAL_CLIENT = 3_000_000, 5_000_000


def fund(tenant, usd: str) -> None:
    wallet_credit(tenant=tenant, amount_nanos=parse_usd(usd), reason="test funds")


def wallet_of(tenant) -> Wallet:
    return wallet_for_tenant(tenant=tenant)


def prepaid_key(tenant, *, budget: str = "100", cost: str = "60", **options) -> ClientKey:
    return key_create(
        tenant=tenant,
        actor=None,
        label="prepaid",
        client_budget_nanos=parse_usd(budget),
        your_cost_nanos=parse_usd(cost),
        **options,
    ).key


def wallet_key(tenant, **options) -> ClientKey:
    return key_create(
        tenant=tenant, actor=None, label="wallet", funding=ClientKey.Funding.WALLET, **options
    ).key


def fresh(key: ClientKey) -> ClientKey:
    return ClientKey.objects.get(pk=key.pk)


# ----------------------------------------------------------------------------- prepaid keys


def test_settle_charges_the_actual_cost_and_releases_the_rest(tenant, price):
    fund(tenant, "200")
    key = prepaid_key(tenant)

    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST)
    assert (held.cost_nanos, held.client_nanos) == (WORST_COST, WORST_CLIENT)
    assert held.wallet_id is None  # a prepaid key's budget is already set aside
    counters = fresh(key)
    assert (counters.client_reserved_nanos, counters.cost_reserved_nanos) == (
        WORST_CLIENT,
        WORST_COST,
    )

    settled = settle(key=key, hold=held, price=price, usage=ACTUAL)
    assert settled is not None

    assert (settled.charged_cost_nanos, settled.charged_client_nanos) == (
        ACTUAL_COST,
        ACTUAL_CLIENT,
    )
    assert (settled.held_cost_nanos, settled.held_client_nanos) == (WORST_COST, WORST_CLIENT)
    assert (settled.overrun_cost_nanos, settled.overrun_client_nanos) == (0, 0)
    assert not settled.is_over_hold
    key = fresh(key)
    assert (key.client_reserved_nanos, key.cost_reserved_nanos) == (0, 0)
    assert (key.client_spent_nanos, key.cost_spent_nanos) == (ACTUAL_CLIENT, ACTUAL_COST)
    reservation = Reservation.objects.get(request_id="req-1")
    assert reservation.status == Reservation.Status.SETTLED
    assert (reservation.charged_cost_nanos, reservation.charged_client_nanos) == (
        ACTUAL_COST,
        ACTUAL_CLIENT,
    )
    # Prepaid usage was paid for when the key was funded: the wallet does not move.
    assert wallet_of(tenant).balance_nanos == parse_usd("140")
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE).exists()


def test_release_charges_nothing(tenant, price):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    released = release(hold=held)
    assert released is not None

    assert (released.charged_cost_nanos, released.charged_client_nanos) == (0, 0)
    key = fresh(key)
    assert (key.client_reserved_nanos, key.cost_reserved_nanos) == (0, 0)
    assert (key.client_spent_nanos, key.cost_spent_nanos) == (0, 0)
    assert Reservation.objects.get(request_id="req-1").status == Reservation.Status.RELEASED


def test_settling_twice_charges_once(tenant, price):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    assert settle(key=key, hold=held, price=price, usage=ACTUAL) is not None
    assert settle(key=key, hold=held, price=price, usage=ACTUAL) is None
    assert settle(key=key, hold=held, price=price, usage=WORST) is None
    assert release(hold=held) is None

    key = fresh(key)
    assert (key.client_spent_nanos, key.cost_spent_nanos) == (ACTUAL_CLIENT, ACTUAL_COST)
    assert (key.client_reserved_nanos, key.cost_reserved_nanos) == (0, 0)


def test_expired_holds_are_released_and_a_late_settlement_charges_nothing(tenant, price):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    now = datetime.now(UTC)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST, now=now)
    ttl = timedelta(seconds=settings.RESERVATION_TTL_SECONDS)

    assert reservations_expire(now=now + ttl - timedelta(seconds=1)) == 0
    assert fresh(key).client_reserved_nanos == WORST_CLIENT

    assert reservations_expire(now=now + ttl + timedelta(seconds=1)) == 1
    assert reservations_expire(now=now + ttl + timedelta(seconds=2)) == 0  # re-running is harmless

    reservation = Reservation.objects.get(request_id="req-1")
    assert reservation.status == Reservation.Status.EXPIRED
    assert reservation.charged_cost_nanos == 0
    assert settle(key=key, hold=held, price=price, usage=ACTUAL) is None
    key = fresh(key)
    assert (key.client_reserved_nanos, key.cost_reserved_nanos) == (0, 0)
    assert (key.client_spent_nanos, key.cost_spent_nanos) == (0, 0)


def test_a_hold_extended_by_its_live_request_is_not_swept_and_is_charged(tenant, price):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    now = datetime.now(UTC)
    ttl = timedelta(seconds=settings.RESERVATION_TTL_SECONDS)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST, now=now)

    assert run_sync(hold_extend_op(hold=held, expires_at=now + 2 * ttl)) is True

    assert reservations_expire(now=now + ttl + timedelta(seconds=1)) == 0
    settled = settle(key=key, hold=held, price=price, usage=ACTUAL)
    assert settled is not None
    assert settled.charged_client_nanos == ACTUAL_CLIENT
    # A settled hold can no longer be extended.
    assert run_sync(hold_extend_op(hold=held, expires_at=now + 3 * ttl)) is False


def test_the_sweep_claims_only_holds_still_expired_at_claim_time(tenant, price):
    """The sweep lists expired holds, then claims each: a hold extended in between is kept."""
    fund(tenant, "200")
    key = prepaid_key(tenant)
    now = datetime.now(UTC)
    ttl = timedelta(seconds=settings.RESERVATION_TTL_SECONDS)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST, now=now)
    sweep_time = now + ttl + timedelta(seconds=1)
    run_sync(hold_extend_op(hold=held, expires_at=sweep_time + ttl))

    claimed = run_sync(
        settle_op(
            hold=held,
            actual=Charge(0, 0),
            now=sweep_time,
            status=Reservation.Status.EXPIRED,
            expired_before=sweep_time,
        )
    )

    assert claimed is None
    assert Reservation.objects.get(request_id="req-1").status == Reservation.Status.HELD


def test_expiry_leaves_settled_and_unexpired_holds_alone(tenant, price):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    now = datetime.now(UTC)
    settled = reserve(key=key, price=price, request_id="old-settled", worst_case=WORST, now=now)
    reserve(key=key, price=price, request_id="old-held", worst_case=WORST, now=now)
    reserve(
        key=key, price=price, request_id="new-held", worst_case=WORST, now=now + timedelta(hours=1)
    )
    settle(key=key, hold=settled, price=price, usage=ACTUAL)

    assert (
        reservations_expire(now=now + timedelta(seconds=settings.RESERVATION_TTL_SECONDS + 1)) == 1
    )

    statuses = dict(Reservation.objects.values_list("request_id", "status"))
    assert statuses == {"old-settled": "settled", "old-held": "expired", "new-held": "held"}
    assert fresh(key).client_spent_nanos == ACTUAL_CLIENT
    assert fresh(key).client_reserved_nanos == WORST_CLIENT


def test_usage_beyond_the_hold_is_clamped_to_it_and_reported(tenant, price):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    # The upstream reports more than max_tokens allowed: $0.021 of cost.
    settled = settle(
        key=key, hold=held, price=price, usage=Usage(input_tokens=1_000, output_tokens=10_000)
    )
    assert settled is not None

    assert (settled.charged_cost_nanos, settled.charged_client_nanos) == (WORST_COST, WORST_CLIENT)
    assert settled.overrun_cost_nanos == 21_000_000 - WORST_COST
    assert settled.overrun_client_nanos == 35_000_000 - WORST_CLIENT  # at ratio 0.6
    assert settled.is_over_hold
    key = fresh(key)
    assert (key.client_spent_nanos, key.cost_spent_nanos) == (WORST_CLIENT, WORST_COST)


def test_exhausted_prepaid_budget_is_refused_with_what_remains(tenant, price):
    fund(tenant, "1")
    key = prepaid_key(tenant, budget="0.02", cost="0.012")
    reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    with pytest.raises(ReservationRefused) as refused:
        reserve(key=key, price=price, request_id="req-2", worst_case=WORST)

    assert refused.value.client_available_nanos == parse_usd("0.02") - WORST_CLIENT
    assert refused.value.cost_available_nanos == parse_usd("0.012") - WORST_COST
    assert "remaining" in str(refused.value)
    assert not Reservation.objects.filter(request_id="req-2").exists()
    assert fresh(key).client_reserved_nanos == WORST_CLIENT
    # The max_tokens the refusal suggests is admitted, one more is not.
    affordable = affordable_output_tokens(
        input_tokens=1_000,
        prices=price.as_prices(),
        ratio=key.ratio,
        client_available_nanos=refused.value.client_available_nanos,
        cost_available_nanos=refused.value.cost_available_nanos,
    )
    assert affordable > 0
    with pytest.raises(ReservationRefused):
        reserve(
            key=key,
            price=price,
            request_id="req-3",
            worst_case=Usage(input_tokens=1_000, output_tokens=affordable + 1),
        )
    reserve(
        key=key,
        price=price,
        request_id="req-4",
        worst_case=Usage(input_tokens=1_000, output_tokens=affordable),
    )
    key = fresh(key)
    assert key.client_spent_nanos + key.client_reserved_nanos <= key.client_budget_nanos
    assert key.cost_spent_nanos + key.cost_reserved_nanos <= key.cost_funded_nanos


@pytest.mark.parametrize("how", ["revoked", "deleted"])
def test_an_inactive_key_cannot_reserve(tenant, price, how):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    if how == "revoked":
        key_update(
            tenant=tenant, actor=None, key_id=key.pk, changes={"status": ClientKey.Status.REVOKED}
        )
    else:
        key_delete(tenant=tenant, actor=None, key_id=key.pk)

    with pytest.raises(KeyInactive, match=how):
        reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    assert not Reservation.objects.exists()
    assert fresh(key).client_reserved_nanos == 0


def test_a_reused_request_id_holds_nothing_twice(tenant, price):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    with pytest.raises(IntegrityError):
        reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    assert fresh(key).client_reserved_nanos == WORST_CLIENT


# ----------------------------------------------------------------------------- which price is charged


@pytest.fixture
def dearer_route_price(price: ModelPrice) -> ModelPrice:
    """mock-gpt on a second upstream at $3 input / $6 output: the dearer of its two routes."""
    backup = upstream_save(name="mock-backup", kind="openai", base_url="http://127.0.0.1:9/v1")
    return price_set(
        model="mock-gpt",
        upstream=backup,
        input_per_mtok_nanos=parse_usd("3"),
        output_per_mtok_nanos=parse_usd("6"),
    )


@pytest.mark.parametrize("funding", [ClientKey.Funding.PREPAID, ClientKey.Funding.WALLET])
def test_a_request_held_on_one_route_is_charged_at_the_price_of_the_route_that_served(
    tenant, price, dearer_route_price, funding
):
    """The proxy prices a hold at the dearest route a request may take and charges the
    route that served it (the cheaper one here, its dearer first choice having failed
    before any output): the served route's price is charged and recorded."""
    fund(tenant, "200")
    key = prepaid_key(tenant) if funding == ClientKey.Funding.PREPAID else wallet_key(tenant)
    held = reserve(key=key, price=dearer_route_price, request_id="req-1", worst_case=WORST)
    assert held.cost_nanos == 3 * WORST_COST  # $3 / $6 is three times $1 / $2

    settled = settle(key=key, hold=held, price=price, usage=ACTUAL)
    assert settled is not None

    # ACTUAL at the served route's $1 / $2, not at the $3 / $6 the hold was priced at.
    cost = ACTUAL_COST
    client = ACTUAL_CLIENT if funding == ClientKey.Funding.PREPAID else ACTUAL_COST
    assert (settled.charged_cost_nanos, settled.charged_client_nanos) == (cost, client)
    reservation = Reservation.objects.get(request_id="req-1")
    assert reservation.price_id == price.pk
    assert (reservation.charged_cost_nanos, reservation.charged_client_nanos) == (cost, client)
    key = fresh(key)
    assert (key.cost_spent_nanos, key.client_spent_nanos) == (cost, client)
    assert (key.cost_reserved_nanos, key.client_reserved_nanos) == (0, 0)
    if funding == ClientKey.Funding.WALLET:
        entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.USAGE)
        assert (entry.amount_nanos, entry.reason) == (-cost, "API usage (mock-gpt)")
        assert wallet_of(tenant).reserved_nanos == 0


def test_a_served_route_dearer_than_the_hold_is_charged_at_most_the_hold(
    tenant, price, dearer_route_price
):
    """The hold is the ceiling whatever route served: the excess is reported, not charged."""
    fund(tenant, "200")
    key = prepaid_key(tenant)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    settled = settle(key=key, hold=held, price=dearer_route_price, usage=WORST)
    assert settled is not None

    assert (settled.charged_cost_nanos, settled.charged_client_nanos) == (WORST_COST, WORST_CLIENT)
    assert settled.overrun_cost_nanos == 3 * WORST_COST - WORST_COST
    assert Reservation.objects.get(request_id="req-1").price_id == dearer_route_price.pk


# ----------------------------------------------------------------------------- prepaid key deleted in flight


def test_a_prepaid_key_deleted_in_flight_refunds_the_rest_when_it_settles(tenant, price):
    fund(tenant, "200")
    key = prepaid_key(tenant)  # wallet $140
    held = reserve(
        key=key, price=price, request_id="req-1", worst_case=Usage(input_tokens=10_000_000)
    )

    deleted = key_delete(tenant=tenant, actor=None, key_id=key.pk)

    # Unspent cost minus what the request in flight holds ($10).
    assert deleted.refunded_nanos == parse_usd("50")
    assert wallet_of(tenant).balance_nanos == parse_usd("190")

    settled = settle(key=key, hold=held, price=price, usage=Usage(input_tokens=4_000_000))
    assert settled is not None

    assert settled.charged_cost_nanos == parse_usd("4")
    assert wallet_of(tenant).balance_nanos == parse_usd("196")
    key = fresh(key)
    assert (
        key.cost_refunded_nanos == key.cost_funded_nanos - key.cost_spent_nanos == parse_usd("56")
    )
    refunds = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.KEY_REFUND, client_key=key)
    assert sorted(refunds.values_list("amount_nanos", flat=True)) == [
        parse_usd("6"),
        parse_usd("50"),
    ]
    # Settling again charges and refunds nothing more.
    assert settle(key=key, hold=held, price=price, usage=Usage(input_tokens=4_000_000)) is None
    assert refunds.count() == 2
    assert deleted_keys_refund() == 0


def test_a_prepaid_key_deleted_with_two_requests_in_flight_refunds_each_release(tenant, price):
    fund(tenant, "200")
    key = prepaid_key(tenant)  # wallet $140
    first, second = (
        reserve(
            key=key, price=price, request_id=request_id, worst_case=Usage(input_tokens=10_000_000)
        )
        for request_id in ("req-1", "req-2")
    )
    assert key_delete(tenant=tenant, actor=None, key_id=key.pk).refunded_nanos == parse_usd("40")

    # $1 of a $10 hold.
    settle(key=key, hold=first, price=price, usage=Usage(input_tokens=1_000_000))
    assert wallet_of(tenant).balance_nanos == parse_usd("189")  # 140 + 40 + 9
    release(hold=second)
    assert wallet_of(tenant).balance_nanos == parse_usd("199")

    key = fresh(key)
    assert key.cost_refunded_nanos == key.cost_funded_nanos - key.cost_spent_nanos
    assert key.cost_reserved_nanos == 0
    assert deleted_keys_refund() == 0


def test_a_refund_a_crash_left_undone_is_paid_by_the_sweep_once(tenant, price):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    held = reserve(
        key=key, price=price, request_id="req-1", worst_case=Usage(input_tokens=10_000_000)
    )
    key_delete(tenant=tenant, actor=None, key_id=key.pk)

    # The settling worker dies between the settlement and the refund, its own transaction:
    # the settlement alone, as the proxy runs it before the refund.
    now = datetime.now(UTC)
    settled = run_sync(
        settle_op(
            hold=held,
            actual=request_charge(Usage(input_tokens=4_000_000), price.as_prices(), key.ratio),
            now=now,
            status=Reservation.Status.SETTLED,
            price_id=price.pk,
        )
    )
    assert settled is not None and settled.refund_owed_nanos == parse_usd("6")
    # Settled, but the $6 its hold did not spend is still owed.
    assert wallet_of(tenant).balance_nanos == parse_usd("190")
    key = fresh(key)
    assert key.cost_funded_nanos - key.cost_spent_nanos - key.cost_refunded_nanos == parse_usd("6")

    # A refund that read a stale amount does nothing (a sweep racing a settlement, say).
    stale = metering.deleted_key_refund_op(
        key_id=key.pk,
        wallet_id=key.wallet_id,
        refund=parse_usd("5"),
        reason="x",
        now=datetime.now(UTC),
    )
    assert run_sync(stale) is False

    assert reservations_expire_task() == 0  # the periodic task runs the refund sweep too
    assert wallet_of(tenant).balance_nanos == parse_usd("196")
    assert fresh(key).cost_refunded_nanos == parse_usd("56")
    assert deleted_keys_refund() == 0
    assert wallet_of(tenant).balance_nanos == parse_usd("196")


@pytest.mark.parametrize("finish", ["release", "expire"])
def test_a_prepaid_key_deleted_in_flight_gets_everything_back_when_nothing_is_charged(
    tenant, price, finish
):
    fund(tenant, "200")
    key = prepaid_key(tenant)
    now = datetime.now(UTC)
    held = reserve(
        key=key, price=price, request_id="req-1", worst_case=Usage(input_tokens=10_000_000), now=now
    )
    key_delete(tenant=tenant, actor=None, key_id=key.pk)

    if finish == "release":
        release(hold=held)
    else:
        assert reservations_expire(now=now + timedelta(days=1)) == 1

    assert wallet_of(tenant).balance_nanos == parse_usd("200")
    assert fresh(key).cost_refunded_nanos == parse_usd("60")
    assert settle(key=key, hold=held, price=price, usage=Usage(input_tokens=1)) is None
    assert wallet_of(tenant).balance_nanos == parse_usd("200")


# ----------------------------------------------------------------------------- wallet-funded keys


def test_a_wallet_key_reservation_holds_wallet_funds(tenant, price):
    fund(tenant, "1")
    key = wallet_key(tenant)

    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    wallet = wallet_of(tenant)
    assert held.wallet_id == wallet.pk
    # 1:1 by default: client price = cost.
    assert (wallet.balance_nanos, wallet.reserved_nanos) == (parse_usd("1"), WORST_COST)
    assert wallet.available_nanos == parse_usd("1") - WORST_COST
    assert Reservation.objects.get(request_id="req-1").wallet_id == wallet.pk


def test_a_wallet_key_settlement_posts_one_usage_entry(tenant, price):
    fund(tenant, "1")
    key = wallet_key(tenant, client_budget_nanos=parse_usd("100"), your_cost_nanos=parse_usd("60"))
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    settle(key=key, hold=held, price=price, usage=ACTUAL)
    settle(key=key, hold=held, price=price, usage=ACTUAL)

    wallet = wallet_of(tenant)
    assert (wallet.balance_nanos, wallet.reserved_nanos) == (parse_usd("1") - ACTUAL_COST, 0)
    entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.USAGE)
    assert entry.amount_nanos == -ACTUAL_COST
    assert entry.idempotency_key == "usage:req-1"
    assert entry.reference == "req-1"
    assert entry.client_key_id == key.pk
    assert entry.balance_after_nanos == wallet.balance_nanos
    key = fresh(key)
    assert (key.client_spent_nanos, key.cost_spent_nanos) == (ACTUAL_CLIENT, ACTUAL_COST)


def test_a_wallet_key_release_frees_the_hold_without_an_entry(tenant, price):
    fund(tenant, "1")
    key = wallet_key(tenant)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    release(hold=held)

    wallet = wallet_of(tenant)
    assert (wallet.balance_nanos, wallet.reserved_nanos) == (parse_usd("1"), 0)
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE).exists()


def test_a_wallet_key_expiry_frees_the_hold(tenant, price):
    fund(tenant, "1")
    key = wallet_key(tenant)
    now = datetime.now(UTC)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST, now=now)

    assert reservations_expire(now=now + timedelta(days=1)) == 1

    assert wallet_of(tenant).reserved_nanos == 0
    assert settle(key=key, hold=held, price=price, usage=ACTUAL) is None
    assert wallet_of(tenant).balance_nanos == parse_usd("1")


def test_a_wallet_never_goes_negative(tenant, price):
    fund(tenant, "0.01")
    key = wallet_key(tenant)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    with pytest.raises(ReservationRefused, match="wallet") as refused:
        reserve(key=key, price=price, request_id="req-2", worst_case=WORST)

    assert refused.value.cost_available_nanos == parse_usd("0.01") - WORST_COST
    assert refused.value.client_available_nanos is None
    assert fresh(key).cost_reserved_nanos == WORST_COST  # the refused hold was rolled back
    # Even an upstream that overruns the hold cannot take the wallet below zero.
    overrun = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    settle(key=key, hold=held, price=price, usage=overrun)
    wallet = wallet_of(tenant)
    assert (wallet.balance_nanos, wallet.reserved_nanos) == (parse_usd("0.01") - WORST_COST, 0)
    assert wallet.balance_nanos >= 0


def test_other_holds_on_the_wallet_limit_a_wallet_key(tenant, price):
    fund(tenant, "0.02")
    first, second = wallet_key(tenant), wallet_key(tenant)
    reserve(key=first, price=price, request_id="req-1", worst_case=WORST)
    reserve(key=second, price=price, request_id="req-2", worst_case=WORST)

    with pytest.raises(ReservationRefused):
        reserve(key=first, price=price, request_id="req-3", worst_case=WORST)

    assert wallet_of(tenant).reserved_nanos == 2 * WORST_COST


def test_a_spend_cap_refuses_what_would_pass_it(tenant, price):
    fund(tenant, "10")
    key = wallet_key(
        tenant,
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("60"),
        spend_cap_nanos=parse_usd("0.02"),
    )
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    with pytest.raises(ReservationRefused, match="spend cap") as refused:
        reserve(key=key, price=price, request_id="req-2", worst_case=WORST)

    assert refused.value.client_available_nanos == parse_usd("0.02") - WORST_CLIENT
    assert refused.value.cost_available_nanos is None
    assert wallet_of(tenant).reserved_nanos == WORST_COST
    settle(key=key, hold=held, price=price, usage=ACTUAL)
    key = fresh(key)
    assert key.period_client_spent_nanos == ACTUAL_CLIENT


@pytest.mark.parametrize(
    ("period", "start", "same_period", "next_period"),
    [
        ("daily", datetime(2031, 1, 15, 9, tzinfo=UTC), datetime(2031, 1, 15, 23, 59, 59, tzinfo=UTC),
         datetime(2031, 1, 16, tzinfo=UTC)),
        # 2031-01-19 is a Sunday; weeks start on Monday.
        ("weekly", datetime(2031, 1, 13, 9, tzinfo=UTC), datetime(2031, 1, 19, 23, 59, tzinfo=UTC),
         datetime(2031, 1, 20, tzinfo=UTC)),
        ("monthly", datetime(2031, 1, 1, 0, 30, tzinfo=UTC), datetime(2031, 1, 31, 23, 59, tzinfo=UTC),
         datetime(2031, 2, 1, tzinfo=UTC)),
    ],
)  # fmt: skip
def test_a_spend_cap_resets_when_its_period_rolls_over(
    tenant, price, period, start, same_period, next_period
):
    fund(tenant, "10")
    key = wallet_key(tenant, spend_cap_nanos=WORST_COST, budget_period=period)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST, now=start)
    settle(key=key, hold=held, price=price, usage=WORST, now=start)  # the whole cap is spent

    with pytest.raises(ReservationRefused) as refused:
        reserve(key=key, price=price, request_id="req-2", worst_case=WORST, now=same_period)
    assert refused.value.client_available_nanos == 0

    held = reserve(key=key, price=price, request_id="req-3", worst_case=WORST, now=next_period)
    settle(key=key, hold=held, price=price, usage=ACTUAL, now=next_period)

    key = fresh(key)
    assert key.period_index == period_index(period, next_period)
    assert key.period_client_spent_nanos == ACTUAL_COST
    assert key.client_spent_nanos == WORST_COST + ACTUAL_COST  # lifetime spend keeps counting


def test_a_cap_without_period_never_resets(tenant, price):
    fund(tenant, "10")
    key = wallet_key(tenant, spend_cap_nanos=WORST_COST)
    start = datetime(2031, 1, 15, tzinfo=UTC)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST, now=start)
    settle(key=key, hold=held, price=price, usage=WORST, now=start)

    with pytest.raises(ReservationRefused):
        reserve(
            key=key,
            price=price,
            request_id="req-2",
            worst_case=WORST,
            now=start + timedelta(days=400),
        )


def test_the_cap_period_follows_the_stored_budget_period_not_a_stale_copy(tenant, price):
    """A caller holding the key from before a budget_period change (the proxy caches keys)
    must not stamp the other kind of period index on it: a monthly index (~24,000) on a
    daily key would stop its cap resetting for decades."""
    fund(tenant, "10")
    key = wallet_key(
        tenant, spend_cap_nanos=WORST_COST, budget_period=ClientKey.BudgetPeriod.MONTHLY
    )
    stale = fresh(key)
    key_update(
        tenant=tenant,
        actor=None,
        key_id=key.pk,
        changes={"budget_period": ClientKey.BudgetPeriod.DAILY},
    )
    today = datetime.now(UTC) + timedelta(minutes=1)

    held = reserve(key=stale, price=price, request_id="req-1", worst_case=WORST, now=today)
    settle(key=stale, hold=held, price=price, usage=WORST, now=today)

    assert fresh(key).period_index == period_index(ClientKey.BudgetPeriod.DAILY, today)
    tomorrow = today + timedelta(days=1)
    reserve(key=stale, price=price, request_id="req-2", worst_case=WORST, now=tomorrow)
    assert fresh(key).period_index == period_index(ClientKey.BudgetPeriod.DAILY, tomorrow)


def test_a_wallet_key_deleted_in_flight_still_pays_for_its_usage(tenant, price):
    fund(tenant, "1")
    key = wallet_key(tenant)
    held = reserve(key=key, price=price, request_id="req-1", worst_case=WORST)

    deleted = key_delete(tenant=tenant, actor=None, key_id=key.pk)
    settle(key=key, hold=held, price=price, usage=ACTUAL)

    assert deleted.refunded_nanos == 0
    wallet = wallet_of(tenant)
    assert (wallet.balance_nanos, wallet.reserved_nanos) == (parse_usd("1") - ACTUAL_COST, 0)
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.KEY_REFUND).exists()
