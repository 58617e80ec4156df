"""Card top-ups: a wallet funded through a Stripe Checkout Session, credited exactly once.

Design overview
---------------
1. **Opening** (:func:`top_up_create`, the REST API's and the dashboard's). The amount is
   checked against ``TOP_UP_MIN``/``TOP_UP_MAX`` and must be whole cents; the operator's fee
   is worked out (``billing.money.top_up_fee_nanos``: a percentage rounded once, half up, to
   the cent, plus a fixed part). A ``pending`` ``TopUp`` row is committed first, then,
   outside any transaction, Stripe is asked for a Checkout Session (``mode=payment``, the
   amount and the fee as line items, ``client_reference_id`` and ``metadata`` naming the
   row and its tenant, an idempotency key derived from the row), and the session's id and
   URL are stored. If Stripe refuses or does not answer, the row is left ``failed`` with
   Stripe's error and :class:`~billing.exceptions.TopUpCheckoutFailed` is raised.
2. **Crediting** happens only when a signed webhook says a session was completed or its
   delayed payment succeeded (``billing.stripe_webhooks``), from the session as Stripe's
   API reports it *now* (:func:`top_up_session_settle`). Exactly once per session: the row
   is locked (``SELECT … FOR UPDATE``) for the whole check-and-credit, ``pending`` becomes
   ``credited`` by a conditional update, and the ledger entry's idempotency key is
   ``stripe:<session id>`` under the ledger's unique constraint. So a redelivery, a second
   event of the same session, or five deliveries racing on five connections credit once.
   Only a session Tollgate opened for that row is credited: its id is the one stored, its
   ``client_reference_id`` and ``metadata`` name the row and its tenant, and its
   ``amount_total`` and ``currency`` are the row's; anything else is
   :class:`~billing.exceptions.StripeEventRejected` and credits nothing.
3. **The ledger** gets the card's whole payment (amount + fee) as a ``top_up`` entry and the
   fee as a ``top_up_fee`` debit beside it, in the same transaction: the wallet's net is the
   amount, and the fee stays visible.
4. **Refunds and disputes** (:func:`top_up_refund_record`, :func:`top_up_dispute_record`)
   record Stripe's cumulative figures on the row and take back from the wallet what they
   owe: what was refunded or disputed, up to the amount the top-up credited (a refunded fee
   is the operator's, never the wallet's). **The wallet never goes negative** and never
   gives up what requests in flight hold: a debit takes at most the wallet's available
   balance (read under the wallet's row lock), and the rest stays on the row as its
   ``shortfall_nanos``, logged as a warning, for the operator to settle (a later
   adjustment, or suspending the reseller). The next refund or dispute event of the same
   payment tries again to take what is still owed. A refund recorded before the credit
   lands (events out of order) is taken back when it does.
5. **A won dispute** (:func:`top_up_dispute_close` with status ``won``, from
   ``charge.dispute.closed`` or ``charge.dispute.funds_reinstated``) stops counting the
   dispute as owed: the wallet gets back, as one ``top_up_dispute_won`` credit, what it had
   given up beyond what refunds still owe, and the part of the shortfall the dispute caused
   simply ends (it was never collected). Once per top-up: the row is locked,
   ``is_dispute_won`` flips by a conditional update, the entry's key is
   ``stripe:<session>:dispute-won``. A lost dispute moves no money (it was taken when
   Stripe withdrew it).

   An **inquiry** (a dispute whose status is ``warning_needs_response``,
   ``warning_under_review`` or ``warning_closed``) withdraws nothing at Stripe, so its
   ``charge.dispute.created`` moves no money and records nothing as disputed. If it
   escalates to a chargeback, Stripe withdraws the funds and sends
   ``charge.dispute.funds_withdrawn``, which takes the amount exactly as a chargeback's
   ``charge.dispute.created`` does; for a chargeback announced by both, the wallet gives
   it up once (Stripe's cumulative ``disputed_nanos``, the row lock, and the ledger key
   ``stripe:<session>:reversed:<level>``). ``warning_closed`` gives nothing back, since
   nothing was taken.
6. **Shortfalls are collected from the next top-up.** When a top-up is credited, what the
   tenant's earlier top-ups still fall short of is taken from it first, oldest first, as
   ``top_up_shortfall`` debits (key ``stripe:<this session>:shortfall-of:<that session>``),
   at most this top-up's amount and never more than the wallet has available; each adds to
   the earlier row's ``reversed_nanos`` and to this row's ``earlier_shortfall_paid_nanos``.
   The earlier rows are locked right after this one and before the wallet (the order every
   refund and dispute takes too: top-up rows, then the wallet), so two flows may wait for
   each other but never in a circle.

Nothing here calls Stripe inside a transaction that holds a lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import stripe
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from accounts.models import Tenant
from billing.exceptions import (
    LedgerError,
    StripeEventRejected,
    TopUpCheckoutFailed,
    TopUpInvalid,
    TopUpsNotConfigured,
)
from billing.ledger import ledger_post_op
from billing.models import LedgerEntry, TopUp, Wallet
from billing.money import (
    MoneyError,
    cents_to_nanos,
    format_usd,
    parse_percent,
    parse_usd,
    top_up_fee_nanos,
    whole_cents,
)
from billing.sqlops import run_sync
from billing.stripe_api import CheckoutSession, checkout_session_create, is_configured

logger = logging.getLogger(__name__)

CURRENCY = "usd"
# What the payer sees on Stripe's page, one line each.
LINE_ITEM_NAME = "Wallet top-up"
FEE_LINE_ITEM_NAME = "Card top-up fee"
# Where Stripe sends the payer back: the dashboard's page of the top-up (by URL name, so
# billing imports no page code), on the origin the reseller used, or PUBLIC_URL.
RETURN_URL_NAME = "dashboard:top-up-detail"


# ------------------------------------------------------------------------------- the terms


@dataclass(frozen=True, slots=True)
class TopUpTerms:
    """The operator's settings, read: the range of amounts and the fee."""

    min_nanos: int
    max_nanos: int
    fee_percent: Decimal
    fee_fixed_nanos: int


def top_up_terms() -> TopUpTerms:
    """``TOP_UP_MIN``, ``TOP_UP_MAX``, ``TOP_UP_FEE_PERCENT`` and ``TOP_UP_FEE_FIXED``, read
    exactly; ImproperlyConfigured names a setting that cannot be."""
    values: dict[str, int] = {}
    for name in ("TOP_UP_MIN", "TOP_UP_MAX", "TOP_UP_FEE_FIXED"):
        try:
            values[name] = whole_cents(parse_usd(str(getattr(settings, name))))
        except MoneyError as exc:
            raise ImproperlyConfigured(f"{name}: {exc} (USD in whole cents, e.g. 5)") from exc
    try:
        percent = parse_percent(str(settings.TOP_UP_FEE_PERCENT))
    except MoneyError as exc:
        raise ImproperlyConfigured(f"TOP_UP_FEE_PERCENT: {exc}") from exc
    if not 0 < values["TOP_UP_MIN"] <= values["TOP_UP_MAX"]:
        raise ImproperlyConfigured("TOP_UP_MIN must be above 0 and at most TOP_UP_MAX.")
    return TopUpTerms(
        min_nanos=cents_to_nanos(values["TOP_UP_MIN"]),
        max_nanos=cents_to_nanos(values["TOP_UP_MAX"]),
        fee_percent=percent,
        fee_fixed_nanos=cents_to_nanos(values["TOP_UP_FEE_FIXED"]),
    )


@dataclass(frozen=True, slots=True)
class TopUpQuote:
    """What a top-up of ``amount_nanos`` costs: the card pays ``total_nanos``."""

    amount_nanos: int
    fee_nanos: int

    @property
    def total_nanos(self) -> int:
        return self.amount_nanos + self.fee_nanos


def top_up_quote(*, amount_nanos: int) -> TopUpQuote:
    """The fee and total of a top-up of ``amount_nanos``, as :func:`top_up_create` makes it
    (the dashboard's preview). Raises TopUpInvalid for an amount outside the operator's
    range or with a fraction of a cent."""
    terms = top_up_terms()
    if amount_nanos < terms.min_nanos:
        raise TopUpInvalid(f"The smallest top-up is ${format_usd(terms.min_nanos)}.")
    if amount_nanos > terms.max_nanos:
        raise TopUpInvalid(f"The largest top-up is ${format_usd(terms.max_nanos)}.")
    try:
        whole_cents(amount_nanos)
    except MoneyError:
        raise TopUpInvalid("Top up a whole number of cents, e.g. 25.50.") from None
    fee = top_up_fee_nanos(
        amount_nanos, percent=terms.fee_percent, fixed_nanos=terms.fee_fixed_nanos
    )
    return TopUpQuote(amount_nanos=amount_nanos, fee_nanos=fee)


# ------------------------------------------------------------------------------- opening


def top_up_create(
    *,
    tenant: Tenant,
    actor: AbstractBaseUser | None,
    amount_nanos: int,
    site_url: str | None = None,
) -> TopUp:
    """Open a card top-up of ``amount_nanos`` (what the wallet will be credited) for
    ``tenant``: a ``pending`` row, then its Stripe Checkout Session, whose URL the payer
    follows. Stripe sends the payer back to the top-up's dashboard page on ``site_url``
    (default ``PUBLIC_URL``).

    Raises TopUpsNotConfigured (no Stripe key: no row is made), TopUpInvalid (the amount),
    or TopUpCheckoutFailed (Stripe refused or did not answer: the row is left ``failed``
    with the error). Nothing is credited here; a signed webhook does that.
    """
    if not is_configured():
        raise TopUpsNotConfigured()
    quote = top_up_quote(amount_nanos=amount_nanos)
    top_up = _top_up_open(tenant=tenant, actor=actor, quote=quote)
    # Committed before Stripe is called: the session's client_reference_id names a row
    # that exists whatever happens next, and no lock is held while Stripe answers.
    try:
        session = checkout_session_create(
            params=_checkout_params(top_up, site_url=site_url or settings.PUBLIC_URL),
            idempotency_key=top_up.checkout_key,
        )
    except stripe.StripeError as exc:
        message = exc.user_message or str(exc) or type(exc).__name__
        _top_up_fail(top_up_id=top_up.pk, error=f"Stripe: {message}")
        logger.warning("top-up %s: Stripe refused the checkout session: %s", top_up.pk, message)
        raise TopUpCheckoutFailed(
            f"Stripe could not open a checkout for this top-up ({message}). "
            "Nothing was charged; try again."
        ) from exc
    return _top_up_checkout_store(top_up_id=top_up.pk, session=session)


@transaction.atomic(durable=True)
def _top_up_open(*, tenant: Tenant, actor: AbstractBaseUser | None, quote: TopUpQuote) -> TopUp:
    wallet, _ = Wallet.objects.get_or_create(tenant=tenant)
    return TopUp.objects.create(
        tenant=tenant,
        wallet=wallet,
        amount_nanos=quote.amount_nanos,
        fee_nanos=quote.fee_nanos,
        currency=CURRENCY,
        actor_id=actor.pk if actor is not None else None,
    )


def _checkout_params(top_up: TopUp, *, site_url: str) -> dict[str, object]:
    """The Checkout Session of ``top_up``, as Stripe's API takes it (amounts in cents)."""
    page = site_url.rstrip("/") + reverse(RETURN_URL_NAME, args=[top_up.pk])
    names = {"top_up_id": str(top_up.pk), "tenant_id": str(top_up.tenant_id)}
    line_items = [_line_item(LINE_ITEM_NAME, top_up.amount_nanos)]
    if top_up.fee_nanos:
        line_items.append(_line_item(FEE_LINE_ITEM_NAME, top_up.fee_nanos))
    return {
        "mode": "payment",
        "line_items": line_items,
        "client_reference_id": str(top_up.pk),
        "metadata": names,
        # Also on the payment itself, so Stripe's dashboard shows whose it is.
        "payment_intent_data": {"metadata": names},
        "success_url": page,
        "cancel_url": f"{page}?cancelled=1",
    }


def _line_item(name: str, nanos: int) -> dict[str, object]:
    return {
        "quantity": 1,
        "price_data": {
            "currency": CURRENCY,
            "unit_amount": whole_cents(nanos),
            "product_data": {"name": name},
        },
    }


@transaction.atomic(durable=True)
def _top_up_fail(*, top_up_id: int, error: str) -> None:
    TopUp.objects.filter(pk=top_up_id, status=TopUp.Status.PENDING).update(
        status=TopUp.Status.FAILED, error=error[:2000], updated_at=timezone.now()
    )


@transaction.atomic(durable=True)
def _top_up_checkout_store(*, top_up_id: int, session: CheckoutSession) -> TopUp:
    # Only onto the row that has no session yet: a session id, once stored, is the one
    # every webhook is checked against, and is never replaced.
    TopUp.objects.filter(pk=top_up_id, stripe_session_id__isnull=True).update(
        stripe_session_id=session.id, checkout_url=session.url, updated_at=timezone.now()
    )
    return TopUp.objects.get(pk=top_up_id)


# ------------------------------------------------------------------ what a webhook does


@dataclass(frozen=True, slots=True)
class Handled:
    """What handling a Stripe object did: the top-up it concerned (None: not Tollgate's)
    and a line for the event's row."""

    top_up: TopUp | None
    note: str


def named_top_up_id(session: CheckoutSession) -> int | None:
    """The top-up a Checkout Session names in its metadata (every session Tollgate opens
    has ``top_up_id``), or None for a session of something else on the same Stripe
    account. Its ``client_reference_id`` must name the same one."""
    named = session.metadata.get("top_up_id")
    if named is None:
        return None
    if not named.isascii() or not named.isdigit():
        raise StripeEventRejected(f"Session {session.id} names top-up {named!r}, not an id.")
    if session.client_reference_id not in (None, named):
        raise StripeEventRejected(
            f"Session {session.id} names top-up {named} in its metadata but "
            f"{session.client_reference_id!r} as its client_reference_id."
        )
    return int(named)


def _session_check(top_up: TopUp, session: CheckoutSession, *, money: bool) -> None:
    """StripeEventRejected unless ``session`` is the one Tollgate opened for ``top_up``
    (and, with ``money``, for exactly its total, in its currency)."""
    if top_up.stripe_session_id != session.id:
        raise StripeEventRejected(
            f"Session {session.id} is not the one top-up {top_up.pk} opened "
            f"({top_up.stripe_session_id or 'none stored'})."
        )
    if session.metadata.get("tenant_id") != str(top_up.tenant_id):
        raise StripeEventRejected(
            f"Session {session.id} names tenant {session.metadata.get('tenant_id')!r}; "
            f"top-up {top_up.pk} is tenant {top_up.tenant_id}'s."
        )
    if not money:
        return
    if session.currency.lower() != top_up.currency:
        raise StripeEventRejected(
            f"Session {session.id} is in {session.currency!r}; top-up {top_up.pk} is in "
            f"{top_up.currency!r}."
        )
    expected = whole_cents(top_up.total_nanos)
    if session.amount_total != expected:
        raise StripeEventRejected(
            f"Session {session.id} totals {session.amount_total!r} cents; top-up "
            f"{top_up.pk} is {expected} cents."
        )


def top_up_session_settle(*, session: CheckoutSession) -> Handled:
    """A session completed, or its delayed payment succeeded: credit its top-up if Stripe
    says it is paid, exactly once (``session`` as Stripe's API reports it now). A session
    not paid yet records its payment intent and waits for the next event."""
    top_up_id = named_top_up_id(session)
    if top_up_id is None:
        return Handled(None, f"session {session.id} is not a Tollgate top-up")
    return _top_up_credit(top_up_id=top_up_id, session=session)


def _top_up_lock(*, top_up_id: int | None = None, payment_intent: str = "") -> TopUp | None:
    """The top-up, its row locked until the transaction ends. Every event about one top-up
    (credit, close, refund, dispute) takes this lock first, then the wallet's: two
    deliveries racing on two connections run one after the other, so a status checked
    here still holds when it is changed. (SQLite's write transactions are serial anyway.)"""
    rows = TopUp.objects.select_for_update()
    if top_up_id is not None:
        return rows.filter(pk=top_up_id).first()
    return rows.filter(stripe_payment_intent=payment_intent).order_by("pk").first()


@transaction.atomic(durable=True)
def _top_up_credit(*, top_up_id: int, session: CheckoutSession) -> Handled:
    top_up = _top_up_lock(top_up_id=top_up_id)
    if top_up is None:
        return Handled(None, f"session {session.id} names top-up {top_up_id}, not in this database")
    _session_check(top_up, session, money=True)
    if top_up.status == TopUp.Status.CREDITED:
        return Handled(top_up, f"top-up {top_up.pk} was already credited")
    now = timezone.now()
    if not session.is_paid:
        if session.payment_intent and not top_up.stripe_payment_intent:
            TopUp.objects.filter(pk=top_up.pk).update(
                stripe_payment_intent=session.payment_intent, updated_at=now
            )
        return Handled(
            top_up, f"top-up {top_up.pk} not paid yet (payment_status {session.payment_status})"
        )
    reference = session.id
    # The earlier top-ups whose shortfall this credit pays, locked now: before the credit
    # below locks the wallet row, as a refund or dispute of theirs (top-up, then wallet) does.
    owing = _shortfalls_lock(top_up)
    run_sync(
        ledger_post_op(
            wallet_id=top_up.wallet_id,
            kind=LedgerEntry.Kind.TOP_UP,
            amount_nanos=top_up.total_nanos,
            reason=f"Card top-up #{top_up.pk}",
            reference=reference,
            idempotency_key=f"stripe:{session.id}",
            actor_id=top_up.actor_id,
            now=now,
        )
    )
    if top_up.fee_nanos:
        run_sync(
            ledger_post_op(
                wallet_id=top_up.wallet_id,
                kind=LedgerEntry.Kind.TOP_UP_FEE,
                amount_nanos=-top_up.fee_nanos,
                reason=f"Fee of card top-up #{top_up.pk}",
                reference=reference,
                idempotency_key=f"stripe:{session.id}:fee",
                actor_id=top_up.actor_id,
                now=now,
            )
        )
    # The one transition that moves money, and only from a state that has not: with the
    # lock above it cannot miss, and if it ever did, the whole credit rolls back.
    changed = TopUp.objects.filter(Q(pk=top_up.pk) & ~Q(status=TopUp.Status.CREDITED)).update(
        status=TopUp.Status.CREDITED,
        credited_at=now,
        updated_at=now,
        stripe_payment_intent=session.payment_intent or top_up.stripe_payment_intent,
        error="",
    )
    if changed != 1:
        raise LedgerError(f"top-up {top_up.pk} changed under its lock")
    top_up.refresh_from_db()
    # A refund or dispute recorded before this credit (events out of order) is owed now.
    _take_back(top_up, kind=_reversal_kind(top_up), reference=reference, now=now)
    paid = _shortfalls_collect(top_up, owing=owing, now=now)
    note = f"credited top-up {top_up.pk}: {format_usd(top_up.amount_nanos)}"
    if paid:
        note += f"; {format_usd(paid)} of it paid earlier top-ups' shortfall"
    return Handled(top_up, note)


def _shortfalls_lock(top_up: TopUp) -> list[TopUp]:
    """The tenant's other credited top-ups that a refund or dispute touched, locked in
    ``pk`` order (so two credits of one wallet racing take them in the same order): the
    ones that may have a shortfall this credit pays."""
    return list(
        TopUp.objects.select_for_update()
        .filter(wallet_id=top_up.wallet_id, status=TopUp.Status.CREDITED)
        .filter(Q(refunded_nanos__gt=0) | Q(disputed_nanos__gt=0))
        .exclude(pk=top_up.pk)
        .order_by("pk")
    )


def _shortfalls_collect(top_up: TopUp, *, owing: list[TopUp], now: datetime) -> int:
    """Take from the wallet, oldest first, what the ``owing`` top-ups (locked) still fall
    short of, out of what ``top_up`` (just credited, locked) brought in and never more
    than the wallet has available; returns what was paid. Runs once per top-up: inside its
    one ``pending → credited`` transaction."""
    budget = top_up.amount_nanos - top_up.taken_back_nanos
    short = [other for other in owing if other.shortfall_nanos > 0]
    if budget <= 0 or not short:
        return 0
    # Locked so that the available balance read here is still there for the debits (the
    # proxy holds on this wallet meanwhile; the CHECK constraint would refuse a debit a
    # hold got to first).
    wallet = Wallet.objects.select_for_update().get(pk=top_up.wallet_id)
    left = min(budget, wallet.available_nanos)
    paid = 0
    for other in short:
        take = min(other.shortfall_nanos, left - paid)
        if take <= 0:
            break
        run_sync(
            ledger_post_op(
                wallet_id=top_up.wallet_id,
                kind=LedgerEntry.Kind.TOP_UP_SHORTFALL,
                amount_nanos=-take,
                reason=(
                    f"Shortfall of card top-up #{other.pk}, collected from card top-up #{top_up.pk}"
                ),
                reference=str(top_up.stripe_session_id),
                idempotency_key=(
                    f"stripe:{top_up.stripe_session_id}:shortfall-of:{other.stripe_session_id}"
                ),
                now=now,
            )
        )
        TopUp.objects.filter(pk=other.pk).update(
            reversed_nanos=F("reversed_nanos") + take, updated_at=now
        )
        paid += take
        logger.info(
            "top-up %s: collected %s of top-up %s's shortfall",
            top_up.pk,
            format_usd(take),
            other.pk,
        )
    if paid:
        # Only from nothing: a second collection for one top-up would be a bug, and rolls
        # the whole credit back.
        changed = TopUp.objects.filter(pk=top_up.pk, earlier_shortfall_paid_nanos=0).update(
            earlier_shortfall_paid_nanos=paid, updated_at=now
        )
        if changed != 1:
            raise LedgerError(f"top-up {top_up.pk} already paid earlier shortfalls")
        top_up.earlier_shortfall_paid_nanos = paid
    return paid


def top_up_session_close(*, session: CheckoutSession, status: str, error: str = "") -> Handled:
    """A session expired unpaid (``status`` expired) or its delayed payment failed
    (``failed``): a pending top-up says so. A credited one is left as it is."""
    top_up_id = named_top_up_id(session)
    if top_up_id is None:
        return Handled(None, f"session {session.id} is not a Tollgate top-up")
    return _top_up_close(top_up_id=top_up_id, session=session, status=status, error=error)


@transaction.atomic(durable=True)
def _top_up_close(*, top_up_id: int, session: CheckoutSession, status: str, error: str) -> Handled:
    top_up = _top_up_lock(top_up_id=top_up_id)
    if top_up is None:
        return Handled(None, f"session {session.id} names top-up {top_up_id}, not in this database")
    _session_check(top_up, session, money=False)
    if top_up.status != TopUp.Status.PENDING:
        return Handled(top_up, f"top-up {top_up.pk} is {top_up.status}; left as it is")
    TopUp.objects.filter(pk=top_up.pk, status=TopUp.Status.PENDING).update(
        status=status, error=error, updated_at=timezone.now()
    )
    top_up.refresh_from_db()
    return Handled(top_up, f"top-up {top_up.pk} {status}")


# ----------------------------------------------------------------- refunds and disputes


def top_up_refund_record(
    *, payment_intent: str, refunded_cents: int, currency: str, reference: str
) -> Handled:
    """A charge of ``payment_intent`` was refunded, ``refunded_cents`` in all so far (Stripe's
    ``amount_refunded``, cumulative): take back from the wallet what that owes (see the
    module's doc). Redeliveries and late, smaller figures change nothing."""
    return _top_up_reverse(
        payment_intent=payment_intent,
        currency=currency,
        refunded_nanos=cents_to_nanos(refunded_cents),
        disputed_nanos=None,
        kind=LedgerEntry.Kind.TOP_UP_REFUND,
        reference=reference,
    )


# The statuses of an inquiry (Stripe's "warning" disputes): the issuer asks questions, and
# no money leaves Stripe's balance unless it escalates to a chargeback
# (``charge.dispute.funds_withdrawn``); ``warning_closed`` ends it with nothing to give back.
INQUIRY_STATUS_PREFIX = "warning_"


def dispute_is_inquiry(status: str) -> bool:
    """Whether Stripe's dispute ``status`` is an inquiry's (``warning_needs_response``,
    ``warning_under_review``, ``warning_closed``)."""
    return status.startswith(INQUIRY_STATUS_PREFIX)


def top_up_dispute_record(
    *,
    payment_intent: str,
    disputed_cents: int,
    currency: str,
    reference: str,
    is_withdrawn: bool = True,
    status: str = "",
) -> Handled:
    """The cardholder disputed a charge of ``payment_intent`` for ``disputed_cents``. When
    Stripe withdrew the money (``is_withdrawn``: a chargeback's ``charge.dispute.created``,
    or ``charge.dispute.funds_withdrawn``), the wallet gives it up too, once whichever of
    the two events arrives first (see the module's doc). An inquiry (``is_withdrawn``
    false, ``status`` a ``warning_*``) moves no money and is not recorded as disputed."""
    if not is_withdrawn:
        return _top_up_dispute_inquiry(
            payment_intent=payment_intent, status=status, currency=currency, reference=reference
        )
    return _top_up_reverse(
        payment_intent=payment_intent,
        currency=currency,
        refunded_nanos=None,
        disputed_nanos=cents_to_nanos(disputed_cents),
        kind=LedgerEntry.Kind.TOP_UP_DISPUTE,
        reference=reference,
    )


def _top_up_dispute_inquiry(
    *, payment_intent: str, status: str, currency: str, reference: str
) -> Handled:
    top_up = (
        TopUp.objects.filter(stripe_payment_intent=payment_intent).order_by("pk").first()
        if payment_intent
        else None
    )
    if top_up is None:
        return Handled(None, f"no top-up was paid with {payment_intent or 'this charge'}")
    if currency.lower() != top_up.currency:
        raise StripeEventRejected(
            f"{reference} is in {currency!r}; top-up {top_up.pk} is in {top_up.currency!r}."
        )
    return Handled(
        top_up,
        f"inquiry ({status or 'without a status'}) about top-up {top_up.pk}: Stripe withdrew "
        "nothing, no money moves",
    )


@transaction.atomic(durable=True)
def _top_up_reverse(
    *,
    payment_intent: str,
    currency: str,
    refunded_nanos: int | None,
    disputed_nanos: int | None,
    kind: str,
    reference: str,
) -> Handled:
    top_up = _top_up_lock(payment_intent=payment_intent) if payment_intent else None
    if top_up is None:
        return Handled(None, f"no top-up was paid with {payment_intent or 'this charge'}")
    if currency.lower() != top_up.currency:
        raise StripeEventRejected(
            f"{reference} is in {currency!r}; top-up {top_up.pk} is in {top_up.currency!r}."
        )
    now = timezone.now()
    # Stripe's figures are cumulative: keep the largest seen, so a redelivery or an older
    # event arriving late changes nothing.
    changes: dict[str, int] = {}
    if refunded_nanos is not None and refunded_nanos > top_up.refunded_nanos:
        changes["refunded_nanos"] = refunded_nanos
    if disputed_nanos is not None and disputed_nanos > top_up.disputed_nanos:
        changes["disputed_nanos"] = disputed_nanos
    if changes:
        TopUp.objects.filter(pk=top_up.pk).update(**changes, updated_at=now)
        top_up.refresh_from_db()
    if top_up.status != TopUp.Status.CREDITED:
        return Handled(top_up, f"top-up {top_up.pk} is not credited: nothing to take back yet")
    taken = _take_back(top_up, kind=kind, reference=reference, now=now)
    note = f"took back {format_usd(taken)} of top-up {top_up.pk}"
    if top_up.shortfall_nanos:
        note += f"; {format_usd(top_up.shortfall_nanos)} short"
    return Handled(top_up, note)


# The dispute status that gives the money back (Stripe's ``dispute.status``); ``lost``,
# ``warning_closed`` (an inquiry, which took nothing) and the rest move no money.
DISPUTE_WON = "won"


def top_up_dispute_close(
    *, payment_intent: str, status: str, currency: str, reference: str
) -> Handled:
    """A dispute of a charge of ``payment_intent`` was closed (``charge.dispute.closed``) or
    its funds reinstated (``charge.dispute.funds_reinstated``), Stripe's dispute ``status``
    now being ``status``. Won: the wallet gets back what the dispute took from it, and the
    part of the shortfall it caused ends, once whatever the number, order or concurrency
    of deliveries (see the module's doc); what comes back is what the wallet actually gave
    up for the dispute, so nothing for one that took nothing (an inquiry, or a win before
    the withdrawal). Any other status moves no money: a lost dispute's amount was taken
    when Stripe withdrew it, and funds Stripe reinstates on a lost
    dispute of a partly refunded payment are the refunded part, which the wallet gave up
    once only (``owed_nanos`` caps refunds and disputes together at the amount)."""
    return _top_up_dispute_close(
        payment_intent=payment_intent, status=status, currency=currency, reference=reference
    )


@transaction.atomic(durable=True)
def _top_up_dispute_close(
    *, payment_intent: str, status: str, currency: str, reference: str
) -> Handled:
    top_up = _top_up_lock(payment_intent=payment_intent) if payment_intent else None
    if top_up is None:
        return Handled(None, f"no top-up was paid with {payment_intent or 'this charge'}")
    if currency.lower() != top_up.currency:
        raise StripeEventRejected(
            f"{reference} is in {currency!r}; top-up {top_up.pk} is in {top_up.currency!r}."
        )
    if status != DISPUTE_WON:
        return Handled(
            top_up,
            f"dispute of top-up {top_up.pk} is {status or 'without a status'}: no money moves",
        )
    if top_up.is_dispute_won:
        return Handled(top_up, f"the dispute of top-up {top_up.pk} was already won")
    now = timezone.now()
    shortfall_before = top_up.shortfall_nanos
    taken_before = top_up.taken_back_nanos
    top_up.is_dispute_won = True
    # What the wallet gave up beyond what is still owed without the dispute (refunds):
    # what the dispute actually took. Nothing before the credit, when nothing was taken.
    returned = max(taken_before - top_up.owed_nanos, 0)
    # The one transition of a win, only from "not won": under the lock above it cannot
    # miss, and if it ever did, the whole win rolls back.
    changed = TopUp.objects.filter(pk=top_up.pk, is_dispute_won=False).update(
        is_dispute_won=True, reinstated_nanos=F("reinstated_nanos") + returned, updated_at=now
    )
    if changed != 1:
        raise LedgerError(f"top-up {top_up.pk} changed under its lock")
    if returned:
        run_sync(
            ledger_post_op(
                wallet_id=top_up.wallet_id,
                kind=LedgerEntry.Kind.TOP_UP_DISPUTE_WON,
                amount_nanos=returned,
                reason=f"Dispute of card top-up #{top_up.pk} won",
                reference=reference,
                idempotency_key=f"stripe:{top_up.stripe_session_id}:dispute-won",
                now=now,
            )
        )
    top_up.refresh_from_db()
    note = f"dispute of top-up {top_up.pk} won: {format_usd(returned)} back to the wallet"
    cleared = shortfall_before - top_up.shortfall_nanos
    if cleared > 0:
        note += f"; {format_usd(cleared)} of its shortfall cleared"
    return Handled(top_up, note)


def _reversal_kind(top_up: TopUp) -> str:
    if top_up.refunded_nanos:
        return LedgerEntry.Kind.TOP_UP_REFUND
    return LedgerEntry.Kind.TOP_UP_DISPUTE


def _take_back(top_up: TopUp, *, kind: str, reference: str, now: datetime) -> int:
    """Debit what ``top_up`` still owes (``owed - reversed``), at most what its wallet has
    available; returns what was taken. Runs under the top-up's lock (the caller's)."""
    wanted = top_up.owed_nanos - top_up.taken_back_nanos
    if wanted <= 0:
        return 0
    # Locked so that the available balance read here is still there for the debit: the
    # proxy holds and charges on this wallet meanwhile, and the CHECK constraint would
    # otherwise refuse a debit that a request's hold got to first.
    wallet = Wallet.objects.select_for_update().get(pk=top_up.wallet_id)
    taken = min(wanted, wallet.available_nanos)
    if taken > 0:
        reversed_after = top_up.reversed_nanos + taken
        what = "Refund" if kind == LedgerEntry.Kind.TOP_UP_REFUND else "Dispute"
        run_sync(
            ledger_post_op(
                wallet_id=top_up.wallet_id,
                kind=kind,
                amount_nanos=-taken,
                reason=f"{what} of card top-up #{top_up.pk}",
                reference=reference,
                # One entry per level the taken-back total reaches: unique, and the same
                # for a replay of the same step.
                idempotency_key=f"stripe:{top_up.stripe_session_id}:reversed:{reversed_after}",
                now=now,
            )
        )
        TopUp.objects.filter(pk=top_up.pk).update(reversed_nanos=reversed_after, updated_at=now)
        top_up.reversed_nanos = reversed_after
    if top_up.shortfall_nanos:
        logger.warning(
            "top-up %s: the wallet of tenant %s is %s short of what a refund or dispute "
            "takes back; the operator settles it",
            top_up.pk,
            top_up.tenant_id,
            format_usd(top_up.shortfall_nanos),
        )
    return taken
