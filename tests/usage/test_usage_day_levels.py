"""The tenant-wide daily levels (``UsageKeyDay``, ``UsageModelDay``, ``UsageTagDay``) and the
keys' monthly level (``UsageKeyMonth``): a tenant's daily rows summed per key, per model and
per tag, and per key and local month, kept equal to the daily rows regrouped through passes,
late traces, zone changes and retention, audited by ``rollup_usage --check``, and read by
the reports over all the tenant's keys, which answer exactly what the daily rows and the
raw traces say."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F, Model, Sum
from django.test.utils import CaptureQueriesContext

from accounts.models import Tenant
from keys.models import ClientKey
from tests.keys.factories import WalletKeyFactory
from tests.usage.factories import TraceFactory
from tests.usage.test_usage_days import MARCH, set_zone, write_traces
from usage.models import (
    DAY_LEVELS,
    ROLLUP_SUMS,
    Trace,
    UsageDay,
    UsageDayState,
    UsageKeyMonth,
    UsageTagDay,
)
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


def month_rows(tenant: Tenant) -> dict[tuple, dict[str, int]]:
    rows = UsageKeyMonth.objects.filter(tenant=tenant).values(
        "month", "zone", "client_key_id", *ROLLUP_SUMS
    )
    return {
        (r["month"], r["zone"], r["client_key_id"]): {n: r[n] for n in ROLLUP_SUMS} for r in rows
    }


def daily_rows_per_month(tenant: Tenant) -> dict[tuple, dict[str, int]]:
    """The tenant's daily rows summed per local month, zone and key, here in Python."""
    months: dict[tuple, dict[str, int]] = {}
    for (day, zone, key_id), sums in regrouped_daily_rows(tenant, "client_key_id").items():
        into = months.setdefault((day.replace(day=1), zone, key_id), dict.fromkeys(ROLLUP_SUMS, 0))
        for name, amount in sums.items():
            into[name] += amount
    return months


def assert_levels_equal_the_daily_rows(*tenants: Tenant) -> None:
    for tenant in tenants:
        assert UsageDay.objects.filter(tenant=tenant).exists()
        for level in DAY_LEVELS:
            assert level_rows(tenant, level) == regrouped_daily_rows(tenant, level.value)
        assert month_rows(tenant) == daily_rows_per_month(tenant)
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
    levels: list[type[Model]] = [*DAY_LEVELS, UsageKeyMonth]
    for level in levels:
        zones = set(level._default_manager.filter(tenant=tenant).values_list("zone", flat=True))
        assert zones == {"Asia/Kolkata"}
        outsiders = level._default_manager.filter(tenant=outsider[0])
        assert set(outsiders.values_list("zone", flat=True)) == {"UTC"}


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


def test_retention_purges_the_keys_months_that_end_before_the_cutoff(tenant, keys, settings):
    set_zone(tenant, "Asia/Kolkata")
    now = datetime(2027, 6, 16, 12, tzinfo=UTC)
    settings.USAGE_ROLLUP_RETENTION_DAYS = 365
    write_traces(keys, datetime(2026, 5, 31, 0, 7, tzinfo=UTC), hours=30)
    write_traces(keys, datetime(2026, 6, 15, 0, 7, tzinfo=UTC), hours=60)
    usage_roll_up()
    june = date(2026, 6, 1)
    assert set(UsageKeyMonth.objects.values_list("month", flat=True)) == {date(2026, 5, 1), june}
    whole_june = month_rows(tenant)

    rollups_purge(now=now)

    # The cutoff (16 June) falls mid-June: June's rows stay whole, May's go.
    assert set(UsageKeyMonth.objects.values_list("month", flat=True)) == {june}
    assert month_rows(tenant) == {k: v for k, v in whole_june.items() if k[0] == june}
    assert rollups_audit(now=now) == []  # a month partly purged is not audited


def test_check_fails_on_a_month_row_that_disagrees(tenant, keys, capsys):
    set_zone(tenant, "Asia/Kathmandu")
    write_traces(keys, datetime.now(tz=UTC) - timedelta(hours=20), hours=10)
    usage_roll_up()
    call_command("rollup_usage", "--check")
    row = UsageKeyMonth.objects.filter(tenant=tenant).order_by("pk")[0]
    UsageKeyMonth.objects.filter(pk=row.pk).update(client_nanos=F("client_nanos") + 1)
    capsys.readouterr()
    with pytest.raises(CommandError, match="1 bucket"):
        call_command("rollup_usage", "--check")
    out = capsys.readouterr().out
    assert "UsageKeyMonth" in out and "client_nanos" in out
    # A monthly row with no daily rows behind it is a difference too.
    UsageKeyMonth.objects.filter(pk=row.pk).update(client_nanos=F("client_nanos") - 1)
    UsageKeyMonth.objects.create(
        tenant=tenant,
        month=row.month.replace(year=2020),
        zone=row.zone,
        client_key=keys[0],
        request_count=1,
    )
    assert [(p.level, p.day) for p in rollups_audit()] == [  # type: ignore[union-attr]
        ("UsageKeyMonth", row.month.replace(year=2020))
    ]


def every_few_hours(keys: list[ClientKey], start: datetime, days: int) -> list[Trace]:
    """A trace every 7 hours 13 minutes for ``days``, on alternating keys, models and tags."""
    return [
        TraceFactory.create(
            client_key=keys[i % len(keys)],
            created_at=start + timedelta(minutes=433 * i),
            model=["a", "b"][i % 2],
            tag=["", "x", "y"][i % 3],
            client_nanos=10**9 + i,
            cost_nanos=7 * i,
        )
        for i in range(days * 24 * 60 // 433)
    ]


@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "America/New_York"])
def test_reports_over_months_read_the_keys_months_and_equal_the_daily_rows(
    tenant, keys, zone, monkeypatch
):
    set_zone(tenant, zone)
    traces = every_few_hours(keys, datetime(2026, 2, 20, 3, tzinfo=UTC), days=75)
    usage_roll_up()
    local = ZoneInfo(zone)
    windows = [
        (datetime(2026, 2, 25, 7, tzinfo=UTC), datetime(2026, 5, 2, 11, 30, tzinfo=UTC)),
        (datetime(2026, 3, 2, tzinfo=local), datetime(2026, 4, 29, 22, tzinfo=local)),
        (datetime(2026, 3, 1, tzinfo=local), datetime(2026, 5, 1, tzinfo=local)),
        (datetime(2026, 3, 14, 5, tzinfo=UTC), datetime(2026, 4, 9, 17, tzinfo=UTC)),
        (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)),
    ]
    with CaptureQueriesContext(connection) as queries:
        with_months = [tenant_wide(tenant, *w) for w in windows]
    assert any('"usage_usagekeymonth"' in q["sql"] for q in queries)

    # The same from the keys' daily level alone, and from the daily rows alone.
    monkeypatch.setattr(UsageWindow, "_months_plan", lambda self, days: (None, [(1, *days)]))
    assert [tenant_wide(tenant, *w) for w in windows] == with_months
    monkeypatch.setattr(UsageWindow, "_daily", lambda self, by: UsageDay)
    assert [tenant_wide(tenant, *w) for w in windows] == with_months
    for (since, until), (report, _, _, earnings) in zip(windows, with_months, strict=True):
        inside = [t for t in traces if since <= t.created_at < until]
        assert {k.key.pk: k.client_nanos for k in report.by_key} == {
            key.pk: sum(t.client_nanos for t in inside if t.client_key_id == key.pk)
            for key in keys
            if any(t.client_key_id == key.pk for t in inside)
        }
        assert {k.figures.key.pk: k.requests for k in earnings.by_key if k.requests} == {
            key.pk: len([t for t in inside if t.client_key_id == key.pk]) for key in keys
        }


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
