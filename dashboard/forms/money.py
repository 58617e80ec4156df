"""The filters of the money pages (GET forms): the wallet's ledger and the earnings range.
They only read the query; the figures come from the selectors the REST API uses."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from django import forms

from billing.models import LedgerEntry
from usage.windows import MOMENT_YEARS

# The earliest month a report may start (no reseller's traffic is older), and the longest
# range: ten years, as the REST API's reports allow.
FIRST_YEAR = 2000
MAX_MONTHS = 120
# The earnings page's default range: the last twelve months, this one included.
DEFAULT_MONTHS = 12

MONTH_TEXT = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


def months_back(month: date, count: int) -> date:
    """The first day of the month ``count`` months before ``month``'s."""
    index = month.year * 12 + month.month - 1 - count
    return date(index // 12, index % 12 + 1, 1)


class DateInput(forms.DateInput):
    input_type = "date"


class LedgerFilterForm(forms.Form):
    """``?kind=&since=&until=``: the entries of one kind, posted from the first day to the
    last (both inclusive, days in the tenant's time zone)."""

    kind = forms.ChoiceField(
        choices=[("", "All kinds"), *LedgerEntry.Kind.choices], required=False, label="Kind"
    )
    since = forms.DateField(required=False, label="From", widget=DateInput())
    until = forms.DateField(required=False, label="To", widget=DateInput())

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        for name in ("since", "until"):
            day = data.get(name)
            if day is not None and day.year not in MOMENT_YEARS:
                # A day's midnight must stay on the calendar in every zone (as the API's).
                self.add_error(
                    name, f"Give a day from {MOMENT_YEARS.start} to {MOMENT_YEARS.stop - 1}."
                )
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and since > until:
            self.add_error("until", "Must be on or after the first day.")
        return data


class MonthInput(forms.TextInput):
    input_type = "month"


class MonthField(forms.CharField):
    """A calendar month as ``YYYY-MM`` (what ``<input type=month>`` sends), read as the
    month's first day."""

    widget = MonthInput

    def widget_attrs(self, widget: forms.Widget) -> dict[str, Any]:
        return {
            **super().widget_attrs(widget),
            "placeholder": "YYYY-MM",
            "pattern": "[0-9]{4}-[0-9]{2}",
            "min": f"{FIRST_YEAR}-01",
        }

    def to_python(self, value: Any) -> date | None:  # type: ignore[override]
        text = super().to_python(value)
        if not text:
            return None
        match = MONTH_TEXT.fullmatch(text)
        if match is None or int(match[1]) < FIRST_YEAR:
            raise forms.ValidationError(
                f"Give a month as YYYY-MM, from {FIRST_YEAR}-01 (e.g. 2026-03)."
            )
        return date(int(match[1]), int(match[2]), 1)

    def prepare_value(self, value: Any) -> Any:
        return f"{value:%Y-%m}" if isinstance(value, date) else value


class EarningsRangeForm(forms.Form):
    """``?start=YYYY-MM&end=YYYY-MM``: whole months of the tenant's time zone, both
    included, up to the current one (``this_month``, its first day) and at most
    ``MAX_MONTHS`` of them."""

    start = MonthField(label="From")
    end = MonthField(label="To")

    def __init__(self, *args: Any, this_month: date, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.this_month = this_month
        self.fields["start"].widget.attrs["max"] = f"{this_month:%Y-%m}"
        self.fields["end"].widget.attrs["max"] = f"{this_month:%Y-%m}"

    @classmethod
    def default_range(cls, this_month: date) -> tuple[date, date]:
        return months_back(this_month, DEFAULT_MONTHS - 1), this_month

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        start, end = data.get("start"), data.get("end")
        if end is not None and end > self.this_month:
            self.add_error("end", f"{end:%Y-%m} has not begun yet.")
        elif start is not None and end is not None:
            if start > end:
                self.add_error("end", "Must be the same month as From or a later one.")
            elif months_back(end, MAX_MONTHS - 1) > start:
                self.add_error("start", f"At most {MAX_MONTHS} months (10 years) at once.")
        return data
