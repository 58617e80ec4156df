"""Billing's Celery tasks: thin, re-runnable entry points to ``billing.services``."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from billing.services import reservations_expire

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
def reservations_expire_task() -> int:
    """Release the holds of requests whose worker never settled them (beat: every 30 s).

    Safe to re-run, and to run twice at once: each expiry claims its reservation with a
    conditional update, so a hold that was already expired, settled or released is left
    alone. Returns how many holds this run expired.
    """
    return reservations_expire()
