"""A window's partial buckets at its edges (``usage.sums``): read from their traces, or from
their 15-minute rows less their rolled traces outside the window plus their unrolled ones
inside, both exact; the second never where a purge or a key's trace deletion may have taken
some of the traces."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from accounts.models import Tenant
from keys.models import ClientKey
from tests.keys.factories import WalletKeyFactory
from tests.usage.factories import TraceFactory
from usage.models import Trace, bucket_ceiling, bucket_floor
from usage.selectors import key_usage, tenant_usage
from usage.services import key_traces_delete, usage_roll_up
from usage.sums import ROLLED, UsageWindow


@pytest.fixture
def keys(tenant) -> list[ClientKey]:
    return [WalletKeyFactory.create(tenant=tenant) for _ in range(2)]


def dense_traffic(keys: list[ClientKey], start: datetime, end: datetime) -> list[Trace]:
    """A trace every 47 seconds (several in every minute of a bucket), most rolled up, a
    few written after the pass (late, or not rolled yet)."""
    written = []
    for i in range(int((end - start).total_seconds()) // 47):
        written.append(
            TraceFactory.create(
                client_key=keys[i % 2],
                created_at=start + timedelta(seconds=47 * i),
                model=["a", "b", "c"][i % 3],
                tag=["", "x"][i // 3 % 2],
                status=Trace.Status.UPSTREAM_ERROR if i % 7 == 0 else Trace.Status.OK,
                input_tokens=i,
                cost_nanos=10**9 + i,
                client_nanos=3 * 10**9 + 11 * i,
            )
        )
    usage_roll_up()
    for i in range(0, len(written), 9):
        at = written[i].created_at + timedelta(seconds=5)
        written.append(TraceFactory.create(client_key=keys[i % 2], created_at=at, client_nanos=7))
    return written


def recorded_plans(monkeypatch) -> list:
    plans: list = []
    make = UsageWindow._plan

    def recorded(window: UsageWindow):
        plans.append(make(window))
        return plans[-1]

    monkeypatch.setattr(UsageWindow, "_plan", recorded)
    return plans


def reports(tenant: Tenant, key: ClientKey, windows: list[tuple[datetime, datetime]]) -> list:
    return [
        (
            tenant_usage(tenant=tenant, since=since, until=until),
            key_usage(tenant=tenant, key_id=key.pk, since=since, until=until),
        )
        for since, until in windows
    ]


def edges_and_windows(now: datetime) -> list[tuple[datetime, datetime]]:
    """Edges early and late in their buckets, on them, and now."""
    start = bucket_floor(now) - timedelta(hours=2)
    minutes = (1, 3, 14, 15, 28, 44, 52, 59, 74, 88, 106)
    edges = [start + timedelta(minutes=m, seconds=13) for m in minutes] + [now]
    return [(a, b) for a in edges for b in edges if a < b]


def test_an_edge_bucket_read_from_its_rollup_rows_is_exact(tenant, keys, monkeypatch):
    now = timezone.now()
    traces = dense_traffic(keys, bucket_floor(now) - timedelta(hours=2), now)
    windows = edges_and_windows(now)
    plans = recorded_plans(monkeypatch)
    from_rollups = reports(tenant, keys[0], windows)
    # Both edges were read from rollup rows somewhere, the current quarter-hour's among them.
    assert any(plan.traces[0][0] < 0 for plan in plans)
    assert any(plan.traces[-1][0] < 0 and plan.traces[-1][3] == ROLLED for plan in plans)

    monkeypatch.setattr(UsageWindow, "_traces_kept", lambda self, start, now: False)
    assert reports(tenant, keys[0], windows) == from_rollups
    for (since, until), (everything, mine) in zip(windows, from_rollups, strict=True):
        inside = [t for t in traces if since <= t.created_at < until]
        assert everything.summary.requests == len(inside)
        assert everything.summary.client_nanos == sum(t.client_nanos for t in inside)
        assert everything.summary.errors == len(
            [t for t in inside if t.status == Trace.Status.UPSTREAM_ERROR]
        )
        assert mine.summary.input_tokens == sum(
            t.input_tokens for t in inside if t.client_key_id == keys[0].pk
        )


def test_no_edge_bucket_is_read_from_rollup_rows_once_a_keys_traces_were_deleted(
    tenant, keys, monkeypatch
):
    now = timezone.now()
    traces = dense_traffic(keys, bucket_floor(now) - timedelta(hours=2), now)
    key_traces_delete(tenant=tenant, key_id=keys[0].pk, actor=None)
    windows = edges_and_windows(now)
    plans = recorded_plans(monkeypatch)

    answers = reports(tenant, keys[0], windows)

    assert not any(sign < 0 for plan in plans for sign, *_ in plan.traces)
    # As documented: the deleted traces of a partial bucket at an edge are missing there.
    for (since, until), (everything, _) in zip(windows, answers, strict=True):
        first, last = bucket_ceiling(since), bucket_floor(until)
        counted = [
            t
            for t in traces
            if since <= t.created_at < until
            and (t.client_key_id != keys[0].pk or first <= t.created_at < last)
        ]
        assert everything.summary.requests == len(counted)
        assert everything.summary.client_nanos == sum(t.client_nanos for t in counted)
