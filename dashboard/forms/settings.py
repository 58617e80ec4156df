"""The account's forms: a new API token's name, and the settings its clients see. They only
read the input; ``accounts.services`` decides, as for the REST API (``tenant_update``
checks the settings by the same rules as ``PATCH /api/v1/account``)."""

from __future__ import annotations

from typing import Any

from django import forms

from accounts.models import (
    SUPPORT_EMAIL_MAX_LENGTH,
    TENANT_NAME_MAX_LENGTH,
    Tenant,
    known_zones,
)

TOKEN_NAME_MAX_LENGTH = 100  # accounts.ApiToken.name


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=TOKEN_NAME_MAX_LENGTH,
        label="Name",
        help_text="What the token is for, e.g. billing-sync or ci.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )


def zone_choices() -> list[tuple[str, str]]:
    """Every IANA zone this machine knows, UTC first, then by name."""
    names = sorted(known_zones() - {"UTC"})
    return [("UTC", "UTC"), *((name, name.replace("_", " ")) for name in names)]


class SettingsForm(forms.Form):
    """Text as typed: the service strips it and checks each setting (a blank name, an
    address that is not one, a zone it does not know), naming the field it refuses."""

    display_name = forms.CharField(
        max_length=TENANT_NAME_MAX_LENGTH,
        label="Display name",
        help_text="Your business as your clients know it.",
        widget=forms.TextInput(attrs={"autocomplete": "organization"}),
    )
    support_email = forms.CharField(
        max_length=SUPPORT_EMAIL_MAX_LENGTH,
        required=False,
        label="Support email",
        help_text="Where your clients write with questions; leave blank for none.",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    timezone = forms.CharField(
        label="Time zone",
        help_text="Your reports' days and months start at midnight here.",
        widget=forms.Select(),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["timezone"].widget.choices = zone_choices()  # type: ignore[attr-defined]

    @classmethod
    def for_tenant(cls, tenant: Tenant) -> SettingsForm:
        return cls(
            initial={
                "display_name": tenant.name,
                "support_email": tenant.support_email,
                "timezone": tenant.timezone,
            }
        )
