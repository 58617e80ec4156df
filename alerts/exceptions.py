from __future__ import annotations


class AlertError(Exception):
    code = "alert_error"


class AlertSettingsInvalid(AlertError):
    """An alert setting that breaks its rule; ``field`` names the offending input as the
    REST API names it (``key_thresholds``, ``webhook_url`` …)."""

    code = "invalid"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class WebhookUrlRefused(AlertSettingsInvalid):
    """A webhook URL that may not receive alerts (``alerts.webhooks.webhook_target``)."""

    def __init__(self, message: str) -> None:
        super().__init__("webhook_url", message)


class WebhookHostUnresolved(WebhookUrlRefused):
    """The webhook's host name did not resolve: refused when it is set, retried when an
    alert is sent (the name server may be down for a while)."""


class KeyAlertsConflict(AlertError):
    """The key's alerts cannot change in its state (deleted)."""

    code = "conflict"
