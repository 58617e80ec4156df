"""Changing a key's label, tag, limits, spend cap and period, and revoking or re-activating it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from accounts.events import config_changed
from accounts.models import Tenant
from billing.money import MAX_AMOUNT_NANOS
from billing.periods import period_index
from keys.exceptions import ClientKeyInvalid, ClientKeyStateConflict
from keys.models import ClientKey
from keys.selectors import key_get
from keys.services._common import (
    KEY_DELETED,
    _validate_limits,
    _validate_models,
)


@dataclass(frozen=True)
class KeyLimits:
    requests_per_minute: int
    tokens_per_minute: int | None
    max_concurrency: int
    allowed_models: list[str]
    expires_at: datetime | None


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
