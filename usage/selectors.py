"""Tenant-scoped reads of traces: a key's requests, usage reports (a key's, a sub-account's,
per tag), earnings.

Every figure is aggregated by the database (``Count``/``Sum``, days by ``TruncDate`` in
the report's time zone, the tenant's by default), never by summing rows in Python: over the
daily rollups (``UsageDay``) of the whole local days in the window, the 15-minute rollups
(``UsageRollup``) of the whole buckets outside them, plus the traces not in either
(``_Window``), so a request counts as soon as its trace is written and a window whose
traces were purged still answers. Python only adds the sources' group totals. Money stays integer nano-dollars
here: ``cost`` is what the reseller pays, ``client`` what its client is charged (both fixed
at settlement, so a later price change never rewrites them). The APIs turn them into
decimal strings or cents. A window is half-open: ``since <= created_at < until``.

Days and months are local to a zone (``zone``; the tenant's ``Tenant.timezone`` when not
given): the database truncates both sources in it, the rollups' ``bucket_start`` and the
traces' ``created_at``. Every offset in use is a whole number of quarter-hours (+5:30, +5:45,
a 30-minute daylight-saving shift), so a local day, even one of 23 or 25 hours, is a whole
number of 15-minute buckets and a bucket never straddles two days.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, DateField, Max, Q, QuerySet, Sum
from django.db.models.functions import ExtractMinute, Floor, TruncDate, TruncHour, TruncMonth
from django.utils import timezone

from accounts.models import Tenant
from billing.money import div_round_half_up
from billing.selectors import ledger_snapshot
from keys.models import EXPIRED, ClientKey
from keys.selectors import key_get, sub_account_get
from usage.models import (
    BUCKET_MINUTES,
    DAY_LEVELS,
    ERROR_STATUSES,
    NO_DAILY_ZONE,
    ROLLUP_SUMS,
    Trace,
    TraceDeletion,
    UsageDay,
    UsageDayLevel,
    UsageDayState,
    UsageModelDay,
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


_TOTALS = tuple(f.name for f in fields(UsageTotals))
NO_USAGE: dict[str, int] = dict.fromkeys(_TOTALS, 0)


def _sum_fields(row: dict[str, Any]) -> dict[str, int]:
    """The UsageTotals fields of an aggregated row, as ints."""
    return {name: int(row[name]) for name in _TOTALS}


def _added(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {name: a[name] + b[name] for name in _TOTALS}


def day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of the local date ``day`` in ``zone``, in UTC: its midnight, or
    where a clock change at midnight (America/Santiago) makes it start, since a local time
    that never happened resolves with the offset before the change. Always a bucket start:
    15 minutes divide every offset."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def whole_days(since: datetime, until: datetime, zone: ZoneInfo) -> tuple[date, date]:
    """The local days in ``zone`` wholly inside ``[since, until)``, as ``[first, end)``
    (empty when ``first >= end``)."""
    first = since.astimezone(zone).date()
    if day_start(first, zone) < since:
        first += timedelta(days=1)
    return first, until.astimezone(zone).date()


# The tenant-wide daily level that answers a grouping by its column.
_LEVEL_OF = {level.value: level for level in DAY_LEVELS}
# Totals, days and months need only a day's sums, which every level has: the models' (a
# handful of rows a day, where the keys' have one per key in use).
_TOTALS_LEVEL = UsageModelDay


@dataclass(frozen=True, slots=True)
class _Sources:
    """A window's three disjoint sources, which together hold every request in it."""

    days: QuerySet[UsageDay] | QuerySet[UsageDayLevel]
    rollups: QuerySet[UsageRollup]
    traces: QuerySet[Trace]


@dataclass(frozen=True, slots=True)
class _Window:
    """A window's usage in a report zone, from three disjoint sources that together hold
    every request in it: the daily rows of the whole local days inside it (when the
    tenant's daily rows are built in the report zone), the 15-minute rollup rows of the
    whole buckets inside it and outside those days, and the traces not in either (the
    traces of the partial buckets at its edges, rolled or not, and the unrolled traces of
    the whole buckets). A window not narrowed (``filter``), all the tenant's keys, reads a
    tenant-wide daily level instead of the daily rows when it groups by the level's column
    (``client_key_id``, ``model``, ``tag``) or by day or month, or totals: those rows are the
    daily rows regrouped, written in the same transactions, so the figures are the same from
    far fewer rows (a key's day instead of its every model and tag). In another zone (or before the pass has rebuilt the daily rows in
    the tenant's new zone), the 15-minute rows cover every whole bucket: as exact, slower.

    Which sources is decided by reading the tenant's ``UsageDayState`` when ``total`` or
    ``grouped`` runs, so run them inside one snapshot (``ledger_snapshot``): a pass
    committing between the reads would otherwise count its batch twice or not at all, and
    a rebuild would swap the daily rows from under the state read before it.

    A window edge inside a bucket stays exact: that bucket's rollup is not used, its traces
    are, for as long as they are retained (like every raw trace, they go after
    ``TRACE_RETENTION_DAYS``). So a window that starts on a bucket boundary (every hour and
    quarter-hour) answers the same after its traces are purged.
    """

    tenant: Tenant
    since: datetime
    until: datetime
    zone: ZoneInfo
    lookups: tuple[dict[str, Any], ...] = ()
    # What the window read once and keeps (``_daily_zone``), shared with its filtered copies.
    memo: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def filter(self, **lookups: Any) -> _Window:
        """Narrow every source by the same lookups (columns all three have)."""
        return dataclasses.replace(self, lookups=(*self.lookups, lookups))

    def _daily(self, by: str | None) -> type[UsageDay] | type[UsageDayLevel]:
        """The daily rows to read for a grouping by the column ``by`` (None: by day alone,
        or totals): a tenant-wide level when the window is not narrowed and one has it."""
        if self.lookups:
            return UsageDay
        if by is None:
            return _TOTALS_LEVEL
        return _LEVEL_OF.get(by, UsageDay)

    def _sources(self, by: str | None = None) -> _Sources:
        tenant, since, until = self.tenant, self.since, self.until
        first, last = bucket_ceiling(since), bucket_floor(until)
        daily = self._daily(by)
        days = daily.objects.none()
        traces = Trace.objects.filter(tenant=tenant, created_at__gte=since, created_at__lt=until)
        if first >= last:  # no whole bucket inside: every request is still a trace (or purged)
            rollups = UsageRollup.objects.none()
        else:
            rollups = UsageRollup.objects.filter(
                tenant=tenant, bucket_start__gte=first, bucket_start__lt=last
            )
            outside = Q(created_at__lt=first) | Q(created_at__gte=last) | Q(is_rolled=False)
            traces = traces.filter(outside)
            day_first, day_end = whole_days(since, until, self.zone)
            if day_first < day_end and self._daily_zone() == self.zone.key:
                days = daily.objects.filter(
                    tenant=tenant, zone=self.zone.key, day__gte=day_first, day__lt=day_end
                )
                # Two index ranges, not one with a filter: the buckets before the first
                # whole day and from the end of the last one.
                start, end = day_start(day_first, self.zone), day_start(day_end, self.zone)
                rollups = UsageRollup.objects.filter(
                    Q(bucket_start__gte=first, bucket_start__lt=start)
                    | Q(bucket_start__gte=end, bucket_start__lt=last),
                    tenant=tenant,
                )
        for lookups in self.lookups:
            days, rollups, traces = (
                days.filter(**lookups),
                rollups.filter(**lookups),
                traces.filter(**lookups),
            )
        return _Sources(days=days, rollups=rollups, traces=traces)

    def _daily_zone(self) -> str:
        """The zone the tenant's daily rows are complete for ("" if none), read once per
        window (and the windows ``filter`` makes of it): a report's reads share one
        snapshot, so the state cannot change between them."""
        if "daily_zone" not in self.memo:
            state = UsageDayState.objects.filter(tenant=self.tenant).values_list("zone", flat=True)
            self.memo["daily_zone"] = state.first() or NO_DAILY_ZONE
        return self.memo["daily_zone"]

    def total(self) -> dict[str, int]:
        sources = self._sources()
        return functools.reduce(
            _added,
            [
                _sum_fields(sources.days.aggregate(**_rollup_sums())),
                _sum_fields(sources.rollups.aggregate(**_rollup_sums())),
                _sum_fields(sources.traces.aggregate(**_sums())),
            ],
        )

    def grouped(
        self, by: str, *, rollup_by: Any = None, trace_by: Any = None, day_by: Any = None
    ) -> dict[Any, dict[str, int]]:
        """Totals per value of ``by``: a column of all three sources, or the expressions
        given for the 15-minute rows and the traces (and for the daily rows, else their
        column ``by``). ``day`` (the column) and ``day_by`` group by the daily rows' ``day``
        alone, so any tenant-wide level answers them."""
        day_only = by == "day" or day_by is not None
        sources = self._sources(None if day_only else by)
        # order_by() first: an ordering column left in the query would split the groups.
        days = sources.days.order_by()
        rollups = sources.rollups.order_by()
        traces = sources.traces.order_by()
        if rollup_by is not None:
            rollups = rollups.annotate(**{by: rollup_by})
            traces = traces.annotate(**{by: trace_by})
        if day_by is not None:
            days = days.annotate(**{by: day_by})
        per_value: dict[Any, dict[str, int]] = {}
        for rows in (
            days.values(by).annotate(**_rollup_sums()),
            rollups.values(by).annotate(**_rollup_sums()),
        ):
            for row in rows:
                per_value[row[by]] = _added(per_value.get(row[by], NO_USAGE), _sum_fields(row))
        for row in traces.values(by).annotate(**_sums()):
            per_value[row[by]] = _added(per_value.get(row[by], NO_USAGE), _sum_fields(row))
        return per_value

    def grouped_by_day(self) -> dict[date, dict[str, int]]:
        """Totals per local date in the window's zone."""
        return self.grouped(
            "day",
            rollup_by=TruncDate("bucket_start", tzinfo=self.zone),
            trace_by=TruncDate("created_at", tzinfo=self.zone),
        )


def _window(
    *, tenant: Tenant, since: datetime, until: datetime, zone: ZoneInfo | None = None
) -> _Window:
    """The usage in ``[since, until)``, its days in ``zone`` (the tenant's by default)."""
    return _Window(tenant=tenant, since=since, until=until, zone=zone or tenant.zone)


def _per_month(window: _Window) -> dict[date, dict[str, int]]:
    """Totals per local month in the window's zone, keyed by the month's first day."""
    zone = window.zone
    return window.grouped(
        "month",
        rollup_by=TruncMonth("bucket_start", tzinfo=zone, output_field=DateField()),
        trace_by=TruncMonth("created_at", tzinfo=zone, output_field=DateField()),
        day_by=TruncMonth("day", output_field=DateField()),
    )


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
class KeyUsage(UsageTotals):
    key: ClientKey


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
    window = _window(tenant=tenant, since=since, until=until, zone=zone).filter(client_key=key)
    with ledger_snapshot():
        by_model = window.grouped("model")
        by_day = window.grouped_by_day()
    # Every request has a model: the total is the models' (one query fewer per source).
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
    window = _window(tenant=tenant, since=since, until=until, zone=zone)
    with ledger_snapshot():
        per_key = window.grouped("client_key_id")
        by_model = window.grouped("model")
        by_day = window.grouped_by_day()
        by_tag = window.grouped("tag")
    # Only what the report shows of each key: a thousand full rows cost more to load than
    # the report's queries.
    keys = (
        ClientKey.objects.for_tenant(tenant)
        .only("id", "tenant_id", "label", "prefix")
        .in_bulk(list(per_key))
    )
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
    window = _window(tenant=tenant, since=since, until=until, zone=zone)
    with ledger_snapshot():
        by_day = window.grouped_by_day()
    return [DayUsage(date=day, **by_day[day]) for day in sorted(by_day)]


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
class KeyAllTime:
    """A key's all-time money from its settled counters, and its status (the attributes
    of ``KeyFigures`` that earnings show, without the price ratio's arithmetic, which
    costs a thousand keys milliseconds for nothing)."""

    key: ClientKey
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


# The key columns earnings read: what ``KeyAllTime`` shows and ``effective_status`` needs.
EARNINGS_KEY_COLUMNS = (
    "id",
    "tenant_id",
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
    window = _window(tenant=tenant, since=since, until=until, zone=zone)
    with ledger_snapshot():
        per_key = window.grouped("client_key_id")
        per_month = _per_month(window)
    keys = (
        ClientKey.objects.for_tenant(tenant)
        .filter(Q(pk__in=list(per_key)) | Q(client_spent_nanos__gt=0) | Q(cost_spent_nanos__gt=0))
        .only(*EARNINGS_KEY_COLUMNS)
    )
    now = timezone.now()
    by_key = [
        KeyEarnings(
            figures=KeyAllTime(
                key=key,
                status=EXPIRED
                if key.status == ClientKey.Status.ACTIVE and key.is_expired(now)
                else key.status,
                client_spent_nanos=key.client_spent_nanos,
                cost_spent_nanos=key.cost_spent_nanos,
            ),
            **per_key.get(key.pk, NO_USAGE),
        )
        for key in keys
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
    window = _window(tenant=tenant, since=since, until=until, zone=zone)
    with ledger_snapshot():
        totals = window.total()
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
    window = _window(tenant=tenant, since=since, until=until).filter(client_key=key)
    with ledger_snapshot():
        by_model = window.grouped("model")
        by_day = window.grouped_by_day()
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
        differences = ", ".join(
            f"{name} {self.actual[name]} (15-minute rows say {self.expected[name]})"
            for name in self.expected
            if self.expected[name] != self.actual[name]
        )
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
        differences = ", ".join(
            f"{name} {self.actual[name]} (daily rows say {self.expected[name]})"
            for name in self.expected
            if self.expected[name] != self.actual[name]
        )
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
    levels with the daily rows regrouped; [] if all agree. Unrolled traces count
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
        level_problems = _day_levels_audit()
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
