"""Trace rows, written without delaying responses.

Only traces may wait in memory: money is settled durably before a response ends. A worker
buffers finished requests' rows and writes them in one batch (COPY on PostgreSQL) every
``PROXY_TRACE_FLUSH_MS`` or every ``MAX_BATCH`` rows; a crash loses at most that window
of traces, never a charge (the ledger and key counters are already written).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import NamedTuple

from proxy.db import Database

logger = logging.getLogger(__name__)

MAX_BATCH = 500
MAX_BUFFERED = 50_000


class TraceRow(NamedTuple):
    """One ``proxy_trace`` row, in column order (a tuple: buffered and copied as is)."""

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
    created_at: datetime


COLUMNS = TraceRow._fields
TABLE = "proxy_trace"


class TraceWriter:
    def __init__(self, db: Database, flush_ms: int) -> None:
        self.db = db
        self.flush_seconds = flush_ms / 1000
        self.buffer: list[TraceRow] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def add(self, row: TraceRow) -> None:
        if len(self.buffer) >= MAX_BUFFERED:
            logger.error("trace buffer full; dropping trace %s", row.request_id)
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
            try:
                await self.db.insert_many(TABLE, COLUMNS, batch)
            except Exception:
                logger.exception("could not write %d traces", len(batch))

    async def close(self) -> None:
        await self.flush()
        if self._task is not None and not self._task.done():
            self._task.cancel()
