"""Writes for traces: rollups and retention. The proxy itself inserts them (``proxy.traces``).

Rollups: ``usage_roll_up`` adds traces into ``UsageRollup`` rows (one per 15-minute UTC
bucket, tenant, key, model and tag) so that reports stay fast at millions of traces and
outlive the traces' retention. Each trace is counted exactly once: one transaction marks a
batch of unrolled traces rolled (``Trace.is_rolled``) and adds their sums into the buckets,
so a pass that fails adds nothing and marks nothing, a trace written late (into a bucket
already rolled) is simply found unrolled by the next pass, and two passes at once claim
disjoint batches (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one writer).

Retention: ``traces_purge`` deletes only traces already rolled, so no request's figures are
lost with its trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from usage.models import ERROR_STATUSES, ROLLUP_SUMS, Trace, UsageRollup, bucket_floor

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

BucketKey = tuple[datetime, int, int, str, str]


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


def _upsert_sql(count: int) -> str:
    """Add ``count`` rows of sums into their buckets, creating the buckets that are new."""
    table = UsageRollup._meta.db_table
    quote = connection.ops.quote_name
    columns = [*KEY_COLUMNS, *ROLLUP_SUMS]
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    adds = ", ".join(f"{quote(c)} = {table}.{quote(c)} + EXCLUDED.{quote(c)}" for c in ROLLUP_SUMS)
    return (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "  # noqa: S608
        f"VALUES {', '.join([row] * count)} "
        f"ON CONFLICT ({', '.join(quote(c) for c in KEY_COLUMNS)}) DO UPDATE SET {adds}"
    )


# Rows per INSERT statement: well under SQLite's 32,766 bound parameters (18 per row).
_UPSERT_ROWS = 1_000


def _roll_up_batch(*, batch_size: int) -> RollupResult:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_claim_sql(), [True, batch_size])
        sums = _bucket_sums(cursor.fetchall())
        # Sorted by natural key: two passes adding into the same buckets lock them in the
        # same order, so they queue behind each other instead of deadlocking.
        ordered = sorted(sums.items())
        for start in range(0, len(ordered), _UPSERT_ROWS):
            chunk = ordered[start : start + _UPSERT_ROWS]
            params: list[Any] = []
            for (bucket, tenant_id, key_id, model, tag), total in chunk:
                bucket_value = connection.ops.adapt_datetimefield_value(bucket)
                params += [bucket_value, tenant_id, key_id, model, tag, *total]
            cursor.execute(_upsert_sql(len(chunk)), params)
    return RollupResult(traces=sum(t[0] for t in sums.values()), buckets=len(sums))


def usage_roll_up(
    *, batch_size: int = ROLLUP_BATCH_SIZE, max_batches: int | None = None
) -> RollupResult:
    """Add every unrolled trace into its rollup bucket, ``batch_size`` traces per
    transaction, until none is left (or ``max_batches`` were done); return the totals.

    Exactly once: a trace is marked rolled in the same transaction as its sums are added,
    so re-running finds nothing to do, a run cut short keeps the batches it committed, and
    two runs at once count disjoint traces. ``buckets`` counts bucket rows touched per
    batch (a bucket touched by two batches counts twice).
    """
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


def rollups_purge(*, now: datetime | None = None) -> int:
    """Delete rollup buckets older than ``settings.USAGE_ROLLUP_RETENTION_DAYS`` (0, the
    default, keeps them forever); return how many. Reports then start where they start."""
    if settings.USAGE_ROLLUP_RETENTION_DAYS == 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=settings.USAGE_ROLLUP_RETENTION_DAYS)
    count, _ = UsageRollup.objects.filter(bucket_start__lt=cutoff).delete()
    return count
