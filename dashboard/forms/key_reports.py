"""The query forms of a key's reports: which stretch of usage, which requests.

They only parse (``clean``): a window or month becomes a ``usage.windows.Span`` by the
rules the REST API's ``?window=`` / ``?since=&until=`` follow, and the request filters
become the keyword arguments of ``usage.selectors.trace_list``, as the API's filters do.
Times a person types (``datetime-local`` inputs) are read in the tenant's time zone.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from django import forms

from keys.models import TAG_MAX_LENGTH
from usage.models import MODEL_MAX_LENGTH, Trace
from usage.windows import (
    MOMENT_YEARS,
    MomentInvalid,
    moment_parse,
    placed,
)


class MomentField(forms.CharField):
    """A date, or a date and a time (``datetime-local`` sends ``2026-03-01T09:30``), read
    as the API's ``?since=`` reads it (``usage.windows.moment_parse``); the form places it
    in the tenant's zone when it has no offset."""

    default_error_messages = {
        "invalid": "Give a date and time such as 2026-03-01T09:30.",
        "year": f"Give a year from {MOMENT_YEARS.start} to {MOMENT_YEARS.stop - 1}.",
    }

    def to_python(self, value: Any) -> date | datetime | None:  # type: ignore[override]
        text = super().to_python(value)
        if not text:
            return None
        try:
            return moment_parse(text)
        except MomentInvalid as exc:
            raise forms.ValidationError(self.error_messages[exc.code], code=exc.code) from exc


class RequestFilterForm(forms.Form):
    """A key's requests: ``model``, ``status``, ``tag`` (or ``untagged``), ``since`` and
    ``until`` (``since`` inclusive, ``until`` exclusive), ``page`` (from 1)."""

    model = forms.CharField(required=False, max_length=MODEL_MAX_LENGTH)
    status = forms.ChoiceField(choices=[("", "Any status"), *Trace.Status.choices], required=False)
    tag = forms.CharField(required=False, max_length=TAG_MAX_LENGTH)
    untagged = forms.BooleanField(required=False, label="Untagged only")
    since = MomentField(required=False, label="From")
    until = MomentField(required=False, label="Until")
    page = forms.IntegerField(required=False, min_value=1, max_value=10**9)

    def __init__(self, data: Any, *, zone: ZoneInfo) -> None:
        super().__init__(data)
        self.zone = zone

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in ("since", "until"):
            if cleaned.get(name) is not None:
                cleaned[name] = placed(cleaned[name], self.zone)
        since, until = cleaned.get("since"), cleaned.get("until")
        if since is not None and until is not None and since >= until:
            self.add_error("until", "Must be later than From.")
        if cleaned.get("untagged") and cleaned.get("tag"):
            self.add_error("tag", "Give a tag or tick Untagged only, not both.")
        return cleaned

    def filters(self) -> dict[str, Any]:
        """``trace_list``'s filters (a valid form's): ``tag=""`` keeps untagged requests,
        a filter left empty is not applied."""
        asked = self.cleaned_data
        tag = "" if asked["untagged"] else (asked["tag"] or None)
        return {
            "since": asked["since"],
            "until": asked["until"],
            "model": asked["model"] or None,
            "status": asked["status"] or None,
            "tag": tag,
        }

    @property
    def page_number(self) -> int:
        return (self.cleaned_data.get("page") if self.is_valid() else None) or 1
