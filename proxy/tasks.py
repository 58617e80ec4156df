"""The proxy's Celery tasks: thin, re-runnable entry points to ``proxy.services``."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from proxy.services import traces_purge

# A lost connection or a serialization failure is worth retrying; anything else is a bug.
RETRY_MAX = 5
RETRY_BACKOFF_MAX_SECONDS = 60


@shared_task(
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=RETRY_BACKOFF_MAX_SECONDS,
    retry_jitter=True,
    max_retries=RETRY_MAX,
    ignore_result=True,
)
def traces_purge_task() -> int:
    """Delete traces past the retention period (beat: hourly). Returns how many.

    Safe to re-run, and to run twice at once: it deletes by age, so a second run finds
    nothing left, and each batch commits on its own, so a run cut short by the time limit
    keeps what it deleted and the next run carries on.
    """
    return traces_purge()
