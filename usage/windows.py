"""The look-back window of the reports (``?window=30d``) and how an answer states it.

Every report of ``usage.apis`` (under ``/api/v1/`` and the sub-account API's under ``/v1/``)
parses ``?window=`` the same way (``1h`` to ``366d``, 30 days by default) and puts
``window``, ``since`` and ``until`` before the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request

from config.serializers import StrictQuerySerializer


@dataclass(frozen=True, slots=True)
class Window:
    """A look-back window ending now, as the caller wrote it (``30d``, ``12h``)."""

    label: str
    length: timedelta


# The schema's pattern for ?window= (config.openapi): a number of days or hours as sent, no
# spaces; the range (WINDOW_MIN..WINDOW_MAX) is checked after it.
WINDOW_PATTERN = r"^([0-9]{1,4})([dh])$"
WINDOW_TEXT = re.compile(WINDOW_PATTERN)
WINDOW_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1)}
WINDOW_MIN = timedelta(hours=1)
WINDOW_MAX = timedelta(days=366)
DEFAULT_WINDOW = Window(label="30d", length=timedelta(days=30))


@extend_schema_field({"type": "string", "pattern": WINDOW_PATTERN, "example": "30d"})
class WindowField(serializers.CharField):
    """``?window=``: a whole number of days or hours, ``1h`` to ``366d``."""

    default_error_messages = {
        **serializers.CharField.default_error_messages,
        "invalid": "Give a number of days or hours, from 1h to 366d (e.g. 30d, 24h).",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> Window:  # type: ignore[override]
        match = WINDOW_TEXT.fullmatch(super().to_internal_value(data))
        if match is None:
            self.fail("invalid")
        count, unit = int(match[1]), match[2]
        length = count * WINDOW_UNITS[unit]
        if not WINDOW_MIN <= length <= WINDOW_MAX:
            self.fail("invalid")
        return Window(label=f"{count}{unit}", length=length)


class WindowSerializer(StrictQuerySerializer):
    window = WindowField(
        required=False,
        help_text=(
            "The look-back window ending now, in days or hours: 1h to 366d (8784h); 30d by default."
        ),
    )


@dataclass(frozen=True, slots=True)
class Span:
    """A window placed in time: ``since <= created_at < until``."""

    label: str
    since: datetime
    until: datetime


class SpanSerializer(serializers.Serializer):
    window = serializers.CharField(source="label")
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()


def request_span(request: Request) -> Span:
    """The window the query asks for, ending now (400 for a malformed one)."""
    params = WindowSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    window: Window = params.validated_data.get("window", DEFAULT_WINDOW)
    until = timezone.now()
    return Span(label=window.label, since=until - window.length, until=until)


def window_fields(span: Span) -> dict[str, Any]:
    return SpanSerializer(span).data


def by_tag_in_window(
    tag_serializer: type[serializers.Serializer],
) -> type[serializers.Serializer]:
    """The schema's account of a by-tag answer, which the view builds as the window's fields
    and ``by_tag``; named ``<View>.ResponseSerializer`` after ``<View>.OutputSerializer``."""

    class ResponseSerializer(SpanSerializer):
        """Usage per tag in the window, largest first; untagged requests are the tag ``""``."""

        by_tag = tag_serializer(many=True)

    view_name = tag_serializer.__qualname__.rpartition(".")[0]
    ResponseSerializer.__qualname__ = f"{view_name}.ResponseSerializer"
    return ResponseSerializer
