"""The reseller REST API for the wallet and its ledger, always with an outsider."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from billing.models import LedgerEntry
from billing.money import Usage, parse_usd
from billing.services import wallet_credit
from keys.services import key_create
from tests.keys.factories import WalletKeyFactory
from tests.metering import reserve, settle

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")

WALLET = "/api/v1/wallet"
LEDGER = "/api/v1/wallet/ledger"


def credit(tenant: Any, amount: str, reason: str = "test funds") -> None:
    wallet_credit(tenant=tenant, amount_nanos=parse_usd(amount), reason=reason)


# ------------------------------------------------------------------------------ wallet


def test_wallet_shows_balance_reserved_and_available_as_decimal_strings(api, tenant, outsider):
    credit(tenant, "140")

    response = api.get(WALLET)

    assert response.status_code == 200
    assert response.json() == {
        "balance": "140.00",
        "reserved": "0.00",
        "available": "140.00",
        "currency": "USD",
    }


def test_wallet_counts_what_in_flight_requests_of_wallet_keys_hold(api, tenant, outsider, price):
    credit(tenant, "140")
    key = WalletKeyFactory.create(tenant=tenant)

    held = reserve(
        key=key, price=price, request_id="req-1", worst_case=Usage(input_tokens=1_000_000)
    )
    holding = api.get(WALLET).json()
    settle(key=key, hold=held, price=price, usage=Usage(input_tokens=123_456))
    settled = api.get(WALLET).json()

    assert (holding["balance"], holding["reserved"], holding["available"]) == (
        "140.00",
        "1.00",
        "139.00",
    )
    assert (settled["balance"], settled["reserved"], settled["available"]) == (
        "139.876544",
        "0.00",
        "139.876544",
    )


def test_each_tenant_sees_only_its_own_wallet(api, outsider_api, tenant, outsider):
    credit(tenant, "12.34")

    assert api.get(WALLET).json()["balance"] == "12.34"
    assert outsider_api.get(WALLET).json()["balance"] == "500.00"


# ------------------------------------------------------------------------------ ledger


def test_ledger_lists_entries_newest_first_with_signed_amounts(api, tenant, outsider):
    credit(tenant, "200", reason="opening credit")
    issued = key_create(
        tenant=tenant,
        actor=None,
        label="acme-corp-prod",
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("60"),
    )

    response = api.get(LEDGER)

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (2, None, None)
    funding, opening = body["results"]
    assert funding["kind"] == "key_funding"
    assert (funding["amount"], funding["balance_after"]) == ("-60.00", "140.00")
    assert funding["key_id"] == issued.key.pk
    assert funding["reason"] == "Funding of key acme-corp-prod"
    assert funding["reference"] == f"key:{issued.key.pk}"
    assert funding["created_at"]
    assert opening["kind"] == "manual_credit"
    assert (opening["amount"], opening["balance_after"]) == ("200.00", "200.00")
    assert (opening["reason"], opening["reference"], opening["key_id"]) == (
        "opening credit",
        "",
        None,
    )
    assert set(funding) == {
        "id",
        "kind",
        "amount",
        "balance_after",
        "reason",
        "reference",
        "key_id",
        "created_at",
    }


def test_ledger_filters_by_kind(api, tenant, outsider):
    credit(tenant, "200")
    key_create(
        tenant=tenant,
        actor=None,
        label="k",
        client_budget_nanos=parse_usd("10"),
        your_cost_nanos=parse_usd("5"),
    )

    funding = api.get(LEDGER, {"kind": "key_funding"}).json()
    refunds = api.get(LEDGER, {"kind": "key_refund"}).json()

    assert [e["kind"] for e in funding["results"]] == ["key_funding"]
    assert refunds["count"] == 0


def test_ledger_refuses_an_unknown_kind(api, tenant, outsider):
    response = api.get(LEDGER, {"kind": "gift"})

    assert response.status_code == 400
    assert "kind" in response.json()


def test_ledger_is_paginated(api, tenant, outsider):
    for amount in ("1", "2", "3", "4", "5"):
        credit(tenant, amount)

    first = api.get(LEDGER, {"page_size": 2}).json()
    last = api.get(LEDGER, {"page_size": 2, "page": 3}).json()

    assert first["count"] == 5
    assert [e["amount"] for e in first["results"]] == ["5.00", "4.00"]
    assert first["previous"] is None and first["next"]
    assert [e["amount"] for e in last["results"]] == ["1.00"]
    assert last["next"] is None and last["previous"]


def test_ledger_never_shows_another_tenants_entries(api, outsider_api, tenant, outsider):
    credit(tenant, "7")

    own = api.get(LEDGER).json()
    theirs = outsider_api.get(LEDGER).json()

    assert [e["amount"] for e in own["results"]] == ["7.00"]
    assert [e["amount"] for e in theirs["results"]] == ["500.00"]
    outsider_ids = set(
        LedgerEntry.objects.filter(wallet__tenant=outsider[0]).values_list("id", flat=True)
    )
    assert outsider_ids.isdisjoint(e["id"] for e in own["results"])


# ----------------------------------------------------------------------- authentication


@pytest.mark.parametrize("url", [WALLET, LEDGER])
@pytest.mark.parametrize(
    "authorization", [None, "Bearer tgr-not-a-real-token", "Basic Zm9vOmJhcg=="]
)
def test_wallet_endpoints_need_a_valid_reseller_token(tenant, outsider, url, authorization):
    client = APIClient()
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)

    response = client.get(url)

    assert response.status_code == 401
