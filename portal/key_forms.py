"""The query forms of a bound key's reports in the portal: which stretch of usage, which
requests and which page of them.

They only parse (``clean``). A window or a month becomes a ``usage.windows.Span`` by the
rules the reseller's reports follow (``usage.windows``), in the reseller's time zone. The
request filters speak the client's words: a request is ``ok``, an ``error`` (refused or
failed: what the reports count as errors) or ``stopped`` (the caller hung up mid-answer and
paid for what was produced); a page is a cursor, the position of the last request shown
(keyset paging: a page deep in a long list costs what the first one does, and requests
arriving meanwhile never shift it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django import forms

from usage.models import ERROR_STATUSES, MODEL_MAX_LENGTH, Trace

# ------------------------------------------------------------------------------ requests


class Outcome:
    """What became of a request, as the client reads it (``?status=``): the trace statuses
    each stands for, and the label of each trace status on the page."""

    OK = "ok"
    ERROR = "error"
    STOPPED = "stopped"

    CHOICES = [("", "Any"), (OK, "OK"), (ERROR, "Errors"), (STOPPED, "Stopped early")]
    STATUSES: dict[str, tuple[str, ...]] = {
        OK: (Trace.Status.OK,),
        ERROR: tuple(ERROR_STATUSES),
        STOPPED: (Trace.Status.CLIENT_DISCONNECTED,),
    }
    # A trace status → (outcome, label, badge class).
    OF_STATUS: dict[str, tuple[str, str, str]] = {
        Trace.Status.OK: (OK, "OK", "badge-good"),
        Trace.Status.REFUSED: (ERROR, "Refused", "badge-bad"),
        Trace.Status.UPSTREAM_ERROR: (ERROR, "Failed", "badge-bad"),
        Trace.Status.CLIENT_DISCONNECTED: (STOPPED, "Stopped early", "badge-warn"),
    }

    @classmethod
    def of(cls, status: str) -> tuple[str, str, str]:
        """A trace status's (outcome, label, badge class); a status added later reads as
        an error until it is named here."""
        return cls.OF_STATUS.get(status, (cls.ERROR, "Error", "badge-bad"))


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a key's requests, newest first: a request's ``created_at`` and id.
    Written ``<microseconds since 1970 UTC>-<id>`` in a link."""

    at: datetime
    trace_id: int

    def __str__(self) -> str:
        return f"{(self.at - EPOCH) // ONE_MICROSECOND}-{self.trace_id}"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)
CURSOR_TEXT = re.compile(r"([0-9]{1,17})-([0-9]{1,18})")


class CursorField(forms.CharField):
    default_error_messages = {"invalid": "This page link is broken: start again from the newest."}

    def to_python(self, value: Any) -> Cursor | None:  # type: ignore[override]
        text = super().to_python(value)
        if not text:
            return None
        match = CURSOR_TEXT.fullmatch(text)
        if match is None:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        try:
            at = EPOCH + int(match[1]) * ONE_MICROSECOND
        except OverflowError:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None
        return Cursor(at=at, trace_id=int(match[2]))


class RequestFilterForm(forms.Form):
    """``?model=``, ``?status=ok|error|stopped``, and the page: ``?before=`` (requests
    older than a cursor) or ``?after=`` (newer), the newest without either."""

    model = forms.CharField(required=False, max_length=MODEL_MAX_LENGTH)
    status = forms.ChoiceField(
        choices=Outcome.CHOICES,
        required=False,
        error_messages={"invalid_choice": "Choose OK, errors or stopped early."},
    )
    before = CursorField(required=False)
    after = CursorField(required=False)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("before") and cleaned.get("after"):
            self.add_error("after", "Give one page link, not two.")
        return cleaned

    @property
    def is_filtered(self) -> bool:
        return bool(self.is_valid() and (self.cleaned_data["model"] or self.cleaned_data["status"]))
