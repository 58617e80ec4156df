"""The reseller REST API for client keys, through the HTTP client, always with an outsider."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import F
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.services import api_token_revoke
from billing.models import LedgerEntry
from billing.money import Usage, format_usd, parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.services import key_create
from tests.keys.factories import WalletKeyFactory
from tests.metering import charge, reserve, settle

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")

KEYS = "/api/v1/keys"
# 1M input tokens of the `price` fixture cost exactly $1.
TOKENS_PER_USD = 1_000_000


def key_url(key_id: int, suffix: str = "") -> str:
    return f"{KEYS}/{key_id}{suffix}"


def balance(tenant: Any) -> str:
    return format_usd(wallet_for_tenant(tenant=tenant).balance_nanos)


def books(*tenants: Any) -> list[tuple[Any, ...]]:
    """Everything a refused request must leave alone: wallets, keys and ledger rows."""
    return [
        (
            wallet_for_tenant(tenant=t).balance_nanos,
            wallet_for_tenant(tenant=t).reserved_nanos,
            list(ClientKey.objects.filter(tenant=t).order_by("pk").values()),
            LedgerEntry.objects.filter(wallet__tenant=t).count(),
        )
        for t in tenants
    ]


def credit(tenant: Any, amount: str) -> None:
    wallet_credit(tenant=tenant, amount_nanos=parse_usd(amount), reason="test funds")


def spend(key: ClientKey, price: Any, request_id: str, input_tokens: int) -> None:
    """Record one request's usage the way the proxy does: reserve, then settle."""
    usage = Usage(input_tokens=input_tokens)
    charge(key=key, price=price, request_id=request_id, usage=usage)


def create(api: APIClient, **body: Any) -> dict[str, Any]:
    response = api.post(KEYS, {"label": "acme-corp-prod", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


# ----------------------------------------------------------------------- worked example


def test_worked_example_holds_to_the_cent_through_the_api(api, tenant, outsider, price):
    credit(tenant, "200")

    created = create(api, client_budget="100", your_cost="60")
    assert api.get("/api/v1/wallet").json()["balance"] == "140.00"
    assert created["ratio"] == "0.6"
    assert created["margin"] == "0.4"
    assert created["margin_percent"] == "40.00"
    assert created["client_budget"] == "100.00"
    assert created["cost_funded"] == "60.00"

    # $20.52 of cost at $1/MTok input: 20,520,000 tokens, $34.20 in client price.
    spend(ClientKey.objects.get(pk=created["id"]), price, "req-1", 20_520_000)
    shown = api.get(key_url(created["id"])).json()
    assert shown["client_spent"] == "34.20"
    assert shown["client_remaining"] == "65.80"
    assert shown["cost_spent"] == "20.52"
    assert shown["profit"] == "13.68"

    topped = api.post(key_url(created["id"], "/top-up"), {"client_amount": "50"}, format="json")
    assert topped.status_code == 200
    assert topped.json()["client_budget"] == "150.00"
    assert topped.json()["cost_funded"] == "90.00"
    assert api.get("/api/v1/wallet").json()["balance"] == "110.00"

    deleted = api.delete(key_url(created["id"]))
    assert deleted.status_code == 200
    assert deleted.json()["refunded"] == "69.48"
    assert deleted.json()["status"] == "deleted"
    assert deleted.json()["cost_refunded"] == "69.48"
    assert api.get("/api/v1/wallet").json()["balance"] == "179.48"

    ledger = api.get("/api/v1/wallet/ledger").json()
    assert [
        (e["kind"], e["amount"], e["balance_after"], e["key_id"]) for e in ledger["results"]
    ] == [
        ("key_refund", "69.48", "179.48", created["id"]),
        ("key_funding", "-30.00", "110.00", created["id"]),
        ("key_funding", "-60.00", "140.00", created["id"]),
        ("manual_credit", "200.00", "200.00", None),
    ]
    assert balance(outsider[0]) == "500.00"


# ----------------------------------------------------------------------------- create


def test_create_shows_the_secret_once_and_defaults_the_limits(api, tenant, outsider):
    credit(tenant, "200")

    created = create(api, client_budget="100", your_cost="60")

    secret = created["key"]
    assert secret.startswith("tg-") and len(secret) >= 3 + 43
    assert created["prefix"] == secret[:12]
    assert created["last4"] == secret[-4:]
    assert re.fullmatch(r"tg-.{9}….{4}", created["display"])
    assert created["display"].endswith(secret[-4:])
    assert created["funding"] == "prepaid"
    assert created["status"] == "active"
    assert created["budget_period"] == "none"
    assert created["spend_cap"] is None
    assert created["client_remaining"] == "100.00"
    assert created["limits"] == {
        "rpm": 60,
        "tpm": None,
        "max_concurrency": 5,
        "models": [],
        "expires_at": None,
    }
    detail = api.get(key_url(created["id"]))
    listed = api.get(KEYS)
    for later in (detail, listed):
        assert secret not in later.content.decode()
    assert "key" not in detail.json()


def test_create_reads_decimal_strings_exactly_and_refuses_json_numbers(api, tenant, outsider):
    credit(tenant, "200")

    from_numbers = api.post(
        KEYS, {"label": "x", "client_budget": 100.5, "your_cost": 60}, format="json"
    )
    from_decimals = create(api, client_budget="100.5", your_cost="60.3")
    from_strings = create(api, client_budget="0.000000003", your_cost="0.000000001")

    assert from_numbers.status_code == 400
    assert set(from_numbers.json()) == {"client_budget", "your_cost"}
    assert from_decimals["client_budget"] == "100.50"
    assert from_decimals["cost_funded"] == "60.30"
    assert from_decimals["ratio"] == "0.6"
    assert from_strings["client_budget"] == "0.000000003"
    assert from_strings["ratio"] == "0.333333"
    assert from_strings["margin_percent"] == "66.67"
    assert balance(tenant) == "139.699999999"


def test_create_takes_every_documented_field(api, tenant, outsider, price):
    credit(tenant, "200")
    expires_at = timezone.now() + timedelta(days=30)

    created = create(
        api,
        client_budget="100",
        your_cost="100",
        spend_cap="10",
        budget_period="daily",
        rpm=120,
        tpm=50_000,
        max_concurrency=2,
        models=["mock-gpt"],
        expires_at=expires_at.isoformat(),
        default_tag="prod",
    )

    assert created["margin_percent"] == "0.00"
    assert created["spend_cap"] == "10.00"
    assert created["budget_period"] == "daily"
    assert created["default_tag"] == "prod"
    assert created["limits"]["rpm"] == 120
    assert created["limits"]["tpm"] == 50_000
    assert created["limits"]["max_concurrency"] == 2
    assert created["limits"]["models"] == ["mock-gpt"]
    key = ClientKey.objects.get(pk=created["id"])
    assert key.expires_at == expires_at
    assert key.tenant == tenant


def test_create_wallet_funded_key_sets_nothing_aside(api, tenant, outsider):
    credit(tenant, "200")

    capped = create(api, funding="wallet", spend_cap="25", budget_period="monthly")
    uncapped = create(api, funding="wallet", client_budget="100", your_cost="80")

    assert balance(tenant) == "200.00"
    assert capped["client_budget"] is None
    assert capped["client_remaining"] == "25.00"
    assert capped["ratio"] == "1"
    assert capped["cost_funded"] == "0.00"
    assert uncapped["client_budget"] is None
    assert uncapped["client_remaining"] is None
    assert uncapped["ratio"] == "0.8"
    assert uncapped["margin_percent"] == "20.00"


BASE = {"label": "acme-corp-prod", "client_budget": "100", "your_cost": "60"}
DROP = object()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"client_budget": "0", "your_cost": "0"}, "client_budget", id="zero-budget"),
        pytest.param({"client_budget": "-100"}, "client_budget", id="negative-budget"),
        pytest.param({"client_budget": "1000000.01"}, "client_budget", id="absurd-budget"),
        pytest.param({"client_budget": "5000000000"}, "client_budget", id="out-of-range"),
        pytest.param({"your_cost": "0"}, "your_cost", id="zero-cost"),
        pytest.param({"your_cost": "-60"}, "your_cost", id="negative-cost"),
        pytest.param({"your_cost": "100.01"}, "your_cost", id="cost-over-budget"),
        pytest.param({"your_cost": "0.09"}, "your_cost", id="markup-over-1000x"),
        pytest.param({"client_budget": "100.0000000001"}, "client_budget", id="ten-places"),
        pytest.param({"client_budget": 1e-10}, "client_budget", id="json-number"),
        pytest.param({"client_budget": "1_00"}, "client_budget", id="underscore"),
        pytest.param({"client_budget": "١٠٠"}, "client_budget", id="arabic-indic-digits"),
        pytest.param({"client_budget": ""}, "client_budget", id="blank-budget"),
        pytest.param({"spend_cap": ""}, "spend_cap", id="blank-cap"),
        pytest.param({"spend_cap": " "}, "spend_cap", id="space-cap"),
        pytest.param({"spendcap": "5"}, "spendcap", id="unknown-field"),
        pytest.param({"rpm": "60"}, "rpm", id="rpm-as-text"),
        pytest.param({"client_budget": "NaN"}, "client_budget", id="nan"),
        pytest.param({"client_budget": "Infinity"}, "client_budget", id="infinity"),
        pytest.param({"client_budget": "1e999999"}, "client_budget", id="huge-exponent"),
        pytest.param({"client_budget": "a lot"}, "client_budget", id="not-a-number"),
        pytest.param({"client_budget": True}, "client_budget", id="boolean"),
        pytest.param({"client_budget": DROP}, "client_budget", id="prepaid-needs-budget"),
        pytest.param({"your_cost": DROP}, "your_cost", id="prepaid-needs-cost"),
        pytest.param({"models": ["no-such-model"]}, "models", id="unknown-model"),
        pytest.param({"models": "mock-gpt"}, "models", id="models-not-a-list"),
        pytest.param({"funding": "credit"}, "funding", id="unknown-funding"),
        pytest.param({"budget_period": "hourly"}, "budget_period", id="unknown-period"),
        pytest.param({"budget_period": "daily"}, "budget_period", id="period-without-cap"),
        pytest.param({"spend_cap": "-1"}, "spend_cap", id="negative-cap"),
        pytest.param({"rpm": 0}, "rpm", id="zero-rpm"),
        pytest.param({"rpm": 1.5}, "rpm", id="fractional-rpm"),
        pytest.param({"max_concurrency": 0}, "max_concurrency", id="zero-concurrency"),
        pytest.param({"tpm": 0}, "tpm", id="zero-tpm"),
        pytest.param({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at", id="expired"),
        pytest.param({"expires_at": "next week"}, "expires_at", id="not-a-time"),
        pytest.param({"label": "   "}, "label", id="blank-label"),
        pytest.param({"label": DROP}, "label", id="no-label"),
        pytest.param({"label": "x" * 201}, "label", id="long-label"),
    ],
)
def test_create_refuses_invalid_input_naming_the_field_and_writes_nothing(
    api, tenant, outsider, price, changes, field
):
    credit(tenant, "200")
    before = books(tenant, outsider[0])
    body = {name: value for name, value in {**BASE, **changes}.items() if value is not DROP}

    response = api.post(KEYS, body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert isinstance(response.json()[field], list)
    assert books(tenant, outsider[0]) == before


def test_create_answers_402_when_the_wallet_cannot_fund_the_key(api, tenant, outsider):
    credit(tenant, "59.99")
    before = books(tenant, outsider[0])

    response = api.post(KEYS, BASE, format="json")

    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_funds"
    assert "59.99" in response.json()["detail"]
    assert books(tenant, outsider[0]) == before
    assert not ClientKey.objects.filter(tenant=tenant).exists()


def test_create_refuses_a_body_that_is_not_json(api, tenant, outsider):
    credit(tenant, "200")
    before = books(tenant, outsider[0])

    response = api.post(KEYS, "label=x", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert books(tenant, outsider[0]) == before


# ------------------------------------------------------------------------------- read


def test_key_list_is_paginated_newest_first_and_shows_only_own_keys(api, tenant, outsider):
    WalletKeyFactory.create(tenant=outsider[0], label="mallory's")
    keys = [WalletKeyFactory.create(tenant=tenant) for _ in range(3)]
    newest_first = [key.pk for key in reversed(keys)]

    first = api.get(KEYS, {"page_size": 2}).json()
    second = api.get(first["next"]).json()

    assert first["count"] == 3
    assert first["previous"] is None
    assert [k["id"] for k in first["results"]] == newest_first[:2]
    assert [k["id"] for k in second["results"]] == newest_first[2:]
    assert second["next"] is None


def test_key_list_leaves_deleted_keys_out_unless_status_asks(api, tenant, outsider):
    kept = WalletKeyFactory.create(tenant=tenant)
    gone = WalletKeyFactory.create(tenant=tenant)
    assert api.delete(key_url(gone.pk)).status_code == 200

    def ids(**params: str) -> list[int]:
        return [k["id"] for k in api.get(KEYS, params).json()["results"]]

    assert ids() == [kept.pk]
    assert ids(status="deleted") == [gone.pk]
    assert ids(status="active") == [kept.pk]


def test_key_list_filters_by_effective_status(api, tenant, outsider):
    active = WalletKeyFactory.create(tenant=tenant, expires_at=timezone.now() + timedelta(days=1))
    expired = WalletKeyFactory.create(
        tenant=tenant, expires_at=timezone.now() - timedelta(seconds=1)
    )
    revoked = WalletKeyFactory.create(tenant=tenant, status=ClientKey.Status.REVOKED)
    WalletKeyFactory.create(tenant=outsider[0], status=ClientKey.Status.REVOKED)

    def listed(status: str) -> list[tuple[int, str]]:
        results = api.get(KEYS, {"status": status}).json()["results"]
        return [(k["id"], k["status"]) for k in results]

    assert listed("active") == [(active.pk, "active")]
    assert listed("expired") == [(expired.pk, "expired")]
    assert listed("revoked") == [(revoked.pk, "revoked")]


def test_key_list_refuses_an_unknown_status(api, tenant, outsider):
    response = api.get(KEYS, {"status": "gone"})

    assert response.status_code == 400
    assert "status" in response.json()


def test_deleted_key_stays_readable_with_status_deleted(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    api.delete(key_url(key.pk))

    response = api.get(key_url(key.pk))

    assert response.status_code == 200
    assert response.json()["status"] == "deleted"


def test_unknown_key_id_is_404(api, tenant, outsider):
    response = api.get(key_url(999_999))

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_wallet_key_remaining_is_the_cap_less_this_periods_spend(api, tenant, outsider, price):
    credit(tenant, "100")
    created = create(api, funding="wallet", spend_cap="25", budget_period="daily")
    key = ClientKey.objects.get(pk=created["id"])

    spend(key, price, "req-1", 2 * TOKENS_PER_USD)
    today = api.get(key_url(key.pk)).json()
    # The stored counter belongs to yesterday now: the cap has reset.
    ClientKey.objects.filter(pk=key.pk).update(period_index=F("period_index") - 1)
    tomorrow = api.get(key_url(key.pk)).json()

    assert (today["period_spent"], today["client_remaining"]) == ("2.00", "23.00")
    assert today["client_spent"] == "2.00"
    assert (tomorrow["period_spent"], tomorrow["client_remaining"]) == ("0.00", "25.00")
    assert tomorrow["client_spent"] == "2.00"
    assert balance(tenant) == "98.00"


def test_key_object_shows_reserved_client_amount_of_requests_in_flight(
    api, tenant, outsider, price
):
    credit(tenant, "200")
    created = create(api, client_budget="100", your_cost="60")
    key = ClientKey.objects.get(pk=created["id"])

    held = reserve(key=key, price=price, request_id="req-1", worst_case=Usage(input_tokens=600_000))
    shown = api.get(key_url(key.pk)).json()

    assert shown["client_reserved"] == "1.00"
    assert shown["client_remaining"] == "100.00"
    settle(key=key, hold=held, price=price, usage=Usage(input_tokens=300_000))
    shown = api.get(key_url(key.pk)).json()
    assert (shown["client_reserved"], shown["client_spent"]) == ("0.00", "0.50")
    assert (shown["cost_spent"], shown["profit"]) == ("0.30", "0.20")


# ------------------------------------------------------------------------------ update


def test_patch_changes_label_tag_limits_and_cap(api, tenant, outsider, price):
    key = WalletKeyFactory.create(tenant=tenant)
    expires_at = timezone.now() + timedelta(days=7)

    response = api.patch(
        key_url(key.pk),
        {
            "label": "renamed",
            "default_tag": "staging",
            "rpm": 10,
            "tpm": 1000,
            "max_concurrency": 1,
            "models": ["mock-gpt"],
            "expires_at": expires_at.isoformat(),
            "spend_cap": "12.5",
            "budget_period": "weekly",
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    shown = response.json()
    assert (shown["label"], shown["default_tag"]) == ("renamed", "staging")
    assert (shown["spend_cap"], shown["budget_period"]) == ("12.50", "weekly")
    assert shown["limits"]["rpm"] == 10
    assert shown["limits"]["tpm"] == 1000
    assert shown["limits"]["max_concurrency"] == 1
    assert shown["limits"]["models"] == ["mock-gpt"]
    key.refresh_from_db()
    assert key.expires_at == expires_at
    assert key.spend_cap_nanos == parse_usd("12.5")


def test_patch_changes_only_the_fields_sent(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant, requests_per_minute=42, tokens_per_minute=900)

    response = api.patch(key_url(key.pk), {"label": "renamed"}, format="json")

    assert response.status_code == 200
    assert response.json()["limits"]["rpm"] == 42
    assert response.json()["limits"]["tpm"] == 900


def test_patch_revokes_and_reactivates_a_key(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)

    revoked = api.patch(key_url(key.pk), {"status": "revoked"}, format="json")

    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    key.refresh_from_db()
    assert key.status == ClientKey.Status.REVOKED and key.revoked_at is not None
    assert [k["id"] for k in api.get(KEYS, {"status": "revoked"}).json()["results"]] == [key.pk]
    reactivated = api.patch(key_url(key.pk), {"status": "active"}, format="json")
    assert reactivated.json()["status"] == "active"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"funding": "wallet"}, "funding", id="funding"),
        pytest.param({"client_budget": "500"}, "client_budget", id="client-budget"),
        pytest.param({"your_cost": "1"}, "your_cost", id="your-cost"),
        pytest.param({"ratio": "0.1"}, "ratio", id="ratio"),
        pytest.param({"label": "ok", "nickname": "x"}, "nickname", id="unknown-field"),
        pytest.param({"status": "deleted"}, "status", id="status-deleted"),
        pytest.param({"status": "expired"}, "status", id="status-expired"),
        pytest.param({"rpm": 0}, "rpm", id="zero-rpm"),
        pytest.param({"max_concurrency": 1_000_001}, "max_concurrency", id="huge-concurrency"),
        pytest.param({"models": ["no-such-model"]}, "models", id="unknown-model"),
        pytest.param({"spend_cap": "-5"}, "spend_cap", id="negative-cap"),
        pytest.param({"spend_cap": "1.0000000001"}, "spend_cap", id="cap-ten-places"),
        pytest.param({"budget_period": "daily"}, "budget_period", id="period-without-cap"),
        pytest.param({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at", id="expired"),
        pytest.param({"label": ""}, "label", id="blank-label"),
    ],
)
def test_patch_refuses_fixed_or_invalid_fields_and_changes_nothing(
    api, tenant, outsider, price, changes, field
):
    credit(tenant, "200")
    key_create(
        tenant=tenant,
        actor=None,
        label="acme-corp-prod",
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("60"),
    )
    key = ClientKey.objects.get(tenant=tenant)
    before = books(tenant, outsider[0])

    response = api.patch(key_url(key.pk), changes, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert books(tenant, outsider[0]) == before


def test_patch_of_a_deleted_key_conflicts(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    api.delete(key_url(key.pk))
    before = books(tenant)

    response = api.patch(key_url(key.pk), {"status": "active"}, format="json")

    assert response.status_code == 409
    assert books(tenant) == before


# ------------------------------------------------------------------------------ delete


def test_delete_refunds_unspent_cost_once(api, tenant, outsider):
    credit(tenant, "200")
    created = create(api, client_budget="100", your_cost="60")

    first = api.delete(key_url(created["id"]))
    second = api.delete(key_url(created["id"]))

    assert first.status_code == 200
    assert first.json()["refunded"] == "60.00"
    assert second.status_code == 409
    assert second.json()["code"] == "conflict"
    assert balance(tenant) == "200.00"
    refunds = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.KEY_REFUND)
    assert list(refunds.values_list("client_key_id", flat=True)) == [created["id"]]


def test_delete_of_a_wallet_funded_key_refunds_nothing(api, tenant, outsider):
    credit(tenant, "10")
    key = WalletKeyFactory.create(tenant=tenant)

    response = api.delete(key_url(key.pk))

    assert response.status_code == 200
    assert response.json()["refunded"] == "0.00"
    assert balance(tenant) == "10.00"


# ------------------------------------------------------------------------------ top-up


def test_top_up_raises_the_budget_and_debits_the_wallet_at_the_keys_ratio(api, tenant, outsider):
    credit(tenant, "200")
    created = create(api, client_budget="100", your_cost="60")

    response = api.post(key_url(created["id"], "/top-up"), {"client_amount": "0.5"}, format="json")

    assert response.status_code == 200
    assert response.json()["client_budget"] == "100.50"
    assert response.json()["cost_funded"] == "60.30"
    assert balance(tenant) == "139.70"


@pytest.mark.parametrize(
    "amount",
    [
        pytest.param("0", id="zero"),
        pytest.param("-10", id="negative"),
        pytest.param("1000000.01", id="absurd"),
        pytest.param("1.0000000001", id="ten-places"),
        pytest.param("NaN", id="nan"),
        pytest.param("ten", id="not-a-number"),
        pytest.param(None, id="null"),
        pytest.param(DROP, id="missing"),
    ],
)
def test_top_up_refuses_invalid_amounts_and_changes_nothing(api, tenant, outsider, amount):
    credit(tenant, "200")
    created = create(api, client_budget="100", your_cost="60")
    before = books(tenant, outsider[0])
    body = {} if amount is DROP else {"client_amount": amount}

    response = api.post(key_url(created["id"], "/top-up"), body, format="json")

    assert response.status_code == 400, response.content
    assert "client_amount" in response.json()
    assert books(tenant, outsider[0]) == before


def test_top_up_answers_402_when_the_wallet_cannot_pay(api, tenant, outsider):
    credit(tenant, "80")
    created = create(api, client_budget="100", your_cost="60")
    before = books(tenant, outsider[0])

    response = api.post(key_url(created["id"], "/top-up"), {"client_amount": "50"}, format="json")

    assert response.status_code == 402
    assert books(tenant, outsider[0]) == before


def test_top_up_of_a_wallet_funded_key_conflicts(api, tenant, outsider):
    credit(tenant, "200")
    key = WalletKeyFactory.create(tenant=tenant)
    before = books(tenant)

    response = api.post(key_url(key.pk, "/top-up"), {"client_amount": "50"}, format="json")

    assert response.status_code == 409
    assert books(tenant) == before


def test_top_up_of_a_deleted_key_conflicts(api, tenant, outsider):
    credit(tenant, "200")
    created = create(api, client_budget="100", your_cost="60")
    api.delete(key_url(created["id"]))
    before = books(tenant)

    response = api.post(key_url(created["id"], "/top-up"), {"client_amount": "5"}, format="json")

    assert response.status_code == 409
    assert books(tenant) == before


# ------------------------------------------------------------------- tenant isolation


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        pytest.param("get", "", None, id="get"),
        pytest.param("patch", "", {"label": "pwned", "status": "revoked"}, id="patch"),
        pytest.param("delete", "", None, id="delete"),
        pytest.param("post", "/top-up", {"client_amount": "10"}, id="top-up"),
    ],
)
def test_another_tenants_key_is_404_and_untouched(
    api, outsider_api, tenant, outsider, method, suffix, body
):
    credit(tenant, "200")
    created = create(api, client_budget="100", your_cost="60")
    before = books(tenant, outsider[0])

    response = getattr(outsider_api, method)(key_url(created["id"], suffix), body, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}
    assert books(tenant, outsider[0]) == before


def test_each_tenant_lists_only_its_own_keys(api, outsider_api, tenant, outsider):
    own = WalletKeyFactory.create(tenant=tenant)
    theirs = WalletKeyFactory.create(tenant=outsider[0])
    WalletKeyFactory.create(tenant=outsider[0], status=ClientKey.Status.DELETED)

    for client, key in ((api, own), (outsider_api, theirs)):
        for params in ({}, {"status": "active"}):
            listed = client.get(KEYS, params).json()
            assert [k["id"] for k in listed["results"]] == [key.pk]
    assert api.get(KEYS, {"status": "deleted"}).json()["count"] == 0


# ----------------------------------------------------------------------- authentication


ENDPOINTS = [
    pytest.param("get", KEYS, id="list"),
    pytest.param("post", KEYS, id="create"),
    pytest.param("get", f"{KEYS}/1", id="detail"),
    pytest.param("patch", f"{KEYS}/1", id="update"),
    pytest.param("delete", f"{KEYS}/1", id="delete"),
    pytest.param("post", f"{KEYS}/1/top-up", id="top-up"),
]


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
@pytest.mark.parametrize("credentials", ["none", "garbage", "wrong-scheme", "revoked"])
def test_key_endpoints_need_a_valid_reseller_token(reseller, outsider, method, url, credentials):
    tenant, issued = reseller
    credit(tenant, "200")
    client = APIClient()
    if credentials == "garbage":
        client.credentials(HTTP_AUTHORIZATION="Bearer tgr-not-a-real-token")
    elif credentials == "wrong-scheme":
        client.credentials(HTTP_AUTHORIZATION=f"Token {issued.secret}")
    elif credentials == "revoked":
        api_token_revoke(tenant=tenant, token_id=issued.token.pk)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    before = books(tenant, outsider[0])

    response = getattr(client, method)(url, {**BASE}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert books(tenant, outsider[0]) == before


def test_a_method_the_path_does_not_serve_is_405_listing_the_allowed_ones(api, tenant, outsider):
    response = api.put(KEYS, BASE, format="json")

    assert response.status_code == 405
    assert response["Allow"] == "GET, POST, OPTIONS"
