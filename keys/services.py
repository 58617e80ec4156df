"""Writes for client keys: create (and fund), top up, change limits, revoke, delete (and refund).

Every flow that moves money runs under ``transaction.atomic(durable=True)`` and changes the
wallet only through ``billing.ledger.ledger_post_op`` (a conditional update: a wallet can
never be overdrawn). Key rows are claimed with conditional updates too, so concurrent
top-ups, deletes and reservations serialise on the key's row lock in the order key → wallet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.expressions import RawSQL
from django.utils import timezone

from accounts.events import config_changed
from accounts.hashing import CLIENT_KEY_PREFIX, secret_generate
from accounts.models import Tenant
from billing.exceptions import InsufficientFunds, LedgerError
from billing.ledger import ledger_post_op
from billing.metering import UNSPENT, deleted_key_refund_op
from billing.models import LedgerEntry
from billing.money import MAX_AMOUNT_NANOS, MoneyError, PriceRatio
from billing.periods import period_index
from billing.selectors import known_models, wallet_for_tenant
from billing.services import deleted_key_refund
from billing.sqlops import run_sync
from keys.exceptions import ClientKeyInvalid, ClientKeyStateConflict
from keys.models import ClientKey
from keys.selectors import key_get, ratio_is_internal_share, ratio_margin_percent

MAX_LIMIT = 1_000_000
# A client price is at most this many times your cost (a margin of at most 99.9 %): every
# client price then stays far inside the 64-bit nano-dollar columns, whatever a request costs.
MAX_MARKUP = 1_000
PREFIX_COLLISION_RETRIES = 3
KEY_DELETED = "This key was deleted."
KEY_ALREADY_DELETED = "This key was already deleted."


@dataclass(frozen=True)
class IssuedKey:
    key: ClientKey
    secret: str


@dataclass(frozen=True)
class KeyLimits:
    requests_per_minute: int
    tokens_per_minute: int | None
    max_concurrency: int
    allowed_models: list[str]
    expires_at: datetime | None


def _validate_amount(field: str, value: int | None, *, required: bool) -> int | None:
    if value is None:
        if required:
            raise ClientKeyInvalid(field, "This field is required.")
        return None
    if value <= 0:
        raise ClientKeyInvalid(field, "Must be greater than zero.")
    if value > MAX_AMOUNT_NANOS:
        raise ClientKeyInvalid(field, "Must be at most 1,000,000.")
    return value


def _validate_models(models: list[str]) -> list[str]:
    cleaned = sorted({m.strip() for m in models if m and m.strip()})
    unknown = sorted(set(cleaned) - known_models())
    if unknown:
        raise ClientKeyInvalid("models", f"Unknown models: {', '.join(unknown)}.")
    return cleaned


def _validate_limits(*, rpm: int, tpm: int | None, max_concurrency: int) -> None:
    for field, value in (("rpm", rpm), ("max_concurrency", max_concurrency)):
        if not 1 <= value <= MAX_LIMIT:
            raise ClientKeyInvalid(field, f"Must be between 1 and {MAX_LIMIT:,}.")
    if tpm is not None and not 1 <= tpm <= 10**9:
        raise ClientKeyInvalid("tpm", "Must be between 1 and 1,000,000,000, or null for no limit.")


def _ratio(client_budget_nanos: int, your_cost_nanos: int) -> PriceRatio:
    if your_cost_nanos > client_budget_nanos:
        raise ClientKeyInvalid("your_cost", "Your cost cannot exceed the client budget.")
    if client_budget_nanos > your_cost_nanos * MAX_MARKUP:
        raise ClientKeyInvalid(
            "your_cost",
            f"Your cost must be at least 1/{MAX_MARKUP:,} of the client budget "
            "(a margin of at most 99.9 %).",
        )
    try:
        return PriceRatio(cost_nanos=your_cost_nanos, client_nanos=client_budget_nanos)
    except MoneyError as exc:
        raise ClientKeyInvalid("your_cost", str(exc)) from exc


@dataclass(frozen=True)
class KeyTerms:
    """A new key's terms, validated: what ``key_create`` writes and ``key_create_quote``
    shows. ``client_budget_nanos`` and ``cost_funded_nanos`` are 0 for a wallet-funded key
    (its budget/cost pair only fixed ``ratio``)."""

    label: str
    funding: str
    ratio: PriceRatio
    client_budget_nanos: int
    cost_funded_nanos: int
    spend_cap_nanos: int | None
    budget_period: str
    rpm: int
    tpm: int | None
    max_concurrency: int
    allowed_models: list[str]
    expires_at: datetime | None
    default_tag: str

    @property
    def is_prepaid(self) -> bool:
        return self.funding == ClientKey.Funding.PREPAID

    @property
    def wallet_debit_nanos(self) -> int:
        """What creating the key takes from the wallet now: a prepaid key's cost."""
        return self.cost_funded_nanos


def _key_terms(
    *,
    label: str,
    funding: str,
    client_budget_nanos: int | None,
    your_cost_nanos: int | None,
    spend_cap_nanos: int | None,
    budget_period: str,
    rpm: int,
    tpm: int | None,
    max_concurrency: int,
    models: list[str] | None,
    expires_at: datetime | None,
    default_tag: str,
    now: datetime,
) -> KeyTerms:
    """Every rule a new key's input must meet (raises ClientKeyInvalid naming the field)."""
    label = label.strip()
    if not label:
        raise ClientKeyInvalid("label", "This field is required.")
    if funding not in ClientKey.Funding.values:
        raise ClientKeyInvalid("funding", f"Must be one of: {', '.join(ClientKey.Funding.values)}.")
    if budget_period not in ClientKey.BudgetPeriod.values:
        raise ClientKeyInvalid(
            "budget_period", f"Must be one of: {', '.join(ClientKey.BudgetPeriod.values)}."
        )
    is_prepaid = funding == ClientKey.Funding.PREPAID
    budget = _validate_amount("client_budget", client_budget_nanos, required=is_prepaid)
    cost = _validate_amount("your_cost", your_cost_nanos, required=is_prepaid)
    if (budget is None) != (cost is None):
        raise ClientKeyInvalid("your_cost", "Give both client_budget and your_cost, or neither.")
    ratio = _ratio(budget, cost) if budget is not None and cost is not None else PriceRatio.one()
    if spend_cap_nanos is not None and (spend_cap_nanos < 0 or spend_cap_nanos > MAX_AMOUNT_NANOS):
        raise ClientKeyInvalid("spend_cap", "Must be between 0 and 1,000,000.")
    if budget_period != ClientKey.BudgetPeriod.NONE and spend_cap_nanos is None:
        raise ClientKeyInvalid("budget_period", "A budget period needs a spend_cap.")
    _validate_limits(rpm=rpm, tpm=tpm, max_concurrency=max_concurrency)
    allowed = _validate_models(models or [])
    if expires_at is not None and expires_at <= now:
        raise ClientKeyInvalid("expires_at", "Must be in the future.")
    return KeyTerms(
        label=label,
        funding=funding,
        ratio=ratio,
        # Prepaid: both were validated as required above.
        client_budget_nanos=budget if is_prepaid and budget is not None else 0,
        cost_funded_nanos=cost if is_prepaid and cost is not None else 0,
        spend_cap_nanos=spend_cap_nanos,
        budget_period=budget_period,
        rpm=rpm,
        tpm=tpm,
        max_concurrency=max_concurrency,
        allowed_models=allowed,
        expires_at=expires_at,
        default_tag=default_tag.strip(),
    )


@transaction.atomic(durable=True)
def key_create(
    *,
    tenant: Tenant,
    actor: AbstractBaseUser | None,
    label: str,
    funding: str = ClientKey.Funding.PREPAID,
    client_budget_nanos: int | None = None,
    your_cost_nanos: int | None = None,
    spend_cap_nanos: int | None = None,
    budget_period: str = ClientKey.BudgetPeriod.NONE,
    rpm: int = 60,
    tpm: int | None = None,
    max_concurrency: int = 5,
    models: list[str] | None = None,
    expires_at: datetime | None = None,
    default_tag: str = "",
) -> IssuedKey:
    """Mint a client key; the secret is in the result and nowhere else.

    ``prepaid``: debits the wallet ``your_cost`` (= client budget × ratio) in the same
    transaction, or raises InsufficientFunds and creates nothing. ``wallet``: sets nothing
    aside; ``client_budget``/``your_cost`` only fix the ratio (1:1 by default) and
    ``spend_cap`` bounds spend per ``budget_period``. ``key_create_quote`` answers, without
    writing, what this would do.
    """
    now = timezone.now()
    terms = _key_terms(
        label=label,
        funding=funding,
        client_budget_nanos=client_budget_nanos,
        your_cost_nanos=your_cost_nanos,
        spend_cap_nanos=spend_cap_nanos,
        budget_period=budget_period,
        rpm=rpm,
        tpm=tpm,
        max_concurrency=max_concurrency,
        models=models,
        expires_at=expires_at,
        default_tag=default_tag,
        now=now,
    )
    wallet = wallet_for_tenant(tenant=tenant)

    for attempt in range(PREFIX_COLLISION_RETRIES):
        new = secret_generate(CLIENT_KEY_PREFIX)
        try:
            with transaction.atomic():
                key = ClientKey.objects.create(
                    tenant=tenant,
                    wallet=wallet,
                    label=terms.label,
                    prefix=new.prefix,
                    digest=new.digest,
                    last4=new.last4,
                    default_tag=terms.default_tag,
                    funding=terms.funding,
                    ratio_cost_nanos=terms.ratio.cost_nanos,
                    ratio_client_nanos=terms.ratio.client_nanos,
                    client_budget_nanos=terms.client_budget_nanos,
                    cost_funded_nanos=terms.cost_funded_nanos,
                    spend_cap_nanos=terms.spend_cap_nanos,
                    budget_period=terms.budget_period,
                    period_index=period_index(terms.budget_period, now),
                    requests_per_minute=terms.rpm,
                    tokens_per_minute=terms.tpm,
                    max_concurrency=terms.max_concurrency,
                    allowed_models=terms.allowed_models,
                    expires_at=terms.expires_at,
                    created_at=now,
                    updated_at=now,
                )
            break
        except IntegrityError:
            # A prefix collision (about 1 in 2^54): draw a new secret.
            if attempt == PREFIX_COLLISION_RETRIES - 1:
                raise
    if terms.is_prepaid:
        run_sync(
            ledger_post_op(
                wallet_id=wallet.pk,
                kind=LedgerEntry.Kind.KEY_FUNDING,
                amount_nanos=-terms.wallet_debit_nanos,
                reason=f"Funding of key {terms.label}",
                reference=f"key:{key.pk}",
                client_key_id=key.pk,
                actor_id=actor.pk if actor is not None else None,
                now=now,
            )
        )
    return IssuedKey(key=key, secret=new.secret)


def _top_up_cost(key: ClientKey, client_amount_nanos: int) -> int:
    """What topping ``key`` up by a client amount debits the wallet: the amount × the key's
    locked ratio, rounded once (``PriceRatio.cost_from_client``). Raises the refusals of a
    top-up that no wallet balance changes: a bad amount, a wallet-funded or deleted key."""
    amount = _validate_amount("client_amount", client_amount_nanos, required=True)
    assert amount is not None  # noqa: S101
    if key.funding != ClientKey.Funding.PREPAID:
        raise ClientKeyStateConflict(
            "Wallet-funded keys draw from the wallet; raise spend_cap instead."
        )
    cost = key.ratio.cost_from_client(amount)
    if cost <= 0:
        raise ClientKeyInvalid("client_amount", "Amount too small.")
    # Read here for the quote; ``key_top_up``'s claim checks it again under the row lock.
    if key.status == ClientKey.Status.DELETED:
        raise ClientKeyStateConflict(KEY_DELETED)
    return cost


@transaction.atomic(durable=True)
def key_top_up(
    *, tenant: Tenant, actor: AbstractBaseUser | None, key_id: int, client_amount_nanos: int
) -> ClientKey:
    """Raise a prepaid key's client budget by ``client_amount_nanos`` and debit the wallet
    that amount × the key's ratio. Raises InsufficientFunds and changes nothing if the
    wallet cannot cover it."""
    key = key_get(tenant=tenant, key_id=key_id)
    cost = _top_up_cost(key, client_amount_nanos)
    now = timezone.now()
    # Claim: only an undeleted key can be topped up; the update also takes its row lock.
    updated = (
        ClientKey.objects.filter(pk=key.pk, funding=ClientKey.Funding.PREPAID)
        .exclude(status=ClientKey.Status.DELETED)
        .update(
            client_budget_nanos=F("client_budget_nanos") + client_amount_nanos,
            cost_funded_nanos=F("cost_funded_nanos") + cost,
            updated_at=now,
        )
    )
    if updated != 1:
        raise ClientKeyStateConflict(KEY_DELETED)
    run_sync(
        ledger_post_op(
            wallet_id=key.wallet_id,
            kind=LedgerEntry.Kind.KEY_FUNDING,
            amount_nanos=-cost,
            reason=f"Top-up of key {key.label}",
            reference=f"key:{key.pk}",
            client_key_id=key.pk,
            actor_id=actor.pk if actor is not None else None,
            now=now,
        )
    )
    key.refresh_from_db()
    return key


UPDATABLE_FIELDS = {
    "label",
    "default_tag",
    "rpm",
    "tpm",
    "max_concurrency",
    "models",
    "expires_at",
    "spend_cap",
    "budget_period",
    "status",
}


@transaction.atomic(durable=True)
def key_update(
    *, tenant: Tenant, actor: AbstractBaseUser | None, key_id: int, changes: dict[str, Any]
) -> ClientKey:
    """Change a key's label, tag, limits, cap or status (active / revoked).

    Funding and price ratio never change: to reprice, create a new key. Money amounts in
    ``changes`` are nano-dollars (``spend_cap``).
    """
    unknown = set(changes) - UPDATABLE_FIELDS
    if unknown:
        raise ClientKeyInvalid(sorted(unknown)[0], "This field cannot be changed.")
    key = ClientKey.objects.select_for_update().get(pk=key_get(tenant=tenant, key_id=key_id).pk)
    if key.status == ClientKey.Status.DELETED:
        raise ClientKeyStateConflict(KEY_DELETED)
    now = timezone.now()
    if "label" in changes:
        label = (changes["label"] or "").strip()
        if not label:
            raise ClientKeyInvalid("label", "This field may not be blank.")
        key.label = label
    if "default_tag" in changes:
        key.default_tag = (changes["default_tag"] or "").strip()
    key.requests_per_minute = changes.get("rpm", key.requests_per_minute)
    key.tokens_per_minute = changes.get("tpm", key.tokens_per_minute)
    key.max_concurrency = changes.get("max_concurrency", key.max_concurrency)
    _validate_limits(
        rpm=key.requests_per_minute, tpm=key.tokens_per_minute, max_concurrency=key.max_concurrency
    )
    if "models" in changes:
        key.allowed_models = _validate_models(changes["models"] or [])
    if "expires_at" in changes:
        expires_at = changes["expires_at"]
        if expires_at is not None and expires_at <= now:
            raise ClientKeyInvalid("expires_at", "Must be in the future.")
        key.expires_at = expires_at
    if "spend_cap" in changes:
        cap = changes["spend_cap"]
        if cap is not None and (cap < 0 or cap > MAX_AMOUNT_NANOS):
            raise ClientKeyInvalid("spend_cap", "Must be between 0 and 1,000,000.")
        key.spend_cap_nanos = cap
    if "budget_period" in changes:
        period = changes["budget_period"]
        if period not in ClientKey.BudgetPeriod.values:
            raise ClientKeyInvalid(
                "budget_period", f"Must be one of: {', '.join(ClientKey.BudgetPeriod.values)}."
            )
        if period != key.budget_period:
            # A new kind of period starts afresh.
            key.budget_period = period
            key.period_index = period_index(period, now)
            key.period_client_spent_nanos = 0
    if key.budget_period != ClientKey.BudgetPeriod.NONE and key.spend_cap_nanos is None:
        raise ClientKeyInvalid("budget_period", "A budget period needs a spend_cap.")
    if "status" in changes:
        status = changes["status"]
        if status not in (ClientKey.Status.ACTIVE, ClientKey.Status.REVOKED):
            raise ClientKeyInvalid("status", "Must be 'active' or 'revoked'; use DELETE to delete.")
        if status != key.status:
            key.status = status
            key.revoked_at = now if status == ClientKey.Status.REVOKED else None
    key.updated_at = now
    # Only configuration columns: the money counters belong to metering and funding flows.
    key.save(
        update_fields=[
            "label",
            "default_tag",
            "requests_per_minute",
            "tokens_per_minute",
            "max_concurrency",
            "allowed_models",
            "expires_at",
            "spend_cap_nanos",
            "budget_period",
            "period_index",
            "period_client_spent_nanos",
            "status",
            "revoked_at",
            "updated_at",
        ]
    )
    config_changed(f"key:{key.prefix}")
    return key


@dataclass(frozen=True)
class Deleted:
    key: ClientKey
    refunded_nanos: int


@transaction.atomic(durable=True)
def key_delete(*, tenant: Tenant, actor: AbstractBaseUser | None, key_id: int) -> Deleted:
    """Delete a key: it stops working at once, and a prepaid key's unspent cost goes back to
    the wallet (spent usage never does). Requests in flight settle normally; what they held
    and did not spend is refunded when they settle. Deleting twice refunds once."""
    key = key_get(tenant=tenant, key_id=key_id)
    now = timezone.now()
    # Claim: of concurrent deletes exactly one flips the status; the rest see no row.
    claimed = (
        ClientKey.objects.filter(pk=key.pk)
        .exclude(status=ClientKey.Status.DELETED)
        .update(status=ClientKey.Status.DELETED, deleted_at=now, updated_at=now)
    )
    if claimed != 1:
        raise ClientKeyStateConflict(KEY_ALREADY_DELETED)
    config_changed(f"key:{key.prefix}")
    key.refresh_from_db()
    refund = 0
    if key.funding == ClientKey.Funding.PREPAID:
        # Requests in flight keep their holds; each refunds what it did not spend when it
        # settles (billing.metering.settle_op).
        refund = key.refundable_cost_nanos
        if refund < 0:
            raise LedgerError(f"key {key.pk} spent more than it was funded")
        refunded = run_sync(
            deleted_key_refund_op(
                key_id=key.pk,
                wallet_id=key.wallet_id,
                refund=refund,
                reason=f"Refund of deleted key {key.label}",
                idempotency_key=f"key-delete:{key.pk}",
                actor_id=actor.pk if actor is not None else None,
                now=now,
            )
        )
        if refund and not refunded:
            # The key row is locked since the status flip: nothing can have changed it.
            raise LedgerError(f"key {key.pk}: the deletion refund did not apply")
        key.refresh_from_db()
    return Deleted(key=key, refunded_nanos=refund)


def deleted_keys_refund(*, now: datetime | None = None, limit: int = 500) -> int:
    """Refund the unspent cost of deleted prepaid keys whose refund is still owed.

    Deletion refunds at once, and a request in flight at deletion refunds what it did not
    spend when it settles (a second transaction); this sweep finishes any of those a crash
    cut short. Each refund applies only to the exact amount it read, so the sweep and a
    settlement can never both pay. Returns how many keys were refunded.
    """
    now = now or timezone.now()
    owed = list(
        ClientKey.objects.filter(status=ClientKey.Status.DELETED, funding=ClientKey.Funding.PREPAID)
        # The refund's own definition of unspent (a constant expression, no input in it).
        .annotate(unspent=RawSQL(UNSPENT, ()))  # noqa: S611
        .filter(unspent__gt=0)
        .order_by("pk")
        .values_list("pk", "wallet_id", "unspent")[:limit]
    )
    refunded = 0
    for key_id, wallet_id, unspent in owed:
        with transaction.atomic(durable=True):
            refunded += deleted_key_refund(
                key_id=key_id, wallet_id=wallet_id, refund=int(unspent), now=now
            )
    return refunded


# ------------------------------------------------------------------------------- quotes
# What a write would do, answered without writing: the dashboard shows them before the
# reseller confirms. Each runs the write's own rules and arithmetic (the same functions),
# so a quote raises what the write would raise for its input, and a quote's figures are
# what the write then does if nothing changes between them. A refusal that depends on the
# wallet's balance (which may change before the write) is carried as ``refusal`` instead.


@dataclass(frozen=True)
class WalletEffect:
    """What a write does to the wallet's available balance (balance less what requests in
    flight hold), and what it would refuse for lack of funds."""

    available_nanos: int
    change_nanos: int

    @property
    def available_after_nanos(self) -> int:
        return self.available_nanos + self.change_nanos

    @property
    def refusal(self) -> InsufficientFunds | None:
        """The InsufficientFunds the write would raise, exactly as the ledger raises it."""
        if self.available_after_nanos >= 0:
            return None
        return InsufficientFunds(
            needed_nanos=-self.change_nanos, available_nanos=self.available_nanos
        )


def _wallet_effect(*, tenant: Tenant, change_nanos: int) -> WalletEffect:
    wallet = wallet_for_tenant(tenant=tenant)
    return WalletEffect(available_nanos=wallet.available_nanos, change_nanos=change_nanos)


@dataclass(frozen=True)
class KeyCreateQuote:
    """What ``key_create`` would do with these terms: what the client sees (a prepaid
    budget, or a wallet-funded key's spend cap and period), what leaves the wallet now
    (a prepaid key's cost; nothing for a wallet-funded key), the locked ratio and margin."""

    terms: KeyTerms
    wallet: WalletEffect

    @property
    def client_budget_nanos(self) -> int | None:
        return self.terms.client_budget_nanos if self.terms.is_prepaid else None

    @property
    def wallet_debit_nanos(self) -> int:
        return self.terms.wallet_debit_nanos

    @property
    def margin_percent(self) -> Decimal:
        return ratio_margin_percent(self.terms.ratio)

    @property
    def is_internal_share(self) -> bool:
        return ratio_is_internal_share(self.terms.ratio)

    @property
    def refusal(self) -> InsufficientFunds | None:
        return self.wallet.refusal


def key_create_quote(
    *,
    tenant: Tenant,
    label: str,
    funding: str = ClientKey.Funding.PREPAID,
    client_budget_nanos: int | None = None,
    your_cost_nanos: int | None = None,
    spend_cap_nanos: int | None = None,
    budget_period: str = ClientKey.BudgetPeriod.NONE,
    rpm: int = 60,
    tpm: int | None = None,
    max_concurrency: int = 5,
    models: list[str] | None = None,
    expires_at: datetime | None = None,
    default_tag: str = "",
) -> KeyCreateQuote:
    """``key_create`` without the write: takes its arguments, raises the ClientKeyInvalid
    it would raise, and carries the InsufficientFunds it would raise as ``refusal``."""
    terms = _key_terms(
        label=label,
        funding=funding,
        client_budget_nanos=client_budget_nanos,
        your_cost_nanos=your_cost_nanos,
        spend_cap_nanos=spend_cap_nanos,
        budget_period=budget_period,
        rpm=rpm,
        tpm=tpm,
        max_concurrency=max_concurrency,
        models=models,
        expires_at=expires_at,
        default_tag=default_tag,
        now=timezone.now(),
    )
    effect = _wallet_effect(tenant=tenant, change_nanos=-terms.wallet_debit_nanos)
    return KeyCreateQuote(terms=terms, wallet=effect)


@dataclass(frozen=True)
class KeyTopUpQuote:
    """What ``key_top_up`` would do: the client amount, what it debits the wallet (the
    amount × the key's locked ratio, rounded once) and the key's budget after it."""

    key: ClientKey
    client_amount_nanos: int
    wallet_debit_nanos: int
    wallet: WalletEffect

    @property
    def client_budget_after_nanos(self) -> int:
        return self.key.client_budget_nanos + self.client_amount_nanos

    @property
    def refusal(self) -> InsufficientFunds | None:
        return self.wallet.refusal


def key_top_up_quote(*, tenant: Tenant, key_id: int, client_amount_nanos: int) -> KeyTopUpQuote:
    """``key_top_up`` without the write: raises what it would raise for the amount and the
    key (another tenant's key: DoesNotExist), and carries its InsufficientFunds as
    ``refusal``."""
    key = key_get(tenant=tenant, key_id=key_id)
    cost = _top_up_cost(key, client_amount_nanos)
    return KeyTopUpQuote(
        key=key,
        client_amount_nanos=client_amount_nanos,
        wallet_debit_nanos=cost,
        wallet=_wallet_effect(tenant=tenant, change_nanos=-cost),
    )


@dataclass(frozen=True)
class KeyDeleteQuote:
    """What ``key_delete`` would refund now, and what requests in flight still hold (each
    refunds what it does not spend when it settles)."""

    key: ClientKey
    refund_nanos: int
    held_nanos: int
    wallet: WalletEffect


def key_delete_quote(*, tenant: Tenant, key_id: int) -> KeyDeleteQuote:
    """``key_delete`` without the write: the refund it would pay (a prepaid key's
    ``refundable_cost_nanos``; 0 for a wallet-funded key); raises what it would raise for
    a deleted key or another tenant's (DoesNotExist)."""
    key = key_get(tenant=tenant, key_id=key_id)
    if key.status == ClientKey.Status.DELETED:
        raise ClientKeyStateConflict(KEY_ALREADY_DELETED)
    refund = max(key.refundable_cost_nanos, 0)
    held = key.cost_reserved_nanos if key.is_prepaid else 0
    return KeyDeleteQuote(
        key=key,
        refund_nanos=refund,
        held_nanos=held,
        wallet=_wallet_effect(tenant=tenant, change_nanos=refund),
    )
