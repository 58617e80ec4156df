"""The alerts' REST API under ``/api/v1/`` (``config.urls``): the tenant's settings, the
webhook's signing secret, the delivery log, and each key's own shares. One APIView per
operation (house rule 15); a path serving several methods dispatches by method."""

from __future__ import annotations

from django.urls import path

from alerts.apis import (
    AlertDeliveryListApi,
    AlertSettingsDetailApi,
    AlertSettingsUpdateApi,
    KeyAlertsDetailApi,
    KeyAlertsUpdateApi,
    WebhookSecretRotateApi,
)
from config.routing import by_method

urlpatterns = [
    path(
        "alerts/settings",
        by_method(GET=AlertSettingsDetailApi.as_view(), PATCH=AlertSettingsUpdateApi.as_view()),
        name="alert-settings",
    ),
    path("alerts/webhook-secret", WebhookSecretRotateApi.as_view(), name="alert-webhook-secret"),
    path("alerts/deliveries", AlertDeliveryListApi.as_view(), name="alert-deliveries"),
    path(
        "keys/<int:key_id>/alerts",
        by_method(GET=KeyAlertsDetailApi.as_view(), PATCH=KeyAlertsUpdateApi.as_view()),
        name="key-alerts",
    ),
]
