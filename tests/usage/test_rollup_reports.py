"""The reports read rollups plus the raw tail, and stay exact to the nano-dollar, in any
time zone.

A property test: random traces at random times (some written after their bucket was rolled
up), random rollup passes and purges interleaved, then random windows in a random time zone.
Every report must equal the sums computed here, independently, from the generated traces
(each one's local day and month found by converting its time to the zone in Python): each
trace in the window counts, except a purged one at a window edge inside a bucket (its
bucket's rollup is not used there, and its trace is gone): the documented rule of
``usage.selectors``.

The traces fall in two stretches of time: one across Europe/London's return to winter time
(2026-10-25 01:00 UTC), one across the turn of October into November in every zone tested
and America/St_Johns's return to winter time (a local day of 25 hours). The zones include
offsets of +5:30 (Asia/Kolkata), +5:45 (Asia/Kathmandu), -2:30 (America/St_Johns) and
Australia/Lord_Howe's +11 (half an hour of daylight saving).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import usage.sums
from keys.models import ClientKey
from tests.keys.factories import WalletKeyFactory
from tests.usage.factories import TraceFactory
from usage.models import DAY_LEVELS, Trace, UsageDay, UsageKeyMonth, UsageRollup
from usage.selectors import (
    DayUsage,
    ModelUsage,
    MonthUsage,
    TagUsage,
    UsageTotals,
    earnings_summary,
    key_usage,
    tag_usage,
    tenant_usage,
)
from usage.services import traces_purge, usage_roll_up

# Ten hours across London's DST change, and thirty across the month's turn everywhere.
STRETCHES = [
    (datetime(2026, 10, 24, 20, tzinfo=UTC), 10),
    (datetime(2026, 10, 31, 12, tzinfo=UTC), 30),
]
BUCKET = timedelta(minutes=15)
RETENTION_DAYS = 30
# The purges run at a "now" that puts the traces before November (UTC) past their
# retention (they are purged once rolled) and keeps the later ones.
CUTOFF = datetime(2026, 11, 1, tzinfo=UTC)
PURGE_NOW = CUTOFF + timedelta(days=RETENTION_DAYS)
ERRORS = {Trace.Status.UPSTREAM_ERROR, Trace.Status.REFUSED}
ZONES = [
    "UTC",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "Europe/London",
    "America/Los_Angeles",
]


def _in_stretch(start: datetime, hours: int) -> st.SearchStrategy[datetime]:
    """Times anywhere in a stretch, or on a bucket edge (and a microsecond either side)."""
    span = hours * 3_600 * 10**6
    return st.one_of(
        st.integers(0, span - 1).map(lambda us: start + timedelta(microseconds=us)),
        st.builds(
            lambda quarter, nudge: start + quarter * BUCKET + timedelta(microseconds=nudge),
            st.integers(0, hours * 4),
            st.sampled_from([-1, 0, 1]),
        ),
    )


moments = st.one_of(*(_in_stretch(start, hours) for start, hours in STRETCHES))


@dataclass(frozen=True)
class Written:
    key: int  # 0 and 1: the tenant's keys; 2: the outsider's
    at: datetime
    model: str
    tag: str
    status: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cost_nanos: int
    client_nanos: int
    cache_savings_nanos: int
    client_cache_savings_nanos: int


traces = st.builds(
    Written,
    key=st.integers(0, 2),
    at=moments,
    model=st.sampled_from(["a", "b", "B"]),
    tag=st.sampled_from(["", "x"]),
    status=st.sampled_from(list(Trace.Status)),
    input_tokens=st.integers(0, 10**6),
    output_tokens=st.integers(0, 10**6),
    cached_input_tokens=st.integers(0, 10**3),
    cache_write_tokens=st.integers(0, 10**3),
    cost_nanos=st.integers(0, 10**15),
    client_nanos=st.integers(0, 10**15),
    cache_savings_nanos=st.integers(0, 10**15),
    client_cache_savings_nanos=st.integers(0, 10**15),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.lists(traces, min_size=1, max_size=6)),
        st.tuples(st.just("roll"), st.integers(1, 8)),
        st.tuples(st.just("purge"), st.none()),
    ),
    max_size=10,
)


@st.composite
def zoned_windows(draw: st.DrawFn) -> tuple[ZoneInfo, list[tuple[datetime, datetime]]]:
    """A zone, and windows whose edges are any moment or a local midnight in that zone (some
    far enough for whole or nearly whole local months)."""
    zone = ZoneInfo(draw(st.sampled_from(ZONES)))
    local_midnights = st.sampled_from(
        [date(2026, 10, day) for day in (1, 3, *range(23, 32))]
        + [date(2026, 11, day) for day in (1, 2, 29)]
        + [date(2026, 9, 29), date(2026, 12, 1)]
    ).map(lambda day: datetime.combine(day, time.min, tzinfo=zone))
    edges = st.one_of(moments, local_midnights)
    windows = draw(
        st.lists(
            st.tuples(edges, edges).filter(lambda w: w[0] != w[1]).map(sorted),
            min_size=1,
            max_size=3,
        )
    )
    return zone, [(since, until) for since, until in windows]


def bucket_floor(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at - timedelta(minutes=at.minute % 15, seconds=at.second, microseconds=at.microsecond)


def bucket_ceiling(at: datetime) -> datetime:
    start = bucket_floor(at)
    return start if start == at else start + BUCKET


def totals(rows: list[Written]) -> dict[str, int]:
    return {
        "requests": len(rows),
        "errors": sum(r.status in ERRORS for r in rows),
        "input_tokens": sum(r.input_tokens for r in rows),
        "output_tokens": sum(r.output_tokens for r in rows),
        "cached_input_tokens": sum(r.cached_input_tokens for r in rows),
        "cache_write_tokens": sum(r.cache_write_tokens for r in rows),
        "cost_nanos": sum(r.cost_nanos for r in rows),
        "client_nanos": sum(r.client_nanos for r in rows),
        "cache_savings_nanos": sum(r.cache_savings_nanos for r in rows),
        "client_cache_savings_nanos": sum(r.client_cache_savings_nanos for r in rows),
    }


def grouped(rows: list[Written], by) -> dict[object, dict[str, int]]:
    groups: dict[object, list[Written]] = {}
    for row in rows:
        groups.setdefault(by(row), []).append(row)
    return {value: totals(members) for value, members in groups.items()}


def largest_first(per_value: dict[object, dict[str, int]]) -> list[tuple[object, dict[str, int]]]:
    return sorted(per_value.items(), key=lambda item: (-item[1]["client_nanos"], item[0]))


def counted(written: list[tuple[Written, bool]], since: datetime, until: datetime) -> list[Written]:
    """The traces a report of [since, until) must count: every one in it, but a purged one
    only inside the window's whole buckets (where its rollup stands for it)."""
    first, last = bucket_ceiling(since), bucket_floor(until)
    return [
        trace
        for trace, purged in written
        if since <= trace.at < until and (not purged or first <= trace.at < last)
    ]


def per_day(rows: list[Written], zone: ZoneInfo) -> list[DayUsage]:
    days = grouped(rows, lambda t: t.at.astimezone(zone).date())
    return [DayUsage(date=day, **days[day]) for day in sorted(days)]  # type: ignore[arg-type, type-var]


def assert_reports_equal_the_traces(keys, tenant, written, zone, since, until) -> None:
    ours = counted([(t, p) for t, p in written if t.key < 2], since, until)
    window = {"since": since, "until": until, "zone": zone}
    for index in (0,):  # the other key: tenant_usage().by_key
        mine = [t for t in ours if t.key == index]
        report = key_usage(tenant=tenant, key_id=keys[index].pk, **window)
        assert report.summary == UsageTotals(**totals(mine))
        assert report.by_model == [
            ModelUsage(model=str(m), **sums)
            for m, sums in largest_first(grouped(mine, lambda t: t.model))
        ]
        assert report.by_day == per_day(mine, zone)
        assert all(type(d.date) is date for d in report.by_day)
    by_tag = [
        TagUsage(tag=str(tag), **sums)
        for tag, sums in largest_first(grouped(ours, lambda t: t.tag))
    ]
    assert tag_usage(tenant=tenant, since=since, until=until) == by_tag

    everything = tenant_usage(tenant=tenant, **window)
    assert everything.summary == UsageTotals(**totals(ours))
    assert [
        (
            [key.pk for key in keys].index(k.key.pk),
            UsageTotals(**{n: getattr(k, n) for n in totals([])}),
        )
        for k in everything.by_key
    ] == [
        (index, UsageTotals(**sums))
        for index, sums in largest_first(grouped(ours, lambda t: t.key))
    ]
    assert everything.by_model == [
        ModelUsage(model=str(m), **sums)
        for m, sums in largest_first(grouped(ours, lambda t: t.model))
    ]
    assert everything.by_day == per_day(ours, zone)
    assert everything.by_tag == by_tag

    earnings = earnings_summary(tenant=tenant, **window)
    assert earnings.window == UsageTotals(**totals(ours))
    per_key = grouped(ours, lambda t: t.key)
    assert {
        [key.pk for key in keys].index(k.figures.key.pk): UsageTotals(
            **{n: getattr(k, n) for n in totals([])}
        )
        for k in earnings.by_key
    } == {index: UsageTotals(**sums) for index, sums in per_key.items()}
    months = grouped(ours, lambda t: t.at.astimezone(zone).date().replace(day=1))
    assert earnings.by_month == [
        MonthUsage(month=month, **months[month])  # type: ignore[arg-type]
        for month in sorted(months)  # type: ignore[type-var]
    ]
    assert all(type(m.month) is date for m in earnings.by_month)


@pytest.fixture
def read_at_the_purge(monkeypatch) -> None:
    """The reports read at the time the purges run (``PURGE_NOW``): what the trace retention
    may have purged by then is read as the documented rule says, and an edge bucket whose
    traces are all kept may be read from its rollup rows less its traces outside."""
    monkeypatch.setattr(usage.sums, "timezone", SimpleNamespace(now=lambda: PURGE_NOW))


@pytest.fixture
def three_keys(tenant, outsider) -> list[ClientKey]:
    return [
        WalletKeyFactory.create(tenant=tenant),
        WalletKeyFactory.create(tenant=tenant),
        WalletKeyFactory.create(tenant=outsider[0]),
    ]


@hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps, zoned=zoned_windows())
def test_every_report_equals_the_raw_traces_through_rollups_and_purges(
    three_keys, tenant, settings, read_at_the_purge, steps, zoned
):
    settings.TRACE_RETENTION_DAYS = RETENTION_DAYS
    # Each example starts empty: its traces, and every rollup level the last one left.
    Trace.objects.all().delete()
    UsageRollup.objects.all().delete()
    UsageDay.objects.all().delete()
    for level in DAY_LEVELS:
        level.objects.all().delete()
    UsageKeyMonth.objects.all().delete()
    zone, windows = zoned
    written: list[tuple[Written, bool]] = []  # (trace, purged)

    def check() -> None:
        for since, until in windows:
            assert_reports_equal_the_traces(three_keys, tenant, written, zone, since, until)

    for action, argument in steps:
        if action == "write":
            for trace in argument:
                TraceFactory.create(
                    client_key=three_keys[trace.key],
                    created_at=trace.at,
                    model=trace.model,
                    tag=trace.tag,
                    status=trace.status,
                    input_tokens=trace.input_tokens,
                    output_tokens=trace.output_tokens,
                    cached_input_tokens=trace.cached_input_tokens,
                    cache_write_tokens=trace.cache_write_tokens,
                    cost_nanos=trace.cost_nanos,
                    client_nanos=trace.client_nanos,
                    cache_savings_nanos=trace.cache_savings_nanos,
                    client_cache_savings_nanos=trace.client_cache_savings_nanos,
                )
                written.append((trace, False))
        elif action == "roll":
            usage_roll_up(batch_size=argument, max_batches=1)
        else:
            traces_purge(now=PURGE_NOW)  # rolls every trace up, then purges
            written = [(t, purged or t.at < CUTOFF) for t, purged in written]
        check()
    usage_roll_up()
    check()
    usage_roll_up()  # a re-run finds nothing left to add
    check()
    traces_purge(now=PURGE_NOW)
    written = [(t, purged or t.at < CUTOFF) for t, purged in written]
    check()


def test_a_report_of_last_quarter_answers_after_its_traces_are_purged(tenant, settings):
    settings.TRACE_RETENTION_DAYS = RETENTION_DAYS
    key = WalletKeyFactory.create(tenant=tenant)
    long_ago = datetime(2026, 6, 15, 9, 20, tzinfo=UTC)
    TraceFactory.create(client_key=key, created_at=long_ago, client_nanos=1_000_000_001)
    TraceFactory.create(client_key=key, created_at=long_ago + timedelta(days=1), cost_nanos=7)
    quarter: dict[str, Any] = {
        "since": datetime(2026, 4, 1, tzinfo=UTC),
        "until": datetime(2026, 7, 1, tzinfo=UTC),
    }
    before = key_usage(tenant=tenant, key_id=key.pk, **quarter)

    assert traces_purge() == 2
    assert not Trace.objects.exists()

    after = key_usage(tenant=tenant, key_id=key.pk, **quarter)
    assert after == before
    assert after.summary.client_nanos == 1_000_000_001
    assert [d.date for d in after.by_day] == [date(2026, 6, 15), date(2026, 6, 16)]
    assert earnings_summary(tenant=tenant, **quarter).window == before.summary


def test_months_follow_the_zone_and_outlive_the_traces(tenant, settings):
    settings.TRACE_RETENTION_DAYS = RETENTION_DAYS
    tenant.timezone = "Asia/Kolkata"
    tenant.save(update_fields=["timezone"])
    key = WalletKeyFactory.create(tenant=tenant)
    # 20:00 UTC on 30 June is 01:30 on 1 July in India: July's first request there.
    TraceFactory.create(
        client_key=key, created_at=datetime(2026, 6, 30, 20, tzinfo=UTC), client_nanos=5
    )
    TraceFactory.create(
        client_key=key, created_at=datetime(2026, 6, 30, 18, tzinfo=UTC), client_nanos=2
    )
    year: dict[str, Any] = {
        "since": datetime(2026, 1, 1, tzinfo=UTC),
        "until": datetime(2026, 12, 1, tzinfo=UTC),
    }
    traces_purge()
    assert not Trace.objects.exists()

    indian = earnings_summary(tenant=tenant, **year)
    in_utc = earnings_summary(tenant=tenant, zone=ZoneInfo("UTC"), **year)

    assert [(m.month, m.client_nanos) for m in indian.by_month] == [
        (date(2026, 6, 1), 2),
        (date(2026, 7, 1), 5),
    ]
    assert [(m.month, m.client_nanos) for m in in_utc.by_month] == [(date(2026, 6, 1), 7)]
    assert [d.date for d in key_usage(tenant=tenant, key_id=key.pk, **year).by_day] == [
        date(2026, 6, 30),
        date(2026, 7, 1),
    ]


def test_a_request_shows_as_soon_as_its_trace_is_written(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    now = datetime.now(tz=UTC)
    TraceFactory.create(client_key=key, created_at=now - timedelta(hours=1), client_nanos=3)
    usage_roll_up()
    TraceFactory.create(client_key=key, created_at=now - timedelta(hours=1), client_nanos=4)

    report = key_usage(tenant=tenant, key_id=key.pk, since=now - timedelta(days=1), until=now)
    assert (report.summary.requests, report.summary.client_nanos) == (2, 7)
