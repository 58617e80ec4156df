"""Operator admin for card top-ups and Stripe's webhook events (registered from
``billing.admin``, which is long enough on its own).

Both are read-only: only their flows (``billing.top_ups``, ``billing.stripe_webhooks``)
write them, and money moves only through the ledger. Stripe events have one action,
"Reprocess", which runs the selected events that are not processed through the same
dispatch as the webhook (``stripe_events_reprocess``): a failed event after its cause is
fixed, or an ignored one (a refund that arrived before its top-up was known).
"""

from __future__ import annotations

import json
from collections import Counter

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from billing.admin import ReadOnlyAdmin, usd
from billing.models import StripeEvent, TopUp
from billing.stripe_webhooks import stripe_events_reprocess


@admin.register(TopUp)
class TopUpAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "tenant",
        "status",
        "amount",
        "fee",
        "taken_back",
        "shortfall",
        "created_at",
        "credited_at",
    ]
    list_filter = ["status"]
    list_select_related = ["tenant"]
    search_fields = [
        "=id",
        "stripe_session_id",
        "stripe_payment_intent",
        "tenant__name",
        "tenant__owner__email",
    ]
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "tenant",
        "wallet",
        "status",
        "amount",
        "fee",
        "total",
        "currency",
        "stripe_session_id",
        "stripe_payment_intent",
        "checkout_url",
        "refunded",
        "disputed",
        "taken_back",
        "is_dispute_won",
        "dispute_returned",
        "shortfall",
        "earlier_shortfall_paid",
        "error",
        "actor",
        "created_at",
        "credited_at",
        "updated_at",
    )

    @admin.display(description="Amount (USD)", ordering="amount_nanos")
    def amount(self, top_up: TopUp) -> str:
        return usd(top_up.amount_nanos)

    @admin.display(description="Fee (USD)")
    def fee(self, top_up: TopUp) -> str:
        return usd(top_up.fee_nanos)

    @admin.display(description="Card paid (USD)")
    def total(self, top_up: TopUp) -> str:
        return usd(top_up.total_nanos)

    @admin.display(description="Refunded by Stripe (USD)")
    def refunded(self, top_up: TopUp) -> str:
        return usd(top_up.refunded_nanos)

    @admin.display(description="Disputed (USD)")
    def disputed(self, top_up: TopUp) -> str:
        return usd(top_up.disputed_nanos)

    @admin.display(description="Taken back from the wallet (USD)")
    def taken_back(self, top_up: TopUp) -> str:
        return usd(top_up.reversed_nanos)

    @admin.display(description="Given back by a won dispute (USD)")
    def dispute_returned(self, top_up: TopUp) -> str:
        return usd(top_up.reinstated_nanos)

    @admin.display(description="Shortfall (USD)")
    def shortfall(self, top_up: TopUp) -> str:
        """What a refund or dispute could not take back: the next top-up pays it."""
        return usd(top_up.shortfall_nanos) if top_up.shortfall_nanos else "—"

    @admin.display(description="Paid towards earlier shortfalls (USD)")
    def earlier_shortfall_paid(self, top_up: TopUp) -> str:
        return usd(top_up.earlier_shortfall_paid_nanos)


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = [
        "event_id",
        "type",
        "status",
        "attempts",
        "note",
        "short_error",
        "received_at",
        "processed_at",
    ]
    list_filter = ["status", "type", "is_livemode"]
    search_fields = ["=event_id", "type", "note"]
    date_hierarchy = "received_at"
    actions = ["reprocess"]
    fields = readonly_fields = (
        "event_id",
        "type",
        "status",
        "attempts",
        "note",
        "error",
        "is_livemode",
        "received_at",
        "processed_at",
        "payload_json",
    )

    @admin.display(description="Error")
    def short_error(self, event: StripeEvent) -> str:
        return event.error[:120]

    @admin.display(description="Payload")
    def payload_json(self, event: StripeEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.payload, indent=2, sort_keys=True))

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.change_stripeevent")

    @admin.action(description="Reprocess the selected events", permissions=["reprocess"])
    def reprocess(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> None:
        received = stripe_events_reprocess(events=queryset.order_by("received_at", "id"))
        outcomes = Counter(each.event.status for each in received)
        skipped = queryset.count() - len(received)
        summary = ", ".join(f"{count} {status}" for status, count in sorted(outcomes.items()))
        if skipped:
            summary = ", ".join(filter(None, [summary, f"{skipped} already processed (skipped)"]))
        level = messages.WARNING if outcomes.get(StripeEvent.Status.FAILED) else messages.SUCCESS
        self.message_user(request, f"Reprocessed: {summary or 'nothing'}.", level)
