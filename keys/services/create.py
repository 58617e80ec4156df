"""Creating a key (and funding a prepaid one), and its quote: the terms a new key's input
must meet, checked once for both."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.hashing import CLIENT_KEY_PREFIX, secret_generate
from accounts.models import Tenant
from billing.exceptions import InsufficientFunds
from billing.ledger import ledger_post_op
from billing.models import LedgerEntry
from billing.money import MAX_AMOUNT_NANOS, MoneyError, PriceRatio
from billing.periods import period_index
from billing.selectors import wallet_for_tenant
from billing.sqlops import run_sync
from keys.exceptions import ClientKeyInvalid
from keys.models import ClientKey
from keys.selectors import ratio_is_internal_share, ratio_margin_percent
from keys.services._common import (
    WalletEffect,
    _validate_amount,
    _validate_limits,
    _validate_models,
    _wallet_effect,
)

# A client price is at most this many times your cost (a margin of at most 99.9 %): every
# client price then stays far inside the 64-bit nano-dollar columns, whatever a request costs.
MAX_MARKUP = 1_000
PREFIX_COLLISION_RETRIES = 3


@dataclass(frozen=True)
class IssuedKey:
    key: ClientKey
    secret: str


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
