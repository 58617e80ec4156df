"""Operator admin for tenants and reseller API tokens.

Tenants are created with ``manage.py create_reseller`` (user, tenant, wallet and a first
token in one transaction); here the operator renames, suspends and reinstates them, through
``tenant_suspend`` / ``tenant_reinstate`` whether from the actions or from the "is active"
box of the change form, so the proxy workers always hear of it. Tokens are read-only (only
their keyed hash is stored) and revoked through ``api_token_revoke``. Authenticators are
listed (never their key) and can be removed, with the user's backup codes, for someone who
lost both (``two_factor_reset``); django-otp's own device admins, which would show keys and
codes in clear, are not offered (their tables stay empty).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.exceptions import NotRegistered
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import ApiToken, AuthenticatorDevice, Tenant
from accounts.read_only_admin import ReadOnlyAdmin
from accounts.services import (
    TenantActivation,
    api_token_revoke,
    tenant_reinstate,
    tenant_suspend,
    two_factor_reset,
)


def _operator(request: HttpRequest) -> AbstractBaseUser | None:
    return request.user if isinstance(request.user, AbstractBaseUser) else None


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    # billing.admin registers a subclass in its place that adds the wallet's balance.
    list_display = ["name", "owner", "is_active", "created_at"]
    list_filter = ["is_active"]
    list_select_related = ["owner"]
    search_fields = ["name", "owner__email"]
    fields = ["name", "owner", "is_active", "created_at"]
    readonly_fields = ["owner", "created_at"]
    actions = ["suspend", "reinstate"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A tenant needs its owner, wallet and first token: manage.py create_reseller.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Its ledger is kept forever; deactivate instead.
        return False

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        # "is active" is not saved with the other fields: the service changes it and tells
        # the proxy workers, which cache every key with its tenant's state.
        others = [name for name in form.changed_data if name != "is_active"]
        if others:
            obj.save(update_fields=others)
        if "is_active" in form.changed_data:
            service = tenant_reinstate if obj.is_active else tenant_suspend
            service(tenant=obj, actor=_operator(request))

    def has_suspend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.change_tenant")

    def has_reinstate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.change_tenant")

    @admin.action(
        description="Suspend selected resellers (tokens and keys stop)", permissions=["suspend"]
    )
    def suspend(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        results = [tenant_suspend(tenant=t, actor=_operator(request)) for t in queryset]
        self._report(request, results, "Suspended")

    @admin.action(description="Reinstate selected resellers", permissions=["reinstate"])
    def reinstate(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        results = [tenant_reinstate(tenant=t, actor=_operator(request)) for t in queryset]
        self._report(request, results, "Reinstated")

    def _report(self, request: HttpRequest, results: list[TenantActivation], done: str) -> None:
        changed = sum(result.changed for result in results)
        unchanged = len(results) - changed
        message = f"{done} {changed} reseller(s)."
        if unchanged:
            message += f" {unchanged} already were."
        self.message_user(request, message, messages.SUCCESS)


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "name", "tenant", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    list_select_related = ["tenant"]
    search_fields = ["prefix", "name", "tenant__name"]
    fields = readonly_fields = (
        "tenant",
        "name",
        "prefix",
        "last4",
        "digest",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    actions = ["revoke"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.change_apitoken")

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = 0
        for token in queryset.select_related("tenant"):
            if not token.is_revoked:
                api_token_revoke(tenant=token.tenant, token_id=token.pk)
                revoked += 1
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)


@admin.register(AuthenticatorDevice)
class AuthenticatorDeviceAdmin(ReadOnlyAdmin):
    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    list_filter = ["confirmed"]
    list_select_related = ["user"]
    search_fields = ["user__email"]
    fields = readonly_fields = ("user", "name", "confirmed", "created_at", "last_used_at")
    actions = ["reset"]

    def has_reset_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.delete_authenticatordevice")

    @admin.action(
        description="Turn two-factor sign-in off for these users (authenticator and backup "
        "codes removed)",
        permissions=["reset"],
    )
    def reset(self, request: HttpRequest, queryset: QuerySet[AuthenticatorDevice]) -> None:
        users = {device.user for device in queryset.select_related("user")}
        done = sum(two_factor_reset(user=user, actor=_operator(request)) for user in users)
        self.message_user(
            request, f"Two-factor sign-in turned off for {done} user(s).", messages.SUCCESS
        )


# django-otp's admins of its own devices (keys and codes in clear); nothing uses them here.
for _model in ("otp_totp.TOTPDevice", "otp_static.StaticDevice"):
    try:
        admin.site.unregister(apps.get_model(_model))
    except (LookupError, NotRegistered):
        pass
