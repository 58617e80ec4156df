"""Writes for traces: retention. The proxy itself inserts them (``proxy.traces``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from usage.models import Trace

# Rows per DELETE: each batch is its own short statement, so a large backlog never holds
# one long transaction or lock while the proxy keeps inserting.
PURGE_BATCH_SIZE = 5_000


def traces_purge(*, now: datetime | None = None, batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Delete traces older than ``settings.TRACE_RETENTION_DAYS``, oldest first, in batches
    of ``batch_size`` ids until none is left; return how many were deleted.

    Idempotent and safe to run twice at once: a row already deleted by the other run is
    simply not counted again. Money is untouched (the ledger and key counters hold it).
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.TRACE_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(
            Trace.objects.filter(created_at__lt=cutoff)
            .order_by("created_at")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        count, _ = Trace.objects.filter(pk__in=ids).delete()
        deleted += count
