"""One try of one delivery (``alert_deliver``, run by ``alerts.tasks.alert_delivery_task``),
and the sweep that enqueues deliveries whose task was lost (``deliveries_resume``).

A delivery is tried at most ``1 + ALERT_DELIVERY_MAX_RETRIES`` times. Each try first
**claims** the row: one conditional update that takes it only while it is still open
(pending or retrying), due (``next_attempt_at``), and not leased to a try under way
(``locked_until``), and counts the try. So a task run twice (a message delivered again,
the sweep and a retry meeting) tries once, and a delivery already sent does nothing. The
lease outlives any try (``LEASE``); a worker that dies mid-try leaves it to expire, and
the sweep tries again. The network call is made outside any transaction, with no row
locked.

A try that fails is recorded on the row (the error, the HTTP status) and, while tries
remain, the row waits ``retry_delay`` (exponential, jittered) as ``retrying``; the task
retries itself then. After the last, or at once for a delivery that can never succeed
(its channel turned off, its webhook removed or refused), it is ``failed`` for good.

Without a broker (``make run``), tasks run in the process and a task does not wait in
place for its retry: the sweep, run with every check, enqueues the delivery once due.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from alerts.emails import alert_email
from alerts.events import webhook_body
from alerts.exceptions import WebhookHostUnresolved, WebhookUrlRefused
from alerts.models import ERROR_MAX_LENGTH, AlertDelivery, AlertSettings
from alerts.selectors import alert_settings_get, email_recipient
from alerts.webhooks import webhook_post
from billing.crypto import decrypt

logger = logging.getLogger(__name__)

OPEN = (AlertDelivery.Status.PENDING, AlertDelivery.Status.RETRYING)
# A try's lease: far longer than a try can take (the webhook's timeout, the mail server's).
LEASE = timedelta(minutes=5)
# A try may start this early (the clocks of two workers).
EARLY = timedelta(seconds=5)
# The sweep takes a delivery due this long ago and still open: its task was lost (the
# broker was down when it was enqueued, a worker died) or there is no broker.
SWEEP_GRACE = timedelta(seconds=60)
SWEEP_LIMIT = 500


class DeliveryOutcome(models.TextChoices):
    """What ``alert_deliver`` did (the task logs it)."""

    SENT = "sent", "Sent"
    RETRY = "retry", "Failed; tried again later"
    FAILED = "failed", "Failed for good"
    SKIPPED = "skipped", "Not due, under way elsewhere, or done already"


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    outcome: DeliveryOutcome
    # Seconds until the next try (RETRY only).
    retry_in: float | None = None


class _Refused(Exception):
    """The delivery can never succeed as things are: failed at once."""


class _Unanswered(Exception):
    """The receiver answered, but not with a 2xx."""

    def __init__(self, http_status: int) -> None:
        self.http_status = http_status
        super().__init__(f"The webhook answered HTTP {http_status}.")


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed try: ``ALERT_DELIVERY_BACKOFF_SECONDS``
    × 2^(attempts − 1), at most ``ALERT_DELIVERY_BACKOFF_MAX_SECONDS``, drawn between half
    and all of it, so deliveries that failed together do not all come back together."""
    full = min(
        settings.ALERT_DELIVERY_BACKOFF_MAX_SECONDS,
        settings.ALERT_DELIVERY_BACKOFF_SECONDS * 2 ** max(attempts - 1, 0),
    )
    return random.uniform(full / 2, full)  # noqa: S311 - a jitter, not a secret


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:ERROR_MAX_LENGTH]


def _send_email(delivery: AlertDelivery, config: AlertSettings, to: str) -> None:
    if not config.is_email_on:
        raise _Refused("Email alerts were turned off before this one was sent.")
    alert_email(event=delivery.event, tenant=delivery.tenant, to=to).send()


def _send_webhook(delivery: AlertDelivery, config: AlertSettings) -> int:
    if not config.webhook_url:
        raise _Refused("The webhook was removed before this alert was sent.")
    try:
        secret = decrypt(config.webhook_secret_encrypted)
    except InvalidToken:
        raise _Refused(
            "The webhook's signing secret cannot be read (FIELD_ENCRYPTION_KEY changed "
            "without the old one in FIELD_ENCRYPTION_KEY_FALLBACKS?): "
            "make a new one."
        ) from None
    try:
        status = webhook_post(
            url=config.webhook_url,
            secret=secret,
            body=webhook_body(delivery.event),
            event_id=delivery.event.public_id,
            timestamp=int(time.time()),
        )
    except WebhookHostUnresolved:
        raise  # the name server may answer at the next try
    except WebhookUrlRefused as exc:
        raise _Refused(str(exc)) from None
    if not 200 <= status < 300:
        raise _Unanswered(status)
    return status


def alert_deliver(*, delivery_id: int) -> DeliveryAttempt:
    """Try delivery ``delivery_id`` once, if it is open, due and not under way elsewhere
    (see the module's doc); record the outcome on its row. Returns what happened and, to
    try again, in how many seconds. Never raises for a failed send."""
    now = timezone.now()
    # The try's claim: of two runs for one delivery, one update matches the row; a
    # delivery sent, failed, not yet due or leased to a try under way matches none.
    claimed = (
        AlertDelivery.objects.filter(
            pk=delivery_id, status__in=OPEN, next_attempt_at__lte=now + EARLY
        )
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .update(locked_until=now + LEASE, attempts=F("attempts") + 1, last_attempt_at=now)
    )
    if claimed != 1:
        return DeliveryAttempt(DeliveryOutcome.SKIPPED)
    delivery = AlertDelivery.objects.select_related("event", "tenant__owner").get(pk=delivery_id)
    config = alert_settings_get(tenant=delivery.tenant)
    is_email = delivery.channel == AlertDelivery.Channel.EMAIL
    target = (
        email_recipient(alert_settings=config, tenant=delivery.tenant)
        if is_email
        else config.webhook_url or delivery.target
    )
    # This try's row: a later try (after this lease, were it lost) counts another attempt.
    mine = AlertDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts)
    http_status = None
    try:
        if is_email:
            _send_email(delivery, config, target)
        else:
            http_status = _send_webhook(delivery, config)
    except _Refused as exc:
        mine.update(
            status=AlertDelivery.Status.FAILED,
            target=target,
            last_error=_describe(exc),
            next_attempt_at=None,
            locked_until=None,
        )
        logger.warning("alert delivery %s failed for good: %s", delivery.pk, exc)
        return DeliveryAttempt(DeliveryOutcome.FAILED)
    except Exception as exc:
        # Anything else may pass: a mail server or receiver down or slow, an error answer,
        # a name server not answering; a bug too, which then shows on the row.
        error = _describe(exc)
        status = exc.http_status if isinstance(exc, _Unanswered) else None
        if delivery.attempts > settings.ALERT_DELIVERY_MAX_RETRIES:
            mine.update(
                status=AlertDelivery.Status.FAILED,
                target=target,
                last_error=error,
                http_status=status,
                next_attempt_at=None,
                locked_until=None,
            )
            logger.warning(
                "alert delivery %s failed after %s tries: %s", delivery.pk, delivery.attempts, error
            )
            return DeliveryAttempt(DeliveryOutcome.FAILED)
        delay = retry_delay(delivery.attempts)
        mine.update(
            status=AlertDelivery.Status.RETRYING,
            target=target,
            last_error=error,
            http_status=status,
            next_attempt_at=_after(delay),
            locked_until=None,
        )
        logger.info(
            "alert delivery %s try %s failed (%s); next in %.0f s",
            delivery.pk,
            delivery.attempts,
            error,
            delay,
        )
        return DeliveryAttempt(DeliveryOutcome.RETRY, retry_in=delay)
    # Sent: recorded whatever became of the lease, so no later try sends it again.
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        status=AlertDelivery.Status.SENT,
        target=target,
        last_error="",
        http_status=http_status,
        sent_at=timezone.now(),
        next_attempt_at=None,
        locked_until=None,
    )
    return DeliveryAttempt(DeliveryOutcome.SENT)


def _after(seconds: float) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


def deliveries_enqueue(delivery_ids: Iterable[int]) -> None:
    """Enqueue a task per delivery (called once their rows have committed). One that
    cannot be enqueued (the broker out of reach) stays open for the sweep."""
    # Tasks import the services; the task module is imported only when there is work.
    from alerts.tasks import alert_delivery_task

    for delivery_id in delivery_ids:
        try:
            alert_delivery_task.delay(delivery_id)
        except Exception:
            logger.exception("alert delivery %s not enqueued; the sweep will", delivery_id)


def deliveries_resume(*, now: datetime | None = None) -> int:
    """Enqueue the open deliveries due more than SWEEP_GRACE ago and not under way (their
    task lost, or no broker); at most SWEEP_LIMIT, the longest due first. Returns how many.
    Safe beside their own tasks: each try claims its delivery."""
    now = now or timezone.now()
    due = list(
        AlertDelivery.objects.filter(status__in=OPEN, next_attempt_at__lt=now - SWEEP_GRACE)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:SWEEP_LIMIT]
    )
    deliveries_enqueue(due)
    return len(due)
