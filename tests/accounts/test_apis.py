"""``GET``/``PATCH /api/v1/account``: the caller's own account, validated field by field,
never another tenant's."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.exceptions import TenantInvalid
from accounts.models import Tenant
from accounts.services import tenant_update
from tests.keys.apis.conftest import iso

ACCOUNT = "/api/v1/account"

pytestmark = pytest.mark.usefixtures("api_throttle_reset")


def test_the_account_shows_its_name_email_and_time_zone(api, tenant, outsider):
    assert api.get(ACCOUNT).json() == {
        "id": tenant.pk,
        "display_name": "alice@example.com",
        "support_email": "",
        "timezone": "UTC",
        "created_at": iso(tenant.created_at),
    }


def test_patch_changes_only_the_fields_sent(api, tenant, outsider):
    response = api.patch(
        ACCOUNT, {"display_name": "  Acme AI ", "timezone": "Asia/Kathmandu"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["display_name"] == "Acme AI"
    tenant.refresh_from_db()
    assert (tenant.name, tenant.timezone, tenant.support_email) == ("Acme AI", "Asia/Kathmandu", "")

    api.patch(ACCOUNT, {"support_email": "help@acme.example"}, format="json")
    tenant.refresh_from_db()
    assert (tenant.name, tenant.support_email) == ("Acme AI", "help@acme.example")
    assert api.patch(ACCOUNT, {"support_email": ""}, format="json").json()["support_email"] == ""


def test_the_outsider_sees_and_changes_only_its_own_account(api, outsider_api, tenant, outsider):
    outsider_api.patch(
        ACCOUNT, {"display_name": "Mallory", "timezone": "Europe/London"}, format="json"
    )

    tenant.refresh_from_db()
    assert (tenant.name, tenant.timezone) == ("alice@example.com", "UTC")
    assert api.get(ACCOUNT).json()["id"] == tenant.pk
    assert outsider_api.get(ACCOUNT).json()["display_name"] == "Mallory"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"display_name": ""}, "display_name", "may not be blank"),
        ({"display_name": "   "}, "display_name", "may not be blank"),
        ({"display_name": "x" * 201}, "display_name", "no more than 200"),
        ({"display_name": 7}, "display_name", "valid string"),
        ({"support_email": "not-an-email"}, "support_email", "valid email"),
        ({"support_email": None}, "support_email", "may not be null"),
        ({"timezone": "Mars/Olympus"}, "timezone", "Unknown time zone 'Mars/Olympus'"),
        ({"timezone": "localtime"}, "timezone", "Unknown time zone"),
        ({"timezone": ""}, "timezone", "may not be blank"),
        ({"name": "x"}, "name", "Unknown field"),
        ({"id": 5}, "id", "Unknown field"),
    ],
)
def test_a_bad_value_is_a_400_naming_it_and_changes_nothing(
    api, tenant, outsider, body, field, message
):
    before = Tenant.objects.filter(pk=tenant.pk).values().get()

    response = api.patch(ACCOUNT, {**body, "support_email": "ok@example.com"} | body, format="json")

    assert response.status_code == 400
    assert message in " ".join(response.json()[field])
    assert Tenant.objects.filter(pk=tenant.pk).values().get() == before


@pytest.mark.parametrize("method", ["get", "patch"])
def test_the_account_needs_a_valid_token(tenant, outsider, method):
    response = getattr(APIClient(), method)(ACCOUNT, {"display_name": "x"}, format="json")
    assert response.status_code == 401
    tenant.refresh_from_db()
    assert tenant.name == "alice@example.com"


def test_other_methods_are_405_with_the_paths_methods(api, tenant, outsider):
    response = api.delete(ACCOUNT)
    assert response.status_code == 405
    assert response["Allow"] == "GET, PATCH, OPTIONS"


def test_the_service_refuses_a_bad_value_before_writing_any(tenant, outsider):
    with pytest.raises(TenantInvalid) as raised:
        tenant_update(tenant=tenant, actor=None, display_name="New", timezone="Nowhere/Else")
    assert raised.value.field == "timezone"
    tenant.refresh_from_db()
    assert (tenant.name, tenant.timezone) == ("alice@example.com", "UTC")
    assert tenant_update(
        tenant=tenant, actor=None, support_email=" a@b.example "
    ).support_email == ("a@b.example")
