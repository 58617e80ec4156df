"""Keys' Celery tasks: thin, re-runnable entry points to the services.

The reservation sweep is here rather than in billing because its second half refunds
deleted keys (``keys.services.deleted_keys_refund``), and billing never imports keys.
"""

from __future__ import annotations

from billing.services import reservations_expire
from config.celery import database_task
from keys.services import deleted_keys_refund


@database_task()
def reservations_expire_task() -> int:
    """Release the holds of requests whose worker never settled them (beat: every 30 s).

    Safe to re-run, and to run twice at once: each expiry claims its reservation with a
    conditional update, so a hold that was already expired, settled or released is left
    alone. Returns how many holds this run expired.

    Then refunds deleted prepaid keys whose refund a crash left undone (see
    ``keys.services.deleted_keys_refund``; as safe to re-run).
    """
    expired = reservations_expire()
    deleted_keys_refund()
    return expired
