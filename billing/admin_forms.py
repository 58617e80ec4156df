"""Forms of the operator admin (``billing.admin``): they read USD and check input; the
admin hands the cleaned values to ``billing.services``."""

from __future__ import annotations

from typing import Any, cast

from django import forms

from billing.exceptions import UpstreamInvalid
from billing.models import PROVIDER_KINDS, LedgerEntry, ModelPrice, Upstream
from billing.money import MoneyError, PriceTier, parse_usd, tier_parse, tiers_invalid
from billing.services import upstream_base_url_validate


def usd_field(raw: str, *, required: bool) -> int | None:
    """A form's USD input as nano-dollars (exact; at most 9 decimal places)."""
    raw = (raw or "").strip()
    if not raw:
        if required:
            raise forms.ValidationError("This field is required.")
        return None
    try:
        return parse_usd(raw)
    except MoneyError as exc:
        raise forms.ValidationError(f"Not a valid USD amount: {exc}.") from exc


class WalletCreditForm(forms.Form):
    amount = forms.CharField(
        label="Amount (USD)", help_text="e.g. 100 or 12.50; an adjustment may be negative."
    )
    kind = forms.ChoiceField(
        choices=[
            (LedgerEntry.Kind.MANUAL_CREDIT, LedgerEntry.Kind.MANUAL_CREDIT.label),
            (LedgerEntry.Kind.ADJUSTMENT, LedgerEntry.Kind.ADJUSTMENT.label),
        ]
    )
    reason = forms.CharField(max_length=500, help_text="Kept in the ledger.")
    # Minted with the form: submitting it twice (a double click, a reload) posts once.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=200)

    def clean_amount(self) -> int | None:
        return usd_field(self.cleaned_data["amount"], required=True)


class UpstreamForm(forms.ModelForm):
    base_url = forms.URLField(
        max_length=500,
        assume_scheme="https",
        help_text="As the SDKs take it: https://api.openai.com/v1, https://api.anthropic.com.",
    )
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only: stored encrypted, never shown. Leave blank to keep the current key.",
    )
    clear_api_key = forms.BooleanField(
        label="Remove the stored API key", required=False, help_text="Use the env variable instead."
    )

    class Meta:
        model = Upstream
        fields = ["name", "kind", "base_url", "api_key_env", "timeout_seconds", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kind = cast(forms.ChoiceField, self.fields["kind"])
        if self.instance.pk is not None and self.instance.is_demo:
            # The built-in demo: the operator may turn it off (or on), not make it a provider.
            kind.disabled = True
            kind.help_text = (
                "Answers inside Tollgate with a canned reply; no provider is called. "
                "Untick Active to take the demo model away."
            )
        else:
            kind.choices = [
                (value, label) for value, label in Upstream.Kind.choices if value in PROVIDER_KINDS
            ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind = cleaned.get("kind") or getattr(self.instance, "kind", "")
        base_url = cleaned.get("base_url")
        if kind and base_url:
            try:
                cleaned["base_url"] = upstream_base_url_validate(kind=kind, base_url=base_url)
            except UpstreamInvalid as exc:
                self.add_error("base_url", str(exc))
        if cleaned.get("api_key") and cleaned.get("clear_api_key"):
            self.add_error("clear_api_key", "Give a new key or remove the stored one, not both.")
        return cleaned


class PriceAddForm(forms.ModelForm):
    input_usd = forms.CharField(label="Input (USD per 1M tokens)")
    output_usd = forms.CharField(label="Output (USD per 1M tokens)")
    cached_input_usd = forms.CharField(
        label="Cached input (USD per 1M tokens)", required=False, help_text="Default: input."
    )
    cache_write_usd = forms.CharField(
        label="Cache write (USD per 1M tokens)", required=False, help_text="Default: input."
    )
    cache_write_1h_usd = forms.CharField(
        label="One-hour cache write (USD per 1M tokens)",
        required=False,
        help_text="Anthropic bills 2× input. Default: cache write.",
    )
    # Not "tiers": that is the model's JSON field, which this text is parsed into.
    tiers_text = forms.CharField(
        label="Long-prompt tiers",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=(
            "One per line, ABOVE:INPUT:OUTPUT[:CACHED[:CACHE_WRITE[:WRITE_1H]]]: the rates "
            "(USD per 1M tokens) of every token of a request whose prompt is over ABOVE "
            "tokens, e.g. 200000:6:22.5:0.6:7.5. Thresholds rising."
        ),
    )

    class Meta:
        model = ModelPrice
        fields = ["route"]

    def clean_input_usd(self) -> int | None:
        return usd_field(self.cleaned_data["input_usd"], required=True)

    def clean_output_usd(self) -> int | None:
        return usd_field(self.cleaned_data["output_usd"], required=True)

    def clean_cached_input_usd(self) -> int | None:
        return usd_field(self.cleaned_data["cached_input_usd"], required=False)

    def clean_cache_write_usd(self) -> int | None:
        return usd_field(self.cleaned_data["cache_write_usd"], required=False)

    def clean_cache_write_1h_usd(self) -> int | None:
        return usd_field(self.cleaned_data["cache_write_1h_usd"], required=False)

    def clean_tiers_text(self) -> tuple[PriceTier, ...]:
        tiers = []
        for line in self.cleaned_data["tiers_text"].splitlines():
            if not line.strip():
                continue
            try:
                tiers.append(tier_parse(line))
            except MoneyError as exc:
                raise forms.ValidationError(f"{line.strip()!r}: {exc}") from exc
        problem = tiers_invalid(tiers)
        if problem is not None:
            raise forms.ValidationError(problem)
        return tuple(tiers)
