"""The reports read daily rows, 15-minute rollups and the raw tail, and stay exact.

A property test: random traces at random times (some written after their bucket was rolled
up), random rollup passes, purges and changes of the tenant's time zone interleaved (its
days are local days: +5:30, +5:45, +3:30, summer time), then random windows, short or spanning
whole local days (read from the daily rows once the pass has built them). Every report must
equal the sums computed here, independently, from the generated traces: each trace in the
window counts, except a purged one at a window edge inside a bucket (its bucket's rollup is
not used there, and its trace is gone): the documented rule of ``usage.selectors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import usage.sums
from billing.selectors import ledger_snapshot
from keys.models import ClientKey
from tests.keys.factories import WalletKeyFactory
from tests.usage.factories import TraceFactory
from usage.models import Trace, UsageDay, UsageDayState, UsageRollup
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
from usage.sums import usage_window

# Eight hours across a UTC midnight and the midnights of the zones below (18:15 UTC in
# Kathmandu, 18:30 in Kolkata, 20:30 in Tehran, 22:00 in Paris on summer time): 32
# buckets, so traces and window edges often share one.
BASE = datetime(2026, 9, 1, 18, tzinfo=UTC)
SPAN_MICROSECONDS = 8 * 3_600 * 10**6
BUCKET_MICROSECONDS = 15 * 60 * 10**6
RETENTION_DAYS = 30
# The purges run at a "now" that puts the first day's traces past their retention (they
# are purged once rolled) and keeps the second day's.
PURGE_NOW = BASE + timedelta(days=RETENTION_DAYS, hours=6)
CUTOFF = PURGE_NOW - timedelta(days=RETENTION_DAYS)
ERRORS = {Trace.Status.UPSTREAM_ERROR, Trace.Status.REFUSED}

# Times anywhere in two days, or on a bucket edge (and a microsecond either side of it).
moments = st.one_of(
    st.integers(0, SPAN_MICROSECONDS - 1),
    st.builds(
        lambda quarter, nudge: max(0, quarter * BUCKET_MICROSECONDS + nudge),
        st.integers(0, 32),
        st.sampled_from([-1, 0, 1]),
    ),
).map(lambda us: BASE + timedelta(microseconds=us))
# A tenant's report zone: its local midnights fall inside the eight hours.
ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "Asia/Tehran", "Europe/Paris"]
zones = st.sampled_from(ZONES)
# Window edges far outside the traffic, so that whole local days lie inside the window, and
# whole or nearly whole local months (read from the keys' monthly rows, less some days).
FAR_EDGES = [
    BASE - timedelta(days=40),
    BASE - timedelta(days=2),
    BASE + timedelta(days=2),
    BASE + timedelta(days=28, hours=3),
    BASE + timedelta(days=40),
]


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
        st.tuples(st.just("zone"), zones),
    ),
    max_size=10,
)
edges = st.one_of(moments, st.sampled_from(FAR_EDGES))
windows = st.lists(
    st.one_of(
        st.tuples(moments, st.integers(1, SPAN_MICROSECONDS)).map(
            lambda w: (w[0], w[0] + timedelta(microseconds=w[1]))
        ),
        st.tuples(edges, edges).filter(lambda w: w[0] < w[1]),
    ),
    min_size=1,
    max_size=4,
)


def bucket_floor(at: datetime) -> datetime:
    return at - timedelta(
        microseconds=(at - BASE) // timedelta(microseconds=1) % BUCKET_MICROSECONDS
    )


def bucket_ceiling(at: datetime) -> datetime:
    start = bucket_floor(at)
    return start if start == at else start + timedelta(microseconds=BUCKET_MICROSECONDS)


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


def assert_reports_equal_the_traces(keys, tenant, written, since, until) -> None:
    zone = tenant.zone
    ours = counted([(t, p) for t, p in written if t.key < 2], since, until)
    for index in (0, 1):
        mine = [t for t in ours if t.key == index]
        report = key_usage(tenant=tenant, key_id=keys[index].pk, since=since, until=until)
        assert report.summary == UsageTotals(**totals(mine))
        assert report.by_model == [
            ModelUsage(model=str(m), **sums)
            for m, sums in largest_first(grouped(mine, lambda t: t.model))
        ]
        by_day = grouped(mine, lambda t: t.at.astimezone(zone).date())
        assert [(d.date, d.requests, d.client_nanos, d.cost_nanos) for d in report.by_day] == [
            (day, by_day[day]["requests"], by_day[day]["client_nanos"], by_day[day]["cost_nanos"])
            for day in sorted(by_day)  # type: ignore[type-var]
        ]
        assert all(isinstance(d.date, date) for d in report.by_day)
    assert tag_usage(tenant=tenant, since=since, until=until) == [
        TagUsage(tag=str(tag), **sums)
        for tag, sums in largest_first(grouped(ours, lambda t: t.tag))
    ]
    everything = tenant_usage(tenant=tenant, since=since, until=until)
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
    days = grouped(ours, lambda t: t.at.astimezone(zone).date())
    assert everything.by_day == [
        DayUsage(date=day, **days[day])  # type: ignore[arg-type]
        for day in sorted(days)  # type: ignore[type-var]
    ]
    assert everything.by_tag == [
        TagUsage(tag=str(tag), **sums)
        for tag, sums in largest_first(grouped(ours, lambda t: t.tag))
    ]
    earnings = earnings_summary(tenant=tenant, since=since, until=until)
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
    # In a zone that is not the one the daily rows are built in: the 15-minute path.
    other = ZoneInfo("Asia/Kathmandu" if zone.key != "Asia/Kathmandu" else "UTC")
    window = usage_window(tenant=tenant, since=since, until=until, zone=other)
    with ledger_snapshot():
        per_day = window.of_key(keys[0]).grouped_by_day()
    assert per_day == grouped(
        [t for t in ours if t.key == 0], lambda t: t.at.astimezone(other).date()
    )


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
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(zone=zones, steps=steps, windows=windows)
def test_every_report_equals_the_raw_traces_through_zone_changes_and_purges(
    three_keys, tenant, settings, read_at_the_purge, zone, steps, windows
):
    settings.TRACE_RETENTION_DAYS = RETENTION_DAYS
    Trace.objects.all().delete()
    UsageRollup.objects.all().delete()
    UsageDay.objects.all().delete()
    UsageDayState.objects.all().delete()
    tenant.timezone = zone
    tenant.save(update_fields=["timezone"])
    written: list[tuple[Written, bool]] = []  # (trace, purged)

    def check() -> None:
        for since, until in windows:
            assert_reports_equal_the_traces(three_keys, tenant, written, since, until)

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
        elif action == "zone":  # read from the 15-minute rows until a pass rebuilds the days
            tenant.timezone = argument
            tenant.save(update_fields=["timezone"])
        else:
            traces_purge(now=PURGE_NOW)  # rolls every trace up, then purges
            written = [(t, purged or t.at < CUTOFF) for t, purged in written]
        check()
    usage_roll_up()
    check()
    traces_purge(now=PURGE_NOW)
    written = [(t, purged or t.at < CUTOFF) for t, purged in written]
    check()
