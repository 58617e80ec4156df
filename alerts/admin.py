"""The operator's view of alerts: read-only (settings are the reseller's, changed in the
dashboard or the API; states, events and deliveries are written by the check)."""

from __future__ import annotations

from django.contrib import admin

from accounts.read_only_admin import ReadOnlyAdmin
from alerts.models import AlertDelivery, AlertEvent, AlertSettings, AlertState


@admin.register(AlertSettings)
class AlertSettingsAdmin(ReadOnlyAdmin):
    list_display = ("tenant", "key_thresholds", "is_email_on", "webhook_url", "updated_at")
    exclude = ("webhook_secret_encrypted",)


@admin.register(AlertState)
class AlertStateAdmin(ReadOnlyAdmin):
    list_display = ("tenant", "kind", "key", "threshold", "crossed_at", "crossings")
    list_filter = ("kind",)


@admin.register(AlertEvent)
class AlertEventAdmin(ReadOnlyAdmin):
    list_display = ("public_id", "tenant", "type", "key", "created_at")
    list_filter = ("type",)
    search_fields = ("public_id",)


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("event", "tenant", "channel", "status", "attempts", "http_status", "created_at")
    list_filter = ("channel", "status")
    search_fields = ("event__public_id",)
