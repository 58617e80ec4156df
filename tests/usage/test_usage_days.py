"""The daily rollup level (``UsageDay``): a tenant's 15-minute rows summed per local day in
its time zone, added to by the rollup pass in the same transaction, rebuilt when the tenant
changes zone, audited by ``rollup_usage --check``, and read by the reports for the whole
local days of a window, exact to the nano-dollar in every zone (+5:30, +5:45, DST)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from accounts.models import Tenant
from keys.models import ClientKey
from tests.keys.factories import WalletKeyFactory
from tests.keys.test_concurrency import run_together, successes
from tests.usage.factories import TraceFactory
from usage.models import ROLLUP_SUMS, Trace, UsageDay, UsageDayState, UsageRollup
from usage.selectors import (
    earnings_summary,
    key_usage,
    rollups_audit,
    tag_usage,
    tenant_usage,
)
from usage.services import rollups_purge, usage_roll_up
from usage.sums import UsageWindow, day_start, usage_window

ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "America/Santiago"]
# Around the New York spring-forward day (2026-03-08, 23 hours long) and the Santiago
# autumn day that is 25 hours long (2026-04-04; its clocks go back at midnight).
MARCH = datetime(2026, 3, 7, 0, 7, tzinfo=UTC)
APRIL = datetime(2026, 4, 3, 0, 7, tzinfo=UTC)


def write_traces(keys: list[ClientKey], start: datetime, hours: int = 96) -> list[Trace]:
    """A trace every 37 minutes for ``hours`` (so every local midnight has traces near it),
    on alternating keys, models and tags, with money that identifies it."""
    written = []
    for i in range(hours * 60 // 37):
        written.append(
            TraceFactory.create(
                client_key=keys[i % len(keys)],
                created_at=start + timedelta(minutes=37 * i, seconds=i % 60),
                model=["a", "b", "c"][i % 3],
                tag=["", "x"][i // 3 % 2],
                status=Trace.Status.UPSTREAM_ERROR if i % 11 == 0 else Trace.Status.OK,
                input_tokens=i,
                cost_nanos=10**9 + i,
                client_nanos=3 * 10**9 + 7 * i,
                ttft_ms=None if i % 5 == 0 else i,
                cache_savings_nanos=11 * i,
                client_cache_savings_nanos=13 * i,
            )
        )
    return written


def day_sums_from_traces(traces: list[Trace], zone: str) -> dict[tuple, dict[str, int]]:
    """What the daily rows must hold, computed here from the traces themselves."""
    sums: dict[tuple, dict[str, int]] = {}
    for t in traces:
        key = (t.created_at.astimezone(ZoneInfo(zone)).date(), t.client_key_id, t.model, t.tag)
        into = sums.setdefault(key, dict.fromkeys(ROLLUP_SUMS, 0))
        into["request_count"] += 1
        into["error_count"] += t.status == Trace.Status.UPSTREAM_ERROR
        into["input_tokens"] += t.input_tokens
        into["output_tokens"] += t.output_tokens
        into["cached_input_tokens"] += t.cached_input_tokens
        into["cache_write_tokens"] += t.cache_write_tokens
        into["cost_nanos"] += t.cost_nanos
        into["client_nanos"] += t.client_nanos
        into["latency_ms_sum"] += t.latency_ms
        into["ttft_ms_sum"] += t.ttft_ms or 0
        into["ttft_count"] += t.ttft_ms is not None
        into["cache_savings_nanos"] += t.cache_savings_nanos
        into["client_cache_savings_nanos"] += t.client_cache_savings_nanos
    return sums


def day_rows(tenant: Tenant) -> dict[tuple, dict[str, int]]:
    rows = UsageDay.objects.filter(tenant=tenant).values(
        "day", "client_key_id", "model", "tag", "zone", *ROLLUP_SUMS
    )
    assert {r["zone"] for r in rows} <= {tenant.timezone}
    return {
        (r["day"], r["client_key_id"], r["model"], r["tag"]): {n: r[n] for n in ROLLUP_SUMS}
        for r in rows
    }


def set_zone(tenant: Tenant, zone: str) -> None:
    tenant.timezone = zone
    tenant.save(update_fields=["timezone"])


@pytest.fixture
def keys(tenant) -> list[ClientKey]:
    return [WalletKeyFactory.create(tenant=tenant) for _ in range(2)]


# --------------------------------------------------------------------------- days


def test_a_days_first_instant_in_every_kind_of_zone():
    assert day_start(date(2026, 3, 8), ZoneInfo("Asia/Kolkata")) == datetime(
        2026, 3, 7, 18, 30, tzinfo=UTC
    )
    assert day_start(date(2026, 3, 8), ZoneInfo("Asia/Kathmandu")) == datetime(
        2026, 3, 7, 18, 15, tzinfo=UTC
    )
    # Santiago's clocks go forward at midnight: 2026-09-06 starts at 01:00 local.
    santiago = ZoneInfo("America/Santiago")
    start = day_start(date(2026, 9, 6), santiago)
    assert start.astimezone(santiago).date() == date(2026, 9, 6)
    assert (start - timedelta(microseconds=1)).astimezone(santiago).date() == date(2026, 9, 5)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("start", [MARCH, APRIL], ids=["march", "april"])
def test_daily_rows_equal_the_traces_per_local_day(tenant, keys, zone, start):
    set_zone(tenant, zone)
    traces = write_traces(keys, start)
    usage_roll_up(batch_size=7)  # many batches: each adds into the daily rows

    assert day_rows(tenant) == day_sums_from_traces(traces, zone)
    assert UsageDayState.objects.get(tenant=tenant).zone == zone
    call_command("rollup_usage", "--check")


@pytest.mark.parametrize("zone", ZONES[1:])
def test_a_zone_change_rebuilds_the_daily_rows_and_reports_stay_exact(tenant, keys, zone):
    traces = write_traces(keys, MARCH)
    usage_roll_up()
    assert day_rows(tenant) == day_sums_from_traces(traces, "UTC")
    window: dict[str, datetime] = {
        "since": MARCH - timedelta(days=1),
        "until": MARCH + timedelta(days=5),
    }

    set_zone(tenant, zone)
    # Not rebuilt yet: the report in the new zone reads the 15-minute rows.
    before = key_usage(
        tenant=tenant, key_id=keys[0].pk, since=window["since"], until=window["until"]
    )
    more = write_traces(keys, MARCH + timedelta(hours=7, minutes=3), hours=20)
    usage_roll_up()  # rebuilds in the new zone first, then adds the new traces into it

    assert UsageDayState.objects.get(tenant=tenant).zone == zone
    assert day_rows(tenant) == day_sums_from_traces(traces + more, zone)
    call_command("rollup_usage", "--check")
    after = key_usage(
        tenant=tenant, key_id=keys[0].pk, since=window["since"], until=window["until"]
    )
    mine = [t for t in traces + more if t.client_key_id == keys[0].pk]
    assert (
        after.summary.requests
        == len(mine)
        == before.summary.requests + len([t for t in more if t.client_key_id == keys[0].pk])
    )
    assert after.summary.client_nanos == sum(t.client_nanos for t in mine)
    expected_days: dict[date, int] = {}
    for t in mine:
        day = t.created_at.astimezone(ZoneInfo(zone)).date()
        expected_days[day] = expected_days.get(day, 0) + t.client_nanos
    assert {d.date: d.client_nanos for d in after.by_day} == expected_days


def reports(tenant: Tenant, key: ClientKey, since: datetime, until: datetime) -> tuple:
    return (
        key_usage(tenant=tenant, key_id=key.pk, since=since, until=until),
        tag_usage(tenant=tenant, since=since, until=until),
        earnings_summary(tenant=tenant, since=since, until=until).window,
    )


@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "America/New_York"])
def test_reports_read_the_daily_rows_and_equal_the_15_minute_path(tenant, keys, zone):
    set_zone(tenant, zone)
    traces = write_traces(keys, MARCH)
    usage_roll_up()
    late = TraceFactory.create(client_key=keys[0], created_at=MARCH + timedelta(hours=30))
    windows = [
        (MARCH - timedelta(days=1), MARCH + timedelta(days=6)),
        (MARCH + timedelta(hours=5, minutes=1, microseconds=3), MARCH + timedelta(hours=77)),
        (MARCH + timedelta(hours=18, minutes=15), MARCH + timedelta(hours=66, minutes=15)),
    ]
    with CaptureQueriesContext(connection) as queries:
        with_days = [reports(tenant, keys[0], *w) for w in windows]
    assert any('"usage_usageday"' in q["sql"] for q in queries)
    assert (
        with_days[0][0].summary.requests
        == 1 + len([t for t in traces if t.client_key_id == keys[0].pk])
        and late.client_key_id == keys[0].pk
    )

    # The same reports with the daily rows out of the way (as in a zone not built).
    UsageDayState.objects.filter(tenant=tenant).update(zone="")
    with CaptureQueriesContext(connection) as queries:
        fifteen_minute_only = [reports(tenant, keys[0], *w) for w in windows]
    assert not any('"usage_usageday"' in q["sql"] for q in queries)
    assert with_days == fifteen_minute_only

    # And they really come from the daily rows: a tampered one shows.
    UsageDayState.objects.filter(tenant=tenant).update(zone=zone)
    UsageDay.objects.filter(tenant=tenant, client_key=keys[0]).update(
        client_nanos=F("client_nanos") + 1
    )
    assert reports(tenant, keys[0], *windows[0])[0] != with_days[0][0]


def test_a_window_in_another_zone_reads_the_15_minute_rows_exactly(tenant, keys):
    set_zone(tenant, "Asia/Kolkata")
    traces = write_traces(keys, MARCH)
    usage_roll_up()
    since, until = MARCH - timedelta(days=1), MARCH + timedelta(days=6)
    for zone in ("Asia/Kolkata", "Asia/Kathmandu", "UTC"):
        window = usage_window(tenant=tenant, since=since, until=until, zone=ZoneInfo(zone))
        with CaptureQueriesContext(connection) as queries:
            per_day = window.grouped_by_day()
        assert any('"usage_usagemodelday"' in q["sql"] for q in queries) == (zone == "Asia/Kolkata")
        expected: dict[date, int] = {}
        for t in traces:
            day = t.created_at.astimezone(ZoneInfo(zone)).date()
            expected[day] = expected.get(day, 0) + t.client_nanos
        assert {day: sums["client_nanos"] for day, sums in per_day.items()} == expected
        assert sum(sums["requests"] for sums in per_day.values()) == len(traces)


def signed_plans(monkeypatch) -> list:
    """The plans of the windows summed from now on (``UsageWindow._plan``), as made."""
    plans: list = []
    make = UsageWindow._plan

    def recorded(window: UsageWindow):
        plans.append(make(window))
        return plans[-1]

    monkeypatch.setattr(UsageWindow, "_plan", recorded)
    return plans


def key_and_tenant_reports(tenant: Tenant, key: ClientKey, since: datetime, until: datetime):
    return (
        key_usage(tenant=tenant, key_id=key.pk, since=since, until=until),
        tenant_usage(tenant=tenant, since=since, until=until),
        earnings_summary(tenant=tenant, since=since, until=until).by_month,
    )


@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "America/New_York"])
def test_a_partial_day_read_as_its_daily_row_less_the_rest_is_exact(
    tenant, keys, zone, monkeypatch
):
    set_zone(tenant, zone)
    traces = write_traces(keys, MARCH, hours=60)
    usage_roll_up()
    local = ZoneInfo(zone)
    midnight = day_start(MARCH.astimezone(local).date() + timedelta(days=1), local)
    # Edges a few minutes to many hours from a local midnight, inside buckets and on them.
    edges = [midnight + timedelta(minutes=m) for m in (-905, -37, -15, 0, 20, 45, 370, 1300)]
    windows = [(a, b) for a in edges for b in edges if a < b]
    windows += [(a, b + timedelta(days=1)) for a, b in windows]
    plans = signed_plans(monkeypatch)
    reports = [key_and_tenant_reports(tenant, keys[0], a, b) for a, b in windows]
    assert any(sign < 0 for plan in plans for sign, _, _ in plan.buckets)

    # The same without taking anything off: every partial day from its 15-minute rows.
    monkeypatch.setattr(UsageWindow, "_subtracts", lambda self, start, now: False)
    assert [key_and_tenant_reports(tenant, keys[0], a, b) for a, b in windows] == reports
    for (since, until), (mine, everything, _) in zip(windows, reports, strict=True):
        inside = [t for t in traces if since <= t.created_at < until]
        assert everything.summary.client_nanos == sum(t.client_nanos for t in inside)
        assert everything.summary.requests == len(inside)
        assert {k.key.pk for k in everything.by_key} == {t.client_key_id for t in inside}
        assert mine.summary.requests == len([t for t in inside if t.client_key_id == keys[0].pk])


def test_no_day_is_read_less_15_minute_rows_the_retention_purged(tenant, keys, settings):
    """The daily row of the day the cutoff falls in outlives the 15-minute rows before it."""
    set_zone(tenant, "Asia/Kolkata")
    settings.USAGE_ROLLUP_RETENTION_DAYS = 30
    kolkata = ZoneInfo("Asia/Kolkata")
    day = (datetime.now(tz=UTC) - timedelta(days=40)).astimezone(kolkata).date()
    cutoff = day_start(day, kolkata) + timedelta(hours=2)
    traces = write_traces(keys, day_start(day, kolkata), hours=48)
    usage_roll_up()
    rollups_purge(now=cutoff + timedelta(days=30))
    assert UsageDay.objects.filter(day=day).exists()

    # Three hours into the day: the rest of it is longer than the part before the window.
    since, until = cutoff + timedelta(hours=1), day_start(day + timedelta(days=2), kolkata)
    everything = tenant_usage(tenant=tenant, since=since, until=until)
    assert everything.summary.client_nanos == sum(
        t.client_nanos for t in traces if since <= t.created_at < until
    )


def test_a_new_tenant_and_existing_rollups_are_built_by_the_first_pass(tenant, keys, outsider):
    set_zone(tenant, "Asia/Kathmandu")
    traces = write_traces(keys, MARCH, hours=30)
    usage_roll_up()
    # As if the rollups predated the daily level: no state, no daily rows.
    UsageDay.objects.all().delete()
    UsageDayState.objects.all().delete()
    usage_roll_up()
    assert day_rows(tenant) == day_sums_from_traces(traces, "Asia/Kathmandu")
    assert dict(UsageDayState.objects.values_list("tenant_id", "zone")) == {
        tenant.pk: "Asia/Kathmandu",
        outsider[0].pk: "UTC",
    }


def test_check_fails_on_a_daily_row_that_disagrees(tenant, keys, capsys):
    set_zone(tenant, "Asia/Kolkata")
    write_traces(keys, datetime.now(tz=UTC) - timedelta(hours=20), hours=10)
    usage_roll_up()
    call_command("rollup_usage", "--check")
    row = UsageDay.objects.filter(tenant=tenant).order_by("day", "pk")[0]
    UsageDay.objects.filter(pk=row.pk).update(request_count=F("request_count") + 2)
    capsys.readouterr()
    # The row, the key's, model's and tag's day it is part of (the levels regroup it), and
    # the key's month.
    with pytest.raises(CommandError, match="5 bucket"):
        call_command("rollup_usage", "--check")
    assert "request_count" in capsys.readouterr().out
    # A daily row in a zone other than the tenant's built one is a difference too.
    UsageDay.objects.filter(pk=row.pk).update(
        request_count=F("request_count") - 2, zone="Asia/Kathmandu"
    )
    with pytest.raises(CommandError, match="10 bucket"):
        call_command("rollup_usage", "--check")


def test_rollup_retention_removes_whole_days_only(tenant, keys, settings):
    set_zone(tenant, "Asia/Kolkata")
    now = datetime(2027, 6, 1, 12, tzinfo=UTC)
    settings.USAGE_ROLLUP_RETENTION_DAYS = 365
    cutoff = now - timedelta(days=365)
    traces = write_traces(keys, cutoff - timedelta(days=2), hours=96)
    usage_roll_up()

    rollups_purge(now=now)

    assert not UsageRollup.objects.filter(bucket_start__lt=cutoff).exists()
    cutoff_day = cutoff.astimezone(ZoneInfo("Asia/Kolkata")).date()  # partly before the cutoff
    assert min(UsageDay.objects.values_list("day", flat=True)) == cutoff_day
    kept = [
        t for t in traces if t.created_at.astimezone(ZoneInfo("Asia/Kolkata")).date() > cutoff_day
    ]
    assert {k: v for k, v in day_rows(tenant).items() if k[0] > cutoff_day} == (
        day_sums_from_traces(kept, "Asia/Kolkata")
    )
    assert rollups_audit(now=now) == []  # the day the cutoff falls in is not audited


# -------------------------------------------------------------------- concurrency


@pytest.mark.postgres
def test_passes_and_zone_changes_racing_never_double_count(transactional_db, tenant):
    keys = [WalletKeyFactory.create(tenant=tenant) for _ in range(3)]
    traces = [
        TraceFactory.build(
            client_key=keys[i % 3],
            created_at=MARCH + timedelta(minutes=i * 7),
            model=["a", "b"][i % 2],
            client_nanos=i,
        )
        for i in range(900)
    ]
    Trace.objects.bulk_create(traces)
    zones = ["Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "UTC"]

    def work(index: int) -> int:
        rolled = 0
        for round_ in range(6):
            if index == 0:  # one thread keeps changing the zone; the others keep rolling up
                Tenant.objects.filter(pk=tenant.pk).update(timezone=zones[round_ % 4])
            rolled += usage_roll_up(batch_size=20, max_batches=8).traces
        return rolled

    outcomes = run_together(4, work)

    assert sorted(s for s, _ in outcomes) == ["ok"] * 4, outcomes
    usage_roll_up()  # the last zone's rebuild, if a racer had not run it
    assert not Trace.objects.filter(is_rolled=False).exists()
    tenant.refresh_from_db()
    assert UsageDayState.objects.get(tenant=tenant).zone == tenant.timezone
    assert day_rows(tenant) == day_sums_from_traces(
        list(Trace.objects.order_by("pk")), tenant.timezone
    )
    assert sum(UsageDay.objects.values_list("client_nanos", flat=True)) == sum(range(900))
    call_command("rollup_usage", "--check")


@pytest.mark.postgres
def test_adds_racing_a_rebuild_in_the_other_order_never_double_count(transactional_db, tenant):
    """Many small passes against a rebuild each time: every add lands exactly once."""
    keys = [WalletKeyFactory.create(tenant=tenant) for _ in range(2)]
    for round_, zone in enumerate(["Asia/Kathmandu", "UTC", "America/Santiago"]):
        Trace.objects.bulk_create(
            [
                TraceFactory.build(
                    client_key=keys[i % 2],
                    created_at=APRIL + timedelta(minutes=i * 13 + round_),
                    client_nanos=10**9 + i,
                )
                for i in range(300)
            ]
        )
        Tenant.objects.filter(pk=tenant.pk).update(timezone=zone)
        outcomes = run_together(3, lambda _: usage_roll_up(batch_size=10).traces)
        assert sorted(s for s, _ in outcomes) == ["ok"] * 3, outcomes
        assert sum(successes(outcomes)) == 300
        tenant.refresh_from_db()
        assert day_rows(tenant) == day_sums_from_traces(list(Trace.objects.all()), zone)
    call_command("rollup_usage", "--check")
