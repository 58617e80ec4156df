"""Stripe webhooks: verified on the raw body, stored under the event's id, then handled
through an explicit map of event types to the top-up services (``billing.top_ups``).

Design overview
---------------
* **Verify** (:func:`stripe_webhook_verify`). Without ``STRIPE_WEBHOOK_SECRET`` every event
  is refused, so nobody can credit a wallet by posting to the endpoint. Otherwise the SDK
  (``stripe.WebhookSignature.verify_header``, the check ``stripe.Webhook.construct_event``
  makes) checks the ``Stripe-Signature`` header
  (``t=<timestamp>,v1=<HMAC-SHA256(secret, "<timestamp>.<raw body>")>``) on the raw body
  and refuses a timestamp more than 300 seconds old (Stripe's default tolerance), so a
  captured event cannot be replayed later.
* **Store** (:func:`stripe_event_store`). One ``StripeEvent`` row per Stripe event id (a
  unique column), written before anything is handled. A redelivery of an event already
  processed or ignored answers 200 and does nothing; one that failed runs again.
* **Dispatch** through :data:`HANDLERS`, ``{event type: handler}``; no signals. A type not in
  the map is stored as ``ignored`` and answered 200. Checkout events are handled from the
  session as Stripe's API reports it *now* (Stripe's fulfilment recipe), so a stale or
  out-of-order event acts on the current state; charges and disputes from the event's
  object, whose refund figures are cumulative.
* **Mode.** An event whose ``livemode`` disagrees with ``STRIPE_SECRET_KEY``'s mode
  (``sk_live_``/``rk_live_`` against ``sk_test_``/``rk_test_``) is refused before any
  handler runs: stored ``failed`` with the mismatch, logged as an error, answered 200 (no
  retry can fix it). A test event reaching a live endpoint (or the reverse) never moves
  money. With no key, or a key of neither prefix, the mode is not checked.
* **Outcome.** ``processed``, or ``ignored`` (a type or an object that is not Tollgate's), or
  ``failed`` with the error on the row. A handler that raises ``StripeEventRejected`` (the
  event names one of our top-ups but disagrees with it) answers 200: no retry can fix it,
  and it is logged as an error for the operator. Any other failure (Stripe's API or the
  database unreachable, a bug) answers **500**, as Stripe's guide asks of a delivery that
  was not handled: Stripe then sends it again with backoff for up to three days, and each
  delivery runs it again. The admin's "Reprocess" action runs failed (and ignored) events
  again at any time (:func:`stripe_event_process`).

* **Retention** (:func:`stripe_events_purge`, hourly from Celery beat). Processed and
  ignored events older than ``STRIPE_EVENT_RETENTION_DAYS`` are deleted; failed ones (and
  any left ``received``) stay until they are reprocessed. A redelivery of a purged event id
  is stored and handled again: it moves no money twice, since every handler is idempotent
  by its own keys (the top-up's status and lock, the ledger's unique idempotency keys).

Every handler is idempotent on its own (see ``billing.top_ups``), so the same event run
twice, concurrently or not, or two events about the same session, move money once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import stripe
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from billing.exceptions import StripeEventRejected, StripeWebhookRefused
from billing.models import StripeEvent, TopUp
from billing.stripe_api import CheckoutSession, checkout_session_retrieve, is_live_key
from billing.top_ups import (
    Handled,
    dispute_is_inquiry,
    named_top_up_id,
    top_up_dispute_close,
    top_up_dispute_record,
    top_up_refund_record,
    top_up_session_close,
    top_up_session_settle,
)

logger = logging.getLogger(__name__)

StripeObject = dict[str, Any]
Handler = Callable[[StripeObject], Handled]


# ------------------------------------------------------------------------------ handlers


def _session_now(event_object: StripeObject) -> CheckoutSession | None:
    """The event's Checkout Session as Stripe's API reports it now, or None when the event's
    copy names no Tollgate top-up (a session of something else on the same account: no
    call to Stripe for it)."""
    session = CheckoutSession.from_stripe(event_object)
    if named_top_up_id(session) is None:
        return None
    try:
        return checkout_session_retrieve(session_id=session.id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise StripeEventRejected(f"Stripe knows no session {session.id}.") from exc
        raise


def _session_paid(event_object: StripeObject) -> Handled:
    """``checkout.session.completed`` and ``…async_payment_succeeded``: credit if paid."""
    session = _session_now(event_object)
    if session is None:
        return Handled(None, f"session {event_object.get('id')} is not a Tollgate top-up")
    return top_up_session_settle(session=session)


def _session_expired(event_object: StripeObject) -> Handled:
    return top_up_session_close(
        session=CheckoutSession.from_stripe(event_object),
        status=TopUp.Status.EXPIRED,
        error="The checkout expired before it was paid.",
    )


def _session_payment_failed(event_object: StripeObject) -> Handled:
    return top_up_session_close(
        session=CheckoutSession.from_stripe(event_object),
        status=TopUp.Status.FAILED,
        error="The payment failed after checkout (a delayed method, such as a bank debit).",
    )


def _charge_refunded(event_object: StripeObject) -> Handled:
    return top_up_refund_record(
        payment_intent=str(event_object.get("payment_intent") or ""),
        refunded_cents=int(event_object["amount_refunded"]),
        currency=str(event_object["currency"]),
        reference=str(event_object["id"]),
    )


def _dispute_record(event_object: StripeObject, *, is_withdrawn: bool) -> Handled:
    """The one handler of a dispute's money leaving: a chargeback's ``created`` and any
    ``funds_withdrawn`` take the disputed amount once between them (the top-up's lock,
    its cumulative ``disputed_nanos``, the ledger's keys); an inquiry takes nothing."""
    return top_up_dispute_record(
        payment_intent=str(event_object.get("payment_intent") or ""),
        disputed_cents=int(event_object["amount"]),
        currency=str(event_object["currency"]),
        reference=str(event_object["id"]),
        is_withdrawn=is_withdrawn,
        status=str(event_object.get("status") or ""),
    )


def _dispute_created(event_object: StripeObject) -> Handled:
    """``charge.dispute.created``: a chargeback's funds are withdrawn at once; an inquiry's
    (a ``warning_*`` status) are not, and it is stored processed with a note."""
    status = str(event_object.get("status") or "")
    return _dispute_record(event_object, is_withdrawn=not dispute_is_inquiry(status))


def _dispute_funds_withdrawn(event_object: StripeObject) -> Handled:
    """``charge.dispute.funds_withdrawn``: Stripe took the disputed amount (a chargeback, or
    an inquiry that escalated to one), whatever the dispute's status says."""
    return _dispute_record(event_object, is_withdrawn=True)


def _dispute_closed(event_object: StripeObject) -> Handled:
    """``charge.dispute.closed`` and ``charge.dispute.funds_reinstated``: a won dispute
    gives the wallet back what it took (once, whichever arrives first); any other outcome
    moves no money."""
    return top_up_dispute_close(
        payment_intent=str(event_object.get("payment_intent") or ""),
        status=str(event_object.get("status") or ""),
        currency=str(event_object["currency"]),
        reference=str(event_object["id"]),
    )


# The events to subscribe the endpoint to (README), and what each does.
HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": _session_paid,
    "checkout.session.async_payment_succeeded": _session_paid,
    "checkout.session.async_payment_failed": _session_payment_failed,
    "checkout.session.expired": _session_expired,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute_created,
    "charge.dispute.funds_withdrawn": _dispute_funds_withdrawn,
    "charge.dispute.closed": _dispute_closed,
    "charge.dispute.funds_reinstated": _dispute_closed,
}


# ------------------------------------------------------------------------ receive an event


def stripe_webhook_verify(*, payload: bytes, signature: str | None) -> StripeObject:
    """The event in ``payload`` if ``signature`` is Stripe's for it, recent, under
    ``STRIPE_WEBHOOK_SECRET``; StripeWebhookRefused otherwise (and always, with no secret)."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise StripeWebhookRefused(
            "STRIPE_WEBHOOK_SECRET is not set: every Stripe event is refused."
        )
    try:
        # The check stripe.Webhook.construct_event makes, without building the SDK's Event
        # object: the raw JSON is what is stored and dispatched (and construct_event fails
        # with an AttributeError on a signed body that is JSON but not an object).
        stripe.WebhookSignature.verify_header(
            payload, signature, secret, stripe.Webhook.DEFAULT_TOLERANCE
        )
        event = orjson.loads(payload)
    except stripe.SignatureVerificationError as exc:
        raise StripeWebhookRefused(f"Signature refused: {exc.user_message or exc}") from exc
    except ValueError as exc:  # not UTF-8 (before the check), or not JSON though signed
        raise StripeWebhookRefused("The body is not a JSON event.") from exc
    if not (
        isinstance(event, dict)
        and event.get("object") == "event"
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance((event.get("data") or {}).get("object"), dict)
    ):
        raise StripeWebhookRefused("The body is not a Stripe event.")
    return event


def stripe_event_store(*, event: StripeObject) -> StripeEvent:
    """The event's row, made on its first delivery (a unique event id: a redelivery, even
    one racing the first, finds the first's row)."""
    row, _ = StripeEvent.objects.get_or_create(
        event_id=event["id"],
        defaults={
            "type": event["type"][:100],
            "payload": event,
            "is_livemode": bool(event.get("livemode")),
        },
    )
    return row


@dataclass(frozen=True, slots=True)
class Received:
    """What became of a delivery: the event's row, and whether Stripe should send it again
    (the webhook's 500)."""

    event: StripeEvent
    is_retry_wanted: bool = False


def stripe_webhook_receive(*, payload: bytes, signature: str | None) -> Received:
    """A webhook delivery: verify, store, handle (unless it was handled before)."""
    event = stripe_event_store(event=stripe_webhook_verify(payload=payload, signature=signature))
    if event.status in (StripeEvent.Status.PROCESSED, StripeEvent.Status.IGNORED):
        return Received(event)
    return stripe_event_process(event=event)


def stripe_event_process(*, event: StripeEvent) -> Received:
    """Handle a stored event through :data:`HANDLERS` and record the outcome on its row
    (the webhook, and the admin's "Reprocess")."""
    StripeEvent.objects.filter(pk=event.pk).update(attempts=F("attempts") + 1)
    mismatch = _mode_mismatch(event)
    if mismatch:
        logger.error("Stripe event %s (%s) refused: %s", event.event_id, event.type, mismatch)
        return Received(_finish(event, StripeEvent.Status.FAILED, error=mismatch))
    handler = HANDLERS.get(event.type)
    if handler is None:
        return Received(
            _finish(event, StripeEvent.Status.IGNORED, note="not a type Tollgate handles")
        )
    try:
        handled = handler(event.payload["data"]["object"])
    except StripeEventRejected as exc:
        logger.error("Stripe event %s (%s) rejected: %s", event.event_id, event.type, exc)
        return Received(_finish(event, StripeEvent.Status.FAILED, error=str(exc)))
    except Exception as exc:  # noqa: BLE001 - any failure stays on the row; Stripe retries
        logger.exception("Stripe event %s (%s) failed", event.event_id, event.type)
        error = f"{type(exc).__name__}: {exc}"
        return Received(_finish(event, StripeEvent.Status.FAILED, error=error), True)
    status = StripeEvent.Status.IGNORED if handled.top_up is None else StripeEvent.Status.PROCESSED
    return Received(_finish(event, status, note=handled.note))


def _mode_mismatch(event: StripeEvent) -> str:
    """Why ``event`` is of the other mode than this server's Stripe key, or ""."""
    is_live = is_live_key()
    if is_live is None or event.is_livemode == is_live:
        return ""
    return (
        f"Mode mismatch: a {'live' if event.is_livemode else 'test'}-mode event, but "
        f"STRIPE_SECRET_KEY is a {'live' if is_live else 'test'}-mode key; nothing was done."
    )


def _finish(event: StripeEvent, status: str, *, note: str = "", error: str = "") -> StripeEvent:
    rows = StripeEvent.objects.filter(pk=event.pk)
    if status == StripeEvent.Status.FAILED:
        # A delivery racing this one that succeeded has the last word.
        rows.exclude(status=StripeEvent.Status.PROCESSED).update(status=status, error=error[:5000])
    else:
        rows.update(status=status, note=note[:500], error="", processed_at=timezone.now())
    event.refresh_from_db()
    return event


def stripe_events_reprocess(*, events: Iterable[StripeEvent]) -> list[Received]:
    """Run again the events that are not processed (failed, ignored, or left ``received``
    by a crash); processed ones are skipped."""
    return [
        stripe_event_process(event=event)
        for event in events
        if event.status != StripeEvent.Status.PROCESSED
    ]


# Events deleted per statement by the purge: each batch commits on its own.
PURGE_BATCH_SIZE = 1_000
# What the purge may delete: the events that need nothing more.
DONE_STATUSES = (StripeEvent.Status.PROCESSED, StripeEvent.Status.IGNORED)


def stripe_events_purge(*, now: datetime | None = None, batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Delete processed and ignored events received more than
    ``STRIPE_EVENT_RETENTION_DAYS`` ago, oldest first, in batches of ``batch_size``; return
    how many. Failed events (and any left ``received`` by a crash) are kept until they are
    reprocessed. Idempotent and safe to run twice at once (it deletes by age; a row the
    other run deleted is not counted again). Money is untouched: the ledger and the top-up
    rows hold it, and a redelivery of a purged event moves none twice."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.STRIPE_EVENT_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(
            StripeEvent.objects.filter(received_at__lt=cutoff, status__in=DONE_STATUSES)
            .order_by("received_at")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        # The status again: an event reprocessed into "failed" meanwhile is kept.
        count, _ = StripeEvent.objects.filter(pk__in=ids, status__in=DONE_STATUSES).delete()
        deleted += count
