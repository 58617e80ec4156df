"""Helpers for the sub-account API's tests: its lifecycle here (``test_sub_accounts``), its
usage reports and who may reach them in ``tests/usage``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rest_framework.test import APIClient

from billing.money import parse_usd
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.services import key_create

SUB_ACCOUNTS = "/v1/sub-accounts"


def sub_account_url(key_id: int, suffix: str = "") -> str:
    return f"{SUB_ACCOUNTS}/{key_id}{suffix}"


def iso(moment: datetime) -> str:
    """A datetime as the API writes it (DRF: ISO 8601, UTC as ``Z``)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def prepaid_key(tenant: Any, label: str = "acme-corp-prod") -> ClientKey:
    """The worked example's key: client budget $100 for a cost of $60 (ratio 0.6)."""
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("200"), reason="test funds")
    return key_create(
        tenant=tenant,
        actor=None,
        label=label,
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("60"),
    ).key


def create_sub_account(api: APIClient, **body: Any) -> dict[str, Any]:
    response = api.post(SUB_ACCOUNTS, {"name": "team-a", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


# A sub-account's calls by key id: (method, path after /v1/sub-accounts/{id}, body).
SUB_ACCOUNT_KEY_CALLS = [
    ("get", "", None),
    ("patch", "", {"name": "pwned", "spend_cap_cents": 0}),
    ("delete", "", None),
    ("get", "/usage", None),
]
