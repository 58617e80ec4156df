"""keys.selectors for the overview: what prepaid keys hold of the wallet's money, and which
keys are near their budget or spend cap. Always beside another tenant's keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.money import Usage, parse_usd
from billing.periods import BudgetPeriod, period_index
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.selectors import keys_near_limit, prepaid_set_aside_nanos
from keys.services import key_create, key_delete, key_update
from tests.keys.factories import WalletKeyFactory
from tests.metering import charge, reserve


def fund(tenant, usd: str) -> None:
    wallet_credit(tenant=tenant, amount_nanos=parse_usd(usd), reason="test funds")


def prepaid(tenant, *, budget: str = "100", cost: str = "60", label: str = "acme") -> ClientKey:
    return key_create(
        tenant=tenant,
        actor=None,
        label=label,
        client_budget_nanos=parse_usd(budget),
        your_cost_nanos=parse_usd(cost),
    ).key


# ------------------------------------------------------------------------------ set aside


@pytest.mark.usefixtures("books_balance")
def test_set_aside_is_what_prepaid_keys_hold_unspent_at_cost(tenant, outsider, price):
    fund(tenant, "300")
    fund(outsider[0], "100")
    assert prepaid_set_aside_nanos(tenant=tenant) == 0

    acme = prepaid(tenant)  # $60 of cost set aside
    # $20.52 of cost spent ($34.20 at client prices): $39.48 left in the key.
    charge(key=acme, price=price, request_id="r1", usage=Usage(input_tokens=20_520_000))
    prepaid(outsider[0], budget="50", cost="50")
    key_create(tenant=tenant, actor=None, label="sub", funding=ClientKey.Funding.WALLET)

    assert prepaid_set_aside_nanos(tenant=tenant) == parse_usd("39.48")
    # A hold of a request in flight is still the key's money (it may yet be released).
    reserve(key=acme, price=price, request_id="r2", worst_case=Usage(input_tokens=1_000_000))
    assert prepaid_set_aside_nanos(tenant=tenant) == parse_usd("39.48")
    assert prepaid_set_aside_nanos(tenant=outsider[0]) == parse_usd("50")


@pytest.mark.usefixtures("books_balance")
def test_a_revoked_key_keeps_its_money_set_aside_until_it_is_deleted(tenant, outsider):
    fund(tenant, "300")
    revoked = prepaid(tenant, label="revoked")
    key_update(
        tenant=tenant, actor=None, key_id=revoked.pk, changes={"status": ClientKey.Status.REVOKED}
    )
    expired = prepaid(tenant, budget="10", cost="5", label="expiring")
    ClientKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(hours=1))

    assert prepaid_set_aside_nanos(tenant=tenant) == parse_usd("65")
    key_delete(tenant=tenant, actor=None, key_id=revoked.pk)  # refunds its $60
    assert prepaid_set_aside_nanos(tenant=tenant) == parse_usd("5")


# --------------------------------------------------------------------------- near a limit


def spent(key: ClientKey, usd: str) -> None:
    """Set a prepaid key's client spend (the counter alone: these tests read, never audit)."""
    ClientKey.objects.filter(pk=key.pk).update(client_spent_nanos=parse_usd(usd))


def capped(tenant, *, cap: str, period_spent: str, period: str = BudgetPeriod.NONE, **fields):
    return WalletKeyFactory.create(
        tenant=tenant,
        spend_cap_nanos=parse_usd(cap),
        budget_period=period,
        period_index=period_index(period, timezone.now()),
        period_client_spent_nanos=parse_usd(period_spent),
        **fields,
    )


def test_keys_near_their_budget_or_cap_come_fullest_first(tenant, outsider):
    fund(tenant, "1000")
    fund(outsider[0], "100")
    full = prepaid(tenant, label="full")
    spent(full, "100")
    eighty = prepaid(tenant, label="eighty")
    spent(eighty, "80")
    under = prepaid(tenant, label="under")
    spent(under, "79.999999999")
    cap = capped(tenant, cap="50", period_spent="45", label="cap-90")  # 90 %
    capped(tenant, cap="50", period_spent="39", label="cap-78")
    WalletKeyFactory.create(tenant=tenant, period_client_spent_nanos=parse_usd("1000"))  # no cap
    theirs = prepaid(outsider[0], budget="10", cost="10", label="theirs")
    spent(theirs, "10")

    near = keys_near_limit(tenant=tenant)

    assert [(k.figures.key.pk, k.used_percent, k.is_cap) for k in near.keys] == [
        (full.pk, 100, False),
        (cap.pk, 90, True),
        (eighty.pk, 80, False),
    ]
    assert near.count == 3
    first = near.keys[0]
    assert (first.used_nanos, first.limit_nanos) == (parse_usd("100"), parse_usd("100"))
    assert (near.keys[1].used_nanos, near.keys[1].limit_nanos) == (
        parse_usd("45"),
        parse_usd("50"),
    )


def test_only_active_keys_in_their_current_period_are_near_a_limit(tenant, outsider):
    fund(tenant, "1000")
    revoked = prepaid(tenant, label="revoked")
    spent(revoked, "95")
    key_update(
        tenant=tenant, actor=None, key_id=revoked.pk, changes={"status": ClientKey.Status.REVOKED}
    )
    expired = prepaid(tenant, label="expired")
    spent(expired, "95")
    ClientKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    # Yesterday's spend of a daily cap does not count today (key_figures' period_spent).
    stale = capped(tenant, cap="10", period_spent="10", period=BudgetPeriod.DAILY)
    ClientKey.objects.filter(pk=stale.pk).update(period_index=stale.period_index - 1)
    today = capped(tenant, cap="10", period_spent="9", period=BudgetPeriod.DAILY)

    near = keys_near_limit(tenant=tenant)

    assert [k.figures.key.pk for k in near.keys] == [today.pk]
    assert near.keys[0].figures.key.budget_period == BudgetPeriod.DAILY


def test_near_limit_shows_the_fullest_few_and_counts_them_all(tenant):
    keys = [capped(tenant, cap="100", period_spent=str(81 + n)) for n in range(12)]

    near = keys_near_limit(tenant=tenant, limit=10)

    assert near.count == 12
    assert [k.figures.key.pk for k in near.keys] == [k.pk for k in reversed(keys)][:10]


@pytest.mark.parametrize("count", [3, 30])
def test_near_limit_reads_two_queries_however_many_keys(tenant, count):
    for n in range(count):
        capped(tenant, cap="100", period_spent=str(99 - n % 20))

    with CaptureQueriesContext(connection) as queries:
        keys_near_limit(tenant=tenant)
    assert len(queries) == 2
