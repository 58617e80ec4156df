"""The portal's Celery tasks: thin, re-runnable entry points to ``portal.alerts``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from celery import Task, shared_task
from django.db import OperationalError

from config.celery import database_task
from portal.alerts import alert_claim_release, alert_send, client_alerts_check

logger = logging.getLogger(__name__)

# Worth retrying when sending an alert: the mail server down, refusing for now or slow
# (smtplib's errors, connection errors and timeouts are all OSError), or the database.
SEND_RETRY_ERRORS = (OSError, OperationalError)
# 1, 2, 4, 8, 16 s … (jittered, at most SEND_RETRY_BACKOFF_MAX) between the tries.
SEND_MAX_RETRIES = 5
SEND_RETRY_BACKOFF_MAX = 600


@database_task()
def client_alerts_task() -> int:
    """Claim and send the client alerts whose keys have crossed them, re-arm those whose
    keys are back below (beat: every ``CLIENT_ALERTS_SECONDS``). Returns how many alerts
    this run claimed.

    Safe to re-run, and to run twice at once: each alert is claimed by a conditional
    update, so a crossing sends one email whoever sees it first.
    """
    return len(client_alerts_check())


class AlertSendTask(Task):
    """``client_alert_send_task``'s class: what its last failed try leaves behind."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """The last try failed: give the claim back, so the next check claims the alert
        again (a mail server down for an hour delays the email, and loses none). An error
        that is not a sending error is a bug: the claim stays (no email each minute)."""
        call = dict(zip(("binding_id", "kind", "claimed_at"), args, strict=False)) | kwargs
        binding_id, kind = call["binding_id"], call["kind"]
        if isinstance(exc, SEND_RETRY_ERRORS):
            released = alert_claim_release(
                binding_id=binding_id,
                kind=kind,
                claimed_at=datetime.fromisoformat(call["claimed_at"]),
            )
            logger.error(
                "Client alert %s of binding %s not sent after %s tries (%r); %s",
                kind,
                binding_id,
                SEND_MAX_RETRIES + 1,
                exc,
                "claim released, the next check tries again" if released else "claim gone",
            )
        else:
            logger.error("Client alert %s of binding %s failed: %r", kind, binding_id, exc)


@shared_task(
    base=AlertSendTask,
    autoretry_for=SEND_RETRY_ERRORS,
    retry_backoff=True,
    retry_backoff_max=SEND_RETRY_BACKOFF_MAX,
    retry_jitter=True,
    max_retries=SEND_MAX_RETRIES,
    ignore_result=True,
)
def client_alert_send_task(binding_id: int, kind: str, claimed_at: str) -> str:
    """Send the email of one claimed alert (enqueued by ``client_alerts_task`` when it
    claims it). ``claimed_at`` (ISO 8601) names the claim: a claim re-armed, replaced or
    already sent sends nothing, so a run twice sends once. Returns what it did
    (``AlertSendOutcome``)."""
    outcome = alert_send(
        binding_id=binding_id, kind=kind, claimed_at=datetime.fromisoformat(claimed_at)
    )
    logger.info("Client alert %s of binding %s: %s", kind, binding_id, outcome.label)
    return outcome.value
