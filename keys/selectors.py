"""Tenant-scoped reads of client keys. The only road to a tenant's key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.hashing import secret_matches, secret_prefix
from accounts.models import Tenant
from billing.periods import period_index
from keys.models import ClientKey

# What ``?status=`` may ask for: the stored states plus the derived ``expired``.
EXPIRED = "expired"
LISTABLE_STATUSES = (*ClientKey.Status.values, EXPIRED)

# Ratios and margins are shown to 6 places; the margin percentage to 2.
RATIO_DISPLAY_PLACES = 6
MARGIN_PERCENT_QUANTUM = Decimal("0.01")


def key_list(
    *, tenant: Tenant, include_deleted: bool = False, status: str | None = None
) -> QuerySet[ClientKey]:
    """The tenant's keys, newest first: all but deleted ones, or those in one ``status``
    (one of LISTABLE_STATUSES, where ``expired`` and ``active`` follow the expiry time)."""
    keys = ClientKey.objects.for_tenant(tenant)
    if status is None:
        return keys if include_deleted else keys.visible()
    now = timezone.now()
    if status == EXPIRED:
        return keys.filter(status=ClientKey.Status.ACTIVE, expires_at__lte=now)
    if status == ClientKey.Status.ACTIVE:
        return keys.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), status=status)
    return keys.filter(status=status)


def key_get(*, tenant: Tenant, key_id: int) -> ClientKey:
    """The tenant's key, deleted or not; another tenant's id raises DoesNotExist (404)."""
    return ClientKey.objects.for_tenant(tenant).get(pk=key_id)


def key_authenticate(*, secret: str) -> ClientKey | None:
    """The key with this secret (any status: the caller decides what a status means)."""
    key = ClientKey.objects.filter(prefix=secret_prefix(secret)).first()
    if key is None or not secret_matches(secret, key.digest):
        return None
    return key


@dataclass(frozen=True, slots=True)
class KeyFigures:
    """A key as its reseller sees it: status, price ratio and money (nano-dollars).

    ``None`` marks a figure that does not apply: a wallet-funded key has no client budget,
    and without a spend cap nothing but the wallet bounds what remains.
    """

    key: ClientKey
    status: str
    ratio: Decimal
    margin: Decimal
    margin_percent: Decimal
    client_budget_nanos: int | None
    client_spent_nanos: int
    client_reserved_nanos: int
    client_remaining_nanos: int | None
    cost_funded_nanos: int
    cost_spent_nanos: int
    cost_refunded_nanos: int
    profit_nanos: int
    spend_cap_nanos: int | None
    period_spent_nanos: int


def key_figures(*, key: ClientKey, now: datetime | None = None) -> KeyFigures:
    """The numbers the API and dashboard show for one key.

    ``period_spent`` is what counts against the spend cap now: zero once the key's budget
    period has rolled over, even before the next request resets the stored counter.
    Prepaid keys have ``client_budget - client_spent`` left; wallet-funded keys have
    ``spend_cap - period_spent`` (never below zero, as a cap may be lowered under it).
    """
    now = now or timezone.now()
    period_spent = (
        key.period_client_spent_nanos
        if key.period_index >= period_index(key.budget_period, now)
        else 0
    )
    if key.is_prepaid:
        budget: int | None = key.client_budget_nanos
        remaining: int | None = key.client_budget_nanos - key.client_spent_nanos
    else:
        budget = None
        remaining = (
            None if key.spend_cap_nanos is None else max(key.spend_cap_nanos - period_spent, 0)
        )
    ratio = key.ratio
    # One rounding (half up, to 4 places of a fraction) for the percentage; x100 is exact.
    margin_percent = (ratio.margin(places=4) * 100).quantize(MARGIN_PERCENT_QUANTUM)
    return KeyFigures(
        key=key,
        status=key.effective_status,
        ratio=ratio.as_decimal(places=RATIO_DISPLAY_PLACES),
        margin=ratio.margin(places=RATIO_DISPLAY_PLACES),
        margin_percent=margin_percent,
        client_budget_nanos=budget,
        client_spent_nanos=key.client_spent_nanos,
        client_reserved_nanos=key.client_reserved_nanos,
        client_remaining_nanos=remaining,
        cost_funded_nanos=key.cost_funded_nanos,
        cost_spent_nanos=key.cost_spent_nanos,
        cost_refunded_nanos=key.cost_refunded_nanos,
        profit_nanos=key.profit_nanos,
        spend_cap_nanos=key.spend_cap_nanos,
        period_spent_nanos=period_spent,
    )
