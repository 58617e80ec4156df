"""The key pages' forms. They only parse what a reseller types (dollars as text, a markup
in percent, a local date and time) into the arguments ``keys.services`` takes; every rule
about keys (ranges, ratios, funds) is the service's, and its ClientKeyInvalid comes back
onto the form's field through ``add_service_error``."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from billing.money import MoneyError, format_usd, parse_usd
from billing.selectors import known_models
from keys.exceptions import ClientKeyInvalid
from keys.models import TAG_MAX_LENGTH, ClientKey
from keys.selectors import LISTABLE_STATUSES

FIELD_TEMPLATE = "dashboard/keys/partials/field.html"
LOCAL_DATETIME_FORMAT = "%Y-%m-%dT%H:%M"
# A markup is "your cost plus N %": the ratio's two amounts are $100 and $(100 + N).
MARKUP_BASE = Decimal(100)
MARKUP_TEXT = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?")

FUNDING_CHOICES = [
    (ClientKey.Funding.PREPAID, "Prepaid: set the client's budget aside now"),
    (ClientKey.Funding.WALLET, "Wallet: each request draws from your wallet"),
]
BUDGET_PERIOD_CHOICES = [
    (ClientKey.BudgetPeriod.NONE, "Never"),
    (ClientKey.BudgetPeriod.DAILY, "Every day (UTC)"),
    (ClientKey.BudgetPeriod.WEEKLY, "Every week (Monday, UTC)"),
    (ClientKey.BudgetPeriod.MONTHLY, "Every month (UTC)"),
]
STATUS_FILTER_CHOICES = [("", "All")] + [
    (status, status.capitalize()) for status in LISTABLE_STATUSES
]
UNTAGGED = "-"  # the tag filter's value for keys without a default tag


class DollarsField(forms.CharField):
    """Dollars as typed ("100", "12.50", "$60"), read exactly by ``parse_usd``; the value
    is nano-dollars (None when blank)."""

    default_error_messages = {"invalid": "Enter an amount in dollars, such as 100 or 12.50."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault(
            "widget", forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"})
        )
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> int | None:  # type: ignore[override]
        text = super().to_python(value)
        if not text:
            return None
        try:
            return parse_usd(text.removeprefix("$").strip())
        except MoneyError:
            raise ValidationError(self.error_messages["invalid"], code="invalid") from None

    def prepare_value(self, value: Any) -> Any:
        return format_usd(value) if isinstance(value, int) else value


class MarkupField(forms.CharField):
    """A markup in percent ("25", "12.5 %"), at most 2 decimal places; a Decimal."""

    default_error_messages = {"invalid": "Enter a percentage such as 25 or 12.5."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault(
            "widget", forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"})
        )
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Decimal | None:  # type: ignore[override]
        text = super().to_python(value)
        if not text:
            return None
        text = text.removesuffix("%").strip()
        if not MARKUP_TEXT.fullmatch(text):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return Decimal(text)


class LocalDateTimeField(forms.DateTimeField):
    """A date and time in the tenant's zone (``zone``), typed in a datetime-local input."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault(
            "widget",
            forms.DateTimeInput(attrs={"type": "datetime-local"}, format=LOCAL_DATETIME_FORMAT),
        )
        kwargs.setdefault("input_formats", [LOCAL_DATETIME_FORMAT, "%Y-%m-%dT%H:%M:%S"])
        self.zone = ZoneInfo("UTC")
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> datetime | None:
        with timezone.override(self.zone):
            return super().to_python(value)

    def prepare_value(self, value: Any) -> Any:
        with timezone.override(self.zone):
            return super().prepare_value(value)


class DashboardForm(forms.Form):
    """Fields drawn with the dashboard's field template (label, input, help, errors)."""

    def __init__(self, *args: Any, zone: ZoneInfo | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.template_name = FIELD_TEMPLATE  # type: ignore[attr-defined] # Django 5
            if isinstance(field, LocalDateTimeField) and zone is not None:
                field.zone = zone

    # Where a service's ClientKeyInvalid lands: its ``field`` names the service argument.
    service_fields: dict[str, str] = {}

    def add_service_error(self, error: ClientKeyInvalid) -> None:
        field = self.service_fields.get(error.field, error.field)
        self.add_error(field if field in self.fields else None, str(error))


def _model_choices() -> list[tuple[str, str]]:
    return [(model, model) for model in sorted(known_models())]


class KeyLimitFields(DashboardForm):
    """Limits, expiry and tag: set at creation, changeable any time."""

    rpm = forms.IntegerField(initial=settings.DEFAULT_KEY_RPM, label="Requests per minute")
    tpm = forms.IntegerField(
        required=False, label="Tokens per minute", help_text="Blank for no limit."
    )
    max_concurrency = forms.IntegerField(
        initial=settings.DEFAULT_KEY_MAX_CONCURRENCY, label="Concurrent requests"
    )
    models = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Allowed models",
        help_text="None ticked: every priced model.",
    )
    expires_at = LocalDateTimeField(
        required=False, label="Expires", help_text="In your time zone; blank: never."
    )
    default_tag = forms.CharField(
        max_length=TAG_MAX_LENGTH,
        required=False,
        label="Default tag",
        help_text="Groups the key's requests in reports; a request may send its own.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["models"].choices = _model_choices()  # type: ignore[attr-defined]

    def limit_terms(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "rpm": data["rpm"],
            "tpm": data["tpm"],
            "max_concurrency": data["max_concurrency"],
            "models": list(data["models"]),
            "expires_at": data["expires_at"],
            "default_tag": data["default_tag"],
        }


class KeyCreateForm(KeyLimitFields):
    """A new key's terms; ``service_terms()`` are ``key_create``'s (and its quote's)
    arguments. A prepaid key reads ``client_budget``/``your_cost``; a wallet-funded key
    reads ``markup`` (as a ratio), ``spend_cap`` and ``budget_period``, and the other
    funding's inputs are ignored (both are on the page when JavaScript is off)."""

    label = forms.CharField(
        max_length=200, label="Label", help_text="Who the key is for, e.g. acme-corp-prod."
    )
    funding = forms.ChoiceField(
        choices=FUNDING_CHOICES,
        initial=ClientKey.Funding.PREPAID,
        widget=forms.RadioSelect,
        label="Funding",
    )
    client_budget = DollarsField(
        required=False,
        label="Client budget ($)",
        help_text="What your client may spend, in the prices they pay.",
    )
    your_cost = DollarsField(
        required=False,
        label="Your cost ($)",
        help_text="What leaves your wallet now. Budget and cost fix the key's price ratio.",
    )
    markup = MarkupField(
        required=False,
        label="Markup (%)",
        help_text="Your client pays your cost plus this much; blank for none.",
    )
    spend_cap = DollarsField(
        required=False,
        label="Spend cap ($)",
        help_text="In client prices; blank: only your wallet bounds the key.",
    )
    budget_period = forms.ChoiceField(
        choices=BUDGET_PERIOD_CHOICES,
        initial=ClientKey.BudgetPeriod.NONE,
        label="Cap resets",
    )

    field_order = ["label", "funding", "client_budget", "your_cost", "markup", "spend_cap"]

    @property
    def is_wallet(self) -> bool:
        return self.cleaned_data.get("funding") == ClientKey.Funding.WALLET

    @property
    def service_fields(self) -> dict[str, str]:  # type: ignore[override]
        if self.is_wallet:
            # A wallet-funded key's ratio comes from the markup.
            return {"client_budget": "markup", "your_cost": "markup"}
        return {}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        markup = data.get("markup")
        data["ratio_amounts"] = (None, None)
        if self.is_wallet and markup:
            try:
                data["ratio_amounts"] = (parse_usd(MARKUP_BASE + markup), parse_usd(MARKUP_BASE))
            except MoneyError:
                self.add_error("markup", "Must be at most 99,900 %.")
        return data

    def service_terms(self) -> dict[str, Any]:
        data = self.cleaned_data
        terms = {"label": data["label"], "funding": data["funding"], **self.limit_terms()}
        if not self.is_wallet:
            return {
                **terms,
                "client_budget_nanos": data["client_budget"],
                "your_cost_nanos": data["your_cost"],
            }
        client, cost = data["ratio_amounts"]
        return {
            **terms,
            "client_budget_nanos": client,
            "your_cost_nanos": cost,
            "spend_cap_nanos": data["spend_cap"],
            "budget_period": data["budget_period"],
        }


class KeyLimitsForm(KeyLimitFields):
    """A key's label, tag and limits (and, for a wallet-funded key, its spend cap and the
    cap's period): ``changes()`` are ``key_update``'s."""

    label = forms.CharField(max_length=200, label="Label")
    spend_cap = DollarsField(
        required=False,
        label="Spend cap ($)",
        help_text="In client prices; blank: only your wallet bounds the key.",
    )
    budget_period = forms.ChoiceField(choices=BUDGET_PERIOD_CHOICES, label="Cap resets")

    field_order = ["label", "default_tag", "rpm", "tpm", "max_concurrency", "expires_at"]

    def __init__(self, *args: Any, key: ClientKey, **kwargs: Any) -> None:
        kwargs.setdefault(
            "initial",
            {
                "label": key.label,
                "default_tag": key.default_tag,
                "rpm": key.requests_per_minute,
                "tpm": key.tokens_per_minute,
                "max_concurrency": key.max_concurrency,
                "models": key.allowed_models,
                "expires_at": key.expires_at,
                "spend_cap": key.spend_cap_nanos,
                "budget_period": key.budget_period,
            },
        )
        super().__init__(*args, **kwargs)
        self.key = key
        if key.is_prepaid:
            del self.fields["spend_cap"], self.fields["budget_period"]

    def changes(self) -> dict[str, Any]:
        terms = self.limit_terms()
        changes = {
            "label": self.cleaned_data["label"],
            "default_tag": terms["default_tag"],
            "rpm": terms["rpm"],
            "tpm": terms["tpm"],
            "max_concurrency": terms["max_concurrency"],
            "models": terms["models"],
            "expires_at": terms["expires_at"],
        }
        if not self.key.is_prepaid:
            changes["spend_cap"] = self.cleaned_data["spend_cap"]
            changes["budget_period"] = self.cleaned_data["budget_period"]
        return changes


class KeyTopUpForm(DashboardForm):
    client_amount = DollarsField(label="Client amount ($)")


class KeyFilterForm(forms.Form):
    """The keys list's filters (GET): status, default tag, a label search."""

    status = forms.ChoiceField(choices=STATUS_FILTER_CHOICES, required=False, label="Status")
    tag = forms.ChoiceField(required=False, label="Tag")
    q = forms.CharField(required=False, max_length=200, label="Search labels")

    def __init__(self, *args: Any, tags: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tag"].choices = [  # type: ignore[attr-defined]
            ("", "All tags"),
            (UNTAGGED, "No tag"),
            *((tag, tag) for tag in tags),
        ]

    def filters(self) -> dict[str, Any]:
        """``keys.selectors.key_list``'s filter arguments (none for an invalid query)."""
        if not self.is_valid():
            return {}
        data = self.cleaned_data
        tag = data["tag"]
        return {
            "status": data["status"] or None,
            "tag": "" if tag == UNTAGGED else (tag or None),
            "label_contains": data["q"].strip(),
        }
