"""What an alert says: its event's id, type and ``data`` (the webhook's ``data``; the email
is written from the same), made from the figures the check measured when it claimed it.

Amounts are decimal strings in client prices (``billing.money.format_usd``), as the REST
API writes them; a key's cost so far is the reseller's own figure (an alert goes to the
reseller, never to its clients).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.conf import settings
from django.urls import reverse

from alerts.models import AlertEvent
from billing.models import Wallet
from billing.money import format_usd
from billing.selectors import Runway
from keys.models import ClientKey
from keys.selectors import KeyUse

EVENT_ID_PREFIX = "evt_"
EVENT_ID_BYTES = 12


def event_id_new() -> str:
    return EVENT_ID_PREFIX + secrets.token_hex(EVENT_ID_BYTES)


def public_url(path: str) -> str:
    """An absolute link for an alert (``PUBLIC_URL`` + path): it is read outside a request."""
    return f"{settings.PUBLIC_URL.rstrip('/')}{path}"


def key_event_data(*, key: ClientKey, use: KeyUse, threshold: int) -> dict[str, Any]:
    return {
        "key": {"id": key.pk, "label": key.label, "prefix": key.prefix, "funding": key.funding},
        "threshold_percent": threshold,
        "used_percent": use.used_percent,
        # What the share is of: a prepaid key's client budget, or a wallet-funded key's spend
        # cap in its current budget period.
        "limit_kind": "spend_cap" if use.is_cap else "budget",
        "budget_period": key.budget_period,
        "limit": format_usd(use.limit_nanos),
        "used": format_usd(use.used_nanos),
        "remaining": format_usd(use.remaining_nanos),
        "cost_spent": format_usd(key.cost_spent_nanos),
        "dashboard_url": public_url(reverse("dashboard:key-detail", args=[key.pk])),
    }


def balance_event_data(*, wallet: Wallet, threshold_nanos: int) -> dict[str, Any]:
    return {
        "threshold": format_usd(threshold_nanos),
        "available": format_usd(wallet.available_nanos),
        "balance": format_usd(wallet.balance_nanos),
        "reserved": format_usd(wallet.reserved_nanos),
        "dashboard_url": public_url(reverse("dashboard:wallet")),
    }


def runway_event_data(*, runway: Runway, threshold_days: int) -> dict[str, Any]:
    return {
        "threshold_days": threshold_days,
        "runway_days": runway.days,
        "available": format_usd(runway.available_nanos),
        "daily_draw": format_usd(runway.daily_nanos),
        "lookback_days": runway.lookback_days,
        "dashboard_url": public_url(reverse("dashboard:overview")),
    }


def webhook_body(event: AlertEvent) -> bytes:
    """The webhook's body: ``{id, type, created, tenant, data}``, compact JSON with sorted
    keys, so every try of one event sends the same bytes."""
    payload = {
        "id": event.public_id,
        "type": event.type,
        "created": int(event.created_at.timestamp()),
        "tenant": event.tenant_id,
        "data": event.data,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
