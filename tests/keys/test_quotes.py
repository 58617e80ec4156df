"""keys.services quotes: what creating, topping up and deleting a key would do, answered
without writing. Each quote must equal, to the nano-dollar, what the write then does, and
refuse what the write refuses with the same error."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from billing.exceptions import InsufficientFunds
from billing.models import LedgerEntry
from billing.money import Usage, parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import wallet_credit
from keys.exceptions import ClientKeyInvalid, ClientKeyStateConflict
from keys.models import ClientKey
from keys.services import (
    key_create,
    key_create_quote,
    key_delete,
    key_delete_quote,
    key_top_up,
    key_top_up_quote,
)
from tests.metering import reserve, settle

pytestmark = pytest.mark.usefixtures("books_balance")


def fund(tenant, usd: str) -> None:
    wallet_credit(tenant=tenant, amount_nanos=parse_usd(usd), reason="test funds")


def available(tenant) -> int:
    return wallet_for_tenant(tenant=tenant).available_nanos


def prepaid(tenant, budget: str = "100", cost: str = "60") -> ClientKey:
    return key_create(
        tenant=tenant,
        actor=None,
        label="acme-corp-prod",
        client_budget_nanos=parse_usd(budget),
        your_cost_nanos=parse_usd(cost),
    ).key


def nothing_written(tenant, entries_before: int) -> bool:
    return LedgerEntry.objects.filter(wallet__tenant=tenant).count() == entries_before


# ------------------------------------------------------------------------------ creating


def test_the_worked_example_quotes_100_for_the_client_60_from_the_wallet_at_40_percent(tenant):
    fund(tenant, "200")
    terms: dict[str, Any] = {"label": "acme-corp-prod", "client_budget_nanos": parse_usd("100")}
    terms["your_cost_nanos"] = parse_usd("60")
    quote = key_create_quote(tenant=tenant, **terms)
    assert quote.client_budget_nanos == parse_usd("100")
    assert quote.wallet_debit_nanos == parse_usd("60")
    assert quote.margin_percent == Decimal("40.00")
    assert not quote.is_internal_share
    assert quote.wallet.available_nanos == parse_usd("200")
    assert quote.wallet.available_after_nanos == parse_usd("140")
    assert quote.refusal is None

    key = key_create(tenant=tenant, actor=None, **terms).key
    assert key.cost_funded_nanos == quote.wallet_debit_nanos
    assert key.client_budget_nanos == quote.client_budget_nanos
    assert available(tenant) == quote.wallet.available_after_nanos
    assert (key.ratio_cost_nanos, key.ratio_client_nanos) == (
        quote.terms.ratio.cost_nanos,
        quote.terms.ratio.client_nanos,
    )


@pytest.mark.parametrize(
    ("budget", "cost", "margin"),
    [
        ("100", "60", "40.00"),
        ("3", "2", "33.33"),
        ("7", "1", "85.71"),
        ("1000", "1", "99.90"),
        ("12.345678901", "9.876543211", "20.00"),
        ("0.000000003", "0.000000002", "33.33"),
        ("50", "50", "0.00"),
    ],
)
def test_a_quote_equals_the_creation_to_the_nano(tenant, budget, cost, margin):
    fund(tenant, "5000")
    terms: dict[str, Any] = {
        "label": "k",
        "client_budget_nanos": parse_usd(budget),
        "your_cost_nanos": parse_usd(cost),
    }
    quote = key_create_quote(tenant=tenant, **terms)
    assert quote.margin_percent == Decimal(margin)
    before = available(tenant)
    key = key_create(tenant=tenant, actor=None, **terms).key
    assert before - available(tenant) == quote.wallet_debit_nanos == key.cost_funded_nanos
    assert available(tenant) == quote.wallet.available_after_nanos


def test_equal_budget_and_cost_is_an_internal_share(tenant):
    fund(tenant, "100")
    quote = key_create_quote(
        tenant=tenant, label="team", client_budget_nanos=parse_usd("40"), your_cost_nanos=40 * 10**9
    )
    assert quote.is_internal_share
    assert quote.margin_percent == Decimal("0.00")


def test_a_wallet_funded_key_takes_nothing_from_the_wallet_now(tenant):
    fund(tenant, "30")
    quote = key_create_quote(
        tenant=tenant,
        label="staging",
        funding=ClientKey.Funding.WALLET,
        client_budget_nanos=parse_usd("125"),
        your_cost_nanos=parse_usd("100"),
        spend_cap_nanos=parse_usd("25"),
        budget_period=ClientKey.BudgetPeriod.MONTHLY,
    )
    assert quote.client_budget_nanos is None
    assert quote.wallet_debit_nanos == 0
    assert quote.margin_percent == Decimal("20.00")
    assert quote.wallet.available_after_nanos == parse_usd("30")
    assert quote.terms.spend_cap_nanos == parse_usd("25")
    assert quote.refusal is None


def test_a_quote_carries_the_insufficient_funds_refusal_creation_raises(tenant):
    fund(tenant, "50")
    terms: dict[str, Any] = {
        "label": "big",
        "client_budget_nanos": parse_usd("100"),
        "your_cost_nanos": parse_usd("60"),
    }
    quote = key_create_quote(tenant=tenant, **terms)
    assert isinstance(quote.refusal, InsufficientFunds)
    assert quote.wallet.available_after_nanos == parse_usd("-10")
    with pytest.raises(InsufficientFunds) as raised:
        key_create(tenant=tenant, actor=None, **terms)
    assert str(raised.value) == str(quote.refusal)
    assert (raised.value.needed_nanos, raised.value.available_nanos) == (
        quote.refusal.needed_nanos,
        quote.refusal.available_nanos,
    )
    assert not ClientKey.objects.filter(tenant=tenant).exists()


def test_spending_the_whole_wallet_is_no_refusal(tenant):
    fund(tenant, "60")
    quote = key_create_quote(
        tenant=tenant, label="all", client_budget_nanos=parse_usd("100"), your_cost_nanos=60 * 10**9
    )
    assert quote.refusal is None
    assert quote.wallet.available_after_nanos == 0


INVALID_TERMS: list[dict[str, Any]] = [
    {"label": "  "},
    {"your_cost_nanos": parse_usd("120")},  # cost above the budget
    {"your_cost_nanos": parse_usd("0.01")},  # a markup above 1,000x
    {"client_budget_nanos": None},
    {"client_budget_nanos": 0},
    {"funding": "credit"},
    {"budget_period": "hourly"},
    {"budget_period": ClientKey.BudgetPeriod.DAILY},  # without a cap
    {"spend_cap_nanos": -1},
    {"rpm": 0},
    {"max_concurrency": 2_000_000},
    {"tpm": 0},
    {"models": ["no-such-model"]},
    {"expires_at": "past"},
]


@pytest.mark.parametrize("change", INVALID_TERMS)
def test_a_quote_refuses_invalid_terms_exactly_as_creation_does(tenant, change):
    fund(tenant, "200")
    terms: dict[str, Any] = {
        "label": "acme",
        "client_budget_nanos": parse_usd("100"),
        "your_cost_nanos": parse_usd("60"),
        **change,
    }
    if terms.get("expires_at") == "past":
        terms["expires_at"] = timezone.now() - timedelta(minutes=1)
    with pytest.raises(ClientKeyInvalid) as quoted:
        key_create_quote(tenant=tenant, **terms)
    with pytest.raises(ClientKeyInvalid) as created:
        key_create(tenant=tenant, actor=None, **terms)
    assert (quoted.value.field, str(quoted.value)) == (created.value.field, str(created.value))
    assert not ClientKey.objects.filter(tenant=tenant).exists()


# ---------------------------------------------------------------------------- topping up


def test_topping_up_50_quotes_30_from_the_wallet_and_the_top_up_takes_exactly_that(tenant):
    fund(tenant, "200")
    key = prepaid(tenant)
    quote = key_top_up_quote(tenant=tenant, key_id=key.pk, client_amount_nanos=parse_usd("50"))
    assert quote.wallet_debit_nanos == parse_usd("30")
    assert quote.client_budget_after_nanos == parse_usd("150")
    assert quote.wallet.available_after_nanos == parse_usd("110")
    assert quote.refusal is None

    topped = key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=50 * 10**9)
    assert topped.client_budget_nanos == quote.client_budget_after_nanos
    assert topped.cost_funded_nanos - key.cost_funded_nanos == quote.wallet_debit_nanos
    assert available(tenant) == quote.wallet.available_after_nanos


@pytest.mark.parametrize(
    ("budget", "cost", "amount"),
    [
        ("7", "3", "0.000000001"),  # 3/7 of a nano-dollar: rounds to 0 → refused below
        ("7", "3", "0.000000002"),  # 6/7 → 1
        ("7", "3", "10"),
        ("3", "2", "0.000000005"),  # 10/3 → 3
        ("9.999999999", "3.333333333", "123.456789012"),
    ],
)
def test_a_top_up_quote_equals_the_top_up_to_the_nano(tenant, budget, cost, amount):
    fund(tenant, "1000")
    key = prepaid(tenant, budget, cost)
    amount_nanos = parse_usd(amount)
    try:
        quote = key_top_up_quote(tenant=tenant, key_id=key.pk, client_amount_nanos=amount_nanos)
    except ClientKeyInvalid as refused:
        with pytest.raises(ClientKeyInvalid) as raised:
            key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=amount_nanos)
        assert (raised.value.field, str(raised.value)) == (refused.field, str(refused))
        return
    before = available(tenant)
    topped = key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=amount_nanos)
    assert before - available(tenant) == quote.wallet_debit_nanos
    assert topped.client_budget_nanos == quote.client_budget_after_nanos


def test_a_top_up_quote_carries_the_refusal_the_top_up_raises(tenant):
    fund(tenant, "70")
    key = prepaid(tenant)
    quote = key_top_up_quote(tenant=tenant, key_id=key.pk, client_amount_nanos=parse_usd("50"))
    assert isinstance(quote.refusal, InsufficientFunds)
    entries = LedgerEntry.objects.filter(wallet__tenant=tenant).count()
    with pytest.raises(InsufficientFunds) as raised:
        key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=50 * 10**9)
    assert str(raised.value) == str(quote.refusal)
    assert nothing_written(tenant, entries)


@pytest.mark.parametrize("amount", [0, -1, 10**18])
def test_a_top_up_quote_refuses_a_bad_amount_as_the_top_up_does(tenant, amount):
    fund(tenant, "200")
    key = prepaid(tenant)
    with pytest.raises(ClientKeyInvalid) as quoted:
        key_top_up_quote(tenant=tenant, key_id=key.pk, client_amount_nanos=amount)
    with pytest.raises(ClientKeyInvalid) as raised:
        key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=amount)
    assert (quoted.value.field, str(quoted.value)) == (raised.value.field, str(raised.value))


def test_a_wallet_funded_or_deleted_key_cannot_be_quoted_a_top_up(tenant):
    fund(tenant, "200")
    wallet_key = key_create(
        tenant=tenant, actor=None, label="w", funding=ClientKey.Funding.WALLET
    ).key
    gone = prepaid(tenant)
    key_delete(tenant=tenant, actor=None, key_id=gone.pk)
    for key in (wallet_key, gone):
        with pytest.raises(ClientKeyStateConflict) as quoted:
            key_top_up_quote(tenant=tenant, key_id=key.pk, client_amount_nanos=10**9)
        with pytest.raises(ClientKeyStateConflict) as raised:
            key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=10**9)
        assert str(quoted.value) == str(raised.value)


def test_another_tenants_key_has_no_quotes(tenant, outsider):
    fund(tenant, "200")
    key = prepaid(tenant)
    other = outsider[0]
    with pytest.raises(ClientKey.DoesNotExist):
        key_top_up_quote(tenant=other, key_id=key.pk, client_amount_nanos=10**9)
    with pytest.raises(ClientKey.DoesNotExist):
        key_delete_quote(tenant=other, key_id=key.pk)


# ------------------------------------------------------------------------------ deleting


def test_deleting_the_worked_examples_key_quotes_and_refunds_69_48(tenant, price):
    fund(tenant, "200")
    key = prepaid(tenant)
    usage = Usage(input_tokens=20_520_000)  # $20.52 at $1/MTok: $34.20 to the client
    held = reserve(key=key, price=price, request_id="req-1", worst_case=usage)
    settle(key=key, hold=held, price=price, usage=usage)
    key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=parse_usd("50"))

    quote = key_delete_quote(tenant=tenant, key_id=key.pk)
    assert quote.refund_nanos == parse_usd("69.48")
    assert quote.held_nanos == 0
    assert quote.wallet.available_after_nanos == parse_usd("179.48")
    deleted = key_delete(tenant=tenant, actor=None, key_id=key.pk)
    assert deleted.refunded_nanos == quote.refund_nanos
    assert available(tenant) == quote.wallet.available_after_nanos


def test_a_delete_quote_leaves_out_what_requests_in_flight_hold(tenant, price):
    fund(tenant, "200")
    key = prepaid(tenant, "10", "6")
    reserve(key=key, price=price, request_id="req-1", worst_case=Usage(input_tokens=1_000_000))
    key.refresh_from_db()
    quote = key_delete_quote(tenant=tenant, key_id=key.pk)
    assert quote.held_nanos == parse_usd("1")
    assert quote.refund_nanos == parse_usd("5")
    assert key_delete(tenant=tenant, actor=None, key_id=key.pk).refunded_nanos == parse_usd("5")


def test_a_wallet_funded_key_refunds_nothing(tenant):
    key = key_create(tenant=tenant, actor=None, label="w", funding=ClientKey.Funding.WALLET).key
    quote = key_delete_quote(tenant=tenant, key_id=key.pk)
    assert (quote.refund_nanos, quote.held_nanos) == (0, 0)
    assert key_delete(tenant=tenant, actor=None, key_id=key.pk).refunded_nanos == 0


def test_a_deleted_key_cannot_be_quoted_a_delete(tenant):
    fund(tenant, "200")
    key = prepaid(tenant)
    key_delete(tenant=tenant, actor=None, key_id=key.pk)
    with pytest.raises(ClientKeyStateConflict) as quoted:
        key_delete_quote(tenant=tenant, key_id=key.pk)
    with pytest.raises(ClientKeyStateConflict) as raised:
        key_delete(tenant=tenant, actor=None, key_id=key.pk)
    assert str(quoted.value) == str(raised.value)
