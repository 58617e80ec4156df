"""The tenant-wide daily levels (``UsageKeyDay``, ``UsageModelDay``, ``UsageTagDay``): a
tenant's daily rows summed per key, per model and per tag, kept equal to the daily rows
regrouped through passes, late traces, zone changes and retention, audited by
``rollup_usage --check``, and read by the reports over all the tenant's keys, which answer
exactly what the daily rows and the raw traces say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F, Sum
from django.test.utils import CaptureQueriesContext

from accounts.models import Tenant
from keys.models import ClientKey
from tests.keys.factories import WalletKeyFactory
from tests.usage.factories import TraceFactory
from tests.usage.test_usage_days import MARCH, set_zone, write_traces
from usage.models import DAY_LEVELS, ROLLUP_SUMS, Trace, UsageDay, UsageDayState, UsageTagDay
from usage.selectors import (
    earnings_summary,
    key_usage,
    rollups_audit,
    tag_usage,
    tenant_usage,
)
from usage.services import _day_level_from_sql, rollups_purge, usage_roll_up
from usage.sums import UsageWindow

LEVEL_TABLES = [level._meta.db_table for level in DAY_LEVELS]


def regrouped_daily_rows(tenant: Tenant, value: str) -> dict[tuple, dict[str, int]]:
    """The tenant's daily rows summed per day, zone and ``value``, by the database."""
    rows = (
        UsageDay.objects.filter(tenant=tenant)
        .order_by()
        .values("day", "zone", value)
        .annotate(**{f"{n}__sum": Sum(n) for n in ROLLUP_SUMS})
    )
    return {
        (r["day"], r["zone"], r[value]): {n: int(r[f"{n}__sum"]) for n in ROLLUP_SUMS} for r in rows
    }


def level_rows(tenant: Tenant, level) -> dict[tuple, dict[str, int]]:
    rows = level.objects.filter(tenant=tenant).values("day", "zone", level.value, *ROLLUP_SUMS)
    return {(r["day"], r["zone"], r[level.value]): {n: r[n] for n in ROLLUP_SUMS} for r in rows}


def assert_levels_equal_the_daily_rows(*tenants: Tenant) -> None:
    for tenant in tenants:
        assert UsageDay.objects.filter(tenant=tenant).exists()
        for level in DAY_LEVELS:
            assert level_rows(tenant, level) == regrouped_daily_rows(tenant, level.value)
    assert [p for p in rollups_audit() if type(p).__name__ == "DayLevelProblem"] == []


@pytest.fixture
def keys(tenant) -> list[ClientKey]:
    return [WalletKeyFactory.create(tenant=tenant) for _ in range(3)]


@pytest.fixture
def outsider_keys(outsider) -> list[ClientKey]:
    return [WalletKeyFactory.create(tenant=outsider[0]) for _ in range(2)]


@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "America/Santiago"])
def test_levels_equal_the_daily_rows_through_passes_late_traces_and_zone_changes(
    tenant, keys, outsider, outsider_keys, zone
):
    set_zone(tenant, zone)
    write_traces(keys, MARCH, hours=72)
    write_traces(outsider_keys, MARCH, hours=30)
    usage_roll_up(batch_size=7)  # many small batches, each adding into the same days
    assert_levels_equal_the_daily_rows(tenant, outsider[0])

    # Late traces into days already rolled, on a new model and tag too.
    for i in range(5):
        TraceFactory.create(
            client_key=keys[i % 3],
            created_at=MARCH + timedelta(hours=7 * i, minutes=3),
            model="late-model" if i % 2 else "a",
            tag="late" if i % 3 else "",
            client_nanos=11 + i,
        )
    usage_roll_up()
    assert_levels_equal_the_daily_rows(tenant, outsider[0])
    assert UsageTagDay.objects.filter(tenant=tenant, tag="late").exists()

    # A zone change rebuilds them with the daily rows, in the new zone.
    set_zone(tenant, "Asia/Kolkata")
    usage_roll_up()
    assert_levels_equal_the_daily_rows(tenant, outsider[0])
    for level in DAY_LEVELS:
        zones = set(level.objects.filter(tenant=tenant).values_list("zone", flat=True))
        assert zones == {"Asia/Kolkata"}
        assert set(level.objects.filter(tenant=outsider[0]).values_list("zone", flat=True)) == {
            "UTC"
        }


def test_retention_purges_the_levels_with_the_daily_rows(tenant, keys, settings):
    set_zone(tenant, "Asia/Kolkata")
    now = datetime(2027, 6, 1, 12, tzinfo=UTC)
    settings.USAGE_ROLLUP_RETENTION_DAYS = 365
    cutoff = now - timedelta(days=365)
    write_traces(keys, cutoff - timedelta(days=2), hours=96)
    usage_roll_up()
    before = {level: level.objects.count() for level in DAY_LEVELS}

    rollups_purge(now=now)

    cutoff_day = cutoff.astimezone(ZoneInfo("Asia/Kolkata")).date()
    for level in DAY_LEVELS:
        days = set(level.objects.values_list("day", flat=True))
        assert min(days) == cutoff_day
        assert level.objects.count() < before[level]
    assert_levels_equal_the_daily_rows(tenant)
    assert rollups_audit(now=now) == []


def test_check_fails_on_a_level_row_that_disagrees(tenant, keys, capsys):
    set_zone(tenant, "Asia/Kolkata")
    write_traces(keys, datetime.now(tz=UTC) - timedelta(hours=20), hours=10)
    usage_roll_up()
    call_command("rollup_usage", "--check")
    row = UsageTagDay.objects.filter(tenant=tenant).order_by("day", "pk")[0]
    UsageTagDay.objects.filter(pk=row.pk).update(cost_nanos=F("cost_nanos") + 1)
    capsys.readouterr()
    with pytest.raises(CommandError, match="1 bucket"):
        call_command("rollup_usage", "--check")
    out = capsys.readouterr().out
    assert "UsageTagDay" in out and "cost_nanos" in out
    # A level row with no daily rows behind it is a difference too.
    UsageTagDay.objects.filter(pk=row.pk).update(cost_nanos=F("cost_nanos") - 1)
    UsageTagDay.objects.create(
        tenant=tenant, day=row.day, zone=row.zone, tag="ghost", request_count=1
    )
    assert [p.value for p in rollups_audit()] == ["ghost"]  # type: ignore[union-attr]


def test_the_set_based_statement_adds_into_existing_rows(tenant, keys):
    """``_day_level_from_sql`` over rows already counted adds them again (ON CONFLICT)."""
    set_zone(tenant, "Asia/Kathmandu")
    write_traces(keys, MARCH, hours=30)
    usage_roll_up()
    for level in DAY_LEVELS:
        once = level_rows(tenant, level)
        with connection.cursor() as cursor:
            cursor.execute(_day_level_from_sql(level), [tenant.pk])
        assert level_rows(tenant, level) == {
            key: {n: 2 * v for n, v in sums.items()} for key, sums in once.items()
        }


def tenant_wide(tenant: Tenant, since: datetime, until: datetime) -> tuple:
    return (
        tenant_usage(tenant=tenant, since=since, until=until),
        tag_usage(tenant=tenant, since=since, until=until),
        tag_usage(tenant=tenant, since=since, until=until, sub_accounts_only=True),
        earnings_summary(tenant=tenant, since=since, until=until),
    )


@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "America/New_York"])
def test_tenant_wide_reports_read_the_levels_and_equal_the_daily_rows_and_traces(
    tenant, keys, outsider, outsider_keys, zone, monkeypatch
):
    set_zone(tenant, zone)
    traces = write_traces(keys, MARCH)
    write_traces(outsider_keys, MARCH, hours=40)
    usage_roll_up()
    late = TraceFactory.create(
        client_key=keys[1], created_at=MARCH + timedelta(hours=30), tag="late", client_nanos=5
    )
    traces.append(late)
    windows = [
        (MARCH - timedelta(days=1), MARCH + timedelta(days=6)),
        (MARCH + timedelta(hours=5, minutes=1, microseconds=3), MARCH + timedelta(hours=77)),
        (MARCH + timedelta(hours=18, minutes=15), MARCH + timedelta(hours=66, minutes=15)),
    ]
    with CaptureQueriesContext(connection) as queries:
        with_levels = [tenant_wide(tenant, *w) for w in windows]
    sql = [q["sql"] for q in queries]
    for table in LEVEL_TABLES:
        assert any(f'"{table}"' in q for q in sql), table
    # Only the sub-accounts' tag report (narrowed to keys) still reads the daily rows.
    assert sum('"usage_usageday"' in q for q in sql) == len(windows)

    # The same reports from the daily rows alone (the path before the levels).
    monkeypatch.setattr(UsageWindow, "_daily", lambda self, by: UsageDay)
    with CaptureQueriesContext(connection) as queries:
        from_daily_rows = [tenant_wide(tenant, *w) for w in windows]
    assert not any(f'"{t}"' in q["sql"] for q in queries for t in LEVEL_TABLES)
    assert with_levels == from_daily_rows

    # And from the 15-minute rows (no daily level built): the same again.
    monkeypatch.undo()
    UsageDayState.objects.filter(tenant=tenant).update(zone="")
    assert [tenant_wide(tenant, *w) for w in windows] == with_levels
    UsageDayState.objects.filter(tenant=tenant).update(zone=zone)

    # Against the raw traces: the whole window, per key, model, tag and local day.
    report = with_levels[0][0]
    assert report.summary.requests == len(traces)
    assert report.summary.client_nanos == sum(t.client_nanos for t in traces)
    assert {k.key.pk: k.client_nanos for k in report.by_key} == {
        key.pk: sum(t.client_nanos for t in traces if t.client_key_id == key.pk) for key in keys
    }
    assert {m.model: m.requests for m in report.by_model} == {
        model: len([t for t in traces if t.model == model]) for model in {t.model for t in traces}
    }
    assert {t.tag: t.cost_nanos for t in report.by_tag} == {
        tag: sum(t.cost_nanos for t in traces if t.tag == tag) for tag in {t.tag for t in traces}
    }
    per_day: dict = {}
    for t in traces:
        day = t.created_at.astimezone(ZoneInfo(zone)).date()
        per_day[day] = per_day.get(day, 0) + t.client_nanos
    assert {d.date: d.client_nanos for d in report.by_day} == per_day
    earnings = with_levels[0][3]
    assert earnings.window.client_nanos == sum(t.client_nanos for t in traces)
    assert sum(m.client_nanos for m in earnings.by_month) == earnings.window.client_nanos
    outsider_ids = {k.pk for k in outsider_keys}
    assert not outsider_ids & {k.key.pk for k in report.by_key}
    assert not outsider_ids & {k.figures.key.pk for k in earnings.by_key}

    # They really come from the levels: a tampered level row shows in the tag report only.
    UsageTagDay.objects.filter(tenant=tenant, tag="x").update(client_nanos=F("client_nanos") + 1)
    again = tenant_wide(tenant, *windows[0])
    assert again[1] != with_levels[0][1]
    assert again[0].by_model == report.by_model


def test_a_key_report_keeps_reading_the_daily_rows(tenant, keys):
    set_zone(tenant, "Asia/Kolkata")
    traces = write_traces(keys, MARCH)
    usage_roll_up()
    since, until = MARCH - timedelta(days=1), MARCH + timedelta(days=6)
    with CaptureQueriesContext(connection) as queries:
        report = key_usage(tenant=tenant, key_id=keys[0].pk, since=since, until=until)
    assert any('"usage_usageday"' in q["sql"] for q in queries)
    assert not any(f'"{t}"' in q["sql"] for q in queries for t in LEVEL_TABLES)
    mine = [t for t in traces if t.client_key_id == keys[0].pk]
    assert report.summary.client_nanos == sum(t.client_nanos for t in mine)
    assert report.summary.errors == len(
        [t for t in mine if t.status == Trace.Status.UPSTREAM_ERROR]
    )
