"""Deleting a key (and refunding a prepaid key's unspent cost), its quote, and the sweep that
finishes refunds a crash cut short."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone

from accounts.events import config_changed
from accounts.models import Tenant
from billing.exceptions import LedgerError
from billing.metering import UNSPENT, deleted_key_refund_op
from billing.services import deleted_key_refund
from billing.sqlops import run_sync
from keys.exceptions import ClientKeyStateConflict
from keys.models import ClientKey
from keys.selectors import key_get
from keys.services._common import (
    KEY_ALREADY_DELETED,
    WalletEffect,
    _wallet_effect,
)


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
