"""Operator admin for tenants and reseller API tokens.

Tenants are created with ``manage.py create_reseller`` (user, tenant, wallet and a first
token in one transaction); here the operator renames or deactivates them. Tokens are
read-only (only their keyed hash is stored) and revoked through ``api_token_revoke``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import ApiToken, Tenant
from accounts.services import api_token_revoke
from billing.money import format_usd


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "is_active", "balance", "created_at"]
    list_filter = ["is_active"]
    list_select_related = ["owner", "wallet"]
    search_fields = ["name", "owner__email"]
    fields = ["name", "owner", "is_active", "balance", "created_at"]
    readonly_fields = ["owner", "balance", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A tenant needs its owner, wallet and first token: manage.py create_reseller.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Its ledger is kept forever; deactivate instead.
        return False

    @admin.display(description="Balance (USD)")
    def balance(self, tenant: Tenant) -> str:
        wallet = getattr(tenant, "wallet", None)
        return "—" if wallet is None else format_usd(wallet.balance_nanos)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

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
