"""What a report window's usage adds up to, per key, model, tag, local day or month: the
one place the reports (``usage.selectors``) read the rollup levels and the raw traces.

Design overview. A window ``[since, until)`` is summed from disjoint sources that together
hold every request in it exactly once:

* the **daily rows** of whole local days (``UsageDay``; over all the tenant's keys, the
  tenant-wide level that has the breakdown's column: ``UsageKeyDay``, ``UsageModelDay``,
  ``UsageTagDay``; per key, the keys' **monthly rows**, ``UsageKeyMonth``, for the whole
  local months), when the tenant's daily rows are built in the report's zone;
* the **15-minute rows** (``UsageRollup``) of the window's other whole buckets;
* the **traces** of the partial buckets at its edges (rolled or not) and the traces not
  rolled yet of its whole buckets.

A day the window covers only in part may also be read as its daily row *minus* the
15-minute rows of the part outside the window (a daily row is exactly its day's 15-minute
rows: the pass writes both in one transaction, ``rollup_usage --check`` audits it), when
that part holds fewer buckets: for a window ending now, today's part outside is the few
minutes left of the current quarter-hour, not the hours since midnight. Every bucket
inside the window is then counted once and every one outside it nets to zero, so the sums
stay exact; a group whose requests net to zero had none in the window and is left out.
A month the days cover in part is read the same way from its monthly row less its other
days, and a partial bucket at an edge from its 15-minute rows less its rolled traces
outside the window (plus its unrolled ones inside): for a window ending now, the current
quarter-hour is its rows, less no trace, where reading its traces meant every request of
the last minutes. Never across rows a retention purge or a key's trace deletion may have
thinned (``USAGE_ROLLUP_RETENTION_DAYS``, ``TRACE_RETENTION_DAYS``, ``TraceDeletion``).

Every breakdown a report shows is read in one statement per source, each source once (on
PostgreSQL ``GROUPING SETS``; elsewhere grouped by all the columns at once and regrouped
here), as hand-built SQL: the ORM's query building cost more CPU than the queries. Python
only adds integers (money in nano-dollars). Run ``UsageWindow.breakdowns`` inside one
snapshot (``billing.selectors.ledger_snapshot``): which sources are read depends on the
tenant's ``UsageDayState``, read first, and a pass committing between two statements would
otherwise count its batch twice or not at all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.db.models import Model, QuerySet
from django.utils import timezone

from accounts.models import Tenant
from keys.models import ClientKey
from usage.models import (
    BUCKET,
    DAY_LEVELS,
    ERROR_STATUSES,
    NO_DAILY_ZONE,
    Trace,
    TraceDeletion,
    UsageDay,
    UsageDayLevel,
    UsageDayState,
    UsageKeyDay,
    UsageKeyMonth,
    UsageModelDay,
    UsageRollup,
    bucket_ceiling,
    bucket_floor,
)

ONE_DAY = timedelta(days=1)
# How far ahead of this server's clock another server's may run: a purge there, at its own
# time, may have taken that much more than a purge here would have.
CLOCK_MARGIN = timedelta(hours=1)

# What a report can break a window down by: a column of every source, the local date
# (``day``) or the local month, named by its first day (``month``).
GROUPINGS = ("client_key_id", "model", "tag", "day", "month")

# What each group adds up to (``usage.selectors.UsageTotals``'s fields, in this order), and
# the columns of the rollup levels that hold them (the same order).
SUMS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cost_nanos",
    "client_nanos",
    "cache_savings_nanos",
    "client_cache_savings_nanos",
)
_LEVEL_SUMS = ("request_count", "error_count", *SUMS[2:])

# The tenant-wide daily level that answers a grouping by its column.
_LEVEL_OF = {level.value: level for level in DAY_LEVELS}
# Days and months need only a day's sums, which every level has: the models' (a handful
# of rows a day, where the keys' have one per key in use).
_TOTALS_LEVEL = UsageModelDay

Sums = dict[str, int]


def day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of the local date ``day`` in ``zone``, in UTC: its midnight, or
    where a clock change at midnight (America/Santiago) makes it start, since a local time
    that never happened resolves with the offset before the change. Always a bucket start:
    15 minutes divide every offset."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


# Which traces of a range a plan reads: all of them, or only the rolled or unrolled ones.
ALL, ROLLED, UNROLLED = "all", "rolled", "unrolled"


@dataclass(frozen=True, slots=True)
class _Plan:
    """Which rows of each source a window reads: the local dates ``days`` (``[first, end)``,
    or None) from the daily rows; ``buckets``, ``(sign, start, end)``, from the 15-minute
    rows, added or (sign -1) taken off; ``traces``, ``(sign, start, end, which)``, the
    traces of a range (``which``: ``ALL``, ``ROLLED``, ``UNROLLED``), added or taken off."""

    days: tuple[date, date] | None
    buckets: tuple[tuple[int, datetime, datetime], ...]
    traces: tuple[tuple[int, datetime, datetime, str], ...]


def _span_seconds(ranges: list[tuple[datetime, datetime]], horizon: datetime) -> float:
    """How much time of ``ranges`` can hold rows: none after ``horizon``."""
    return sum(max((min(end, horizon) - start).total_seconds(), 0) for start, end in ranges)


@dataclass(frozen=True, slots=True)
class UsageWindow:
    """A tenant's usage in ``[since, until)``, its days and months local to ``zone``; all
    its keys, or those ``of_key``/``of_keys`` keep (``keys``: SQL conditions on the
    ``client_key_id`` column, with their parameters)."""

    tenant: Tenant
    since: datetime
    until: datetime
    zone: ZoneInfo
    keys: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    # What the window read once and keeps (``_daily_zone``), shared with its narrowed copies.
    memo: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def of_key(self, key: ClientKey) -> UsageWindow:
        """The same window, one key's usage only."""
        return dataclasses.replace(self, keys=(*self.keys, ("= %s", (key.pk,))))

    def of_keys(self, keys: QuerySet[ClientKey]) -> UsageWindow:
        """The same window, only the usage of the keys the queryset selects."""
        sql, params = keys.order_by().values("pk").query.sql_with_params()
        return dataclasses.replace(self, keys=(*self.keys, (f"IN ({sql})", tuple(params))))

    def _daily(self, by: str | None) -> type[UsageDay] | type[UsageDayLevel]:
        """The daily rows to read for a grouping by the column ``by`` (None: by day or
        month): a tenant-wide level when the window is not narrowed and one has it."""
        if self.keys:
            return UsageDay
        if by is None:
            return _TOTALS_LEVEL
        return _LEVEL_OF.get(by, UsageDay)

    def _state(self) -> tuple[str, datetime | None]:
        """The zone the tenant's daily rows are complete for ("" if none), and the end of
        its last request to delete a key's traces (``TraceDeletion.traces_before``; None if
        none), in one statement, read once per window (and the windows narrowed from it): a
        report's reads share one snapshot, so neither can change between them."""
        if "state" not in self.memo:
            quote = connection.ops.quote_name
            tenant = quote("tenant_id")
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT (SELECT {quote('zone')} FROM {quote(UsageDayState._meta.db_table)} "  # noqa: S608 (names are ours)
                    f"WHERE {tenant} = %s), (SELECT MAX({quote('traces_before')}) "
                    f"FROM {quote(TraceDeletion._meta.db_table)} WHERE {tenant} = %s)",
                    [self.tenant.pk, self.tenant.pk],
                )
                zone, deleted_before = cursor.fetchone()
            if isinstance(deleted_before, str):  # SQLite's times are text, in UTC
                deleted_before = datetime.fromisoformat(deleted_before).replace(tzinfo=UTC)
            self.memo["state"] = (zone or NO_DAILY_ZONE, deleted_before)
        return self.memo["state"]

    def _daily_zone(self) -> str:
        return self._state()[0]

    def _subtracts(self, start: datetime, now: datetime) -> bool:
        """Whether a day starting at ``start`` may be read as its daily row minus 15-minute
        rows: not where the rollup retention may have purged some of them (the daily row
        of the day the cutoff falls in outlives them)."""
        retention = settings.USAGE_ROLLUP_RETENTION_DAYS
        # A purge deletes the 15-minute rows before its cutoff, at most ``now - retention``.
        return not retention or start >= now - timedelta(days=retention) + CLOCK_MARGIN

    def _traces_kept(self, bucket_start: datetime, now: datetime) -> bool:
        """Whether every rolled trace of the bucket starting at ``bucket_start`` is still
        there: within the trace retention (a purge deletes rolled traces from before
        ``now - TRACE_RETENTION_DAYS`` at most), and after the last of the tenant's
        requests to delete a key's traces (``TraceDeletion.traces_before``, set before
        any trace goes)."""
        if bucket_start < now - timedelta(days=settings.TRACE_RETENTION_DAYS) + CLOCK_MARGIN:
            return False
        deleted_before = self._state()[1]
        return deleted_before is None or bucket_start >= deleted_before

    def _plan(self) -> _Plan:
        """Which rows of each source hold the window's requests (see the module's
        docstring); where there are two exact readings, the choice only weighs their cost."""
        since, until, zone = self.since, self.until, self.zone
        first, last = bucket_ceiling(since), bucket_floor(until)
        if first >= last:  # no whole bucket inside: every request is still a trace (or purged)
            return _Plan(days=None, buckets=(), traces=((1, since, until, ALL),))
        now = timezone.now()
        horizon = now + BUCKET  # later buckets hold no row (but a trace dated ahead)
        # A partial bucket at an edge: its traces in the window, or its rollup rows less its
        # rolled traces outside the window plus its unrolled ones inside (the current
        # quarter-hour of a window ending now: its rows, less no trace).
        start, end = first, last
        traces: list[tuple[int, datetime, datetime, str]] = []
        if since < first:
            opened = first - BUCKET
            if self._traces_kept(opened, now) and _span_seconds(
                [(opened, since)], horizon
            ) < _span_seconds([(since, first)], horizon):
                start = opened
                traces += [(-1, opened, since, ROLLED), (1, since, first, UNROLLED)]
            else:
                traces.append((1, since, first, ALL))
        traces.append((1, first, last, UNROLLED))
        if last < until:
            closed = last + BUCKET
            if self._traces_kept(last, now) and _span_seconds(
                [(until, closed)], horizon
            ) < _span_seconds([(last, until)], horizon):
                end = closed
                traces += [(1, last, until, UNROLLED), (-1, until, closed, ROLLED)]
            else:
                traces.append((1, last, until, ALL))
        traces = _joined(traces)
        if self._daily_zone() != zone.key:
            return _Plan(days=None, buckets=((1, start, end),), traces=tuple(traces))
        # The local days of the first and last rolled-up buckets, and each one's choice:
        # its 15-minute rows inside the window, or its daily row less those outside.
        first_day = start.astimezone(zone).date()
        last_day = (end - BUCKET).astimezone(zone).date()
        from_days: set[date] = set()
        buckets: list[tuple[int, datetime, datetime]] = []
        for day in sorted({first_day, last_day}):
            day_begins, day_ends = day_start(day, zone), day_start(day + ONE_DAY, zone)
            inside = (max(start, day_begins), min(end, day_ends))
            outside = [(a, b) for a, b in ((day_begins, inside[0]), (inside[1], day_ends)) if a < b]
            if not outside:
                from_days.add(day)
            elif self._subtracts(day_begins, now) and _span_seconds(
                outside, horizon
            ) < _span_seconds([inside], horizon):
                from_days.add(day)
                buckets += [(-1, a, b) for a, b in outside]
            else:
                buckets.append((1, *inside))
        # The days between are whole: always from the daily rows.
        days_first = first_day if first_day in from_days else first_day + ONE_DAY
        days_end = last_day + ONE_DAY if last_day in from_days else last_day
        days = (days_first, days_end) if days_first < days_end else None
        return _Plan(days=days, buckets=tuple(buckets), traces=tuple(traces))

    def breakdowns(self, *groupings: str) -> dict[str, dict[Any, Sums]]:
        """The window's totals per value of each of ``groupings`` (``GROUPINGS``), every
        source read once for all of them; a value without requests is not there. Run it
        inside one snapshot (see the module's docstring)."""
        plan = self._plan()
        # A month is the sum of its days: read by day, regrouped here.
        columns = list(dict.fromkeys("day" if g == "month" else g for g in groupings))
        totals: dict[str, dict[Any, list[int]]] = {c: {} for c in columns}
        with connection.cursor() as cursor:
            if plan.buckets or plan.traces:
                sql, params = self._recent_sql(plan, columns)
                cursor.execute(sql, params)
                _add_rows(totals, columns, cursor.fetchall())
            if plan.days is not None:
                tables: dict[type[UsageDay] | type[UsageDayLevel], list[str]] = {}
                for column in columns:
                    daily = self._daily(None if column == "day" else column)
                    tables.setdefault(daily, []).append(column)
                for daily, level_columns in tables.items():
                    sql, params = self._days_sql(daily, plan.days, level_columns)
                    cursor.execute(sql, params)
                    _add_rows(totals, level_columns, cursor.fetchall())
        answer: dict[str, dict[Any, Sums]] = {}
        for grouping in groupings:
            per_value = totals["day" if grouping == "month" else grouping]
            if grouping == "month":
                months: dict[Any, list[int]] = {}
                for day, sums in per_value.items():
                    _add_into(months, day.replace(day=1), sums)
                per_value = months
            # A group whose requests net to zero (read as a day less its other part) had none.
            answer[grouping] = {
                value: dict(zip(SUMS, sums, strict=True))
                for value, sums in per_value.items()
                if sums[0]
            }
        return answer

    def grouped(self, by: str) -> dict[Any, Sums]:
        """The window's totals per value of one grouping (``GROUPINGS``)."""
        return self.breakdowns(by)[by]

    def grouped_by_day(self) -> dict[date, Sums]:
        """Totals per local date in the window's zone."""
        return self.grouped("day")

    # ----------------------------------------------------------------------------- SQL

    def _where(self, *conditions: str) -> str:
        quote = connection.ops.quote_name
        keys = [f"{quote('client_key_id')} {condition}" for condition, _ in self.keys]
        return " AND ".join([f"{quote('tenant_id')} = %s", *conditions, *keys])

    def _where_params(self, *params: Any) -> list[Any]:
        return [self.tenant.pk, *params, *(p for _, key_params in self.keys for p in key_params)]

    def _select(self, columns: list[str], at: str) -> tuple[str, list[Any]]:
        """The grouping columns of a 15-minute row or a trace; ``day`` from the time ``at``."""
        quote = connection.ops.quote_name
        parts, params = [], []
        for column in columns:
            if column == "day":
                sql, day_params = connection.ops.datetime_cast_date_sql(
                    quote(at), (), self.zone.key
                )
                parts.append(f"{sql} AS {quote('day')}")
                params += day_params
            else:
                parts.append(quote(column))
        return ", ".join(parts), params

    def _signed_sums(self, sign: int) -> str:
        """A rollup level row's sums under ``SUMS``' names, negated for sign -1."""
        quote = connection.ops.quote_name
        negate = "-" if sign < 0 else ""
        return ", ".join(
            f"{negate}{quote(c)} AS {quote(n)}" for c, n in zip(_LEVEL_SUMS, SUMS, strict=True)
        )

    def _recent_sql(self, plan: _Plan, columns: list[str]) -> tuple[str, list[Any]]:
        """One statement: the plan's 15-minute rows (signed) and traces, grouped."""
        quote = connection.ops.quote_name
        adapt = connection.ops.adapt_datetimefield_value
        branches: list[tuple[str, list[Any]]] = []
        for sign, start, end in plan.buckets:
            select, select_params = self._select(columns, "bucket_start")
            where = self._where(f"{quote('bucket_start')} >= %s", f"{quote('bucket_start')} < %s")
            branches.append(
                (
                    f"SELECT {select}, {self._signed_sums(sign)} "  # noqa: S608 (names are ours)
                    f"FROM {quote(UsageRollup._meta.db_table)} WHERE {where}",
                    [*select_params, *self._where_params(adapt(start), adapt(end))],
                )
            )
        errors = ", ".join(["%s"] * len(ERROR_STATUSES))
        trace_sum_parts = [
            f"1 AS {quote('requests')}",
            f"(CASE WHEN {quote('status')} IN ({errors}) THEN 1 ELSE 0 END) AS {quote('errors')}",
            *(f"{quote(n)} AS {quote(n)}" for n in SUMS[2:]),
        ]
        trace_sums = ", ".join(trace_sum_parts)
        for sign, start, end, which in plan.traces:
            select, select_params = self._select(columns, "created_at")
            conditions = [f"{quote('created_at')} >= %s", f"{quote('created_at')} < %s"]
            if which == UNROLLED:
                # The partial index of unrolled traces (``usage_trace_unrolled``).
                conditions.append(f"NOT {quote('is_rolled')}")
            elif which == ROLLED:
                conditions.append(quote("is_rolled"))
            where = self._where(*conditions)
            sums = trace_sums if sign > 0 else ", ".join(f"-{e}" for e in trace_sum_parts)
            branches.append(
                (
                    f"SELECT {select}, {sums} "  # noqa: S608
                    f"FROM {quote(Trace._meta.db_table)} WHERE {where}",
                    [
                        *select_params,
                        *(str(status) for status in ERROR_STATUSES),
                        *self._where_params(adapt(start), adapt(end)),
                    ],
                )
            )
        return _grouped_sql(branches, columns)

    def _level_branch(
        self, table: type[Model], at: str, sign: int, start: date, end: date, columns: list[str]
    ) -> tuple[str, list[Any]]:
        """The rows of a daily (or monthly) level whose date ``at`` is in ``[start, end)``,
        their sums signed."""
        quote = connection.ops.quote_name
        adapt = connection.ops.adapt_datefield_value
        where = self._where(f"{quote('zone')} = %s", f"{quote(at)} >= %s", f"{quote(at)} < %s")
        return (
            f"SELECT {', '.join(quote(c) for c in columns)}, {self._signed_sums(sign)} "  # noqa: S608
            f"FROM {quote(table._meta.db_table)} WHERE {where}",
            self._where_params(self.zone.key, adapt(start), adapt(end)),
        )

    def _days_sql(
        self, daily: type[Model], days: tuple[date, date], columns: list[str]
    ) -> tuple[str, list[Any]]:
        """One statement: the daily rows (or a level's) of the local dates ``days``, grouped;
        the keys' level from its months where that reads fewer rows (``_months_plan``)."""
        if daily is not UsageKeyDay:
            return _grouped_sql([self._level_branch(daily, "day", 1, *days, columns)], columns)
        months, pieces = self._months_plan(days)
        branches = [self._level_branch(daily, "day", *piece, columns) for piece in pieces]
        if months is not None:
            branches.append(self._level_branch(UsageKeyMonth, "month", 1, *months, columns))
        return _grouped_sql(branches, columns)

    def _months_plan(
        self, days: tuple[date, date]
    ) -> tuple[tuple[date, date] | None, list[tuple[int, date, date]]]:
        """How the keys' level reads the local dates ``days``: the months (``[first, end)``
        of their first days, or None) from the monthly rows, and ``(sign, first, end)``
        ranges of dates from the daily rows, added or (sign -1) taken off. A month the
        dates cover in part is its monthly row less its other days, when those are fewer
        (a monthly row costs about a day's rows; no day after today has rows yet)."""
        first, end = days
        now = timezone.now()
        tomorrow = (now + BUCKET).astimezone(self.zone).date() + ONE_DAY
        first_month = first.replace(day=1)
        last_month = (end - ONE_DAY).replace(day=1)
        from_months: set[date] = set()
        pieces: list[tuple[int, date, date]] = []
        for month in sorted({first_month, last_month}):
            month_end = _next_month(month)
            if not self._subtracts(day_start(month, self.zone), now):
                # The retention may have purged some of its days: the monthly row has more.
                pieces.append((1, max(first, month), min(end, month_end)))
                continue
            inside = (max(first, month), min(end, month_end))
            outside = [(a, b) for a, b in ((month, inside[0]), (inside[1], month_end)) if a < b]
            if not outside:
                from_months.add(month)
            elif _day_count(outside, tomorrow) + 1 < _day_count([inside], tomorrow):
                from_months.add(month)
                pieces += [(-1, a, b) for a, b in outside]
            else:
                pieces.append((1, *inside))
        # The months between are whole.
        months_first = first_month if first_month in from_months else _next_month(first_month)
        months_end = _next_month(last_month) if last_month in from_months else last_month
        if months_first < months_end and not self._subtracts(
            day_start(months_first, self.zone), now
        ):
            # Never a month the retention may have thinned: its days instead.
            pieces.append((1, months_first, months_end))
            months_first = months_end
        months = (months_first, months_end) if months_first < months_end else None
        return months, pieces


def usage_window(
    *, tenant: Tenant, since: datetime, until: datetime, zone: ZoneInfo | None = None
) -> UsageWindow:
    """The usage in ``[since, until)``, its days in ``zone`` (the tenant's by default)."""
    return UsageWindow(tenant=tenant, since=since, until=until, zone=zone or tenant.zone)


def _joined(
    pieces: list[tuple[int, datetime, datetime, str]],
) -> list[tuple[int, datetime, datetime, str]]:
    """Trace ranges in order, each run of adjacent ones of the same sign and kind as one."""
    joined: list[tuple[int, datetime, datetime, str]] = []
    for sign, start, end, which in pieces:
        if start >= end:
            continue
        if joined and joined[-1][0] == sign and joined[-1][3] == which and joined[-1][2] == start:
            joined[-1] = (sign, joined[-1][1], end, which)
        else:
            joined.append((sign, start, end, which))
    return joined


def _next_month(month: date) -> date:
    return (month + timedelta(days=32)).replace(day=1)


def _day_count(ranges: list[tuple[date, date]], horizon: date) -> int:
    """How many dates of ``ranges`` can have rows: none from ``horizon``."""
    return sum(max((min(end, horizon) - start).days, 0) for start, end in ranges)


def _grouped_sql(
    branches: list[tuple[str, list[Any]]], columns: list[str]
) -> tuple[str, list[Any]]:
    """The sums of the rows of ``branches`` (each selecting ``columns`` and the ``SUMS``)
    per value of each column, in one statement."""
    quote = connection.ops.quote_name
    outer = ", ".join(quote(c) for c in columns)
    # As integers: PostgreSQL sums bigints as numeric, which reaches Python as Decimal (a
    # tenth of a report's CPU to parse and convert). Every summed row is a bigint already;
    # a sum past one (9.2 billion dollars in nano-dollars) is an error, never a wrong figure.
    sums = ", ".join(f"CAST(SUM({quote(n)}) AS BIGINT)" for n in SUMS)
    union = " UNION ALL ".join(sql for sql, _ in branches)
    return (
        f"SELECT {outer}, {sums} FROM ({union}) AS usage GROUP BY {_group_by(columns)}",  # noqa: S608
        [p for _, params in branches for p in params],
    )


def _group_by(columns: list[str]) -> str:
    """Group by each column on its own: PostgreSQL's grouping sets (a row then has the one
    column of its set, the others null); elsewhere by all of them together (each row then
    counts toward every column's groups). No grouping column is ever null in a row."""
    quote = connection.ops.quote_name
    if len(columns) > 1 and connection.vendor == "postgresql":
        return f"GROUPING SETS ({', '.join(f'({quote(c)})' for c in columns)})"
    return ", ".join(quote(c) for c in columns)


def _add_into(per_value: dict[Any, list[int]], value: Any, sums: Any) -> None:
    total = per_value.get(value)
    if total is None:
        per_value[value] = list(sums)
    else:
        for i, amount in enumerate(sums):
            total[i] += amount


def _add_rows(
    totals: dict[str, dict[Any, list[int]]], columns: list[str], rows: list[tuple[Any, ...]]
) -> None:
    """Add grouped rows (the ``columns``, then the ``SUMS``) into ``totals``: each row into
    the groups of the columns it has (see ``_group_by``)."""
    width = len(columns)
    for row in rows:
        sums = row[width:]
        for column, value in zip(columns, row[:width], strict=False):
            if value is None:
                continue
            if column == "day" and isinstance(value, str):  # SQLite's dates are text
                value = date.fromisoformat(value)
            _add_into(totals[column], value, sums)
