"""Operator admin for wallets, the ledger, upstreams, routes, prices and reservations, and
the tenants' balances.

Nothing here moves money or writes a secret itself. Crediting a wallet, saving an upstream
(its API key is encrypted, and never shown again) and posting a price go through
``billing.services``; ledger entries and reservations are read-only; wallets are read-only
except for the "Credit wallet" view. Money is shown with ``billing.money.format_usd`` (USD;
prices in USD per 1M tokens), never through a float.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import csrf_protect_m
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.functions import Now
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from accounts.admin import TenantAdmin
from accounts.events import config_changed
from accounts.models import Tenant
from accounts.read_only_admin import ReadOnlyAdmin
from billing.admin_forms import PriceAddForm, UpstreamForm, WalletCreditForm
from billing.exceptions import BillingError
from billing.models import LedgerEntry, ModelPrice, ModelRoute, Reservation, Upstream, Wallet
from billing.money import format_usd
from billing.services import price_set, upstream_save, wallet_credit


def usd(nanos: int | None) -> str:
    return "—" if nanos is None else format_usd(nanos)


# accounts' tenant admin, registered again with the tenant's wallet balance: accounts
# knows nothing of money, billing knows both.
admin.site.unregister(Tenant)


@admin.register(Tenant)
class TenantWalletAdmin(TenantAdmin):
    list_display = ["name", "owner", "is_active", "balance", "created_at"]
    list_select_related = ["owner", "wallet"]
    fields = ["name", "owner", "is_active", "balance", "created_at"]
    readonly_fields = ["owner", "balance", "created_at"]

    @admin.display(description="Balance (USD)")
    def balance(self, tenant: Tenant) -> str:
        wallet = getattr(tenant, "wallet", None)
        return usd(None if wallet is None else wallet.balance_nanos)


class ServiceSavedAdmin(admin.ModelAdmin):
    """An admin whose saves go through a durable service (``atomic(durable=True)``).

    Django wraps every add/change POST in ``atomic()``, and a durable block refuses to
    nest: the service's own transaction is the unit of work here, so the POST runs bare.
    """

    @csrf_protect_m
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # Django's own body of changeform_view, minus its transaction.atomic() wrapper.
        changeform = self._changeform_view  # type: ignore[attr-defined]
        return changeform(request, object_id, form_url, extra_context)


# ----------------------------------------------------------------------------- wallets


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "balance", "reserved", "available", "updated_at", "credit_link"]
    list_select_related = ["tenant"]
    search_fields = ["tenant__name", "tenant__owner__email"]
    fields = readonly_fields = (
        "tenant",
        "balance",
        "reserved",
        "available",
        "updated_at",
        "entries_link",
        "credit_link",
    )

    @admin.display(description="Balance (USD)")
    def balance(self, wallet: Wallet) -> str:
        return usd(wallet.balance_nanos)

    @admin.display(description="Reserved (USD)")
    def reserved(self, wallet: Wallet) -> str:
        return usd(wallet.reserved_nanos)

    @admin.display(description="Available (USD)")
    def available(self, wallet: Wallet) -> str:
        return usd(wallet.available_nanos)

    @admin.display(description="Ledger")
    def entries_link(self, wallet: Wallet) -> str:
        url = reverse("admin:billing_ledgerentry_changelist") + f"?wallet__id__exact={wallet.pk}"
        return format_html('<a href="{}">Ledger entries</a>', url)

    @admin.display(description="Credit")
    def credit_link(self, wallet: Wallet) -> str:
        url = reverse("admin:billing_wallet_credit", args=[wallet.pk])
        return format_html('<a href="{}">Credit wallet</a>', url)

    def has_credit_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.change_wallet")

    def get_urls(self) -> list[URLPattern]:
        credit = path(
            "<path:object_id>/credit/",
            self.admin_site.admin_view(self.credit_view),
            name="billing_wallet_credit",
        )
        return [credit, *super().get_urls()]

    def credit_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Post a manual credit or adjustment through ``wallet_credit``."""
        wallet = self.get_object(request, object_id)
        if wallet is None:
            raise Http404("No such wallet.")
        if not self.has_credit_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = WalletCreditForm(request.POST)
            if form.is_valid():
                try:
                    entry = wallet_credit(
                        tenant=wallet.tenant,
                        amount_nanos=form.cleaned_data["amount"],
                        kind=form.cleaned_data["kind"],
                        reason=form.cleaned_data["reason"].strip(),
                        reference=f"admin:{request.user.get_username()}",
                        idempotency_key=f"admin-credit:{form.cleaned_data['idempotency_key']}",
                        actor=request.user,  # type: ignore[arg-type]
                    )
                except BillingError as exc:
                    form.add_error(None, str(exc))
                else:
                    wallet.refresh_from_db()
                    summary = (
                        f"Posted {entry.get_kind_display().lower()} of "
                        f"{format_usd(entry.amount_nanos)} USD (entry {entry.pk}); "
                        f"balance {format_usd(wallet.balance_nanos)} USD."
                    )
                    self.log_change(request, wallet, summary)
                    self.message_user(request, summary, messages.SUCCESS)
                    return HttpResponseRedirect(
                        reverse("admin:billing_wallet_change", args=[wallet.pk])
                    )
        else:
            form = WalletCreditForm(initial={"idempotency_key": uuid.uuid4().hex})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": wallet,
            "title": f"Credit {wallet}",
            "form": form,
            "balance": usd(wallet.balance_nanos),
            "available": usd(wallet.available_nanos),
        }
        return TemplateResponse(request, "admin/billing/wallet/credit.html", context)


# ----------------------------------------------------------------------------- ledger


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "created_at",
        "wallet",
        "kind",
        "amount",
        "balance_after",
        "reason",
        "reference",
        "client_key",
    ]
    list_filter = ["kind", "wallet"]
    list_select_related = ["wallet__tenant", "client_key"]
    search_fields = ["reason", "reference", "idempotency_key", "wallet__tenant__name"]
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "wallet",
        "kind",
        "amount",
        "balance_after",
        "reason",
        "reference",
        "idempotency_key",
        "client_key",
        "actor",
        "created_at",
    )

    @admin.display(description="Amount (USD)", ordering="amount_nanos")
    def amount(self, entry: LedgerEntry) -> str:
        return usd(entry.amount_nanos)

    @admin.display(description="Balance after (USD)")
    def balance_after(self, entry: LedgerEntry) -> str:
        return usd(entry.balance_after_nanos)


# ----------------------------------------------------------------------------- upstreams


@admin.register(Upstream)
class UpstreamAdmin(ServiceSavedAdmin):
    form = UpstreamForm
    list_display = ["name", "kind", "base_url", "api_key_source", "timeout_seconds", "is_active"]
    list_filter = ["kind", "is_active"]
    search_fields = ["name", "base_url"]

    def get_fields(self, request: HttpRequest, obj: Upstream | None = None) -> tuple[str, ...]:
        editable: tuple[str, ...] = ("kind", "base_url", "api_key_env", "api_key", "clear_api_key")
        editable += ("timeout_seconds", "is_active")
        if obj is None:
            return ("name", *editable)
        return ("name", "api_key_source", *editable, "created_at")

    def get_readonly_fields(
        self, request: HttpRequest, obj: Upstream | None = None
    ) -> tuple[str, ...]:
        # The service saves by name, so a rename would create a second upstream.
        return () if obj is None else ("name", "api_key_source", "created_at")

    @admin.display(description="API key")
    def api_key_source(self, upstream: Upstream) -> str:
        if upstream.api_key_encrypted:
            return "stored (encrypted)"
        if upstream.api_key_env:
            return f"from ${upstream.api_key_env}"
        return "none"

    def save_model(self, request: HttpRequest, obj: Upstream, form: Any, change: bool) -> None:
        api_key = form.cleaned_data.get("api_key") or None
        if form.cleaned_data.get("clear_api_key"):
            api_key = ""
        saved = upstream_save(
            name=obj.name,
            kind=obj.kind,
            base_url=obj.base_url,
            api_key_env=obj.api_key_env,
            api_key=api_key,
            timeout_seconds=obj.timeout_seconds,
            is_active=obj.is_active,
        )
        obj.pk = saved.pk
        obj.refresh_from_db()


# ----------------------------------------------------------------------------- routes and prices


@admin.register(ModelRoute)
class ModelRouteAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "upstream",
        "upstream_model",
        "priority",
        "max_output_tokens",
        "is_active",
        "input_price",
        "output_price",
    ]
    list_filter = ["is_active", "upstream"]
    list_select_related = ["upstream"]
    search_fields = ["model", "upstream_model"]
    fields = [
        "model",
        "upstream",
        "upstream_model",
        "priority",
        "max_output_tokens",
        "context_window_tokens",
        "is_active",
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: ModelRoute | None = None) -> list[str]:
        # Its prices (and the traces charged at them) belong to this model on this upstream.
        return [] if obj is None else ["model", "upstream"]

    def save_model(self, request: HttpRequest, obj: ModelRoute, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        config_changed("routes")  # proxy workers cache routes

    def delete_model(self, request: HttpRequest, obj: ModelRoute) -> None:
        super().delete_model(request, obj)
        config_changed("routes")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelRoute]:
        # The version in force, as billing.selectors.price_current picks it, in one query.
        current = ModelPrice.objects.filter(
            route=OuterRef("pk"), effective_from__lte=Now()
        ).order_by("-effective_from", "-pk")
        return (
            super()
            .get_queryset(request)
            .annotate(
                input_nanos=Subquery(current.values("input_per_mtok_nanos")[:1]),
                output_nanos=Subquery(current.values("output_per_mtok_nanos")[:1]),
            )
        )

    @admin.display(description="Input USD / 1M")
    def input_price(self, route: Any) -> str:
        return usd(route.input_nanos)

    @admin.display(description="Output USD / 1M")
    def output_price(self, route: Any) -> str:
        return usd(route.output_nanos)


@admin.register(ModelPrice)
class ModelPriceAdmin(ServiceSavedAdmin):
    """Add-only: a price version is never edited (traces keep the version they paid)."""

    form = PriceAddForm
    list_display = [
        "route",
        "input_usd",
        "output_usd",
        "cached_input_usd",
        "cache_write_usd",
        "source",
        "effective_from",
    ]
    list_filter = ["source", "route__upstream"]
    list_select_related = ["route__upstream"]
    search_fields = ["route__model"]
    date_hierarchy = "effective_from"
    rate_fields = (
        "input_usd",
        "output_usd",
        "cached_input_usd",
        "cache_write_usd",
        "cache_write_1h_usd",
    )
    # Tiers are typed in as text and shown posted as USD.
    add_fields = ("route", *rate_fields, "tiers_text")
    view_fields = ("route", *rate_fields, "tiers_usd", "source", "effective_from", "created_at")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_fields(self, request: HttpRequest, obj: ModelPrice | None = None) -> tuple[str, ...]:
        return self.add_fields if obj is None else self.view_fields

    def get_readonly_fields(
        self, request: HttpRequest, obj: ModelPrice | None = None
    ) -> tuple[str, ...]:
        return () if obj is None else self.view_fields

    @admin.display(description="Input USD / 1M", ordering="input_per_mtok_nanos")
    def input_usd(self, price: ModelPrice) -> str:
        return usd(price.input_per_mtok_nanos)

    @admin.display(description="Output USD / 1M", ordering="output_per_mtok_nanos")
    def output_usd(self, price: ModelPrice) -> str:
        return usd(price.output_per_mtok_nanos)

    @admin.display(description="Cached input USD / 1M")
    def cached_input_usd(self, price: ModelPrice) -> str:
        return usd(price.cached_input_per_mtok_nanos)

    @admin.display(description="Cache write USD / 1M")
    def cache_write_usd(self, price: ModelPrice) -> str:
        return usd(price.cache_write_per_mtok_nanos)

    @admin.display(description="One-hour cache write USD / 1M")
    def cache_write_1h_usd(self, price: ModelPrice) -> str:
        return usd(price.cache_write_1h_per_mtok_nanos)

    @admin.display(description="Long-prompt tiers (USD / 1M)")
    def tiers_usd(self, price: ModelPrice) -> str:
        return (
            "; ".join(
                f"over {tier.above_prompt_tokens} prompt tokens: input "
                f"{usd(tier.input_per_mtok_nanos)}, output {usd(tier.output_per_mtok_nanos)}, "
                f"cached {usd(tier.cached_input_per_mtok_nanos)}, "
                f"cache write {usd(tier.cache_write_per_mtok_nanos)}"
                for tier in price.as_prices().tiers
            )
            or "–"
        )

    def save_model(self, request: HttpRequest, obj: ModelPrice, form: Any, change: bool) -> None:
        route = form.cleaned_data["route"]
        posted = price_set(
            model=route.model,
            upstream=route.upstream,
            input_per_mtok_nanos=form.cleaned_data["input_usd"],
            output_per_mtok_nanos=form.cleaned_data["output_usd"],
            cached_input_per_mtok_nanos=form.cleaned_data["cached_input_usd"],
            cache_write_per_mtok_nanos=form.cleaned_data["cache_write_usd"],
            cache_write_1h_per_mtok_nanos=form.cleaned_data["cache_write_1h_usd"],
            tiers=form.cleaned_data["tiers_text"],
            source=ModelPrice.Source.MANUAL,
        )
        obj.pk = posted.pk
        obj.refresh_from_db()


# ----------------------------------------------------------------------------- reservations


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    list_display = [
        "request_id",
        "client_key",
        "status",
        "cost",
        "client_price",
        "charged_cost",
        "charged_client_price",
        "created_at",
        "expires_at",
    ]
    list_filter = ["status"]
    list_select_related = ["client_key"]
    search_fields = ["request_id", "client_key__prefix", "client_key__label"]
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "request_id",
        "client_key",
        "wallet",
        "price",
        "status",
        "cost",
        "client_price",
        "charged_cost",
        "charged_client_price",
        "created_at",
        "expires_at",
        "finished_at",
    )

    @admin.display(description="Held cost (USD)")
    def cost(self, reservation: Reservation) -> str:
        return usd(reservation.cost_nanos)

    @admin.display(description="Held client price (USD)")
    def client_price(self, reservation: Reservation) -> str:
        return usd(reservation.client_nanos)

    @admin.display(description="Charged cost (USD)")
    def charged_cost(self, reservation: Reservation) -> str:
        return usd(reservation.charged_cost_nanos)

    @admin.display(description="Charged client price (USD)")
    def charged_client_price(self, reservation: Reservation) -> str:
        return usd(reservation.charged_client_nanos)


# Card top-ups and Stripe's events: a module of their own (this one is long enough).
from billing import top_up_admin  # noqa: E402, F401 - registers TopUpAdmin, StripeEventAdmin
