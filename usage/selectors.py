"""Tenant-scoped reads of traces: a key's requests, usage reports (a key's, a sub-account's,
per tag), earnings.

Every figure is aggregated by the database (``Count``/``Sum``, days by ``TruncDate`` in
UTC), never by summing rows in Python: over the 15-minute rollups (``UsageRollup``) of the
whole buckets in the window, plus the traces not in them (``_Window``), so a request counts
as soon as its trace is written and a window whose traces were purged still answers. Python
only adds the two sources' group totals. Money stays integer nano-dollars
here: ``cost`` is what the reseller pays, ``client`` what its client is charged (both fixed
at settlement, so a later price change never rewrites them). The APIs turn them into
decimal strings or cents. A window is half-open: ``since <= created_at < until``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import ExtractMinute, Floor, TruncDate, TruncHour
from django.utils import timezone

from accounts.models import Tenant
from billing.money import div_round_half_up
from billing.selectors import ledger_snapshot
from keys.models import ClientKey
from keys.selectors import KeyFigures, key_figures, key_get, sub_account_get
from usage.models import (
    BUCKET_MINUTES,
    ERROR_STATUSES,
    ROLLUP_SUMS,
    Trace,
    UsageRollup,
    bucket_ceiling,
    bucket_floor,
)

# Margin percentages are shown to 2 places: basis points, rounded once (half up).
BASIS_POINTS = 10_000
PERCENT_PLACES = 2


def margin_percent(*, revenue_nanos: int, cost_nanos: int) -> Decimal | None:
    """(revenue - cost) / revenue as a percentage to 2 places; None without revenue."""
    if revenue_nanos <= 0:
        return None
    basis_points = div_round_half_up((revenue_nanos - cost_nanos) * BASIS_POINTS, revenue_nanos)
    return Decimal(basis_points).scaleb(-PERCENT_PLACES)


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """What a set of traces adds up to. Money in nano-dollars."""

    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cost_nanos: int
    client_nanos: int
    # What prompt caching saved, at cost and at client price (``Trace.cache_savings_nanos``).
    cache_savings_nanos: int
    client_cache_savings_nanos: int

    @property
    def profit_nanos(self) -> int:
        return self.client_nanos - self.cost_nanos

    @property
    def margin_percent(self) -> Decimal | None:
        return margin_percent(revenue_nanos=self.client_nanos, cost_nanos=self.cost_nanos)


def _sums() -> dict[str, Any]:
    """The aggregate of every UsageTotals field over traces (fresh expressions each query)."""
    return {
        "requests": Count("id"),
        "errors": Count("id", filter=Q(status__in=ERROR_STATUSES)),
        "input_tokens": Sum("input_tokens", default=0),
        "output_tokens": Sum("output_tokens", default=0),
        "cached_input_tokens": Sum("cached_input_tokens", default=0),
        "cache_write_tokens": Sum("cache_write_tokens", default=0),
        "cost_nanos": Sum("cost_nanos", default=0),
        "client_nanos": Sum("client_nanos", default=0),
        "cache_savings_nanos": Sum("cache_savings_nanos", default=0),
        "client_cache_savings_nanos": Sum("client_cache_savings_nanos", default=0),
    }


def _rollup_sums() -> dict[str, Any]:
    """The same fields summed over rollup rows."""
    return {
        "requests": Sum("request_count", default=0),
        "errors": Sum("error_count", default=0),
        "input_tokens": Sum("input_tokens", default=0),
        "output_tokens": Sum("output_tokens", default=0),
        "cached_input_tokens": Sum("cached_input_tokens", default=0),
        "cache_write_tokens": Sum("cache_write_tokens", default=0),
        "cost_nanos": Sum("cost_nanos", default=0),
        "client_nanos": Sum("client_nanos", default=0),
        "cache_savings_nanos": Sum("cache_savings_nanos", default=0),
        "client_cache_savings_nanos": Sum("client_cache_savings_nanos", default=0),
    }


NO_USAGE: dict[str, int] = {f.name: 0 for f in fields(UsageTotals)}


def _sum_fields(row: dict[str, Any]) -> dict[str, int]:
    """The UsageTotals fields of an aggregated row, as ints."""
    return {f.name: int(row[f.name]) for f in fields(UsageTotals)}


def _added(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {name: a[name] + b[name] for name in NO_USAGE}


@dataclass(frozen=True, slots=True)
class _Window:
    """A window's usage, from two disjoint sources that together hold every request in it:
    the rollup rows of the whole 15-minute buckets inside it, and the traces not in them
    (the traces of the partial buckets at its edges, rolled or not, and the unrolled traces
    of the whole buckets). Read both inside one snapshot (``ledger_snapshot``): a pass
    committing between the two reads would otherwise count its batch twice or not at all.

    A window edge inside a bucket stays exact: that bucket's rollup is not used, its traces
    are, for as long as they are retained (like every raw trace, they go after
    ``TRACE_RETENTION_DAYS``). So a window that starts on a bucket boundary (every hour and
    quarter-hour) answers the same after its traces are purged.
    """

    rollups: QuerySet[UsageRollup]
    traces: QuerySet[Trace]

    def filter(self, **lookups: Any) -> _Window:
        return _Window(self.rollups.filter(**lookups), self.traces.filter(**lookups))

    def total(self) -> dict[str, int]:
        return _added(
            _sum_fields(self.rollups.aggregate(**_rollup_sums())),
            _sum_fields(self.traces.aggregate(**_sums())),
        )

    def grouped(
        self, by: str, *, rollup_by: Any = None, trace_by: Any = None
    ) -> dict[Any, dict[str, int]]:
        """Totals per value of ``by`` (a column of both, or the given expressions)."""
        # order_by() first: an ordering column left in the query would split the groups.
        rollups = self.rollups.order_by()
        traces = self.traces.order_by()
        if rollup_by is not None:
            rollups = rollups.annotate(**{by: rollup_by})
            traces = traces.annotate(**{by: trace_by})
        per_value: dict[Any, dict[str, int]] = {}
        for row in rollups.values(by).annotate(**_rollup_sums()):
            per_value[row[by]] = _sum_fields(row)
        for row in traces.values(by).annotate(**_sums()):
            per_value[row[by]] = _added(per_value.get(row[by], NO_USAGE), _sum_fields(row))
        return per_value


def _window(*, tenant: Tenant, since: datetime, until: datetime) -> _Window:
    first, last = bucket_ceiling(since), bucket_floor(until)
    traces = Trace.objects.filter(tenant=tenant, created_at__gte=since, created_at__lt=until)
    if first >= last:  # no whole bucket inside: every request is still a trace (or purged)
        return _Window(UsageRollup.objects.none(), traces)
    rollups = UsageRollup.objects.filter(
        tenant=tenant, bucket_start__gte=first, bucket_start__lt=last
    )
    outside_the_rollups = Q(created_at__lt=first) | Q(created_at__gte=last) | Q(is_rolled=False)
    return _Window(rollups, traces.filter(outside_the_rollups))


def _largest_first(per_value: dict[Any, dict[str, int]]) -> list[tuple[Any, dict[str, int]]]:
    """Largest client price first, then by value (as the database ordered it before)."""
    return sorted(per_value.items(), key=lambda item: (-item[1]["client_nanos"], item[0]))


# ----------------------------------------------------------------------------- requests


def trace_list(
    *,
    tenant: Tenant,
    key_id: int,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    status: str | None = None,
    tag: str | None = None,
) -> QuerySet[Trace]:
    """One key's traces, newest first, deleted keys included; another tenant's key id
    raises DoesNotExist (404). ``tag=""`` keeps untagged requests; ``None`` skips a filter."""
    key = key_get(tenant=tenant, key_id=key_id)
    traces = Trace.objects.filter(tenant=tenant, client_key=key)
    if since is not None:
        traces = traces.filter(created_at__gte=since)
    if until is not None:
        traces = traces.filter(created_at__lt=until)
    if model is not None:
        traces = traces.filter(model=model)
    if status is not None:
        traces = traces.filter(status=status)
    if tag is not None:
        traces = traces.filter(tag=tag)
    return traces.select_related("upstream").order_by("-created_at", "-id")


# -------------------------------------------------------------------------------- usage


@dataclass(frozen=True, slots=True)
class ModelUsage(UsageTotals):
    model: str


@dataclass(frozen=True, slots=True)
class DayUsage(UsageTotals):
    date: date


@dataclass(frozen=True, slots=True)
class TagUsage(UsageTotals):
    tag: str


@dataclass(frozen=True, slots=True)
class UsageReport:
    """A key's usage in a window: the total, per model (largest client price first) and
    per UTC day with traffic (oldest first)."""

    summary: UsageTotals
    by_model: list[ModelUsage]
    by_day: list[DayUsage]


def key_usage(*, tenant: Tenant, key_id: int, since: datetime, until: datetime) -> UsageReport:
    """The usage report of one of the tenant's keys (deleted ones too; else 404)."""
    key = key_get(tenant=tenant, key_id=key_id)
    window = _window(tenant=tenant, since=since, until=until).filter(client_key=key)
    with ledger_snapshot():
        summary = window.total()
        by_model = window.grouped("model")
        by_day = window.grouped(
            "day",
            rollup_by=TruncDate("bucket_start", tzinfo=UTC),
            trace_by=TruncDate("created_at", tzinfo=UTC),
        )
    return UsageReport(
        summary=UsageTotals(**summary),
        by_model=[ModelUsage(model=m, **sums) for m, sums in _largest_first(by_model)],
        by_day=[DayUsage(date=day, **by_day[day]) for day in sorted(by_day)],
    )


def tag_usage(
    *, tenant: Tenant, since: datetime, until: datetime, sub_accounts_only: bool = False
) -> list[TagUsage]:
    """Usage per tag across the tenant's keys (or only its sub-accounts), largest client
    price first; untagged requests are the tag ``""``."""
    window = _window(tenant=tenant, since=since, until=until)
    if sub_accounts_only:
        sub_accounts = ClientKey.objects.for_tenant(tenant).sub_accounts()
        window = window.filter(client_key__in=sub_accounts)
    with ledger_snapshot():
        per_tag = window.grouped("tag")
    return [TagUsage(tag=tag, **sums) for tag, sums in _largest_first(per_tag)]


# ----------------------------------------------------------------------------- earnings


@dataclass(frozen=True, slots=True)
class KeyEarnings(UsageTotals):
    """One key: the window's totals from its traces, all-time money from its counters."""

    figures: KeyFigures


@dataclass(frozen=True, slots=True)
class Earnings:
    """The tenant's window totals (from traces) and all-time money (from key counters)."""

    window: UsageTotals
    all_time_client_nanos: int
    all_time_cost_nanos: int
    by_key: list[KeyEarnings]

    @property
    def all_time_profit_nanos(self) -> int:
        return self.all_time_client_nanos - self.all_time_cost_nanos

    @property
    def all_time_margin_percent(self) -> Decimal | None:
        return margin_percent(
            revenue_nanos=self.all_time_client_nanos, cost_nanos=self.all_time_cost_nanos
        )


def earnings_summary(*, tenant: Tenant, since: datetime, until: datetime) -> Earnings:
    """Revenue (client prices), cost and profit in a window, from traces, and all time,
    from the keys' settled counters (``client_spent``/``cost_spent`` via ``key_figures``).

    ``by_key`` lists every key, deleted ones included, with traffic in the window or any
    spend ever: the largest window revenue first, then the largest all-time revenue.
    """
    with ledger_snapshot():
        per_key = _window(tenant=tenant, since=since, until=until).grouped("client_key_id")
    keys = ClientKey.objects.for_tenant(tenant).filter(
        Q(pk__in=list(per_key)) | Q(client_spent_nanos__gt=0) | Q(cost_spent_nanos__gt=0)
    )
    now = timezone.now()
    by_key = [
        KeyEarnings(figures=key_figures(key=key, now=now), **per_key.get(key.pk, NO_USAGE))
        for key in keys
    ]
    by_key.sort(key=lambda k: (-k.client_nanos, -k.figures.client_spent_nanos, -k.figures.key.pk))
    return Earnings(
        window=UsageTotals(**functools.reduce(_added, per_key.values(), NO_USAGE)),
        all_time_client_nanos=sum(k.figures.client_spent_nanos for k in by_key),
        all_time_cost_nanos=sum(k.figures.cost_spent_nanos for k in by_key),
        by_key=by_key,
    )


# ------------------------------------------------------------------------- sub-accounts


def sub_account_usage(
    *, tenant: Tenant, key_id: int, since: datetime, until: datetime
) -> UsageReport:
    """A sub-account's usage report (404 for a key that is not a sub-account)."""
    key = sub_account_get(tenant=tenant, key_id=key_id)
    return key_usage(tenant=tenant, key_id=key.pk, since=since, until=until)


# ------------------------------------------------------------------------ rollup audit


@dataclass(frozen=True, slots=True)
class RollupProblem:
    """One bucket whose rollup row disagrees with the sums of its rolled traces."""

    bucket_start: datetime
    tenant_id: int
    client_key_id: int
    model: str
    tag: str
    expected: dict[str, int]
    actual: dict[str, int]

    @property
    def message(self) -> str:
        differences = ", ".join(
            f"{name} {self.actual[name]} (traces say {self.expected[name]})"
            for name in self.expected
            if self.expected[name] != self.actual[name]
        )
        return (
            f"bucket {self.bucket_start.isoformat()} tenant {self.tenant_id} "
            f"key {self.client_key_id} model {self.model!r} tag {self.tag!r}: {differences}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket_start": self.bucket_start.isoformat(),
            "tenant_id": self.tenant_id,
            "client_key_id": self.client_key_id,
            "model": self.model,
            "tag": self.tag,
            "expected": self.expected,
            "actual": self.actual,
            "message": self.message,
        }


def _rolled_trace_sums(since: datetime) -> dict[tuple[Any, ...], dict[str, int]]:
    """The rolled traces from ``since`` summed per bucket by the database (hour, then the
    quarter of it), independently of the pass's own bucketing."""
    buckets = (
        Trace.objects.filter(is_rolled=True, created_at__gte=since)
        .order_by()
        .annotate(
            hour=TruncHour("created_at", tzinfo=UTC),
            quarter=Floor(ExtractMinute("created_at", tzinfo=UTC) / 15),
        )
        .values("hour", "quarter", "tenant_id", "client_key_id", "model", "tag")
        .annotate(
            request_count=Count("id"),
            error_count=Count("id", filter=Q(status__in=ERROR_STATUSES)),
            input_tokens=Sum("input_tokens", default=0),
            output_tokens=Sum("output_tokens", default=0),
            cached_input_tokens=Sum("cached_input_tokens", default=0),
            cache_write_tokens=Sum("cache_write_tokens", default=0),
            cost_nanos=Sum("cost_nanos", default=0),
            client_nanos=Sum("client_nanos", default=0),
            latency_ms_sum=Sum("latency_ms", default=0),
            ttft_ms_sum=Sum("ttft_ms", default=0),
            ttft_count=Count("ttft_ms"),
            cache_savings_nanos=Sum("cache_savings_nanos", default=0),
            client_cache_savings_nanos=Sum("client_cache_savings_nanos", default=0),
        )
    )
    sums = {}
    for row in buckets:
        start = row["hour"] + timedelta(minutes=BUCKET_MINUTES * int(row["quarter"]))
        key = (start, row["tenant_id"], row["client_key_id"], row["model"], row["tag"])
        sums[key] = {name: int(row[name]) for name in ROLLUP_SUMS}
    return sums


def rollups_audit(*, now: datetime | None = None) -> list[RollupProblem]:
    """Recompute, for every bucket whose traces are all still retained (it starts at or
    after ``now - TRACE_RETENTION_DAYS``), the sums of its rolled traces and compare them
    with its rollup row; [] if all agree. Unrolled traces count toward no rollup yet. Read
    in one snapshot, so a pass committing meanwhile is no false mismatch. What
    ``manage.py rollup_usage --check`` runs."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.TRACE_RETENTION_DAYS)
    since = bucket_ceiling(cutoff)
    with ledger_snapshot():
        expected = _rolled_trace_sums(since)
        actual = {
            (r["bucket_start"], r["tenant_id"], r["client_key_id"], r["model"], r["tag"]): {
                name: r[name] for name in ROLLUP_SUMS
            }
            for r in UsageRollup.objects.filter(bucket_start__gte=since).values(
                "bucket_start", "tenant_id", "client_key_id", "model", "tag", *ROLLUP_SUMS
            )
        }
    zero = dict.fromkeys(ROLLUP_SUMS, 0)
    problems = []
    for key in sorted(expected.keys() | actual.keys()):
        start, tenant_id, client_key_id, model, tag = key
        if expected.get(key, zero) != actual.get(key, zero):
            problems.append(
                RollupProblem(
                    bucket_start=start,
                    tenant_id=tenant_id,
                    client_key_id=client_key_id,
                    model=model,
                    tag=tag,
                    expected=expected.get(key, zero),
                    actual=actual.get(key, zero),
                )
            )
    return problems
