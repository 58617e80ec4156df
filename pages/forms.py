"""The query form both page apps' usage reports read: which stretch of usage.

``?window=7d|30d|90d`` or ``?month=YYYY-MM`` become a ``usage.windows.Span`` by the rules the
REST API's ``?window=`` follows (``usage.windows``), in the reseller's time zone.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django import forms

from usage.windows import MonthInvalid, Span, Window, month_parse, month_span, window_span

# The windows the usage page offers.
USAGE_WINDOWS = {
    "7d": Window(label="7d", length=timedelta(days=7)),
    "30d": Window(label="30d", length=timedelta(days=30)),
    "90d": Window(label="90d", length=timedelta(days=90)),
}
DEFAULT_USAGE_WINDOW = "30d"


class UsageSpanForm(forms.Form):
    """``?window=7d|30d|90d`` (30 days by default) or ``?month=YYYY-MM`` (a calendar month
    of the reseller's time zone, which wins when both are given)."""

    window = forms.ChoiceField(
        choices=[(name, f"{window.length.days} days") for name, window in USAGE_WINDOWS.items()],
        required=False,
        error_messages={"invalid_choice": "Choose 7, 30 or 90 days."},
    )
    month = forms.CharField(required=False, max_length=7)

    def __init__(self, data: Any, *, zone: ZoneInfo) -> None:
        super().__init__(data)
        self.zone = zone

    def clean_month(self) -> tuple[int, int] | None:
        text = self.cleaned_data["month"]
        if not text:
            return None
        try:
            return month_parse(text, zone=self.zone)
        except MonthInvalid as exc:
            raise forms.ValidationError(str(exc)) from exc

    def span(self) -> Span:
        """The span asked for; the default window where the query could not be read (the
        form's errors say why)."""
        asked = self.cleaned_data if self.is_valid() else {}
        if asked.get("month"):
            year, month = asked["month"]
            return month_span(year=year, month=month, zone=self.zone)
        window = USAGE_WINDOWS[asked.get("window") or DEFAULT_USAGE_WINDOW]
        return window_span(window, zone=self.zone)

    @property
    def window_name(self) -> str | None:
        """The window shown (None when a month is)."""
        asked = self.cleaned_data if self.is_valid() else {}
        if asked.get("month"):
            return None
        return asked.get("window") or DEFAULT_USAGE_WINDOW

    @property
    def month_value(self) -> str:
        asked = self.cleaned_data.get("month") if self.is_valid() else None
        return f"{asked[0]:04d}-{asked[1]:02d}" if asked else ""
