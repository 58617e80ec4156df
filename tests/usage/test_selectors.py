"""The lean reports the dashboard's overview reads: ``tenant_daily_usage`` and
``earnings_totals`` answer exactly what the full reports (``tenant_usage``'s ``by_day``,
``earnings_summary``'s window and all-time totals) answer, from raw traces and from
rollups alike, in the tenant's zone or another; never another tenant's."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from billing.money import parse_usd
from tests.keys.factories import WalletKeyFactory
from tests.usage.conftest import trace
from usage.selectors import earnings_summary, earnings_totals, tenant_daily_usage, tenant_usage
from usage.services import usage_roll_up

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def traffic(tenant, outsider):
    """Traces over forty days, at hours that fall on different days in different zones."""
    now = timezone.now()
    mine = [WalletKeyFactory.create(tenant=tenant) for _ in range(3)]
    for n in range(40):
        key = mine[n % 3]
        trace(
            key,
            now - timedelta(days=n, hours=n % 7),
            cost_nanos=parse_usd("1.5") + n,
            client_nanos=parse_usd("2.5") + 3 * n,
        )
    theirs = WalletKeyFactory.create(tenant=outsider[0])
    trace(theirs, now - timedelta(hours=1), cost_nanos=parse_usd("9"), client_nanos=parse_usd("9"))
    # The all-time figures come from the keys' counters.
    for key, (client, cost) in zip(mine, [("10", "6"), ("3", "3"), ("0", "0")], strict=True):
        key.client_spent_nanos, key.cost_spent_nanos = parse_usd(client), parse_usd(cost)
        key.save(update_fields=["client_spent_nanos", "cost_spent_nanos"])


@pytest.mark.parametrize("rolled", [False, True])
@pytest.mark.parametrize("zone", [None, NEW_YORK])
def test_the_lean_reports_equal_the_full_ones(tenant, traffic, rolled, zone):
    if rolled:
        usage_roll_up()
    now = timezone.now()
    local = now.astimezone(zone or tenant.zone)
    month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    since = month_start - timedelta(days=33)

    days = tenant_daily_usage(tenant=tenant, since=since, until=now, zone=zone)
    totals = earnings_totals(tenant=tenant, since=since, until=now, zone=zone)

    assert days == tenant_usage(tenant=tenant, since=since, until=now, zone=zone).by_day
    assert len(days) > 30
    full = earnings_summary(tenant=tenant, since=since, until=now, zone=zone)
    assert totals.window == full.window
    assert totals.window.requests == sum(d.requests for d in days) > 30
    assert (totals.all_time_client_nanos, totals.all_time_cost_nanos) == (
        full.all_time_client_nanos,
        full.all_time_cost_nanos,
    )
    assert totals.all_time_profit_nanos == parse_usd("4") == full.all_time_profit_nanos


def test_a_tenant_without_traffic_has_empty_reports(traffic, make_reseller):
    quiet, _ = make_reseller()
    now = timezone.now()

    assert tenant_daily_usage(tenant=quiet, since=now - timedelta(days=30), until=now) == []
    totals = earnings_totals(tenant=quiet, since=now - timedelta(days=30), until=now)
    assert (totals.window.requests, totals.window.client_nanos) == (0, 0)
    assert (totals.all_time_client_nanos, totals.all_time_profit_nanos) == (0, 0)
