"""Wallets, the append-only ledger, card top-ups and the Stripe events behind them,
upstreams, routes, versioned prices and reservations.

Invariants (checked by ``manage.py check_ledger``):
* ``Wallet.balance_nanos == SUM(LedgerEntry.amount_nanos)`` for the wallet; the cached
  balance only ever changes in the same transaction as the entry that explains it.
* ``0 <= Wallet.reserved_nanos <= Wallet.balance_nanos`` (database check constraints), so a
  wallet can never be overdrawn, whatever the concurrency.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.money import Prices, tiers_from_json


class KeyFunding(models.TextChoices):
    """How a client key's requests are paid (``keys.ClientKey.funding``, whose choices these
    are): metering holds and charges each kind its own way, so the kinds are billing's."""

    # The client budget is bought from the wallet up front; requests spend it.
    PREPAID = "prepaid", "Prepaid budget"
    # Nothing is set aside; each request holds and pays its cost from the wallet.
    WALLET = "wallet", "Draws from the wallet"


class Wallet(models.Model):
    tenant = models.OneToOneField(
        "accounts.Tenant", on_delete=models.PROTECT, related_name="wallet"
    )
    balance_nanos = models.BigIntegerField(default=0)
    # Held for in-flight requests of wallet-funded keys; released or charged at settlement.
    reserved_nanos = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(reserved_nanos__gte=0), name="wallet_reserved_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(balance_nanos__gte=models.F("reserved_nanos")),
                name="wallet_covers_reservations",
            ),
        ]

    def __str__(self) -> str:
        return f"wallet of {self.tenant}"

    @property
    def available_nanos(self) -> int:
        return self.balance_nanos - self.reserved_nanos


class LedgerEntry(models.Model):
    """One balance change of a wallet. Only ever inserted; never updated or deleted."""

    class Kind(models.TextChoices):
        TOP_UP = "top_up", "Top-up"
        # A card top-up's fee (billing.top_ups): posted beside the card payment's full
        # amount, so the ledger shows what the card paid and what the fee took.
        TOP_UP_FEE = "top_up_fee", "Top-up fee"
        # A card top-up taken back: refunded by the operator, or disputed by the cardholder.
        TOP_UP_REFUND = "top_up_refund", "Top-up refund"
        TOP_UP_DISPUTE = "top_up_dispute", "Top-up dispute"
        # A disputed card top-up whose dispute the operator won: what the dispute had taken
        # from the wallet, given back.
        TOP_UP_DISPUTE_WON = "top_up_dispute_won", "Top-up dispute won"
        # What an earlier top-up's refund or dispute could not take back (its shortfall),
        # collected from the tenant's next card top-up when that is credited.
        TOP_UP_SHORTFALL = "top_up_shortfall", "Top-up shortfall collected"
        MANUAL_CREDIT = "manual_credit", "Manual credit"
        KEY_FUNDING = "key_funding", "Key funding"
        KEY_REFUND = "key_refund", "Key refund"
        USAGE = "usage", "Usage"
        ADJUSTMENT = "adjustment", "Adjustment"

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    amount_nanos = models.BigIntegerField()
    balance_after_nanos = models.BigIntegerField()
    reason = models.CharField(max_length=500)
    reference = models.CharField(max_length=200, blank=True, default="")
    # A natural key for writes triggered from outside (Stripe session, request id, ...).
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    client_key = models.ForeignKey(
        "keys.ClientKey",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_entries",
    )
    actor = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["wallet", "-id"]),
            # A wallet's balance at a moment (the last entry before it) is one probe of
            # this index, however long the ledger: the wallet's balance over time.
            models.Index(fields=["wallet", "created_at", "id"], name="ledger_wallet_time"),
            # A wallet's credits (top-ups and manual credits) since a moment: the alerts'
            # check asks whether one came since a claim without reading every request's entry.
            models.Index(
                fields=["wallet", "created_at"],
                name="ledger_wallet_credits",
                condition=models.Q(kind__in=["top_up", "manual_credit"], amount_nanos__gt=0),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(amount_nanos=0), name="ledger_amount_non_zero"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_nanos}"


class Upstream(models.Model):
    """A provider account the operator holds: where requests of one wire format go."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic"
        # Canned answers made inside Tollgate (proxy.upstreams.demo), no provider called:
        # only the demo seeding makes one (billing.services.upstream_demo_ensure).
        DEMO = "demo", "Built-in demo (no provider)"

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    base_url = models.URLField(max_length=500)
    # The secret is read from this environment variable at dispatch time ...
    api_key_env = models.CharField(max_length=100, blank=True, default="")
    # ... or stored here, encrypted (billing.crypto); never in clear.
    api_key_encrypted = models.TextField(blank=True, default="")
    is_active = models.BooleanField(default=True)
    timeout_seconds = models.PositiveIntegerField(default=600)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name

    @property
    def is_demo(self) -> bool:
        return self.kind == self.Kind.DEMO


# The kinds an operator connects (the admin, ``manage.py add_upstream``): real providers.
PROVIDER_KINDS = (Upstream.Kind.OPENAI, Upstream.Kind.ANTHROPIC)
# A demo upstream's base URL: never called (its answers are made in-process); a reserved
# name (RFC 2606) that resolves nowhere, should anything ever try.
DEMO_BASE_URL = "http://tollgate-demo.invalid"


class ModelRoute(models.Model):
    """A model name clients may ask for, served by one upstream. Several routes of one
    model (same wire format) are tried in ``priority`` order before the first byte."""

    model = models.CharField(max_length=200, db_index=True)
    upstream = models.ForeignKey(Upstream, on_delete=models.PROTECT, related_name="routes")
    # The name the upstream knows the model by (defaults to ``model``).
    upstream_model = models.CharField(max_length=200, blank=True, default="")
    priority = models.PositiveIntegerField(default=100)
    max_output_tokens = models.PositiveIntegerField(default=16_384)
    # The model's context window: what bounds the input of a request whose body does not
    # (a previous response, a file or URL by reference, server-side tools). Unknown: None.
    context_window_tokens = models.PositiveIntegerField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model", "priority", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "upstream"], name="route_model_upstream_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} via {self.upstream.name}"

    @property
    def target_model(self) -> str:
        return self.upstream_model or self.model


class ModelPrice(models.Model):
    """A price version of one route. Never edited: a change inserts a new version, and a
    trace keeps the version it was charged at."""

    class Source(models.TextChoices):
        MANUAL = "manual", "Set by the operator"
        GENAI_PRICES = "genai-prices", "genai-prices database"

    route = models.ForeignKey(ModelRoute, on_delete=models.PROTECT, related_name="prices")
    input_per_mtok_nanos = models.BigIntegerField()
    output_per_mtok_nanos = models.BigIntegerField()
    cached_input_per_mtok_nanos = models.BigIntegerField(null=True, blank=True)
    cache_write_per_mtok_nanos = models.BigIntegerField(null=True, blank=True)
    # One-hour cache writes (Anthropic: 2× input); unset, the cache-write rate.
    cache_write_1h_per_mtok_nanos = models.BigIntegerField(null=True, blank=True)
    # Long-prompt rates: a list of billing.money.PriceTier.as_json(), thresholds ascending.
    tiers = models.JSONField(default=list, blank=True)
    effective_from = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.MANUAL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-effective_from", "-pk"]
        indexes = [models.Index(fields=["route", "-effective_from"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(input_per_mtok_nanos__gte=0)
                & Q(output_per_mtok_nanos__gte=0)
                & (
                    Q(cached_input_per_mtok_nanos__isnull=True)
                    | Q(cached_input_per_mtok_nanos__gte=0)
                )
                & (
                    Q(cache_write_per_mtok_nanos__isnull=True)
                    | Q(cache_write_per_mtok_nanos__gte=0)
                ),
                name="price_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.route} from {self.effective_from:%Y-%m-%d %H:%M}"

    def as_prices(self) -> Prices:
        return Prices(
            input_per_mtok_nanos=self.input_per_mtok_nanos,
            output_per_mtok_nanos=self.output_per_mtok_nanos,
            cached_input_per_mtok_nanos=self.cached_input_per_mtok_nanos,
            cache_write_per_mtok_nanos=self.cache_write_per_mtok_nanos,
            cache_write_1h_per_mtok_nanos=self.cache_write_1h_per_mtok_nanos,
            tiers=tiers_from_json(self.tiers),
        )


class Reservation(models.Model):
    """Worst-case cost held for one in-flight request, keyed by its request id.

    Created before dispatch, then exactly one of: settled (charged the actual cost),
    released (charged nothing), expired (a crashed worker's hold, charged nothing).
    """

    class Status(models.TextChoices):
        HELD = "held", "Held"
        SETTLED = "settled", "Settled"
        RELEASED = "released", "Released"
        EXPIRED = "expired", "Expired"

    request_id = models.CharField(max_length=100, unique=True)
    client_key = models.ForeignKey(
        "keys.ClientKey", on_delete=models.PROTECT, related_name="reservations"
    )
    # Set for wallet-funded keys: the wallet holds the cost part of the reservation.
    wallet = models.ForeignKey(
        Wallet, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    price = models.ForeignKey(ModelPrice, on_delete=models.PROTECT, related_name="+")
    cost_nanos = models.BigIntegerField()
    client_nanos = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.HELD)
    charged_cost_nanos = models.BigIntegerField(default=0)
    charged_client_nanos = models.BigIntegerField(default=0)
    # Set by whoever claims the hold (settle, release, expire); the rest of that batch is
    # guarded by it, so only the claimant's statements apply.
    claim_token = models.CharField(max_length=32, blank=True, default="", editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["expires_at"], condition=Q(status="held"), name="reservation_held_expiry"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(cost_nanos__gte=0) & Q(client_nanos__gte=0),
                name="reservation_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(charged_cost_nanos__lte=models.F("cost_nanos"))
                & Q(charged_client_nanos__lte=models.F("client_nanos")),
                name="reservation_charge_within_hold",
            ),
        ]

    def __str__(self) -> str:
        return self.request_id


class TopUp(models.Model):
    """A card top-up of a wallet through a Stripe Checkout Session (``billing.top_ups``).

    Made ``pending`` before Stripe is called; the Checkout Session's id and URL are stored
    once Stripe answers. Only a signed webhook of that very session, paid, for exactly
    ``amount + fee`` in ``currency``, credits the wallet, once (``stripe_session_id`` is
    unique and the ledger entry's idempotency key is derived from it). Refunds and disputes
    take back what they can (see ``reversed_nanos``); the status stays ``credited``. A won
    dispute gives back what the dispute took (``reinstated_nanos``); what could not be taken
    back (``shortfall_nanos``) is collected from the tenant's next credited top-up.
    """

    class Status(models.TextChoices):
        # The row exists; the reseller has a Checkout Session to pay (or Stripe is being asked).
        PENDING = "pending", "Pending"
        # Paid: the wallet was credited ``amount_nanos`` (once).
        CREDITED = "credited", "Credited"
        # Stripe refused to open the session, or a delayed payment (bank debit) failed.
        FAILED = "failed", "Failed"
        # The Checkout Session expired unpaid (Stripe's default: after 24 hours).
        EXPIRED = "expired", "Expired"

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.PROTECT, related_name="+")
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="top_ups")
    # What the wallet is credited; the card pays amount + fee.
    amount_nanos = models.BigIntegerField()
    fee_nanos = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, default="usd")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # The Idempotency-Key of the Checkout Session's creation is "top-up-<id>-<this>": a
    # retried create gets the same session, and two databases that share a Stripe account
    # (staging and production) never reuse each other's keys.
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    stripe_session_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    # Known once the session is completed; refunds and disputes name the payment intent.
    stripe_payment_intent = models.CharField(max_length=255, blank=True, default="")
    checkout_url = models.TextField(blank=True, default="")
    # Cumulative, as Stripe reports them (a charge's amount_refunded; a dispute's amount).
    refunded_nanos = models.BigIntegerField(default=0)
    disputed_nanos = models.BigIntegerField(default=0)
    # What refunds and disputes took back from the wallet (a positive sum of their debits,
    # and of the shortfall later collected from other top-ups). Never more than the wallet
    # had available; the rest is ``shortfall_nanos``.
    reversed_nanos = models.BigIntegerField(default=0)
    # Stripe closed the payment's dispute as won (``charge.dispute.closed`` or
    # ``…funds_reinstated`` with status ``won``): the dispute no longer counts as owed.
    is_dispute_won = models.BooleanField(default=False)
    # What the won dispute gave back to the wallet (a ``top_up_dispute_won`` credit): what
    # the dispute had actually taken, never what it could not take.
    reinstated_nanos = models.BigIntegerField(default=0)
    # What this top-up's credit paid towards the shortfalls of the tenant's earlier top-ups
    # (``top_up_shortfall`` debits), out of ``amount_nanos``.
    earlier_shortfall_paid_nanos = models.BigIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    actor = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    credited_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "-id"], name="top_up_tenant_recent"),
            models.Index(
                fields=["stripe_payment_intent"],
                condition=~Q(stripe_payment_intent=""),
                name="top_up_payment_intent",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount_nanos__gt=0) & Q(fee_nanos__gte=0),
                name="top_up_amounts_positive",
            ),
            # Net of what a won dispute gave back, never more taken back than was credited.
            models.CheckConstraint(
                condition=Q(reversed_nanos__gte=0)
                & Q(reinstated_nanos__gte=0)
                & Q(reinstated_nanos__lte=models.F("reversed_nanos"))
                & Q(reversed_nanos__lte=models.F("amount_nanos") + models.F("reinstated_nanos")),
                name="top_up_taken_back_within_credit",
            ),
            models.CheckConstraint(
                condition=Q(earlier_shortfall_paid_nanos__gte=0)
                & Q(earlier_shortfall_paid_nanos__lte=models.F("amount_nanos")),
                name="top_up_shortfall_paid_within_amount",
            ),
            # Credited exactly when it has a credit time: the one transition that moves money.
            models.CheckConstraint(
                condition=Q(status="credited", credited_at__isnull=False)
                | (~Q(status="credited") & Q(credited_at__isnull=True)),
                name="top_up_credited_at_iff_credited",
            ),
        ]

    def __str__(self) -> str:
        return f"top-up {self.pk} ({self.status})"

    @property
    def total_nanos(self) -> int:
        """What the card pays: the amount credited and the fee."""
        return self.amount_nanos + self.fee_nanos

    @property
    def owed_nanos(self) -> int:
        """What refunds and disputes should take back from the wallet: what Stripe gave
        back or holds, up to the amount the top-up credited (a refunded fee is the
        operator's, never the wallet's). A won dispute holds nothing any more."""
        disputed = 0 if self.is_dispute_won else self.disputed_nanos
        return min(self.refunded_nanos + disputed, self.amount_nanos)

    @property
    def taken_back_nanos(self) -> int:
        """What the wallet has given up for this top-up, net: taken back, less what a won
        dispute gave back."""
        return self.reversed_nanos - self.reinstated_nanos

    @property
    def shortfall_nanos(self) -> int:
        """What a refund or dispute could not take back: the wallet no longer had it."""
        return max(self.owed_nanos - self.taken_back_nanos, 0)

    @property
    def checkout_key(self) -> str:
        """The Idempotency-Key of this top-up's Checkout Session creation."""
        return f"top-up-{self.pk}-{self.idempotency_key}"


class StripeEvent(models.Model):
    """A Stripe webhook event, stored (under Stripe's unique id) before it is handled, so a
    redelivery is recognised, a failure stays visible with its error, and the operator can
    run it again from the admin (``billing.stripe_webhooks``)."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        # A handler raised: ``error`` says why; Stripe's retries and the admin run it again.
        FAILED = "failed", "Failed"
        # Nothing to do: a type Tollgate does not handle, or an object that is not its own.
        IGNORED = "ignored", "Ignored"

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    # Why the last attempt failed (the handler's error); emptied when an attempt succeeds.
    error = models.TextField(blank=True, default="")
    # What handling concluded ("credited top-up 12", "not a Tollgate session"…).
    note = models.CharField(max_length=500, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    is_livemode = models.BooleanField(default=False)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            models.Index(
                fields=["received_at"], condition=Q(status="failed"), name="stripe_event_failed"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"
