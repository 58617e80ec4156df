"""Tenant-scoped reads of traces: a key's requests, usage reports (a key's, a sub-account's,
per tag), earnings.

Every usage figure is summed by ``usage.sums``: over the daily rollups of the whole local
days in the window, the 15-minute rollups of its other whole buckets, plus the traces not
in either, so a request counts as soon as its trace is written and a window whose traces
were purged still answers; each report reads every source once, in one snapshot, for all
its breakdowns. Money stays integer nano-dollars here: ``cost`` is what the reseller pays,
``client`` what its client is charged (both fixed at settlement, so a later price change
never rewrites them). The APIs turn them into decimal strings or cents. A window is
half-open: ``since <= created_at < until``.

Days and months are local to a zone (``zone``; the tenant's ``Tenant.timezone`` when not
given). Every offset in use is a whole number of quarter-hours (+5:30, +5:45, a 30-minute
daylight-saving shift), so a local day, even one of 23 or 25 hours, is a whole number of
15-minute buckets and a bucket never straddles two days.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.db.models import Count, DateField, Max, Q, QuerySet, Sum
from django.db.models.expressions import RawSQL
from django.db.models.functions import ExtractMinute, Floor, TruncDate, TruncHour, TruncMonth
from django.utils import timezone

from accounts.models import Tenant
from billing.money import div_round_half_up
from billing.selectors import ledger_snapshot
from keys.models import ClientKey
from keys.selectors import KeyFigures, key_get, sub_account_get
from usage.models import (
    BUCKET_MINUTES,
    DAY_LEVELS,
    ERROR_STATUSES,
    NO_DAILY_ZONE,
    ROLLUP_SUMS,
    Trace,
    TraceDeletion,
    UsageDay,
    UsageDayState,
    UsageKeyMonth,
    UsageRollup,
    bucket_ceiling,
)
from usage.sums import usage_window

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


_TOTALS = tuple(f.name for f in fields(UsageTotals))
NO_USAGE: dict[str, int] = dict.fromkeys(_TOTALS, 0)


def _added(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {name: a[name] + b[name] for name in _TOTALS}


def _largest_first(per_value: dict[Any, dict[str, int]]) -> list[tuple[Any, dict[str, int]]]:
    """Largest client price first, then by value (as the database ordered it before)."""
    return sorted(per_value.items(), key=lambda item: (-item[1]["client_nanos"], item[0]))


# ----------------------------------------------------------------------------- requests


def _trace_filters(
    traces: QuerySet[Trace],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    status: str | None = None,
    tag: str | None = None,
) -> QuerySet[Trace]:
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
    return traces.order_by("-created_at", "-id")


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
    return _trace_filters(
        traces, since=since, until=until, model=model, status=status, tag=tag
    ).select_related("upstream")


def request_list(
    *,
    tenant: Tenant,
    key_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    status: str | None = None,
    tag: str | None = None,
) -> QuerySet[Trace]:
    """The traces of all the tenant's keys (deleted ones included), newest first, with
    their keys; ``key_id`` keeps one key's (another tenant's key id raises DoesNotExist,
    404, as ``trace_list`` does). The other filters are ``trace_list``'s."""
    traces = Trace.objects.filter(tenant=tenant)
    if key_id is not None:
        traces = traces.filter(client_key=key_get(tenant=tenant, key_id=key_id))
    return _trace_filters(
        traces, since=since, until=until, model=model, status=status, tag=tag
    ).select_related("upstream", "client_key")


# The trace columns of an export page (``traces_after``), plus the key's and the upstream's.
EXPORT_COLUMNS = (
    "id",
    "request_id",
    "created_at",
    "client_key_id",
    "client_key__label",
    "client_key__prefix",
    "model",
    "endpoint",
    "upstream__name",
    "tag",
    "status",
    "status_code",
    "error_class",
    "is_stream",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "is_usage_estimated",
    "cost_nanos",
    "client_nanos",
    "cache_savings_nanos",
    "client_cache_savings_nanos",
    "latency_ms",
    "ttft_ms",
)


def traces_after(
    traces: QuerySet[Trace], *, after: tuple[datetime, int] | None, limit: int
) -> list[dict[str, Any]]:
    """The next ``limit`` rows (``EXPORT_COLUMNS``) of a trace list ordered newest first
    (``trace_list``/``request_list``) that come after the row ``after`` (its
    ``(created_at, id)``): keyset paging, one short query per page, each as fast as the
    first however deep, and stable while new traces arrive (they sort before the first)."""
    page = traces.order_by("-created_at", "-id")
    if after is not None:
        at, trace_id = after
        # created_at <= at bounds the index scan; the OR orders ties on created_at by id.
        page = page.filter(created_at__lte=at).filter(
            Q(created_at__lt=at) | Q(created_at=at, id__lt=trace_id)
        )
    return list(page.values(*EXPORT_COLUMNS)[:limit])


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
class ReportKey:
    """What a report shows of one of the tenant's keys, read as plain values: a thousand
    model instances cost a report more CPU than its queries (~13 ms)."""

    id: int
    label: str
    prefix: str
    funding: str

    @property
    def pk(self) -> int:
        return self.id


def _ids_in(ids: Collection[int]) -> Any:
    """What ``pk__in`` takes for many ids: on PostgreSQL one array parameter (a thousand
    placeholders cost ~3 ms of CPU to build and send)."""
    if ids and connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s)", (list(ids),))
    return list(ids)


@dataclass(frozen=True, slots=True)
class KeyUsage(UsageTotals):
    key: ReportKey


@dataclass(frozen=True, slots=True)
class UsageReport:
    """A key's usage in a window: the total, per model (largest client price first) and
    per day with traffic in the report's zone (oldest first)."""

    summary: UsageTotals
    by_model: list[ModelUsage]
    by_day: list[DayUsage]


def key_usage(
    *,
    tenant: Tenant,
    key_id: int,
    since: datetime,
    until: datetime,
    zone: ZoneInfo | None = None,
) -> UsageReport:
    """The usage report of one of the tenant's keys (deleted ones too; else 404), its days
    local to ``zone`` (the tenant's time zone by default)."""
    key = key_get(tenant=tenant, key_id=key_id)
    window = usage_window(tenant=tenant, since=since, until=until, zone=zone).of_key(key)
    with ledger_snapshot():
        read = window.breakdowns("model", "day")
    by_model, by_day = read["model"], read["day"]
    # Every request has a model: the total is the models'.
    summary = functools.reduce(_added, by_model.values(), NO_USAGE)
    return UsageReport(
        summary=UsageTotals(**summary),
        by_model=[ModelUsage(model=m, **sums) for m, sums in _largest_first(by_model)],
        by_day=[DayUsage(date=day, **by_day[day]) for day in sorted(by_day)],
    )


@dataclass(frozen=True, slots=True)
class TenantUsageReport:
    """All the tenant's usage in a window: the total, per key and per model (largest client
    price first), per local day with traffic (oldest first) and per tag (largest first)."""

    summary: UsageTotals
    by_key: list[KeyUsage]
    by_model: list[ModelUsage]
    by_day: list[DayUsage]
    by_tag: list[TagUsage]


def tenant_usage(
    *, tenant: Tenant, since: datetime, until: datetime, zone: ZoneInfo | None = None
) -> TenantUsageReport:
    """The usage of all the tenant's keys (deleted ones included) in a window, every
    breakdown read in one snapshot so they add up to the same summary; days local to
    ``zone`` (the tenant's time zone by default)."""
    window = usage_window(tenant=tenant, since=since, until=until, zone=zone)
    with ledger_snapshot():
        read = window.breakdowns("client_key_id", "model", "day", "tag")
    per_key, by_model, by_day, by_tag = (read[g] for g in ("client_key_id", "model", "day", "tag"))
    # Only what the report shows of each key: a thousand full rows cost more to load than
    # the report's queries.
    keys = {
        pk: ReportKey(pk, label, prefix, funding)
        for pk, label, prefix, funding in ClientKey.objects.for_tenant(tenant)
        .filter(pk__in=_ids_in(per_key))
        .values_list("id", "label", "prefix", "funding")
    }
    by_key = [KeyUsage(key=keys[pk], **sums) for pk, sums in _largest_first(per_key)]
    return TenantUsageReport(
        summary=UsageTotals(**functools.reduce(_added, per_key.values(), NO_USAGE)),
        by_key=by_key,
        by_model=[ModelUsage(model=m, **sums) for m, sums in _largest_first(by_model)],
        by_day=[DayUsage(date=day, **by_day[day]) for day in sorted(by_day)],
        by_tag=[TagUsage(tag=tag, **sums) for tag, sums in _largest_first(by_tag)],
    )


def tenant_daily_usage(
    *, tenant: Tenant, since: datetime, until: datetime, zone: ZoneInfo | None = None
) -> list[DayUsage]:
    """The usage of all the tenant's keys per local day with traffic in a window, oldest
    first: ``tenant_usage``'s ``by_day`` (the same grouping of the same sources) without
    its other breakdowns, for a page that charts days alone."""
    window = usage_window(tenant=tenant, since=since, until=until, zone=zone)
    with ledger_snapshot():
        by_day = window.grouped_by_day()
    return [DayUsage(date=day, **by_day[day]) for day in sorted(by_day)]


def tag_usage(
    *, tenant: Tenant, since: datetime, until: datetime, sub_accounts_only: bool = False
) -> list[TagUsage]:
    """Usage per tag across the tenant's keys (or only its sub-accounts), largest client
    price first; untagged requests are the tag ``""``."""
    window = usage_window(tenant=tenant, since=since, until=until)
    if sub_accounts_only:
        window = window.of_keys(ClientKey.objects.for_tenant(tenant).sub_accounts())
    with ledger_snapshot():
        per_tag = window.grouped("tag")
    return [TagUsage(tag=tag, **sums) for tag, sums in _largest_first(per_tag)]


# ------------------------------------------------------------------------------- runway

# How far back a key's spending pace is measured for its runway.
RUNWAY_WINDOW_DAYS = 7


def keys_spend(
    *, tenant: Tenant, key_ids: Collection[int], since: datetime, until: datetime
) -> dict[int, UsageTotals]:
    """The usage of many of the tenant's keys at once in a window, by key id: one grouped
    query per source whatever the number of keys (a page of keys costs what one key does).
    Keys without traffic in the window are left out; another tenant's ids find nothing."""
    if not key_ids:
        return {}
    window = usage_window(tenant=tenant, since=since, until=until).of_keys(
        ClientKey.objects.for_tenant(tenant).filter(pk__in=sorted(key_ids))
    )
    with ledger_snapshot():
        per_key = window.grouped("client_key_id")
    return {key_id: UsageTotals(**sums) for key_id, sums in per_key.items()}


def runway_days(*, remaining_nanos: int | None, window_spent_nanos: int, days: int) -> int | None:
    """Whole days until ``remaining`` is gone at the pace of ``window_spent`` per ``days``
    (rounded down: the last partial day is not promised); None when nothing was spent or
    nothing but the wallet bounds what remains."""
    if remaining_nanos is None or window_spent_nanos <= 0:
        return None
    return max(remaining_nanos, 0) * days // window_spent_nanos


@dataclass(frozen=True, slots=True)
class KeyRunway:
    """A key's pace over the last RUNWAY_WINDOW_DAYS (client prices) and the whole days
    its remaining budget (or spend cap) lasts at that pace; ``days_left`` is None for an
    idle key, one that is not active, or a wallet-funded key without a cap."""

    window_client_nanos: int
    days_left: int | None


def key_runways(
    *, tenant: Tenant, figures: Sequence[KeyFigures], now: datetime | None = None
) -> dict[int, KeyRunway]:
    """The runway of each key in ``figures`` (``keys.selectors.key_figures``), by key id,
    from one ``keys_spend`` over the last RUNWAY_WINDOW_DAYS."""
    now = now or timezone.now()
    spend = keys_spend(
        tenant=tenant,
        key_ids=[f.key.pk for f in figures],
        since=now - timedelta(days=RUNWAY_WINDOW_DAYS),
        until=now,
    )
    runways = {}
    for f in figures:
        spent = spend[f.key.pk].client_nanos if f.key.pk in spend else 0
        days_left = (
            runway_days(
                remaining_nanos=f.client_remaining_nanos,
                window_spent_nanos=spent,
                days=RUNWAY_WINDOW_DAYS,
            )
            if f.status == ClientKey.Status.ACTIVE
            else None
        )
        runways[f.key.pk] = KeyRunway(window_client_nanos=spent, days_left=days_left)
    return runways


# ----------------------------------------------------------------------------- earnings


@dataclass(frozen=True, slots=True)
class KeyAllTime:
    """A key's all-time money from its settled counters, and its status (the attributes
    of ``KeyFigures`` that earnings show, without the price ratio's arithmetic, which
    costs a thousand keys milliseconds for nothing)."""

    key: ReportKey
    status: str
    client_spent_nanos: int
    cost_spent_nanos: int

    @property
    def profit_nanos(self) -> int:
        return self.client_spent_nanos - self.cost_spent_nanos


@dataclass(frozen=True, slots=True)
class KeyEarnings(UsageTotals):
    """One key: the window's totals from its traces, all-time money from its counters."""

    figures: KeyAllTime


# The key columns earnings read: what ``KeyAllTime`` shows and its status needs.
EARNINGS_KEY_COLUMNS = (
    "id",
    "label",
    "prefix",
    "funding",
    "status",
    "expires_at",
    "client_spent_nanos",
    "cost_spent_nanos",
)


@dataclass(frozen=True, slots=True)
class MonthUsage(UsageTotals):
    """A local month, named by its first day."""

    month: date


@dataclass(frozen=True, slots=True)
class Earnings:
    """The tenant's window totals (from traces and rollups), per local month with traffic
    (oldest first), and all-time money (from key counters)."""

    window: UsageTotals
    all_time_client_nanos: int
    all_time_cost_nanos: int
    by_key: list[KeyEarnings]
    by_month: list[MonthUsage]

    @property
    def all_time_profit_nanos(self) -> int:
        return self.all_time_client_nanos - self.all_time_cost_nanos

    @property
    def all_time_margin_percent(self) -> Decimal | None:
        return margin_percent(
            revenue_nanos=self.all_time_client_nanos, cost_nanos=self.all_time_cost_nanos
        )


def earnings_summary(
    *, tenant: Tenant, since: datetime, until: datetime, zone: ZoneInfo | None = None
) -> Earnings:
    """Revenue (client prices), cost and profit in a window, from traces and rollups (so a
    past quarter answers after its traces are purged), and all time, from the keys' settled
    counters (``client_spent``/``cost_spent``, ``KeyAllTime``).

    ``by_key`` lists every key, deleted ones included, with traffic in the window or any
    spend ever: the largest window revenue first, then the largest all-time revenue.
    ``by_month`` has the months, local to ``zone`` (the tenant's time zone by default), with
    traffic in the window; the first and last may be partial.
    """
    window = usage_window(tenant=tenant, since=since, until=until, zone=zone)
    with ledger_snapshot():
        read = window.breakdowns("client_key_id", "month")
    per_key, per_month = read["client_key_id"], read["month"]
    keys = (
        ClientKey.objects.for_tenant(tenant)
        .filter(
            Q(pk__in=_ids_in(per_key)) | Q(client_spent_nanos__gt=0) | Q(cost_spent_nanos__gt=0)
        )
        .values_list(*EARNINGS_KEY_COLUMNS)
    )
    now = timezone.now()
    by_key = [
        KeyEarnings(
            figures=KeyAllTime(
                key=ReportKey(pk, label, prefix, funding),
                status=ClientKey.status_shown(status, expires_at, now),
                client_spent_nanos=client_spent,
                cost_spent_nanos=cost_spent,
            ),
            **per_key.get(pk, NO_USAGE),
        )
        for pk, label, prefix, funding, status, expires_at, client_spent, cost_spent in keys
    ]
    by_key.sort(key=lambda k: (-k.client_nanos, -k.figures.client_spent_nanos, -k.figures.key.pk))
    return Earnings(
        window=UsageTotals(**functools.reduce(_added, per_key.values(), NO_USAGE)),
        all_time_client_nanos=sum(k.figures.client_spent_nanos for k in by_key),
        all_time_cost_nanos=sum(k.figures.cost_spent_nanos for k in by_key),
        by_key=by_key,
        by_month=[MonthUsage(month=m, **per_month[m]) for m in sorted(per_month)],
    )


@dataclass(frozen=True, slots=True)
class EarningsTotals:
    """``Earnings`` without its breakdowns: the window's totals and all-time money."""

    window: UsageTotals
    all_time_client_nanos: int
    all_time_cost_nanos: int

    @property
    def all_time_profit_nanos(self) -> int:
        return self.all_time_client_nanos - self.all_time_cost_nanos


def earnings_totals(
    *, tenant: Tenant, since: datetime, until: datetime, zone: ZoneInfo | None = None
) -> EarningsTotals:
    """``earnings_summary``'s window totals and all-time figures without its rows per key
    and per month: the window from the same sources (the daily rows' level for totals),
    all time as the sum of every key's settled counters (a key without spend adds 0)."""
    window = usage_window(tenant=tenant, since=since, until=until, zone=zone)
    with ledger_snapshot():
        # The window's days from their tenant-wide level, summed.
        totals = functools.reduce(_added, window.grouped("day").values(), NO_USAGE)
    all_time = ClientKey.objects.for_tenant(tenant).aggregate(
        client=Sum("client_spent_nanos", default=0), cost=Sum("cost_spent_nanos", default=0)
    )
    return EarningsTotals(
        window=UsageTotals(**totals),
        all_time_client_nanos=int(all_time["client"]),
        all_time_cost_nanos=int(all_time["cost"]),
    )


# ------------------------------------------------------------------------- sub-accounts


def sub_account_usage(
    *,
    tenant: Tenant,
    key_id: int,
    since: datetime,
    until: datetime,
    zone: ZoneInfo | None = None,
) -> UsageReport:
    """A sub-account's usage report (404 for a key that is not a sub-account)."""
    key = sub_account_get(tenant=tenant, key_id=key_id)
    return key_usage(tenant=tenant, key_id=key.pk, since=since, until=until, zone=zone)


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class Statement:
    """A key's calendar month in the tenant's time zone, what a reseller attaches to the
    invoice it sends its client: client prices only (the ``*_nanos`` cost figures of the
    totals are there, and the API never shows them). ``since``/``until`` are the month's
    local midnights in UTC; ``by_day`` has the local days with traffic, oldest first."""

    tenant: Tenant
    key: ClientKey
    first_day: date
    next_first_day: date
    zone: ZoneInfo
    since: datetime
    until: datetime
    totals: UsageTotals
    by_model: list[ModelUsage]
    by_day: list[DayUsage]

    @property
    def month(self) -> str:
        return f"{self.first_day:%Y-%m}"


def month_bounds(*, zone: ZoneInfo, year: int, month: int) -> tuple[datetime, datetime]:
    """The local midnights that start the month and the next one, in UTC. Every UTC
    offset in use is whole quarter-hours, so both are bucket boundaries: the month is read
    from rollups alone once its traces are purged."""
    following = (year + 1, 1) if month == 12 else (year, month + 1)
    since = datetime(year, month, 1, tzinfo=zone).astimezone(UTC)
    until = datetime(*following, 1, tzinfo=zone).astimezone(UTC)
    return since, until


def key_statement(*, tenant: Tenant, key_id: int, year: int, month: int) -> Statement:
    """One of the tenant's keys (deleted ones too; else 404) over a calendar month of the
    tenant's time zone (``Tenant.zone``), per model and per local day."""
    key = key_get(tenant=tenant, key_id=key_id)
    zone = tenant.zone
    since, until = month_bounds(zone=zone, year=year, month=month)
    window = usage_window(tenant=tenant, since=since, until=until).of_key(key)
    with ledger_snapshot():
        read = window.breakdowns("model", "day")
    by_model, by_day = read["model"], read["day"]
    totals = functools.reduce(_added, by_model.values(), NO_USAGE)
    return Statement(
        tenant=tenant,
        key=key,
        first_day=since.astimezone(zone).date(),
        next_first_day=until.astimezone(zone).date(),
        zone=zone,
        since=since,
        until=until,
        totals=UsageTotals(**totals),
        by_model=[ModelUsage(model=m, **sums) for m, sums in _largest_first(by_model)],
        by_day=[DayUsage(date=day, **by_day[day]) for day in sorted(by_day)],
    )


# ------------------------------------------------------------------------ rollup audit


def _differences(expected: dict[str, int], actual: dict[str, int], source: str) -> str:
    """An audit problem's sums that disagree: ``name actual (source say expected)``."""
    return ", ".join(
        f"{name} {actual[name]} ({source} say {expected[name]})"
        for name in expected
        if expected[name] != actual[name]
    )


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
        differences = _differences(self.expected, self.actual, "traces")
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


@dataclass(frozen=True, slots=True)
class DayProblem:
    """One daily row that disagrees with the sum of its day's 15-minute rows."""

    tenant_id: int
    zone: str
    day: date
    client_key_id: int
    model: str
    tag: str
    expected: dict[str, int]
    actual: dict[str, int]

    @property
    def message(self) -> str:
        differences = _differences(self.expected, self.actual, "15-minute rows")
        return (
            f"day {self.day.isoformat()} ({self.zone or 'no zone'}) tenant {self.tenant_id} "
            f"key {self.client_key_id} model {self.model!r} tag {self.tag!r}: {differences}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "zone": self.zone,
            "tenant_id": self.tenant_id,
            "client_key_id": self.client_key_id,
            "model": self.model,
            "tag": self.tag,
            "expected": self.expected,
            "actual": self.actual,
            "message": self.message,
        }


def _audited_days(zone: str, rollup_cutoff: datetime | None) -> Q:
    """The days of ``zone`` whose 15-minute rows are all retained: all of them, or those
    after the date the rollups' retention cutoff falls in."""
    if rollup_cutoff is None:
        return Q()
    return Q(day__gt=rollup_cutoff.astimezone(ZoneInfo(zone)).date())


DayRowKey = tuple[int, str, date, int, str, str]


def _days_audit(rollup_cutoff: datetime | None) -> list[DayProblem]:
    """Every built tenant's daily rows against its 15-minute rows summed per local date in
    its daily zone (by the database, independently of the pass); a daily row of a tenant not
    built, or in another zone, is a problem too. Run inside the caller's snapshot."""
    tenants_by_zone: dict[str, list[int]] = {}
    for tenant_id, zone in UsageDayState.objects.exclude(zone=NO_DAILY_ZONE).values_list(
        "tenant_id", "zone"
    ):
        tenants_by_zone.setdefault(zone, []).append(tenant_id)
    expected: dict[DayRowKey, dict[str, int]] = {}
    for zone, tenant_ids in tenants_by_zone.items():
        per_day = (
            UsageRollup.objects.filter(tenant_id__in=tenant_ids)
            .order_by()
            .annotate(day=TruncDate("bucket_start", tzinfo=ZoneInfo(zone)))
            .filter(_audited_days(zone, rollup_cutoff))
            .values("tenant_id", "day", "client_key_id", "model", "tag")
            .annotate(**{f"{name}__sum": Sum(name) for name in ROLLUP_SUMS})
        )
        for row in per_day:
            key = (
                row["tenant_id"],
                zone,
                row["day"],
                row["client_key_id"],
                row["model"],
                row["tag"],
            )
            expected[key] = {name: int(row[f"{name}__sum"]) for name in ROLLUP_SUMS}
    actual: dict[DayRowKey, dict[str, int]] = {}
    for zone in UsageDay.objects.order_by().values_list("zone", flat=True).distinct():
        rows = UsageDay.objects.filter(_audited_days(zone, rollup_cutoff), zone=zone).values(
            "tenant_id", "day", "client_key_id", "model", "tag", *ROLLUP_SUMS
        )
        for row in rows:
            key = (
                row["tenant_id"],
                zone,
                row["day"],
                row["client_key_id"],
                row["model"],
                row["tag"],
            )
            actual[key] = {name: row[name] for name in ROLLUP_SUMS}
    zero = dict.fromkeys(ROLLUP_SUMS, 0)
    return [
        DayProblem(
            tenant_id=key[0],
            zone=key[1],
            day=key[2],
            client_key_id=key[3],
            model=key[4],
            tag=key[5],
            expected=expected.get(key, zero),
            actual=actual.get(key, zero),
        )  # fmt: skip
        for key in sorted(expected.keys() | actual.keys())
        if expected.get(key, zero) != actual.get(key, zero)
    ]


@dataclass(frozen=True, slots=True)
class DayLevelProblem:
    """One row of a tenant-wide daily level (``level``: its model's name) that disagrees
    with the tenant's daily rows of its day summed per the level's column (``value``)."""

    level: str
    tenant_id: int
    zone: str
    day: date
    value: Any
    expected: dict[str, int]
    actual: dict[str, int]

    @property
    def message(self) -> str:
        differences = _differences(self.expected, self.actual, "daily rows")
        return (
            f"{self.level} {self.day.isoformat()} ({self.zone or 'no zone'}) "
            f"tenant {self.tenant_id} {self.value!r}: {differences}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "day": self.day.isoformat(),
            "zone": self.zone,
            "tenant_id": self.tenant_id,
            "value": self.value,
            "expected": self.expected,
            "actual": self.actual,
            "message": self.message,
        }


def _day_levels_audit() -> list[DayLevelProblem]:
    """Every tenant-wide daily level against the daily rows summed per its column (by the
    database, independently of the pass), all days. Run inside the caller's snapshot."""
    problems = []
    zero = dict.fromkeys(ROLLUP_SUMS, 0)
    for level in DAY_LEVELS:
        columns = ("tenant_id", "zone", "day", level.value)
        regrouped = (
            UsageDay.objects.order_by()
            .values(*columns)
            .annotate(**{f"{name}__sum": Sum(name) for name in ROLLUP_SUMS})
        )
        expected = {
            tuple(row[c] for c in columns): {name: int(row[f"{name}__sum"]) for name in ROLLUP_SUMS}
            for row in regrouped
        }
        actual = {
            tuple(row[c] for c in columns): {name: row[name] for name in ROLLUP_SUMS}
            for row in level.objects.values(*columns, *ROLLUP_SUMS)
        }
        problems += [
            DayLevelProblem(
                level=level.__name__,
                tenant_id=key[0],
                zone=key[1],
                day=key[2],
                value=key[3],
                expected=expected.get(key, zero),
                actual=actual.get(key, zero),
            )  # fmt: skip
            for key in sorted(expected.keys() | actual.keys())
            if expected.get(key, zero) != actual.get(key, zero)
        ]
    return problems


def _key_months_audit(rollup_cutoff: datetime | None) -> list[DayLevelProblem]:
    """The keys' monthly level against the daily rows summed per key and local month (by
    the database, independently of the pass): the months whose daily rows are all retained
    (every one, or those that start on or after the date the rollups' retention cutoff
    falls in). A problem names the month by its first day. Run inside the caller's
    snapshot."""
    columns = ("tenant_id", "zone", "month", "client_key_id")
    zero = dict.fromkeys(ROLLUP_SUMS, 0)
    expected: dict[tuple[Any, ...], dict[str, int]] = {}
    actual: dict[tuple[Any, ...], dict[str, int]] = {}
    zones = {
        *UsageDay.objects.order_by().values_list("zone", flat=True).distinct(),
        *UsageKeyMonth.objects.order_by().values_list("zone", flat=True).distinct(),
    }
    for zone in sorted(zones):
        audited = Q()
        if rollup_cutoff is not None:
            audited = Q(month__gte=rollup_cutoff.astimezone(ZoneInfo(zone)).date())
        regrouped = (
            UsageDay.objects.filter(zone=zone)
            .order_by()
            .annotate(month=TruncMonth("day", output_field=DateField()))
            .filter(audited)
            .values(*columns)
            .annotate(**{f"{name}__sum": Sum(name) for name in ROLLUP_SUMS})
        )
        for row in regrouped:
            sums = {name: int(row[f"{name}__sum"]) for name in ROLLUP_SUMS}
            expected[tuple(row[c] for c in columns)] = sums
        rows = UsageKeyMonth.objects.filter(audited, zone=zone).values(*columns, *ROLLUP_SUMS)
        for row in rows:
            actual[tuple(row[c] for c in columns)] = {name: row[name] for name in ROLLUP_SUMS}
    return [
        DayLevelProblem(
            level=UsageKeyMonth.__name__,
            tenant_id=key[0],
            zone=key[1],
            day=key[2],
            value=key[3],
            expected=expected.get(key, zero),
            actual=actual.get(key, zero),
        )  # fmt: skip
        for key in sorted(expected.keys() | actual.keys())
        if expected.get(key, zero) != actual.get(key, zero)
    ]


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


def rollups_audit(
    *, now: datetime | None = None
) -> list[RollupProblem | DayProblem | DayLevelProblem]:
    """Recompute, for every bucket whose traces are all still retained (it starts at or
    after ``now - TRACE_RETENTION_DAYS``), the sums of its rolled traces and compare them
    with its rollup row, every daily row with the 15-minute rows of its local day (the
    days whose 15-minute rows are all retained), and every row of the tenant-wide daily
    levels and of the keys' monthly level (the months whose daily rows are all retained)
    with the daily rows regrouped; [] if all agree. Unrolled traces count
    toward no rollup yet. Read in one snapshot, so a pass committing meanwhile is no false
    mismatch. What ``manage.py rollup_usage --check`` runs.

    A key whose traces were deleted on request (``TraceDeletion``) has no traces left to
    check its buckets before ``traces_before`` against: those are skipped."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.TRACE_RETENTION_DAYS)
    since = bucket_ceiling(cutoff)
    rollup_cutoff = None
    if settings.USAGE_ROLLUP_RETENTION_DAYS:
        rollup_cutoff = now - timedelta(days=settings.USAGE_ROLLUP_RETENTION_DAYS)
    with ledger_snapshot():
        day_problems = _days_audit(rollup_cutoff)
        level_problems = [*_day_levels_audit(), *_key_months_audit(rollup_cutoff)]
        expected = _rolled_trace_sums(since)
        actual = {
            (r["bucket_start"], r["tenant_id"], r["client_key_id"], r["model"], r["tag"]): {
                name: r[name] for name in ROLLUP_SUMS
            }
            for r in UsageRollup.objects.filter(bucket_start__gte=since).values(
                "bucket_start", "tenant_id", "client_key_id", "model", "tag", *ROLLUP_SUMS
            )
        }
        traces_deleted_before = dict(
            TraceDeletion.objects.values("client_key_id")
            .annotate(before=Max("traces_before"))
            .values_list("client_key_id", "before")
        )
    zero = dict.fromkeys(ROLLUP_SUMS, 0)
    problems: list[RollupProblem | DayProblem | DayLevelProblem] = []
    for key in sorted(expected.keys() | actual.keys()):
        start, tenant_id, client_key_id, model, tag = key
        deleted_before = traces_deleted_before.get(client_key_id)
        if deleted_before is not None and start < deleted_before:
            continue
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
    return [*problems, *day_problems, *level_problems]
