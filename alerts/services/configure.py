"""What the reseller chooses: its alert settings, a key's own shares, the webhook's signing
secret, and a test delivery. The REST API and the dashboard's forms call these same
services, so both refuse the same input with the same words."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import transaction
from django.utils import timezone

from accounts.models import Tenant
from alerts.events import event_id_new, public_url
from alerts.exceptions import AlertSettingsInvalid, KeyAlertsConflict
from alerts.models import (
    EMAIL_MAX_LENGTH,
    RUNWAY_DAYS_MAX,
    RUNWAY_DAYS_MIN,
    THRESHOLD_PERCENT_MAX,
    THRESHOLD_PERCENT_MIN,
    THRESHOLDS_MAX_COUNT,
    AlertDelivery,
    AlertEvent,
    AlertSettings,
    KeyAlertOverride,
)
from alerts.selectors import KeyAlerts, key_alerts_get
from alerts.webhooks import secret_generate, webhook_url_check
from billing.crypto import encrypt
from billing.money import MAX_AMOUNT_NANOS, format_usd
from keys.models import ClientKey
from keys.selectors import key_get

logger = logging.getLogger(__name__)

# The settings a caller may change, as the REST API names them.
SETTINGS_FIELDS = frozenset(
    {
        "key_thresholds",
        "wallet_balance_below",
        "wallet_runway_days_below",
        "email",
        "email_to",
        "webhook_url",
    }
)
KEY_DELETED = "This key is deleted: it sends no more alerts."


@dataclass(frozen=True, slots=True)
class SettingsSaved:
    """The settings as saved, and the webhook's signing secret when this change made a new
    one (the first webhook URL, or a rotation): shown this once, never again."""

    alert_settings: AlertSettings
    new_secret: str | None = None


def _is_whole_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def thresholds_validate(value: object, *, field: str) -> list[int]:
    """Alert shares as stored: whole percents from 1 to 100, each once, ascending (at most
    THRESHOLDS_MAX_COUNT; [] for none). Raises AlertSettingsInvalid naming ``field``."""
    if not isinstance(value, list | tuple):
        raise AlertSettingsInvalid(field, "Give a list of whole percents, such as [80, 100].")
    if len(value) > THRESHOLDS_MAX_COUNT:
        raise AlertSettingsInvalid(field, f"Give at most {THRESHOLDS_MAX_COUNT} shares.")
    for percent in value:
        if not _is_whole_number(percent) or not (
            THRESHOLD_PERCENT_MIN <= percent <= THRESHOLD_PERCENT_MAX
        ):
            raise AlertSettingsInvalid(
                field,
                f"Each share is a whole percent from {THRESHOLD_PERCENT_MIN} to "
                f"{THRESHOLD_PERCENT_MAX}; {percent!r} is not.",
            )
    if len(set(value)) != len(value):
        raise AlertSettingsInvalid(field, "Give each share once.")
    return sorted(value)


def _validated(changes: Mapping[str, Any], *, current_url: str) -> dict[str, Any]:
    """``changes`` (the API's names) as model fields, every value checked: a new webhook
    URL's host is resolved here, before any row is locked (the URL saved already is not
    looked up again: every delivery checks it)."""
    unknown = sorted(set(changes) - SETTINGS_FIELDS)
    if unknown:
        raise AlertSettingsInvalid(unknown[0], "This field cannot be changed.")
    fields: dict[str, Any] = {}
    if "key_thresholds" in changes:
        fields["key_thresholds"] = thresholds_validate(
            changes["key_thresholds"], field="key_thresholds"
        )
    if "wallet_balance_below" in changes:
        nanos = changes["wallet_balance_below"]
        if nanos is not None and (not _is_whole_number(nanos) or not 0 < nanos <= MAX_AMOUNT_NANOS):
            raise AlertSettingsInvalid(
                "wallet_balance_below",
                f"Give an amount over 0 and at most {format_usd(MAX_AMOUNT_NANOS)}, or null.",
            )
        fields["wallet_balance_below_nanos"] = nanos
    if "wallet_runway_days_below" in changes:
        days = changes["wallet_runway_days_below"]
        if days is not None and (
            not _is_whole_number(days) or not RUNWAY_DAYS_MIN <= days <= RUNWAY_DAYS_MAX
        ):
            raise AlertSettingsInvalid(
                "wallet_runway_days_below",
                f"Give a whole number of days from {RUNWAY_DAYS_MIN} to {RUNWAY_DAYS_MAX}, "
                "or null.",
            )
        fields["wallet_runway_days_below"] = days
    if "email" in changes:
        if not isinstance(changes["email"], bool):
            raise AlertSettingsInvalid("email", "Give true or false.")
        fields["is_email_on"] = changes["email"]
    if "email_to" in changes:
        address = (changes["email_to"] or "").strip()
        if address:
            try:
                if len(address) > EMAIL_MAX_LENGTH:
                    raise ValidationError("too long")
                EmailValidator()(address)
            except ValidationError:
                raise AlertSettingsInvalid("email_to", "Enter a valid email address.") from None
        fields["email_to"] = address
    if "webhook_url" in changes:
        url = changes["webhook_url"] or ""
        fields["webhook_url"] = webhook_url_check(url) if url and url != current_url else url
    return fields


def _settings_locked(tenant: Tenant) -> AlertSettings:
    """The tenant's settings row, made with the defaults if it has none, locked until the
    transaction ends: two changes at once (the API and the dashboard) apply one after the
    other, and a first webhook URL gets one secret, not one per caller."""
    AlertSettings.objects.get_or_create(tenant=tenant)
    return AlertSettings.objects.select_for_update().get(tenant=tenant)


def _new_secret(row: AlertSettings) -> str:
    secret = secret_generate()
    row.webhook_secret_encrypted = encrypt(secret)
    row.webhook_secret_last4 = secret[-4:]
    return secret


def alert_settings_update(
    *, tenant: Tenant, actor: AbstractBaseUser | None, changes: Mapping[str, Any]
) -> SettingsSaved:
    """Change the tenant's alert settings; only those in ``changes`` (named as the REST API
    names them; money in nano-dollars) change. Every value is checked before anything is
    written, so a bad one raises AlertSettingsInvalid naming it and changes nothing.

    A new webhook URL is checked by ``alerts.webhooks`` (https, public addresses only; its
    host resolved). The first URL set makes the signing secret, returned this once.
    Changing a threshold does not re-send an alert already claimed; a new one is armed.
    """
    current = AlertSettings.objects.filter(tenant=tenant).values_list("webhook_url", flat=True)
    fields = _validated(changes, current_url=current.first() or "")
    with transaction.atomic():
        row = _settings_locked(tenant)
        new_secret = None
        for name, value in fields.items():
            setattr(row, name, value)
        if row.webhook_url and not row.webhook_secret_encrypted:
            new_secret = _new_secret(row)
        row.updated_at = timezone.now()
        row.save()
    if fields:
        logger.info(
            "tenant %s changed alert settings %s by %s",
            tenant.pk,
            ", ".join(sorted(fields)),
            getattr(actor, "email", None) or "the operator",
        )
    return SettingsSaved(alert_settings=row, new_secret=new_secret)


@transaction.atomic
def webhook_secret_rotate(*, tenant: Tenant, actor: AbstractBaseUser | None) -> SettingsSaved:
    """A new signing secret for the tenant's webhook, returned this once. Every delivery
    from now on is signed with it (a retry of an older alert too): the old one stops."""
    row = _settings_locked(tenant)
    secret = _new_secret(row)
    row.updated_at = timezone.now()
    row.save()
    logger.info(
        "tenant %s rotated its alert webhook secret by %s",
        tenant.pk,
        getattr(actor, "email", None) or "the operator",
    )
    return SettingsSaved(alert_settings=row, new_secret=secret)


def key_alerts_set(
    *,
    tenant: Tenant,
    actor: AbstractBaseUser | None,
    key_id: int,
    thresholds: list[int] | None,
) -> KeyAlerts:
    """Give the tenant's key ``key_id`` its own alert shares (None: the tenant's default
    again; []: none for this key). Another tenant's key raises DoesNotExist (404), a
    deleted key KeyAlertsConflict, bad shares AlertSettingsInvalid (``thresholds``)."""
    key = key_get(tenant=tenant, key_id=key_id)
    if key.status == ClientKey.Status.DELETED:
        raise KeyAlertsConflict(KEY_DELETED)
    if thresholds is None:
        KeyAlertOverride.objects.filter(key=key).delete()
    else:
        percents = thresholds_validate(thresholds, field="thresholds")
        KeyAlertOverride.objects.update_or_create(
            key=key, defaults={"thresholds": percents, "updated_at": timezone.now()}
        )
    logger.info(
        "key %s alert shares set to %s by %s",
        key.pk,
        "the default" if thresholds is None else thresholds,
        getattr(actor, "email", None) or "the operator",
    )
    return key_alerts_get(tenant=tenant, key=key)


def alert_test_send(*, tenant: Tenant, actor: AbstractBaseUser | None) -> AlertDelivery:
    """Send a test event to the tenant's webhook (a delivery like any other, listed in
    the log). Raises AlertSettingsInvalid (``webhook_url``) when there is none."""
    from alerts.services.deliver import deliveries_enqueue

    row = AlertSettings.objects.filter(tenant=tenant).first()
    if row is None or not row.webhook_url:
        raise AlertSettingsInvalid("webhook_url", "Set a webhook URL first.")
    now = timezone.now()
    with transaction.atomic():
        event = AlertEvent.objects.create(
            public_id=event_id_new(),
            tenant=tenant,
            type=AlertEvent.Type.TEST,
            data={
                "message": "A test of your alert webhook, sent from the Tollgate dashboard.",
                "dashboard_url": public_url("/dashboard/alerts/"),
            },
            created_at=now,
        )
        delivery = AlertDelivery.objects.create(
            event=event,
            tenant=tenant,
            channel=AlertDelivery.Channel.WEBHOOK,
            target=row.webhook_url,
            created_at=now,
            next_attempt_at=now,
        )
        transaction.on_commit(partial(deliveries_enqueue, [delivery.pk]))
    logger.info(
        "tenant %s sent a test webhook by %s",
        tenant.pk,
        getattr(actor, "email", None) or "the operator",
    )
    return delivery
