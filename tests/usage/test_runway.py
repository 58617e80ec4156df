"""usage.selectors: many keys' spend at once, and each key's runway at its last 7 days' pace."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.money import parse_usd
from keys.models import ClientKey
from keys.selectors import key_figures
from tests.keys.factories import WalletKeyFactory
from tests.usage.conftest import trace
from usage.selectors import key_runways, keys_spend, runway_days


@pytest.mark.parametrize(
    ("remaining", "spent", "days_left"),
    [
        ("65.80", "34.20", 13),  # 65.80 × 7 / 34.20 = 13.47 → 13 whole days
        ("10", "70", 1),
        ("9.99", "70", 0),
        ("0", "5", 0),
        ("5", "0", None),  # idle
    ],
)
def test_runway_is_whole_days_at_the_windows_pace(remaining, spent, days_left):
    assert (
        runway_days(
            remaining_nanos=parse_usd(remaining), window_spent_nanos=parse_usd(spent), days=7
        )
        == days_left
    )


def test_nothing_but_the_wallet_bounding_a_key_has_no_runway():
    assert runway_days(remaining_nanos=None, window_spent_nanos=10, days=7) is None


def test_keys_spend_answers_many_keys_in_as_many_queries_as_one(tenant, outsider):
    now = timezone.now()
    keys = [WalletKeyFactory.create(tenant=tenant) for _ in range(12)]
    for n, key in enumerate(keys):
        trace(key, at=now - timedelta(days=2), cost_nanos=n, client_nanos=10 * n)
        trace(key, at=now - timedelta(days=9), cost_nanos=1, client_nanos=1)  # before the window
    theirs = WalletKeyFactory.create(tenant=outsider[0])
    trace(theirs, at=now - timedelta(days=1), cost_nanos=5, client_nanos=5)

    def spend(key_ids: list[int]) -> tuple[dict[int, int], int]:
        with CaptureQueriesContext(connection) as queries:
            totals = keys_spend(
                tenant=tenant, key_ids=key_ids, since=now - timedelta(days=7), until=now
            )
        return {pk: t.client_nanos for pk, t in totals.items()}, len(queries)

    one, one_queries = spend([keys[3].pk])
    many, many_queries = spend([k.pk for k in keys] + [theirs.pk])
    assert one == {keys[3].pk: 30}
    assert many == {k.pk: 10 * n for n, k in enumerate(keys)}  # not the outsider's key
    assert many_queries == one_queries


def test_a_keys_runway_follows_its_remaining_cap_and_its_weeks_spend(tenant):
    now = timezone.now()
    capped = WalletKeyFactory.create(tenant=tenant, spend_cap_nanos=parse_usd("100"))
    uncapped = WalletKeyFactory.create(tenant=tenant)
    idle = WalletKeyFactory.create(tenant=tenant, spend_cap_nanos=parse_usd("100"))
    revoked = WalletKeyFactory.create(
        tenant=tenant, spend_cap_nanos=parse_usd("100"), status=ClientKey.Status.REVOKED
    )
    for key in (capped, uncapped, revoked):
        trace(key, at=now - timedelta(days=3), cost_nanos=1, client_nanos=parse_usd("35"))
    ClientKey.objects.filter(pk=capped.pk).update(period_client_spent_nanos=parse_usd("30"))
    capped.refresh_from_db()

    figures = [key_figures(key=k) for k in (capped, uncapped, idle, revoked)]
    runways = key_runways(tenant=tenant, figures=figures, now=now)
    assert runways[capped.pk].window_client_nanos == parse_usd("35")
    assert runways[capped.pk].days_left == 14  # $70 left at $5 a day
    assert runways[uncapped.pk].days_left is None
    assert runways[idle.pk].days_left is None
    assert runways[revoked.pk].days_left is None
