"""Operator admin for client keys: read-only money, status changed only through actions.

The money counters belong to funding and metering flows, so the change form is view-only
(saving a stale copy would overwrite them). Revoking and re-activating go through
``keys.services.key_update``; no secret is stored, so none can be shown.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.read_only_admin import ReadOnlyAdmin
from billing.money import format_usd
from keys.exceptions import ClientKeyError
from keys.models import ClientKey
from keys.services import key_update


@admin.register(ClientKey)
class ClientKeyAdmin(ReadOnlyAdmin):
    list_display = [
        "label",
        "display_key",
        "tenant",
        "funding",
        "status",
        "ratio",
        "client_budget",
        "client_spent",
        "cost_spent",
        "created_at",
    ]
    list_filter = ["status", "funding", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["label", "prefix", "default_tag", "tenant__name"]
    date_hierarchy = "created_at"
    fieldsets = [
        (None, {"fields": ["tenant", "label", "display_key", "default_tag", "funding", "status"]}),
        (
            "Money (client prices, then your cost)",
            {
                "fields": [
                    "ratio",
                    "margin",
                    "client_budget",
                    "client_spent",
                    "client_reserved",
                    "cost_funded",
                    "cost_spent",
                    "cost_reserved",
                    "cost_refunded",
                    "profit",
                ]
            },
        ),
        ("Spend cap", {"fields": ["spend_cap", "budget_period", "period_client_spent"]}),
        (
            "Limits",
            {
                "fields": [
                    "requests_per_minute",
                    "tokens_per_minute",
                    "max_concurrency",
                    "allowed_models",
                    "expires_at",
                ]
            },
        ),
        ("History", {"fields": ["created_at", "updated_at", "revoked_at", "deleted_at"]}),
    ]
    actions = ["revoke", "activate"]

    def has_status_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("keys.change_clientkey")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return flatten_fieldsets(self.fieldsets)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[ClientKey], status: str) -> None:
        changed, refused = 0, []
        for key in queryset.select_related("tenant"):
            if key.status == status:
                continue
            try:
                key_update(
                    tenant=key.tenant,
                    actor=request.user,  # type: ignore[arg-type]
                    key_id=key.pk,
                    changes={"status": status},
                )
            except ClientKeyError as exc:
                refused.append(f"{key}: {exc}")
            else:
                changed += 1
        self.message_user(request, f"{changed} key(s) now {status}.", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not changed: " + "; ".join(refused), messages.WARNING)

    @admin.action(description="Revoke selected keys", permissions=["status"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ClientKey]) -> None:
        self._set_status(request, queryset, ClientKey.Status.REVOKED)

    @admin.action(description="Re-activate selected keys", permissions=["status"])
    def activate(self, request: HttpRequest, queryset: QuerySet[ClientKey]) -> None:
        self._set_status(request, queryset, ClientKey.Status.ACTIVE)

    @admin.display(description="Ratio (cost / client)")
    def ratio(self, key: ClientKey) -> str:
        return str(key.ratio.as_decimal())

    @admin.display(description="Margin")
    def margin(self, key: ClientKey) -> str:
        return str(key.ratio.margin())

    @admin.display(description="Client budget (USD)")
    def client_budget(self, key: ClientKey) -> str:
        return format_usd(key.client_budget_nanos) if key.is_prepaid else "—"

    @admin.display(description="Client spent (USD)")
    def client_spent(self, key: ClientKey) -> str:
        return format_usd(key.client_spent_nanos)

    @admin.display(description="Client reserved (USD)")
    def client_reserved(self, key: ClientKey) -> str:
        return format_usd(key.client_reserved_nanos)

    @admin.display(description="Cost funded (USD)")
    def cost_funded(self, key: ClientKey) -> str:
        return format_usd(key.cost_funded_nanos)

    @admin.display(description="Cost spent (USD)")
    def cost_spent(self, key: ClientKey) -> str:
        return format_usd(key.cost_spent_nanos)

    @admin.display(description="Cost reserved (USD)")
    def cost_reserved(self, key: ClientKey) -> str:
        return format_usd(key.cost_reserved_nanos)

    @admin.display(description="Cost refunded (USD)")
    def cost_refunded(self, key: ClientKey) -> str:
        return format_usd(key.cost_refunded_nanos)

    @admin.display(description="Profit (USD)")
    def profit(self, key: ClientKey) -> str:
        return format_usd(key.profit_nanos)

    @admin.display(description="Spend cap (USD, client prices)")
    def spend_cap(self, key: ClientKey) -> str:
        return "—" if key.spend_cap_nanos is None else format_usd(key.spend_cap_nanos)

    @admin.display(description="Spent this period (USD, client prices)")
    def period_client_spent(self, key: ClientKey) -> str:
        return format_usd(key.period_client_spent_nanos)
