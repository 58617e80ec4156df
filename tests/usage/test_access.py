"""Another tenant gets a 404 or sees nothing, and a missing or bad reseller token gets a 401,
from every endpoint of the trace reports and of the sub-account API.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.services import api_token_revoke, tenant_reinstate, tenant_suspend
from keys.models import ClientKey
from tests.keys.apis.conftest import (
    SUB_ACCOUNT_KEY_CALLS,
    SUB_ACCOUNTS,
    create_sub_account,
    sub_account_url,
)
from tests.keys.factories import WalletKeyFactory
from tests.usage.conftest import (
    BY_TAG,
    EARNINGS,
    KEYS,
    SUB_ACCOUNT_BY_TAG,
    requests_url,
    trace,
    usage_url,
)

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")


# --------------------------------------------------------------------- tenant isolation


@pytest.mark.parametrize(
    ("url", "method", "body"),
    [
        pytest.param(requests_url, "get", None, id="requests"),
        pytest.param(usage_url, "get", None, id="usage"),
        *[
            pytest.param(
                lambda key_id, suffix=suffix: sub_account_url(key_id, suffix),
                method,
                body,
                id=f"sub-account-{method}{suffix.replace('/', '-')}",
            )
            for method, suffix, body in SUB_ACCOUNT_KEY_CALLS
        ],
    ],
)
def test_another_tenants_key_is_404_and_untouched(
    api, outsider_api, tenant, outsider, url, method, body
):
    created = create_sub_account(api, spend_cap_cents=100)
    key = ClientKey.objects.get(pk=created["id"])
    trace(key)
    before = list(ClientKey.objects.filter(pk=key.pk).values())

    response = getattr(outsider_api, method)(url(key.pk), body, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}
    assert list(ClientKey.objects.filter(pk=key.pk).values()) == before


def test_an_unknown_key_id_is_404(api, tenant, outsider):
    for url in (requests_url(999_999), usage_url(999_999), sub_account_url(999_999)):
        assert api.get(url).status_code == 404


def test_tenant_wide_reports_never_show_another_tenants_traffic(
    api, outsider_api, tenant, outsider
):
    theirs = WalletKeyFactory.create(tenant=outsider[0], default_tag="secret")
    trace(theirs, cost_nanos=10**9, client_nanos=2 * 10**9)

    assert api.get(BY_TAG).json()["by_tag"] == []
    everything = api.get("/api/v1/usage").json()
    assert (everything["summary"]["requests"], everything["by_key"], everything["by_tag"]) == (
        0,
        [],
        [],
    )
    assert api.get(SUB_ACCOUNT_BY_TAG).json()["by_tag"] == []
    earnings = api.get(EARNINGS).json()
    assert (earnings["requests"], earnings["revenue"], earnings["by_key"]) == (0, "0.00", [])
    assert earnings["by_month"] == []
    assert api.get(SUB_ACCOUNTS).json()["count"] == 0
    assert outsider_api.get(BY_TAG).json()["by_tag"][0]["tag"] == "secret"


# ----------------------------------------------------------------------- authentication


ENDPOINTS = [
    pytest.param("get", f"{KEYS}/1/requests", id="requests"),
    pytest.param("get", f"{KEYS}/1/usage", id="usage"),
    pytest.param("get", "/api/v1/usage", id="tenant-usage"),
    pytest.param("get", BY_TAG, id="by-tag"),
    pytest.param("get", EARNINGS, id="earnings"),
    pytest.param("post", SUB_ACCOUNTS, id="sub-account-create"),
    pytest.param("get", SUB_ACCOUNTS, id="sub-account-list"),
    pytest.param("get", f"{SUB_ACCOUNTS}/1", id="sub-account-detail"),
    pytest.param("patch", f"{SUB_ACCOUNTS}/1", id="sub-account-update"),
    pytest.param("delete", f"{SUB_ACCOUNTS}/1", id="sub-account-delete"),
    pytest.param("get", f"{SUB_ACCOUNTS}/1/usage", id="sub-account-usage"),
    pytest.param("get", SUB_ACCOUNT_BY_TAG, id="sub-account-by-tag"),
]


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
@pytest.mark.parametrize("credentials", ["none", "garbage", "wrong-scheme", "revoked", "suspended"])
def test_endpoints_need_a_valid_reseller_token(reseller, outsider, method, url, credentials):
    tenant, issued = reseller
    client = APIClient()
    if credentials == "garbage":
        client.credentials(HTTP_AUTHORIZATION="Bearer tgr-not-a-real-token")
    elif credentials == "wrong-scheme":
        client.credentials(HTTP_AUTHORIZATION=f"Token {issued.secret}")
    elif credentials == "revoked":
        api_token_revoke(tenant=tenant, token_id=issued.token.pk)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    elif credentials == "suspended":
        tenant_suspend(tenant=tenant, actor=None)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")

    response = getattr(client, method)(url, {"name": "team-a"}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert not ClientKey.objects.filter(tenant=tenant).exists()


@pytest.mark.parametrize(
    "url", [KEYS, "/api/v1/wallet", SUB_ACCOUNTS, SUB_ACCOUNT_BY_TAG, EARNINGS]
)
def test_a_reinstated_resellers_token_works_again(api, tenant, outsider, url):
    tenant_suspend(tenant=tenant, actor=None)
    assert api.get(url).status_code == 401

    tenant_reinstate(tenant=tenant, actor=None)

    assert api.get(url).status_code == 200
