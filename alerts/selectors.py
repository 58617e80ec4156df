"""Tenant-scoped reads of the reseller's alerts: its settings (defaults when it has none),
a key's shares and where each stands, and the delivery log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from accounts.models import Tenant
from alerts.models import (
    AlertDelivery,
    AlertKind,
    AlertSettings,
    AlertState,
    KeyAlertOverride,
)
from keys.models import ClientKey


def alert_settings_get(*, tenant: Tenant) -> AlertSettings:
    """The tenant's settings: its row, or the defaults (an unsaved row) while it has none."""
    found = AlertSettings.objects.filter(tenant=tenant).first()
    return found if found is not None else AlertSettings(tenant=tenant)


def email_recipient(*, alert_settings: AlertSettings, tenant: Tenant) -> str:
    """Where the tenant's alert emails go: the address it chose, else its owner's."""
    return alert_settings.email_to or tenant.owner.email


@dataclass(frozen=True, slots=True)
class KeyThresholdState:
    """One of a key's alert shares and its current crossing (None: armed)."""

    percent: int
    crossed_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyAlerts:
    """A key's alert shares: its own (``override``, None: the tenant's ``default``), the
    ones that apply (``effective``) and where each stands."""

    key: ClientKey
    override: list[int] | None
    default: list[int]
    states: list[KeyThresholdState]

    @property
    def effective(self) -> list[int]:
        return self.default if self.override is None else self.override

    @property
    def uses_default(self) -> bool:
        return self.override is None


def key_alerts_get(*, tenant: Tenant, key: ClientKey) -> KeyAlerts:
    """The alerts of ``key`` (the caller has it from ``keys.selectors.key_get`` with the
    same tenant)."""
    override = KeyAlertOverride.objects.filter(key=key).values_list("thresholds", flat=True)
    default = alert_settings_get(tenant=tenant).key_thresholds
    own = override.first()
    claimed = dict(
        AlertState.objects.filter(
            tenant=tenant, key=key, kind=AlertKind.KEY_USAGE, crossed_at__isnull=False
        ).values_list("threshold", "crossed_at")
    )
    effective = default if own is None else own
    return KeyAlerts(
        key=key,
        override=own,
        default=list(default),
        states=[KeyThresholdState(percent=p, crossed_at=claimed.get(p)) for p in effective],
    )


def delivery_list(
    *, tenant: Tenant, status: str | None = None, channel: str | None = None
) -> QuerySet[AlertDelivery]:
    """The tenant's deliveries, newest first, with their events (and keys); only those in
    ``status`` or on ``channel`` when given."""
    deliveries = AlertDelivery.objects.filter(tenant=tenant)
    if status is not None:
        deliveries = deliveries.filter(status=status)
    if channel is not None:
        deliveries = deliveries.filter(channel=channel)
    return deliveries.select_related("event", "event__key").order_by("-created_at", "-pk")
