"""The alerts' forms: the tenant's settings (on the settings page) and a key's own shares
(on the key's page). They only read what is typed (percents as a list, dollars, days);
``alerts.services`` checks every rule, as for the REST API, and its AlertSettingsInvalid
comes back onto the field it names (``add_service_error``)."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from alerts.exceptions import AlertSettingsInvalid
from alerts.models import EMAIL_MAX_LENGTH, WEBHOOK_URL_MAX_LENGTH, AlertSettings
from alerts.selectors import KeyAlerts
from dashboard.forms.keys import DollarsField

PERCENTS_TEXT = re.compile(r"\s*[0-9]{1,3}\s*(?:%\s*)?")
PERCENTS_INVALID = "Enter whole percents separated by commas, such as 80, 100."


def percents_text(percents: list[int]) -> str:
    return ", ".join(str(p) for p in percents)


class PercentsField(forms.CharField):
    """Whole percents as typed ("80, 100", "50 %, 90"): a list of ints ([] when blank)."""

    default_error_messages = {"invalid": PERCENTS_INVALID}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 100)
        kwargs.setdefault(
            "widget", forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "off"})
        )
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> list[int]:  # type: ignore[override]
        text = super().to_python(value) or ""
        if not text.strip():
            return []
        parts = text.split(",")
        if not all(PERCENTS_TEXT.fullmatch(part) for part in parts):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return [int(part.strip().rstrip("%").strip()) for part in parts]

    def prepare_value(self, value: Any) -> Any:
        return percents_text(value) if isinstance(value, list) else value


class _AlertsForm(forms.Form):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def add_service_error(self, error: AlertSettingsInvalid) -> None:
        """The service's refusal on the field it names (the form's own names are the API's)."""
        self.add_error(error.field if error.field in self.fields else None, str(error))


class AlertSettingsForm(_AlertsForm):
    key_thresholds = PercentsField(
        label="Key alerts at (% of a key's budget or cap)",
        help_text="Whole percents separated by commas, such as 80, 100; empty for none. "
        "A key's own page can set others for it.",
    )
    wallet_balance_below = DollarsField(
        required=False,
        label="Wallet balance under ($)",
        help_text="An alert when your available money falls under this; empty for none.",
    )
    wallet_runway_days_below = forms.IntegerField(
        required=False,
        label="Wallet runway under (days)",
        help_text="An alert when your available money lasts fewer days than this at the "
        "last 7 days' pace; empty for none.",
        widget=forms.NumberInput(attrs={"inputmode": "numeric", "min": 1, "max": 365}),
    )
    email = forms.BooleanField(required=False, label="Email me the alerts")
    email_to = forms.CharField(
        required=False,
        max_length=EMAIL_MAX_LENGTH,
        label="Send the emails to",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    webhook_url = forms.CharField(
        required=False,
        max_length=WEBHOOK_URL_MAX_LENGTH,
        label="Webhook URL",
        help_text="Each alert is also POSTed here as signed JSON (https only); empty for none.",
        widget=forms.URLInput(attrs={"autocomplete": "off", "placeholder": "https://"}),
    )

    @classmethod
    def for_settings(cls, row: AlertSettings, *, owner_email: str) -> AlertSettingsForm:
        form = cls(
            initial={
                "key_thresholds": row.key_thresholds,
                "wallet_balance_below": row.wallet_balance_below_nanos,
                "wallet_runway_days_below": row.wallet_runway_days_below,
                "email": row.is_email_on,
                "email_to": row.email_to,
                "webhook_url": row.webhook_url,
            }
        )
        form.describe_owner(owner_email)
        return form

    def describe_owner(self, owner_email: str) -> None:
        self.fields["email_to"].help_text = f"Empty: your sign-in address, {owner_email}."

    def changes(self) -> dict[str, Any]:
        """The settings as ``alert_settings_update`` takes them (the API's names)."""
        data = self.cleaned_data
        return {
            "key_thresholds": data["key_thresholds"],
            "wallet_balance_below": data["wallet_balance_below"],
            "wallet_runway_days_below": data["wallet_runway_days_below"],
            "email": data["email"],
            "email_to": data["email_to"].strip() or None,
            "webhook_url": data["webhook_url"].strip() or None,
        }


class KeyAlertsForm(_AlertsForm):
    DEFAULT = "default"
    OWN = "own"

    mode = forms.ChoiceField(
        choices=[(DEFAULT, "The account's default"), (OWN, "This key's own")],
        widget=forms.RadioSelect,
        initial=DEFAULT,
        label="Alerts for this key",
    )
    thresholds = PercentsField(
        label="This key's alerts at (%)",
        help_text="Whole percents separated by commas, such as 50, 90, 100; empty for no "
        "alerts about this key.",
    )

    @classmethod
    def for_key(cls, alerts: KeyAlerts) -> KeyAlertsForm:
        return cls(
            initial={
                "mode": cls.DEFAULT if alerts.uses_default else cls.OWN,
                "thresholds": alerts.effective,
            }
        )

    def thresholds_chosen(self) -> list[int] | None:
        """What ``key_alerts_set`` takes: None for the default, else the key's own."""
        if self.cleaned_data["mode"] == self.DEFAULT:
            return None
        return list(self.cleaned_data["thresholds"])
