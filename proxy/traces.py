"""Trace rows, written without delaying responses.

Only traces may wait in memory: money is settled durably before a response ends. A worker
buffers finished requests' rows and writes them in one batch (COPY on PostgreSQL) every
``PROXY_TRACE_FLUSH_MS`` or every ``MAX_BATCH`` rows; a crash loses at most that window
of traces, never a charge (the ledger and key counters are already written).

A batch is all or nothing, and it holds many tenants' rows, so one row the database
refuses must not cost the others theirs. Two defences:

* strings that come from the request (model, tag) are made storable where the row is
  built (:func:`trace_text`: no control characters, no lone surrogates, cut to the
  column's length), at the cost of one ``str.isprintable()`` when they are clean;
* a batch the database still refuses (:class:`proxy.db.RowsRefused`) is split in halves
  until the refused row is alone; that row is repaired (every string and number brought
  within its column) and written, or, if even that is refused (its key is gone, say),
  dropped. Drops and repairs are counted per worker and logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime
from typing import Final, NamedTuple

from proxy.db import Database, RowsRefused
from usage.models import Trace

logger = logging.getLogger(__name__)

MAX_BATCH = 500
MAX_BUFFERED = 50_000

# What a trace never stores: NUL (PostgreSQL refuses it), lone surrogates (no UTF-8 for
# them) and the other control characters (they would garble a report or a log line).
UNSAFE_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def trace_text(value: str, max_length: int) -> str:
    """``value`` as a trace column can store it: each unsafe character replaced by
    U+FFFD, cut to ``max_length`` characters.

    A clean value costs one ``isprintable()`` (false for every unsafe character, and for
    a few harmless ones, such as format characters, which then only cost the regular
    expression); only the slow path allocates.
    """
    if value.isprintable() and len(value) <= max_length:
        return value
    return UNSAFE_CHARACTERS.sub(REPLACEMENT, value)[:max_length]


class TraceRow(NamedTuple):
    """One row of ``usage.models.Trace``'s table, in column order (a tuple: buffered and
    copied as is)."""

    request_id: str
    tenant_id: int
    client_key_id: int
    tag: str
    endpoint: str
    model: str
    upstream_id: int | None
    upstream_model: str
    price_id: int | None
    is_stream: bool
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    is_usage_estimated: bool
    cost_nanos: int
    client_nanos: int
    status_code: int
    status: str
    error_class: str
    latency_ms: int
    ttft_ms: int | None
    is_over_hold: bool
    overrun_cost_nanos: int
    cache_savings_nanos: int
    client_cache_savings_nanos: int
    created_at: datetime


class TraceStatus:
    """A trace's ``status``: the values of ``Trace.Status``, as the plain strings a row
    carries to the database (copied as they are, like every other value of the row)."""

    OK: Final = Trace.Status.OK.value
    UPSTREAM_ERROR: Final = Trace.Status.UPSTREAM_ERROR.value
    CLIENT_DISCONNECTED: Final = Trace.Status.CLIENT_DISCONNECTED.value
    REFUSED: Final = Trace.Status.REFUSED.value


COLUMNS = TraceRow._fields
# The usage app owns the model; the proxy only copies rows into its table.
TABLE = Trace._meta.db_table

# Each column's bounds, from the model: a string's length, an integer's range.
_INTEGER_RANGES = {
    "PositiveIntegerField": (0, 2**31 - 1),
    "PositiveSmallIntegerField": (0, 2**15 - 1),
    "BigIntegerField": (-(2**63), 2**63 - 1),
}
_TEXT_LENGTHS: dict[str, int] = {}
_INTEGER_BOUNDS: dict[str, tuple[int, int]] = {}
for _field in Trace._meta.concrete_fields:
    if _field.attname not in COLUMNS:
        continue
    if _field.get_internal_type() == "CharField":
        _TEXT_LENGTHS[_field.attname] = int(_field.max_length or 0)
    elif _field.get_internal_type() in _INTEGER_RANGES:
        _INTEGER_BOUNDS[_field.attname] = _INTEGER_RANGES[_field.get_internal_type()]


def repaired(row: TraceRow) -> TraceRow:
    """``row`` with every string made storable and every integer brought within its
    column's range (an upstream may report any number of tokens)."""
    values = row._asdict()
    for name, max_length in _TEXT_LENGTHS.items():
        values[name] = trace_text(values[name], max_length)
    for name, (low, high) in _INTEGER_BOUNDS.items():
        if values[name] is not None:
            values[name] = min(max(values[name], low), high)
    return TraceRow(**values)


class TraceWriter:
    def __init__(self, db: Database, flush_ms: int) -> None:
        self.db = db
        self.flush_seconds = flush_ms / 1000
        self.buffer: list[TraceRow] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # Since this worker started: traces lost (refused, or the database unavailable,
        # or the buffer full) and traces written only once repaired.
        self.dropped_count = 0
        self.repaired_count = 0

    def add(self, row: TraceRow) -> None:
        if len(self.buffer) >= MAX_BUFFERED:
            self.dropped_count += 1
            logger.error(
                "trace buffer full; dropping trace %s (%d traces dropped by this worker)",
                row.request_id,
                self.dropped_count,
            )
            return
        self.buffer.append(row)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self.buffer) >= MAX_BATCH:
            self._wake.set()

    async def _run(self) -> None:
        while self.buffer:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self.buffer:
            batch, self.buffer = self.buffer[:MAX_BATCH], self.buffer[MAX_BATCH:]
            await self._write(batch)

    async def _write(self, rows: list[TraceRow]) -> None:
        """Write ``rows``; when the database refuses one of them, write all the others."""
        try:
            await self.db.insert_many(TABLE, COLUMNS, rows)
        except RowsRefused as refused:
            if len(rows) > 1:
                # Halves, not row by row: a bad row among 500 costs ~2 log2(500) writes.
                middle = len(rows) // 2
                await self._write(rows[:middle])
                await self._write(rows[middle:])
            else:
                await self._write_repaired(rows[0], refused)
        except Exception:
            # The database failed (not a row): nothing of this batch can be written now.
            self.dropped_count += len(rows)
            logger.exception(
                "could not write %d traces (%d traces dropped by this worker)",
                len(rows),
                self.dropped_count,
            )

    async def _write_repaired(self, row: TraceRow, refused: RowsRefused) -> None:
        fixed = repaired(row)
        if fixed != row:
            try:
                await self.db.insert_many(TABLE, COLUMNS, [fixed])
            except RowsRefused as again:
                refused = again
            except Exception:
                self.dropped_count += 1
                logger.exception(
                    "could not write trace %s (%d traces dropped by this worker)",
                    row.request_id,
                    self.dropped_count,
                )
                return
            else:
                self.repaired_count += 1
                logger.warning(
                    "trace %s was refused (%s) and written repaired "
                    "(%d traces repaired by this worker)",
                    row.request_id,
                    refused,
                    self.repaired_count,
                )
                return
        self.dropped_count += 1
        logger.warning(
            "trace %s dropped: the database refused it (%s) (%d traces dropped by this worker)",
            row.request_id,
            refused,
            self.dropped_count,
        )

    async def close(self) -> None:
        await self.flush()
        if self._task is not None and not self._task.done():
            self._task.cancel()
