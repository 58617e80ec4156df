"""The reseller's alerts, the writes, split by what they do:

* ``configure``: the settings, a key's own shares, the webhook's secret, a test delivery;
* ``check``: the periodic check that claims crossings and re-arms alerts (its module's doc
  is the design overview);
* ``deliver``: one try of one delivery, and the sweep of deliveries whose task was lost.

What an alert says is ``alerts.events`` (its data, the webhook's body) and
``alerts.emails``; the webhook's wire is ``alerts.webhooks``.
"""

from __future__ import annotations

from alerts.services.check import alerts_check
from alerts.services.configure import (
    SettingsSaved,
    alert_settings_update,
    alert_test_send,
    key_alerts_set,
    thresholds_validate,
    webhook_secret_rotate,
)
from alerts.services.deliver import (
    DeliveryAttempt,
    DeliveryOutcome,
    alert_deliver,
    deliveries_enqueue,
    deliveries_resume,
    retry_delay,
)

__all__ = [
    "DeliveryAttempt",
    "DeliveryOutcome",
    "SettingsSaved",
    "alert_deliver",
    "alert_settings_update",
    "alert_test_send",
    "alerts_check",
    "deliveries_enqueue",
    "deliveries_resume",
    "key_alerts_set",
    "retry_delay",
    "thresholds_validate",
    "webhook_secret_rotate",
]
