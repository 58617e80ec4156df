"""The alerts' Celery tasks: thin, re-runnable entry points to ``alerts.services``."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.db import OperationalError

from alerts.services import alert_deliver, alerts_check, deliveries_resume
from config.celery import database_task

logger = logging.getLogger(__name__)


@database_task()
def alerts_check_task() -> int:
    """Claim the alerts whose keys or wallets have crossed them (each delivery enqueued),
    re-arm those back on the safe side, and enqueue again the deliveries whose task was
    lost (beat: every ``ALERTS_CHECK_SECONDS``). Returns how many alerts this run claimed.

    Safe to re-run, and to run twice at once: each crossing is claimed once (see
    ``alerts.services.check``), each try of a delivery claims its row.
    """
    events = alerts_check()
    deliveries_resume()
    return len(events)


@shared_task(
    bind=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
    ignore_result=True,
)
def alert_delivery_task(self: Task, delivery_id: int) -> str:  # type: ignore[type-arg]
    """One try of one delivery (``alert_deliver``); a failed one is retried after the
    delay its row records, until ``ALERT_DELIVERY_MAX_RETRIES`` retries have failed (the
    row counts them, not this task: a try repeated by a redelivered message, or by the
    sweep, does nothing). Returns what it did (``DeliveryOutcome``)."""
    attempt = alert_deliver(delivery_id=delivery_id)
    logger.info("alert delivery %s: %s", delivery_id, attempt.outcome.label)
    if attempt.retry_in is not None and not self.request.is_eager:
        # Run in this process (no broker: development), a retry would run at once, not
        # after its delay; there the check's sweep tries it again once it is due.
        raise self.retry(countdown=attempt.retry_in, max_retries=None)
    return attempt.outcome.value
