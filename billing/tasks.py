"""Billing's Celery tasks: thin, re-runnable entry points to billing's services."""

from __future__ import annotations

from billing.stripe_webhooks import stripe_events_purge
from config.celery import database_task


@database_task()
def stripe_events_purge_task() -> int:
    """Delete handled Stripe webhook events past ``STRIPE_EVENT_RETENTION_DAYS`` (beat:
    hourly). Returns how many were deleted.

    Safe to re-run, and to run twice at once: it deletes by age, so a second run finds
    nothing left, and each batch commits on its own, so a run cut short by the time limit
    keeps what it deleted and the next run carries on.
    """
    return stripe_events_purge()
