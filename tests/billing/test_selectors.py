"""billing.selectors for the wallet's course: the runway at the recent pace, the balance at
the end of each local day, and the ledger by dates. Beside another tenant's wallet always.

Entries are posted by the real flows; a test that needs them in the past moves their
``created_at`` back (the audit reads amounts and balances, never times)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import LedgerEntry
from billing.money import Usage, parse_usd
from billing.selectors import (
    BALANCE_HISTORY_MAX_DAYS,
    RUNWAY_LOOKBACK_DAYS,
    DayBalance,
    Runway,
    ledger_entries,
    wallet_daily_balances,
    wallet_for_tenant,
    wallet_runway,
)
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.services import key_create, key_delete
from tests.metering import charge

pytestmark = pytest.mark.usefixtures("books_balance")

KOLKATA = ZoneInfo("Asia/Kolkata")
UTC = ZoneInfo("UTC")


def credit(tenant, usd: str, kind: str = LedgerEntry.Kind.MANUAL_CREDIT) -> LedgerEntry:
    return wallet_credit(tenant=tenant, amount_nanos=parse_usd(usd), reason="funds", kind=kind)


def prepaid(tenant, budget: str, cost: str) -> ClientKey:
    return key_create(
        tenant=tenant,
        actor=None,
        label="acme",
        client_budget_nanos=parse_usd(budget),
        your_cost_nanos=parse_usd(cost),
    ).key


def move(entries, at: datetime) -> None:
    LedgerEntry.objects.filter(pk__in=[e.pk for e in entries]).update(created_at=at)


def newest(tenant) -> LedgerEntry:
    return ledger_entries(tenant=tenant)[0]


# -------------------------------------------------------------------------------- runway


def test_the_runway_is_available_money_over_the_last_weeks_daily_draw(tenant, outsider, price):
    credit(tenant, "200")
    prepaid(tenant, "100", "60")  # key funding: $60 drawn
    sub = key_create(tenant=tenant, actor=None, label="sub", funding="wallet").key
    charge(key=sub, price=price, request_id="r1", usage=Usage(input_tokens=10_000_000))  # $10
    credit(outsider[0], "100")
    prepaid(outsider[0], "90", "90")

    runway = wallet_runway(tenant=tenant)

    # $130 available; $70 drawn in 7 days is $10 a day: 13 days.
    assert runway == Runway(
        available_nanos=parse_usd("130"), drawn_nanos=parse_usd("70"), lookback_days=7
    )
    assert runway.daily_nanos == parse_usd("10")
    assert runway.days == 13


def test_the_runway_rounds_down_to_whole_days(tenant, outsider):
    credit(tenant, "100")
    prepaid(tenant, "30", "30")  # $70 left at $30 / 7 a day: 16.33 days

    runway = wallet_runway(tenant=tenant)

    assert runway.days == 16
    assert runway.daily_nanos == parse_usd("4.285714286")  # half up to the nano-dollar


def test_top_ups_refunds_and_adjustments_are_no_draw(tenant, outsider):
    credit(tenant, "100", LedgerEntry.Kind.TOP_UP)
    credit(tenant, "-5", LedgerEntry.Kind.ADJUSTMENT)
    key = prepaid(tenant, "20", "20")
    key_delete(tenant=tenant, actor=None, key_id=key.pk)  # refunds $20, not netted off

    runway = wallet_runway(tenant=tenant)

    assert runway.drawn_nanos == parse_usd("20")
    assert runway.available_nanos == parse_usd("95")
    assert runway.days == 33  # 95 × 7 / 20 = 33.25


def test_without_a_draw_in_the_look_back_there_is_no_runway(tenant, outsider):
    credit(tenant, "100")
    assert wallet_runway(tenant=tenant).days is None

    prepaid(tenant, "10", "10")
    move([newest(tenant)], timezone.now() - timedelta(days=RUNWAY_LOOKBACK_DAYS, seconds=1))
    runway = wallet_runway(tenant=tenant)
    assert (runway.drawn_nanos, runway.days) == (0, None)


def test_an_empty_wallet_has_no_days_left(tenant, outsider):
    credit(tenant, "10")
    prepaid(tenant, "10", "10")
    assert wallet_runway(tenant=tenant).days == 0


def test_the_runway_reads_one_query_with_the_wallet_given(tenant, outsider):
    credit(tenant, "10")
    wallet = wallet_for_tenant(tenant=tenant)
    with CaptureQueriesContext(connection) as queries:
        wallet_runway(tenant=tenant, wallet=wallet)
    assert len(queries) == 1


# ---------------------------------------------------------------------- daily balances


def at(day: date, hour: int, zone: ZoneInfo = UTC) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=zone)


def test_the_balance_of_each_day_is_its_last_entrys_carried_over_quiet_days(tenant, outsider):
    now = timezone.now()
    today = now.date()
    d = [today - timedelta(days=n) for n in range(6)]  # d[5] is five days ago
    move([credit(tenant, "100")], at(d[5] - timedelta(days=3), 9))  # before the range
    move([credit(tenant, "50")], at(d[4], 8))
    move([credit(tenant, "5")], at(d[4], 20))  # the day's last: $155
    move([credit(tenant, "-15", LedgerEntry.Kind.ADJUSTMENT)], at(d[2], 12))  # $140
    credit(outsider[0], "999")

    balances = wallet_daily_balances(tenant=tenant, first_day=d[5], last_day=today, zone=UTC)

    assert balances == [
        DayBalance(d[5], parse_usd("100")),  # the balance before the range's first entry
        DayBalance(d[4], parse_usd("155")),
        DayBalance(d[3], parse_usd("155")),
        DayBalance(d[2], parse_usd("140")),
        DayBalance(d[1], parse_usd("140")),
        DayBalance(d[0], parse_usd("140")),
    ]


def test_days_are_local_to_the_zone_asked(tenant, outsider):
    day = timezone.now().astimezone(KOLKATA).date() - timedelta(days=2)
    # 20:00 UTC is 01:30 the next day in Kolkata.
    move([credit(tenant, "10")], at(day, 20))

    utc = wallet_daily_balances(tenant=tenant, first_day=day, last_day=day, zone=UTC)
    kolkata = wallet_daily_balances(
        tenant=tenant, first_day=day, last_day=day + timedelta(days=1), zone=KOLKATA
    )

    assert utc == [DayBalance(day, parse_usd("10"))]
    assert kolkata == [
        DayBalance(day, 0),
        DayBalance(day + timedelta(days=1), parse_usd("10")),
    ]


def test_a_range_without_entries_holds_the_balance_before_it(tenant, outsider):
    today = timezone.now().date()
    move([credit(tenant, "30")], at(today - timedelta(days=40), 9))
    move([credit(tenant, "12")], at(today - timedelta(days=2), 9))
    first = today - timedelta(days=20)

    balances = wallet_daily_balances(
        tenant=tenant, first_day=first, last_day=first + timedelta(days=1), zone=UTC
    )

    assert balances == [
        DayBalance(first, parse_usd("30")),
        DayBalance(first + timedelta(days=1), parse_usd("30")),
    ]
    assert wallet_daily_balances(tenant=outsider[0], first_day=first, last_day=first, zone=UTC) == [
        DayBalance(first, 0)
    ]


def test_the_history_stops_today_and_at_a_year(tenant, outsider):
    today = timezone.now().date()
    credit(tenant, "1")

    future = wallet_daily_balances(
        tenant=tenant, first_day=today, last_day=today + timedelta(days=5), zone=UTC
    )
    long = wallet_daily_balances(
        tenant=tenant, first_day=today - timedelta(days=5000), last_day=today, zone=UTC
    )

    assert [b.day for b in future] == [today]
    assert len(long) == BALANCE_HISTORY_MAX_DAYS
    assert long[-1] == DayBalance(today, parse_usd("1"))


@pytest.mark.parametrize("entries", [3, 60])
def test_daily_balances_read_one_query_however_long_the_ledger(tenant, outsider, entries):
    today = timezone.now().date()
    for n in range(entries):  # in posting order, over the last 30 days
        move(
            [credit(tenant, "1")], at(today - timedelta(days=(entries - 1 - n) * 30 // entries), 10)
        )

    wallet = wallet_for_tenant(tenant=tenant)
    with CaptureQueriesContext(connection) as queries:
        balances = wallet_daily_balances(
            tenant=tenant,
            first_day=today - timedelta(days=89),
            last_day=today,
            zone=UTC,
            wallet=wallet,
        )
    assert len(queries) == 1
    assert len(balances) == 90
    assert balances[-1].balance_nanos == parse_usd(str(entries))
    assert balances[-31].balance_nanos == 0


# ------------------------------------------------------------------------------- ledger


def test_the_ledger_by_dates_is_half_open(tenant, outsider):
    start = timezone.now() - timedelta(days=3)
    inside, edge, before = credit(tenant, "1"), credit(tenant, "2"), credit(tenant, "3")
    move([inside], start)
    move([edge], start + timedelta(days=1))
    move([before], start - timedelta(microseconds=1))
    credit(outsider[0], "4")

    shown = ledger_entries(tenant=tenant, since=start, until=start + timedelta(days=1))

    assert [e.pk for e in shown] == [inside.pk]
    assert [e.pk for e in ledger_entries(tenant=tenant, since=start)] == [edge.pk, inside.pk]
