"""The operator's admin for client keys: money read-only, status only through key_update."""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing.money import parse_usd
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.services import key_create, key_delete

pytestmark = pytest.mark.usefixtures("books_balance")

CHANGELIST = reverse("admin:keys_clientkey_changelist")


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    """The admin client logs a superuser in; the real hasher costs ~0.5 s per test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def issued(tenant):
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("200"), reason="opening credit")
    return key_create(
        tenant=tenant,
        actor=None,
        label="acme-corp-prod",
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("60"),
    )


def act(admin_client, action: str, *keys: ClientKey):
    return admin_client.post(
        CHANGELIST, {"action": action, "_selected_action": [k.pk for k in keys]}, follow=True
    )


def test_changelist_and_detail_show_usd_and_no_secret(admin_client, issued, outsider):
    page = admin_client.get(CHANGELIST).content.decode()
    detail = admin_client.get(
        reverse("admin:keys_clientkey_change", args=[issued.key.pk])
    ).content.decode()
    assert "acme-corp-prod" in page and "100.00" in page and "0.6" in page
    assert "60.00" in detail  # cost funded
    assert "0.4" in detail  # margin
    for text in (page, detail):
        assert issued.secret not in text
        assert issued.key.digest not in text


def test_key_cannot_be_edited_added_or_deleted(admin_client, issued):
    change = reverse("admin:keys_clientkey_change", args=[issued.key.pk])
    assert admin_client.post(change, {"label": "x", "cost_funded_nanos": 1}).status_code == 403
    assert admin_client.get(reverse("admin:keys_clientkey_add")).status_code == 403
    delete = reverse("admin:keys_clientkey_delete", args=[issued.key.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    key = ClientKey.objects.get(pk=issued.key.pk)
    assert (key.label, key.cost_funded_nanos) == ("acme-corp-prod", parse_usd("60"))


def test_revoke_and_activate_actions_change_status_through_the_service(admin_client, issued):
    act(admin_client, "revoke", issued.key)
    key = ClientKey.objects.get(pk=issued.key.pk)
    assert key.status == ClientKey.Status.REVOKED and key.revoked_at is not None

    act(admin_client, "activate", issued.key)
    key.refresh_from_db()
    assert key.status == ClientKey.Status.ACTIVE and key.revoked_at is None


def test_a_deleted_key_cannot_be_reactivated(admin_client, tenant, issued):
    key_delete(tenant=tenant, actor=None, key_id=issued.key.pk)
    response = act(admin_client, "activate", issued.key)
    assert "Not changed" in response.content.decode()
    assert ClientKey.objects.get(pk=issued.key.pk).status == ClientKey.Status.DELETED
