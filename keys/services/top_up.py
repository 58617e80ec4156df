"""Topping up a prepaid key, and its quote: both debit the same cost, the client amount ×
the key's locked ratio, rounded once."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Tenant
from billing.exceptions import InsufficientFunds
from billing.ledger import ledger_post_op
from billing.models import LedgerEntry
from billing.sqlops import run_sync
from keys.exceptions import ClientKeyInvalid, ClientKeyStateConflict
from keys.models import ClientKey
from keys.selectors import key_get
from keys.services._common import (
    KEY_DELETED,
    WalletEffect,
    _validate_amount,
    _wallet_effect,
)


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
