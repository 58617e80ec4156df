"""Operator admin for traces: read-only, and where settlements over the hold show.

A settlement whose reported usage cost more than the request's hold is charged the hold;
the rest is what the operator paid the upstream for nothing (``Trace.is_over_hold``,
``overrun_cost_nanos``; see ``proxy.settlement``). The "Settled over the hold" filter
counts them, in all and per upstream, from a partial index of those rows only, so the
count stays cheap however many traces there are.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from billing.admin import ReadOnlyAdmin, usd
from usage.models import Trace

ANY_UPSTREAM = "any"
UPSTREAM_GONE = "none"


class OverHoldFilter(admin.SimpleListFilter):
    title = "settled over the hold"
    parameter_name = "over_hold"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        per_upstream = list(
            Trace.objects.filter(is_over_hold=True)
            .values("upstream_id", "upstream__name")
            .annotate(count=Count("id"))
            .order_by("upstream__name")
        )
        total = sum(row["count"] for row in per_upstream)
        choices = [(ANY_UPSTREAM, f"Any upstream ({total})")]
        for row in per_upstream:
            if row["upstream_id"] is None:
                choices.append((UPSTREAM_GONE, f"A deleted upstream ({row['count']})"))
            else:
                choices.append(
                    (str(row["upstream_id"]), f"{row['upstream__name']} ({row['count']})")
                )
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Trace]) -> QuerySet[Trace]:
        value = self.value()
        if value is None:
            return queryset
        over = queryset.filter(is_over_hold=True)
        if value == ANY_UPSTREAM:
            return over
        if value == UPSTREAM_GONE:
            return over.filter(upstream__isnull=True)
        if value.isdigit():
            return over.filter(upstream_id=int(value))
        return queryset.none()


@admin.register(Trace)
class TraceAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "request_id",
        "tenant",
        "client_key",
        "endpoint",
        "model",
        "upstream",
        "status",
        "status_code",
        "input_tokens",
        "output_tokens",
        "charged_cost",
        "charged_client_price",
        "is_over_hold",
        "uncharged_cost",
    ]
    list_filter = [OverHoldFilter, "status", "endpoint", "upstream"]
    list_select_related = ["tenant", "client_key", "upstream"]
    search_fields = ["request_id"]
    # Traces are the largest table: no full COUNT(*) on every page.
    show_full_result_count = False
    fields = readonly_fields = (
        "request_id",
        "created_at",
        "tenant",
        "client_key",
        "tag",
        "endpoint",
        "model",
        "upstream",
        "upstream_model",
        "price",
        "is_stream",
        "status",
        "status_code",
        "error_class",
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "is_usage_estimated",
        "charged_cost",
        "charged_client_price",
        "is_over_hold",
        "uncharged_cost",
        "cache_savings",
        "client_cache_savings",
        "latency_ms",
        "ttft_ms",
    )

    @admin.display(description="Charged cost (USD)", ordering="cost_nanos")
    def charged_cost(self, trace: Trace) -> str:
        return usd(trace.cost_nanos)

    @admin.display(description="Charged client price (USD)")
    def charged_client_price(self, trace: Trace) -> str:
        return usd(trace.client_nanos)

    @admin.display(description="Cache savings at cost (USD)")
    def cache_savings(self, trace: Trace) -> str:
        return usd(trace.cache_savings_nanos)

    @admin.display(description="Cache savings at client price (USD)")
    def client_cache_savings(self, trace: Trace) -> str:
        return usd(trace.client_cache_savings_nanos)

    @admin.display(description="Uncharged cost (USD)", ordering="overrun_cost_nanos")
    def uncharged_cost(self, trace: Trace) -> str:
        return usd(trace.overrun_cost_nanos) if trace.is_over_hold else "–"
