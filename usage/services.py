"""Writes for traces: rollups and retention. The proxy itself inserts them (``proxy.traces``).

Rollups: ``usage_roll_up`` adds traces into ``UsageRollup`` rows (one per 15-minute UTC
bucket, tenant, key, model and tag) so that reports stay fast at millions of traces and
outlive the traces' retention. Each trace is counted exactly once: one transaction marks a
batch of unrolled traces rolled (``Trace.is_rolled``) and adds their sums into the buckets,
so a pass that fails adds nothing and marks nothing, a trace written late (into a bucket
already rolled) is simply found unrolled by the next pass, and two passes at once claim
disjoint batches (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one writer).

Daily rows: the same transaction also adds the batch into ``UsageDay`` (one row per local
day in the tenant's zone, key, model and tag), in the zone the tenant's ``UsageDayState``
says its daily rows are complete for. When the tenant's ``timezone`` is another zone (it
changed, or the tenant is new), ``usage_days_rebuild`` recomputes its daily rows from its
15-minute rows in the new zone and sets the state, in one transaction; each pass runs it
first. The state row is the lock between the two (see ``_day_states_lock``). The
tenant-wide daily levels (``UsageKeyDay``, ``UsageModelDay``, ``UsageTagDay``: the daily rows
summed per key, model or tag) are added to, rebuilt and purged with the daily rows, in the
same transactions (``_day_levels_add``, ``_day_level_from_sql``), and so is the keys'
monthly level (``UsageKeyMonth``: the daily rows summed per key and local month;
``_key_months_add``, ``_key_months_from_sql``).

Retention: ``traces_purge`` deletes only traces already rolled, so no request's figures are
lost with its trace; ``rollups_purge`` deletes the 15-minute rows past their retention and
the daily rows (and levels) of the whole days before it. A privacy request (``key_traces_delete``)
deletes one key's traces on the same terms, whatever their age.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Exists, Max, OuterRef
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import Tenant
from keys.selectors import key_get
from usage.models import (
    BUCKET,
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
    UsageKeyDay,
    UsageKeyMonth,
    UsageRollup,
    bucket_floor,
)

# Rows per DELETE: each batch is its own short statement, so a large backlog never holds
# one long transaction or lock while the proxy keeps inserting.
PURGE_BATCH_SIZE = 5_000

# Traces per rollup transaction: short enough never to hold locks for long, large enough
# that a backlog of a million traces is a few hundred transactions.
ROLLUP_BATCH_SIZE = 5_000

# The trace columns a claim returns, in this order.
_CLAIMED = (
    "created_at",
    "tenant_id",
    "client_key_id",
    "model",
    "tag",
    "status",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cost_nanos",
    "client_nanos",
    "latency_ms",
    "ttft_ms",
    "cache_savings_nanos",
    "client_cache_savings_nanos",
)

KEY_COLUMNS = ("bucket_start", "tenant_id", "client_key_id", "model", "tag")
# A daily row's natural key (its constraint's columns), and what else a new row is given.
DAY_KEY_COLUMNS = ("tenant_id", "day", "client_key_id", "model", "tag")
# A key's monthly row's natural key.
MONTH_KEY_COLUMNS = ("tenant_id", "month", "client_key_id")

BucketKey = tuple[datetime, int, int, str, str]
DayKey = tuple[int, date, int, str, str]


@dataclass(frozen=True, slots=True)
class RollupResult:
    """What a run of the pass did: traces counted, and bucket rows they went into."""

    traces: int
    buckets: int

    def as_dict(self) -> dict[str, int]:
        return {"traces": self.traces, "buckets": self.buckets}


def _aware(value: Any) -> datetime:
    # A raw cursor hands SQLite's timestamps back as text, PostgreSQL's as aware datetimes.
    at: datetime = parse_datetime(value) if isinstance(value, str) else value  # type: ignore[assignment]
    return at if timezone.is_aware(at) else at.replace(tzinfo=UTC)


def _bucket_sums(rows: Iterable[Sequence[Any]]) -> dict[BucketKey, list[int]]:
    """Claimed trace rows summed per bucket key, in Python integers (exact)."""
    errors = {str(status) for status in ERROR_STATUSES}
    sums: dict[BucketKey, list[int]] = {}
    for row in rows:
        trace = dict(zip(_CLAIMED, row, strict=True))
        key = (
            bucket_floor(_aware(trace["created_at"])),
            trace["tenant_id"],
            trace["client_key_id"],
            trace["model"],
            trace["tag"],
        )
        ttft = trace["ttft_ms"]
        added = (
            1,
            int(trace["status"] in errors),
            trace["input_tokens"],
            trace["output_tokens"],
            trace["cached_input_tokens"],
            trace["cache_write_tokens"],
            trace["cost_nanos"],
            trace["client_nanos"],
            trace["latency_ms"],
            ttft or 0,
            int(ttft is not None),
            trace["cache_savings_nanos"],
            trace["client_cache_savings_nanos"],
        )
        total = sums.setdefault(key, [0] * len(ROLLUP_SUMS))
        for i, amount in enumerate(added):
            total[i] += int(amount)
    return sums


def _claim_sql() -> str:
    """Mark up to ``%s`` unrolled traces rolled and return them, in one statement.

    PostgreSQL: ``SKIP LOCKED`` lets two passes at once take disjoint batches instead of
    waiting on each other, and the lock re-checks ``NOT is_rolled`` on the newest row
    version, so a trace another pass has just committed rolled is skipped, never counted
    twice. SQLite has one writer: the statement runs with the database to itself.
    """
    table = Trace._meta.db_table
    lock = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    quote = connection.ops.quote_name
    return (
        f"UPDATE {table} SET is_rolled = %s WHERE id IN ("  # noqa: S608 (names are ours)
        f"SELECT id FROM {table} WHERE NOT is_rolled LIMIT %s{lock}) "
        f"RETURNING {', '.join(quote(c) for c in _CLAIMED)}"
    )


def _upsert_sql(
    count: int,
    *,
    table: str = UsageRollup._meta.db_table,
    key: Sequence[str] = KEY_COLUMNS,
    extra: Sequence[str] = (),
) -> str:
    """Add ``count`` rows of sums into their rows of ``table`` (natural key ``key``),
    creating the rows that are new (with the ``extra`` columns, which an add leaves)."""
    quote = connection.ops.quote_name
    columns = [*key, *extra, *ROLLUP_SUMS]
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    adds = ", ".join(f"{quote(c)} = {table}.{quote(c)} + EXCLUDED.{quote(c)}" for c in ROLLUP_SUMS)
    return (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "  # noqa: S608
        f"VALUES {', '.join([row] * count)} "
        f"ON CONFLICT ({', '.join(quote(c) for c in key)}) DO UPDATE SET {adds}"
    )


# Rows per INSERT statement: well under SQLite's 32,766 bound parameters (19 per row).
_UPSERT_ROWS = 1_000


def _upsert(cursor: Any, rows: list[tuple[Sequence[Any], Sequence[int]]], **sql: Any) -> None:
    """Add each (values of the key and extra columns, sums) row, ``_UPSERT_ROWS`` a statement."""
    for start in range(0, len(rows), _UPSERT_ROWS):
        chunk = rows[start : start + _UPSERT_ROWS]
        params = [value for columns, total in chunk for value in (*columns, *total)]
        cursor.execute(_upsert_sql(len(chunk), **sql), params)


def _day_states_lock(cursor: Any, tenant_ids: list[int]) -> dict[int, str]:
    """Lock the daily states of ``tenant_ids`` (creating the missing ones, not built) until
    the transaction ends, and return each tenant's daily zone ("" when not built).

    The race this prevents: a rebuild reading the tenant's 15-minute rows before this batch
    commits (so without it) and setting its zone after this batch added into the old zone's
    rows (which the rebuild deletes): the batch would be lost from the daily rows; or the
    rebuild seeing the batch and the batch also adding into the new zone: counted twice.
    Held ``FOR SHARE``, two passes' adds run side by side, while a rebuild's ``FOR UPDATE``
    waits until every add that read the old zone has committed (its statements then see
    their 15-minute rows), and an add that comes after waits for the rebuild and reads the
    new zone. A state row is created here, not only by the rebuild, so that a new tenant's
    first rebuild also waits: its INSERT waits on this uncommitted one. In ``tenant_id``
    order, so that two passes never wait on each other's rows crosswise. SQLite has one
    writer: the whole transaction has the database to itself.
    """
    table = UsageDayState._meta.db_table
    ids = sorted(tenant_ids)
    if not ids:
        return {}
    cursor.execute(
        f"INSERT INTO {table} (tenant_id, zone) "  # noqa: S608 (names are ours)
        f"VALUES {', '.join(['(%s, %s)'] * len(ids))} ON CONFLICT (tenant_id) DO NOTHING",
        [value for tenant_id in ids for value in (tenant_id, NO_DAILY_ZONE)],
    )
    lock = " FOR SHARE" if connection.vendor == "postgresql" else ""
    cursor.execute(
        f"SELECT tenant_id, zone FROM {table} "  # noqa: S608
        f"WHERE tenant_id IN ({', '.join(['%s'] * len(ids))}) ORDER BY tenant_id{lock}",
        ids,
    )
    return dict(cursor.fetchall())


def _day_sums(sums: dict[BucketKey, list[int]], zones: dict[int, str]) -> dict[DayKey, list[int]]:
    """Bucket sums added up per local day in each tenant's daily zone (a bucket is whole in
    one local day: 15 minutes divide every UTC offset); a tenant not built is left out."""
    days: dict[DayKey, list[int]] = {}
    for (bucket, tenant_id, key_id, model, tag), total in sums.items():
        zone = zones.get(tenant_id, NO_DAILY_ZONE)
        if zone == NO_DAILY_ZONE:
            continue  # its rebuild reads the 15-minute rows this batch adds
        day = bucket.astimezone(ZoneInfo(zone)).date()
        into = days.setdefault((tenant_id, day, key_id, model, tag), [0] * len(ROLLUP_SUMS))
        for i, amount in enumerate(total):
            into[i] += amount
    return days


# PostgreSQL: a batch's bucket sums, computed by the claiming statement itself and read by
# the statements that add them into the 15-minute and daily rows; emptied at every commit.
_BATCH_TABLE = "usage_rollup_batch"

# How each rollup sum is computed from a bucket's traces (the rest: SUM of the trace
# column of the same name). Every group has at least one trace, so no SUM is null except
# that of ttft_ms, which only streams have.
_SUM_EXPRESSIONS = {
    "request_count": "COUNT(*)",
    "error_count": "COUNT(*) FILTER (WHERE status IN ({errors}))",
    "latency_ms_sum": "SUM(latency_ms)",
    "ttft_ms_sum": "COALESCE(SUM(ttft_ms), 0)",
    "ttft_count": "COUNT(ttft_ms)",
}


def _batch_sql() -> list[str]:
    """PostgreSQL: the statements of one batch, in order (parameters: the batch size).

    1. Create the batch table if this connection has none yet (``ON COMMIT DELETE ROWS``).
    2. Claim up to ``%s`` unrolled traces and sum them per bucket into it, in one
       statement. The claim walks the partial index of unrolled traces
       (``usage_trace_unrolled``) in its own order, so it reads only unrolled rows however
       many rolled ones (and their dead versions) the table holds; ``SKIP LOCKED`` lets two
       passes take disjoint batches, and the lock re-checks ``NOT is_rolled`` on the newest
       row version, so a trace another pass has just committed rolled is never counted twice.
    """
    quote = connection.ops.quote_name
    trace_table = Trace._meta.db_table
    errors = ", ".join(f"'{status}'" for status in ERROR_STATUSES)
    sums = ", ".join(
        _SUM_EXPRESSIONS.get(name, f"SUM({quote(name)})").format(errors=errors)
        for name in ROLLUP_SUMS
    )
    # The trace columns the sums read: those of the bucket key, the expressions' and the
    # columns summed under their own name.
    sources = (
        *("created_at", "tenant_id", "client_key_id", "model", "tag"),
        *("status", "latency_ms", "ttft_ms"),
        *(name for name in ROLLUP_SUMS if name not in _SUM_EXPRESSIONS),
    )
    columns = ", ".join(
        f"{quote(name)} bigint" for name in ("tenant_id", "client_key_id", *ROLLUP_SUMS)
    )
    return [
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {_BATCH_TABLE} (bucket_start timestamptz, "
        f"model text, tag text, {columns}) ON COMMIT DELETE ROWS",
        f"WITH claimed AS (UPDATE {trace_table} SET is_rolled = true WHERE id IN ("  # noqa: S608
        f"SELECT id FROM {trace_table} WHERE NOT is_rolled ORDER BY tenant_id, created_at "
        f"LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {', '.join(quote(c) for c in sources)}) "
        f"INSERT INTO {_BATCH_TABLE} (bucket_start, tenant_id, client_key_id, model, tag, "
        f"{', '.join(quote(c) for c in ROLLUP_SUMS)}) "
        f"SELECT date_bin('{BUCKET_MINUTES} minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), "
        f"tenant_id, client_key_id, model, tag, {sums} FROM claimed GROUP BY 1, 2, 3, 4, 5",
    ]


def _add_from_batch_sql(
    *,
    table: str,
    key: Sequence[str],
    select_key: Sequence[str],
    extra: Sequence[str] = (),
    join: str = "",
    where: str = "",
) -> str:
    """PostgreSQL: add the batch table's sums, regrouped by ``select_key`` (the values of
    the natural key ``key``, then of the ``extra`` columns a new row is given), into
    ``table``, in natural-key order (see ``_roll_up_batch``)."""
    quote = connection.ops.quote_name
    adds = ", ".join(f"{quote(c)} = {table}.{quote(c)} + EXCLUDED.{quote(c)}" for c in ROLLUP_SUMS)
    positions = ", ".join(str(i + 1) for i in range(len(key) + len(extra)))
    columns = (*key, *extra, *ROLLUP_SUMS)
    return (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "  # noqa: S608
        f"SELECT {', '.join(select_key)}, "
        f"{', '.join(f'SUM(b.{quote(c)})' for c in ROLLUP_SUMS)} "
        f"FROM {_BATCH_TABLE} b {join} {where} GROUP BY {positions} ORDER BY {positions} "
        f"ON CONFLICT ({', '.join(quote(c) for c in key)}) DO UPDATE SET {adds}"
    )


def _roll_up_batch_in_sql(*, batch_size: int) -> RollupResult:
    """PostgreSQL: one batch, set-based: the traces are claimed and summed by the database
    and never travel to Python (the same rules as ``_roll_up_batch``, ~5× the throughput)."""
    with transaction.atomic(), connection.cursor() as cursor:
        create, claim = _batch_sql()
        cursor.execute(create)
        # Empty already, unless this runs inside an outer transaction (a test, or a caller's
        # atomic block): then an earlier batch's rows are still there.
        cursor.execute(f"DELETE FROM {_BATCH_TABLE}")  # noqa: S608
        cursor.execute(claim, [batch_size])
        cursor.execute(f"SELECT DISTINCT tenant_id FROM {_BATCH_TABLE}")  # noqa: S608
        _day_states_lock(cursor, [row[0] for row in cursor.fetchall()])
        cursor.execute(
            _add_from_batch_sql(
                table=UsageRollup._meta.db_table,
                key=KEY_COLUMNS,
                select_key=[f"b.{c}" for c in KEY_COLUMNS],
            )
        )
        # The zones read here are those just locked FOR SHARE: no rebuild can change them
        # before this transaction ends. A tenant not built ("") is left to its rebuild.
        cursor.execute(
            _add_from_batch_sql(
                table=UsageDay._meta.db_table,
                key=DAY_KEY_COLUMNS,
                extra=("zone",),
                select_key=[
                    "b.tenant_id",
                    "(b.bucket_start AT TIME ZONE s.zone)::date",
                    "b.client_key_id",
                    "b.model",
                    "b.tag",
                    "s.zone",
                ],
                join=f"JOIN {UsageDayState._meta.db_table} s ON s.tenant_id = b.tenant_id",
                where=f"WHERE s.zone <> '{NO_DAILY_ZONE}'",
            )
        )
        # The tenant-wide levels, regrouped from the same sums, right after the daily rows.
        for level in DAY_LEVELS:
            cursor.execute(
                _add_from_batch_sql(
                    table=level._meta.db_table,
                    key=_level_key(level),
                    select_key=[
                        "b.tenant_id",
                        "(b.bucket_start AT TIME ZONE s.zone)::date",
                        f"b.{level.value}",
                        "s.zone",
                    ],
                    extra=("zone",),
                    join=f"JOIN {UsageDayState._meta.db_table} s ON s.tenant_id = b.tenant_id",
                    where=f"WHERE s.zone <> '{NO_DAILY_ZONE}'",
                )
            )
        # The keys' months last (the same order in every pass: see ``_roll_up_batch``).
        cursor.execute(
            _add_from_batch_sql(
                table=UsageKeyMonth._meta.db_table,
                key=MONTH_KEY_COLUMNS,
                select_key=[
                    "b.tenant_id",
                    "date_trunc('month', b.bucket_start AT TIME ZONE s.zone)::date",
                    "b.client_key_id",
                    "s.zone",
                ],
                extra=("zone",),
                join=f"JOIN {UsageDayState._meta.db_table} s ON s.tenant_id = b.tenant_id",
                where=f"WHERE s.zone <> '{NO_DAILY_ZONE}'",
            )
        )
        cursor.execute(f"SELECT COALESCE(SUM(request_count), 0), COUNT(*) FROM {_BATCH_TABLE}")  # noqa: S608
        traces, buckets = cursor.fetchone()
    return RollupResult(traces=int(traces), buckets=int(buckets))


def _roll_up_batch(*, batch_size: int) -> RollupResult:
    if connection.vendor == "postgresql":
        return _roll_up_batch_in_sql(batch_size=batch_size)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_claim_sql(), [True, batch_size])
        sums = _bucket_sums(cursor.fetchall())
        zones = _day_states_lock(cursor, list({key[1] for key in sums}))
        # Sorted by natural key: two passes adding into the same buckets (or days) lock
        # them in the same order, so they queue behind each other instead of deadlocking.
        adapt_time = connection.ops.adapt_datetimefield_value
        _upsert(
            cursor,
            [((adapt_time(key[0]), *key[1:]), total) for key, total in sorted(sums.items())],
        )
        adapt_day = connection.ops.adapt_datefield_value
        day_rows = sorted(_day_sums(sums, zones).items())
        _upsert(
            cursor,
            [
                ((tenant_id, adapt_day(day), *rest, zones[tenant_id]), total)
                for (tenant_id, day, *rest), total in day_rows
            ],
            table=UsageDay._meta.db_table,
            key=DAY_KEY_COLUMNS,
            extra=("zone",),
        )
        _day_levels_add(cursor, dict(day_rows), zones)
        _key_months_add(cursor, dict(day_rows), zones)
    return RollupResult(traces=sum(t[0] for t in sums.values()), buckets=len(sums))


def _level_key(level: type[UsageDayLevel]) -> tuple[str, str, str]:
    """A tenant-wide daily level's natural key (its constraint's columns)."""
    return ("tenant_id", "day", level.value)


def _day_levels_add(cursor: Any, day_sums: dict[DayKey, list[int]], zones: dict[int, str]) -> None:
    """Add a batch's daily sums (``_day_sums``) into the tenant-wide daily levels, each
    regrouped by the level's column: in the pass's transaction, right after the daily rows,
    so that the levels always equal the daily rows regrouped. Sorted by natural key, and the
    levels in ``DAY_LEVELS`` order, for the same reason as the daily rows."""
    adapt_day = connection.ops.adapt_datefield_value
    for level in DAY_LEVELS:
        at = DAY_KEY_COLUMNS.index(level.value)
        regrouped: dict[tuple[int, date, Any], list[int]] = {}
        for day_key, total in day_sums.items():
            into = regrouped.setdefault(
                (day_key[0], day_key[1], day_key[at]), [0] * len(ROLLUP_SUMS)
            )
            for i, amount in enumerate(total):
                into[i] += amount
        _upsert(
            cursor,
            [
                ((tenant_id, adapt_day(day), value, zones[tenant_id]), total)
                for (tenant_id, day, value), total in sorted(regrouped.items())
            ],
            table=level._meta.db_table,
            key=_level_key(level),
            extra=("zone",),
        )


def _key_months_add(cursor: Any, day_sums: dict[DayKey, list[int]], zones: dict[int, str]) -> None:
    """Add a batch's daily sums into the keys' monthly level, regrouped per tenant, local
    month and key: in the pass's transaction, after the daily levels (sorted, as they are)."""
    adapt_day = connection.ops.adapt_datefield_value
    months: dict[tuple[int, date, int], list[int]] = {}
    for (tenant_id, day, key_id, _, _), total in day_sums.items():
        into = months.setdefault((tenant_id, day.replace(day=1), key_id), [0] * len(ROLLUP_SUMS))
        for i, amount in enumerate(total):
            into[i] += amount
    _upsert(
        cursor,
        [
            ((tenant_id, adapt_day(month), key_id, zones[tenant_id]), total)
            for (tenant_id, month, key_id), total in sorted(months.items())
        ],
        table=UsageKeyMonth._meta.db_table,
        key=MONTH_KEY_COLUMNS,
        extra=("zone",),
    )


def _key_months_from_sql() -> tuple[str, list[Any]]:
    """One tenant's keys' daily level summed per local month, as its keys' monthly rows,
    and the parameters before the tenant's id (both databases; the rebuild runs it after
    the daily levels, which it reads)."""
    quote = connection.ops.quote_name
    month, params = connection.ops.date_trunc_sql("month", quote("day"), ())
    sums = ", ".join(f"SUM({quote(c)})" for c in ROLLUP_SUMS)
    columns = ", ".join(quote(c) for c in (*MONTH_KEY_COLUMNS, "zone", *ROLLUP_SUMS))
    sql = (
        f"INSERT INTO {UsageKeyMonth._meta.db_table} ({columns}) "  # noqa: S608 (names are ours)
        f"SELECT {quote('tenant_id')}, {month}, {quote('client_key_id')}, {quote('zone')}, "
        f"{sums} FROM {UsageKeyDay._meta.db_table} WHERE {quote('tenant_id')} = %s "
        "GROUP BY 1, 2, 3, 4"
    )
    return sql, list(params)


def _day_level_from_sql(
    level: type[UsageDayLevel],
    *,
    source: str = UsageDay._meta.db_table,
    where: str = "tenant_id = %s",
) -> str:
    """Add the rows of ``source`` that ``where`` keeps (daily rows, or any table with their
    columns: ``tenant_id``, ``day``, ``client_key_id``, ``model``, ``tag``, ``zone`` and the
    sums) into ``level``, summed per tenant, day and the level's column, in natural key order.
    Both databases. The rebuild runs it over a tenant's daily rows (it deleted the level's
    rows first, so nothing conflicts); a set-based pass can run it over its batch's daily sums
    (the conflict clause adds into the rows that exist)."""
    quote = connection.ops.quote_name
    table = level._meta.db_table
    key = ", ".join(quote(c) for c in _level_key(level))
    sums = ", ".join(f"SUM({quote(c)})" for c in ROLLUP_SUMS)
    adds = ", ".join(f"{quote(c)} = {table}.{quote(c)} + EXCLUDED.{quote(c)}" for c in ROLLUP_SUMS)
    return (
        f"INSERT INTO {table} ({key}, zone, {', '.join(quote(c) for c in ROLLUP_SUMS)}) "  # noqa: S608 (names are ours)
        f"SELECT {key}, zone, {sums} FROM {source} WHERE {where} "
        f"GROUP BY {key}, zone ORDER BY {key} "
        f"ON CONFLICT ({key}) DO UPDATE SET {adds}"
    )


def _days_from_rollups_sql() -> str:
    """PostgreSQL: one tenant's 15-minute rows summed per date in a zone, as daily rows."""
    quote = connection.ops.quote_name
    sums = ", ".join(f"SUM({quote(c)})" for c in ROLLUP_SUMS)
    return (
        f"INSERT INTO {UsageDay._meta.db_table} "  # noqa: S608 (names are ours)
        f"({', '.join(quote(c) for c in (*DAY_KEY_COLUMNS, 'zone', *ROLLUP_SUMS))}) "
        f"SELECT tenant_id, (bucket_start AT TIME ZONE %s)::date, client_key_id, model, tag, "
        f"%s, {sums} FROM {UsageRollup._meta.db_table} WHERE tenant_id = %s "
        "GROUP BY tenant_id, 2, client_key_id, model, tag"
    )


def _days_from_rollups_in_python(*, tenant_id: int, zone: str) -> None:
    """SQLite (no time zone database): the same in Python, with exact integers."""
    rollups = UsageRollup.objects.filter(tenant_id=tenant_id).values_list(
        "bucket_start", "client_key_id", "model", "tag", *ROLLUP_SUMS
    )
    sums = {(b, tenant_id, k, m, t): list(total) for b, k, m, t, *total in rollups.iterator()}
    UsageDay.objects.bulk_create(
        [
            UsageDay(
                tenant_id=tenant_id,
                day=day,
                client_key_id=key_id,
                model=model,
                tag=tag,
                zone=zone,
                **dict(zip(ROLLUP_SUMS, total, strict=True)),
            )  # fmt: skip
            for (_, day, key_id, model, tag), total in _day_sums(sums, {tenant_id: zone}).items()
        ],
        batch_size=_UPSERT_ROWS,
    )


def _days_rebuild(*, tenant_id: int, zone: str) -> bool:
    """Recompute one tenant's daily rows in ``zone`` from its 15-minute rows and record the
    zone, in one transaction; False if they already were in it (another pass did it)."""
    table = UsageDayState._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        # Create, then lock the state row: the INSERT waits for a pass that is creating it,
        # and FOR UPDATE for every pass holding it FOR SHARE (``_day_states_lock``), so the
        # statements below (each with a fresh snapshot: READ COMMITTED) see every batch
        # added in the old zone, and no batch adds until this commits.
        cursor.execute(
            f"INSERT INTO {table} (tenant_id, zone) VALUES (%s, %s) "  # noqa: S608
            "ON CONFLICT (tenant_id) DO NOTHING",
            [tenant_id, NO_DAILY_ZONE],
        )
        lock = " FOR UPDATE" if connection.vendor == "postgresql" else ""
        cursor.execute(f"SELECT zone FROM {table} WHERE tenant_id = %s{lock}", [tenant_id])  # noqa: S608
        if cursor.fetchone()[0] == zone:
            return False
        UsageDay.objects.filter(tenant_id=tenant_id).delete()
        for level in DAY_LEVELS:
            level.objects.filter(tenant_id=tenant_id).delete()
        UsageKeyMonth.objects.filter(tenant_id=tenant_id).delete()
        if connection.vendor == "postgresql":
            cursor.execute(_days_from_rollups_sql(), [zone, zone, tenant_id])
        else:
            _days_from_rollups_in_python(tenant_id=tenant_id, zone=zone)
        for level in DAY_LEVELS:
            cursor.execute(_day_level_from_sql(level), [tenant_id])
        months, params = _key_months_from_sql()
        cursor.execute(months, [*params, tenant_id])
        UsageDayState.objects.filter(tenant_id=tenant_id).update(zone=zone)
    return True


def usage_days_rebuild() -> int:
    """Rebuild the daily rows of every tenant whose ``timezone`` is not the zone they are
    built in (it changed zone, or it is new), each in its own transaction; return how many
    were rebuilt. The rollup pass runs it first; until it has, a tenant's reports in its
    new zone read the 15-minute rows (exact, slower)."""
    built = UsageDayState.objects.filter(tenant=OuterRef("pk"), zone=OuterRef("timezone"))
    stale = Tenant.objects.filter(~Exists(built)).order_by("pk").values_list("pk", "timezone")
    return sum(_days_rebuild(tenant_id=pk, zone=zone) for pk, zone in stale)


def usage_roll_up(
    *, batch_size: int = ROLLUP_BATCH_SIZE, max_batches: int | None = None
) -> RollupResult:
    """Add every unrolled trace into its rollup bucket, ``batch_size`` traces per
    transaction, until none is left (or ``max_batches`` were done); return the totals.

    Exactly once: a trace is marked rolled in the same transaction as its sums are added,
    so re-running finds nothing to do, a run cut short keeps the batches it committed, and
    two runs at once count disjoint traces. ``buckets`` counts bucket rows touched per
    batch (a bucket touched by two batches counts twice). First, the tenants whose zone
    changed get their daily rows rebuilt (``usage_days_rebuild``).
    """
    usage_days_rebuild()
    traces = buckets = batches = 0
    while max_batches is None or batches < max_batches:
        result = _roll_up_batch(batch_size=batch_size)
        batches += 1
        traces += result.traces
        buckets += result.buckets
        if result.traces < batch_size:
            break
    return RollupResult(traces=traces, buckets=buckets)


def traces_purge(*, now: datetime | None = None, batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Delete rolled traces older than ``settings.TRACE_RETENTION_DAYS``, oldest first, in
    batches of ``batch_size`` ids until none is left; return how many were deleted.

    A trace not rolled up yet is never deleted (its figures live nowhere else): the purge
    rolls every unrolled trace up first, and one written meanwhile (late, already past the
    retention) waits for the next purge. Idempotent and safe to run twice at once: a row already deleted by the other
    run is simply not counted again. Money is untouched (the ledger and key counters hold it).
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.TRACE_RETENTION_DAYS)
    usage_roll_up()
    deleted = 0
    while True:
        ids = list(
            Trace.objects.filter(created_at__lt=cutoff, is_rolled=True)
            .order_by("created_at")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        # is_rolled again: never trust the ids alone for what a delete may take.
        count, _ = Trace.objects.filter(pk__in=ids, is_rolled=True).delete()
        deleted += count


def key_traces_delete(
    *,
    tenant: Tenant,
    key_id: int,
    actor: AbstractBaseUser | None,
    batch_size: int = PURGE_BATCH_SIZE,
) -> TraceDeletion:
    """Delete every raw trace of one of the tenant's keys (deleted keys too; another
    tenant's key raises DoesNotExist, 404), after rolling them up, and return the record
    of it (``deleted_count``). The key's reports keep their figures: its rollups stay, and
    only whole quarter-hours are read from them (a window whose edge cuts a quarter-hour
    reads that quarter-hour from traces, so the deleted ones are missing there, as after a
    purge; whole-hour, daily and monthly windows are unaffected).

    Never loses a figure, whatever runs at the same time:

    * the record is committed first, with ``traces_before`` past every trace that can be
      taken (the end of the current quarter-hour), so the rollup audit skips the key's
      buckets before it from then on instead of reporting their traces missing;
    * every trace written so far is rolled up (``usage_roll_up``), then only rolled traces
      are deleted, each batch's ``DELETE`` re-checking ``is_rolled``: a trace a concurrent
      pass is rolling waits for its commit and goes rolled, a trace the proxy writes
      meanwhile stays until it is rolled (and a later request deletes it). Batches of
      ``batch_size`` rows, each its own short statement, as the purge does.
    """
    key = key_get(tenant=tenant, key_id=key_id)
    now = timezone.now()
    deletion = TraceDeletion.objects.create(
        tenant=tenant,
        client_key=key,
        actor_id=actor.pk if actor is not None else None,
        requested_at=now,
        traces_before=bucket_floor(now) + BUCKET,
    )
    usage_roll_up()
    # Only rows that existed when it started: a key in use cannot keep the loop going.
    newest_id = Trace.objects.aggregate(newest=Max("id"))["newest"] or 0
    of_the_key = Trace.objects.filter(
        tenant=tenant,
        client_key=key,
        is_rolled=True,
        created_at__lt=deletion.traces_before,
        pk__lte=newest_id,
    )
    deleted = 0
    while True:
        ids = list(of_the_key.order_by("id").values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        # is_rolled again (in of_the_key): never trust the ids alone for what a delete may take.
        count, _ = of_the_key.filter(pk__in=ids).delete()
        deleted += count
    deletion.deleted_count = deleted
    deletion.finished_at = timezone.now()
    deletion.save(update_fields=["deleted_count", "finished_at"])
    return deletion


def rollups_purge(*, now: datetime | None = None) -> int:
    """Delete rollup buckets older than ``settings.USAGE_ROLLUP_RETENTION_DAYS`` (0, the
    default, keeps them forever), the daily rows of the local days that end by then (whole
    days only: the day the cutoff falls in keeps its row) and the keys' monthly rows of the
    local months that end by then (the month the cutoff falls in keeps its rows); return
    how many bucket rows. Reports then start where they start."""
    if settings.USAGE_ROLLUP_RETENTION_DAYS == 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=settings.USAGE_ROLLUP_RETENTION_DAYS)
    count, _ = UsageRollup.objects.filter(bucket_start__lt=cutoff).delete()
    zones = UsageDay.objects.order_by().values_list("zone", flat=True).distinct()
    months = UsageKeyMonth.objects.order_by().values_list("zone", flat=True).distinct()
    for zone in sorted({*zones, *months}):
        # A date before the cutoff's own date (in the row's zone) ends by the cutoff.
        cutoff_day = cutoff.astimezone(ZoneInfo(zone)).date()
        # The levels go with the daily rows they regroup: no snapshot sees one without the other.
        with transaction.atomic():
            UsageDay.objects.filter(zone=zone, day__lt=cutoff_day).delete()
            for level in DAY_LEVELS:
                level.objects.filter(zone=zone, day__lt=cutoff_day).delete()
            UsageKeyMonth.objects.filter(zone=zone, month__lt=cutoff_day.replace(day=1)).delete()
    return count
