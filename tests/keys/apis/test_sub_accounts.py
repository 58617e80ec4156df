"""The sub-account API's lifecycle under ``/v1/`` (integer cents; a sub-account is a
wallet-funded key at ratio 1), through the HTTP client. Its usage reports are tested in
``tests/usage/test_apis.py``, and what another tenant or a bad token gets from all of its
endpoints in ``tests/usage/test_access.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from billing.money import NANOS_PER_CENT
from billing.selectors import wallet_for_tenant
from keys.models import ClientKey
from proxy.asgi import ProxyApplication
from tests.keys.apis.conftest import (
    SUB_ACCOUNT_KEY_CALLS,
    SUB_ACCOUNTS,
    create_sub_account,
    iso,
    prepaid_key,
    sub_account_url,
)
from tests.keys.factories import WalletKeyFactory

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")


def test_create_sub_account_is_a_wallet_key_at_one_to_one(api, tenant, outsider):
    created = create_sub_account(
        api, name="team-a", spend_cap_cents=2_550, rate_limit_rpm=120, default_tag="team-a"
    )

    secret = created.pop("key")
    assert secret.startswith("tg-")
    key = ClientKey.objects.get(pk=created["id"])
    assert created == {
        "id": key.pk,
        "name": "team-a",
        "spend_cap_cents": 2_550,
        "rate_limit_rpm": 120,
        "default_tag": "team-a",
        "status": "active",
        "spent_cents": 0,
        "created_at": iso(key.created_at),
    }
    assert key.tenant == tenant
    assert key.funding == ClientKey.Funding.WALLET
    assert (key.ratio_cost_nanos, key.ratio_client_nanos) == (10**9, 10**9)
    assert key.spend_cap_nanos == 2_550 * NANOS_PER_CENT
    assert key.budget_period == ClientKey.BudgetPeriod.NONE
    assert key.requests_per_minute == 120
    assert wallet_for_tenant(tenant=tenant).balance_nanos == 0  # nothing set aside
    shown = api.get(sub_account_url(key.pk))
    assert shown.status_code == 200
    assert secret not in shown.content.decode()
    assert shown.json() == created


def test_create_sub_account_defaults_to_no_cap(api, tenant, outsider):
    created = create_sub_account(api, name="  team-b  ")

    assert created["name"] == "team-b"
    assert created["spend_cap_cents"] is None
    assert created["rate_limit_rpm"] == 60
    assert created["default_tag"] == ""
    assert ClientKey.objects.get(pk=created["id"]).spend_cap_nanos is None
    assert create_sub_account(api, spend_cap_cents=None)["spend_cap_cents"] is None
    assert create_sub_account(api, spend_cap_cents=0)["spend_cap_cents"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"name": None}, "name", id="name-null"),
        pytest.param({"name": "   "}, "name", id="name-blank"),
        pytest.param({"name": "n" * 201}, "name", id="name-too-long"),
        pytest.param({"spend_cap_cents": -1}, "spend_cap_cents", id="cap-negative"),
        pytest.param({"spend_cap_cents": 12.5}, "spend_cap_cents", id="cap-fraction"),
        pytest.param({"spend_cap_cents": "ten"}, "spend_cap_cents", id="cap-text"),
        pytest.param({"spend_cap_cents": True}, "spend_cap_cents", id="cap-boolean"),
        pytest.param({"spend_cap_cents": "1000"}, "spend_cap_cents", id="cap-digit-string"),
        pytest.param({"spend_cap_cents": 1000.0}, "spend_cap_cents", id="cap-whole-float"),
        pytest.param({"spend_cap_cents": "١٠"}, "spend_cap_cents", id="cap-arabic-indic"),
        pytest.param({"spend_cap_cents": ""}, "spend_cap_cents", id="cap-blank"),
        pytest.param({"spend_cap_cents": 10**8 + 1}, "spend_cap_cents", id="cap-too-large"),
        pytest.param({"rate_limit_rpm": "60"}, "rate_limit_rpm", id="rpm-digit-string"),
        pytest.param({"name": 7}, "name", id="name-number"),
        pytest.param({"rate_limit_rpm": 0}, "rate_limit_rpm", id="rpm-zero"),
        pytest.param({"rate_limit_rpm": 1_000_001}, "rate_limit_rpm", id="rpm-too-large"),
        pytest.param({"default_tag": "t" * 101}, "default_tag", id="tag-too-long"),
        pytest.param({"spend_cap": "10"}, "spend_cap", id="unknown-field"),
    ],
)
def test_create_sub_account_refuses_bad_input_and_creates_nothing(
    api, tenant, outsider, body, field
):
    response = api.post(SUB_ACCOUNTS, {"name": "team-a", **body}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert not ClientKey.objects.filter(tenant=tenant).exists()


def test_create_sub_account_needs_a_name(api, tenant, outsider):
    response = api.post(SUB_ACCOUNTS, {"spend_cap_cents": 100}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["name"]


def test_sub_account_list_shows_only_the_tenants_live_sub_accounts(
    api, outsider_api, tenant, outsider
):
    first = create_sub_account(api, name="first")
    second = create_sub_account(api, name="second")
    deleted = create_sub_account(api, name="deleted")
    api.delete(sub_account_url(deleted["id"]))
    prepaid_key(tenant)
    WalletKeyFactory.create(tenant=tenant, ratio_cost_nanos=8, ratio_client_nanos=10)  # marked up
    create_sub_account(outsider_api, name="theirs")

    page = api.get(SUB_ACCOUNTS, {"page_size": 1}).json()
    listed = api.get(SUB_ACCOUNTS).json()

    assert [s["id"] for s in listed["results"]] == [second["id"], first["id"]]
    assert (page["count"], [s["id"] for s in page["results"]]) == (2, [second["id"]])
    assert "key" not in listed["results"][0]


def test_only_wallet_keys_at_one_to_one_are_sub_accounts(api, tenant, outsider):
    prepaid = prepaid_key(tenant)
    marked_up = WalletKeyFactory.create(tenant=tenant, ratio_cost_nanos=8, ratio_client_nanos=10)
    plain_wallet = WalletKeyFactory.create(tenant=tenant)

    for key in (prepaid, marked_up):
        for method, suffix, body in SUB_ACCOUNT_KEY_CALLS:
            response = getattr(api, method)(sub_account_url(key.pk, suffix), body, format="json")
            assert response.status_code == 404, (key.label, method, suffix)
    assert api.get(sub_account_url(plain_wallet.pk)).status_code == 200
    prepaid.refresh_from_db()
    assert (prepaid.status, prepaid.label) == ("active", "acme-corp-prod")


def test_patch_sub_account_changes_only_the_fields_sent(api, tenant, outsider):
    created = create_sub_account(api, spend_cap_cents=1_000, rate_limit_rpm=30, default_tag="a")
    url = sub_account_url(created["id"])

    capped = api.patch(url, {"spend_cap_cents": 5_000}, format="json")
    renamed = api.patch(
        url, {"name": "team-z", "rate_limit_rpm": 90, "default_tag": ""}, format="json"
    )
    uncapped = api.patch(url, {"spend_cap_cents": None}, format="json")

    assert capped.status_code == 200, capped.content
    assert (capped.json()["spend_cap_cents"], capped.json()["rate_limit_rpm"]) == (5_000, 30)
    assert renamed.json() | {"spend_cap_cents": 5_000} == capped.json() | {
        "name": "team-z",
        "rate_limit_rpm": 90,
        "default_tag": "",
    }
    assert uncapped.json()["spend_cap_cents"] is None
    key = ClientKey.objects.get(pk=created["id"])
    assert (key.label, key.requests_per_minute, key.default_tag, key.spend_cap_nanos) == (
        "team-z",
        90,
        "",
        None,
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"spend_cap_cents": -5}, "spend_cap_cents", id="cap-negative"),
        pytest.param({"spend_cap_cents": 1.5}, "spend_cap_cents", id="cap-fraction"),
        pytest.param({"spend_cap_cents": "500"}, "spend_cap_cents", id="cap-digit-string"),
        pytest.param({"spend_cap_cents": 500.0}, "spend_cap_cents", id="cap-whole-float"),
        pytest.param({"spend_cap_cents": False}, "spend_cap_cents", id="cap-boolean"),
        pytest.param({"spend_cap": "5"}, "spend_cap", id="unknown-field"),
        pytest.param({"rate_limit_rpm": 0}, "rate_limit_rpm", id="rpm-zero"),
        pytest.param({"name": ""}, "name", id="name-blank"),
        pytest.param({"funding": "prepaid"}, "funding", id="funding"),
        pytest.param({"status": "revoked"}, "status", id="status"),
    ],
)
def test_patch_sub_account_refuses_bad_input_and_changes_nothing(
    api, tenant, outsider, body, field
):
    created = create_sub_account(api, spend_cap_cents=1_000)
    before = list(ClientKey.objects.filter(pk=created["id"]).values())

    response = api.patch(sub_account_url(created["id"]), body, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert list(ClientKey.objects.filter(pk=created["id"]).values()) == before


def test_delete_sub_account_answers_204_and_stops_the_key(api, tenant, outsider):
    created = create_sub_account(api)
    url = sub_account_url(created["id"])

    deleted = api.delete(url)

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert ClientKey.objects.get(pk=created["id"]).status == ClientKey.Status.DELETED
    assert api.get(url).json()["status"] == "deleted"
    assert api.delete(url).status_code == 409
    assert api.patch(url, {"spend_cap_cents": 1}, format="json").status_code == 409
    assert wallet_for_tenant(tenant=tenant).balance_nanos == 0


def test_a_sub_account_path_is_not_taken_by_the_proxy_router():
    """The ASGI router takes only model traffic; /v1/sub-accounts and /v1/usage reach Django."""
    seen: list[tuple[str, str]] = []

    async def django_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((scope["method"], scope["path"]))

    router = ProxyApplication(django_app)
    calls = [
        ("POST", "/v1/sub-accounts"),
        ("GET", "/v1/sub-accounts"),
        ("GET", "/v1/sub-accounts/7"),
        ("PATCH", "/v1/sub-accounts/7"),
        ("DELETE", "/v1/sub-accounts/7"),
        ("GET", "/v1/sub-accounts/7/usage"),
        ("GET", "/v1/usage/by-tag"),
    ]
    for method, path in calls:
        asyncio.run(router({"type": "http", "method": method, "path": path}, None, None))

    assert seen == calls


def test_a_method_a_sub_account_path_does_not_serve_is_405(api, tenant, outsider):
    created = create_sub_account(api)

    listed = api.put(SUB_ACCOUNTS, {}, format="json")
    detail = api.post(sub_account_url(created["id"]), {}, format="json")

    assert listed.status_code == 405
    assert listed["Allow"] == "GET, POST, OPTIONS"
    assert detail.status_code == 405
    assert detail["Allow"] == "GET, PATCH, DELETE, OPTIONS"
