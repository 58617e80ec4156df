"""The operator's admin for tenants and reseller API tokens."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import ApiToken, Tenant
from accounts.selectors import api_token_authenticate
from keys.models import ClientKey
from keys.services import key_create


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    """The admin client logs a superuser in; the real hasher costs ~0.5 s per test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.mark.parametrize("model", ["tenant", "apitoken"])
def test_changelists_load(admin_client, reseller, outsider, model):
    assert admin_client.get(reverse(f"admin:accounts_{model}_changelist")).status_code == 200


def test_tenant_shows_its_balance_and_can_be_deactivated(
    admin_client, outsider, announced_changes, django_capture_on_commit_callbacks
):
    """Unticking "is active" suspends through the service: the workers are told."""
    tenant = outsider[0]
    page = admin_client.get(reverse("admin:accounts_tenant_changelist")).content.decode()
    assert "500.00" in page
    change = reverse("admin:accounts_tenant_change", args=[tenant.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(change, {"name": "Mallory Ltd"})
    assert response.status_code == 302
    tenant.refresh_from_db()
    assert (tenant.name, tenant.is_active) == ("Mallory Ltd", False)
    assert api_token_authenticate(secret=outsider[1].secret) is None
    assert announced_changes == [f"tenant:{tenant.pk}"]

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(change, {"name": "Mallory Ltd", "is_active": "on"})
    assert Tenant.objects.get(pk=tenant.pk).is_active is True
    assert api_token_authenticate(secret=outsider[1].secret) is not None
    assert announced_changes == [f"tenant:{tenant.pk}"] * 2


def test_renaming_a_tenant_in_the_change_form_announces_nothing(
    admin_client, tenant, announced_changes, django_capture_on_commit_callbacks
):
    change = reverse("admin:accounts_tenant_change", args=[tenant.pk])
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(change, {"name": "Alice GmbH", "is_active": "on"})
    tenant.refresh_from_db()
    assert (tenant.name, tenant.is_active) == ("Alice GmbH", True)
    assert announced_changes == []


def test_suspend_and_reinstate_actions(
    admin_client, reseller, outsider, announced_changes, django_capture_on_commit_callbacks
):
    tenant, token = reseller
    key = key_create(tenant=tenant, actor=None, label="k", funding=ClientKey.Funding.WALLET).key
    changelist = reverse("admin:accounts_tenant_changelist")
    Tenant.objects.filter(pk=outsider[0].pk).update(is_active=False)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            changelist,
            {"action": "suspend", "_selected_action": [tenant.pk, outsider[0].pk]},
            follow=True,
        )

    assert "Suspended 1 reseller(s). 1 already were." in response.content.decode()
    assert not Tenant.objects.filter(is_active=True).exists()
    assert api_token_authenticate(secret=token.secret) is None
    assert set(announced_changes) == {f"tenant:{tenant.pk}", f"tenant:{outsider[0].pk}"}
    assert ClientKey.objects.get(pk=key.pk).status == ClientKey.Status.ACTIVE

    response = admin_client.post(
        changelist, {"action": "reinstate", "_selected_action": [tenant.pk]}, follow=True
    )

    assert "Reinstated 1 reseller(s)." in response.content.decode()
    assert Tenant.objects.get(pk=tenant.pk).is_active is True
    assert Tenant.objects.get(pk=outsider[0].pk).is_active is False
    assert api_token_authenticate(secret=token.secret) is not None


def test_tenants_are_created_by_the_command_not_the_admin(admin_client, tenant):
    assert admin_client.get(reverse("admin:accounts_tenant_add")).status_code == 403
    delete = reverse("admin:accounts_tenant_delete", args=[tenant.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert Tenant.objects.filter(pk=tenant.pk).exists()


def test_token_is_read_only_and_revoked_by_action(admin_client, reseller, outsider):
    token = reseller[1].token
    change = reverse("admin:accounts_apitoken_change", args=[token.pk])
    page = admin_client.get(change).content.decode()
    assert token.digest in page and reseller[1].secret not in page
    assert admin_client.post(change, {"name": "x"}).status_code == 403

    admin_client.post(
        reverse("admin:accounts_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
    )
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert api_token_authenticate(secret=reseller[1].secret) is None
    assert api_token_authenticate(secret=outsider[1].secret) is not None
