"""Which stretch of time a report covers (``?window=30d``, or ``?since=&until=``), in which
time zone (``?tz=``), and how an answer states it.

Every report of ``usage.apis`` (under ``/api/v1/`` and the sub-account API's under ``/v1/``)
reads its query through ``request_span``, the one place these rules live:

* ``?window=``: a look-back ending now, ``1h`` to ``366d`` (30 days when nothing is given);
* ``?since=`` (required with ``until``) and ``?until=`` (now by default): ISO 8601 times, or
  plain dates ``YYYY-MM-DD`` meaning midnight in the report's zone; a time without an offset
  is also read in that zone. ``since < until``, at most ``SPAN_MAX`` apart; ``window``
  together with either is a 400;
* ``?tz=``: an IANA zone for this call; the tenant's own (``Tenant.timezone``) otherwise.
  Days and months of the report start at midnight in it.

The answer puts ``window`` (null for a ``since``/``until`` range), ``since``, ``until`` (with
the zone's offset) and ``timezone`` before the report.

A calendar month of a zone (a statement's, the dashboard's month picker) is ``YYYY-MM``, from
``2000-01`` to the current month there (``month_parse``); the dashboard's pages build their
spans with ``window_span`` and ``month_span``, the same rules without a query string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request

from accounts.authentication import request_tenant
from accounts.models import ZONE_NAME_MAX_LENGTH, zone_validate
from config.serializers import StrictQuerySerializer
from usage.selectors import month_bounds


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

# ?since= and ?until=: a date, or a date and a time (ISO 8601, offset optional). The pattern
# is the schema's and is checked first; the parse then decides (``2026-02-30`` is refused).
MOMENT_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.,]+(Z|[+-][0-9:]+)?)?$"
MOMENT_TEXT = re.compile(MOMENT_PATTERN)
DATE_ONLY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# Years a report may name: wide enough for any real question, narrow enough that a zone's
# offset can never push a time off the calendar Python and the databases share.
MOMENT_YEARS = range(1970, 3000)
# The longest since/until range: ten years, leap days and a daylight-saving hour included.
SPAN_MAX = timedelta(days=3654)


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


@extend_schema_field(
    {"type": "string", "pattern": MOMENT_PATTERN, "example": "2026-01-01T00:00:00Z"}
)
class MomentField(serializers.CharField):
    """``?since=``/``?until=``: a date, or a date and time; placed in a zone by ``placed``."""

    default_error_messages = {
        **serializers.CharField.default_error_messages,
        "invalid": (
            "Give an ISO 8601 time (2026-03-01T00:00:00Z, 2026-03-01T09:30+05:30) or a date "
            "(2026-03-01, midnight in the report's time zone)."
        ),
        "year": f"Give a year from {MOMENT_YEARS.start} to {MOMENT_YEARS.stop - 1}.",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> date | datetime:  # type: ignore[override]
        try:
            return moment_parse(super().to_internal_value(data))
        except MomentInvalid as exc:
            self.fail(exc.code)


class MomentInvalid(ValueError):
    """A moment ``moment_parse`` cannot read; ``code``: ``invalid`` or ``year``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def moment_parse(text: str) -> date | datetime:
    """``?since=``/``?until=`` text as a date, or a date and time (with or without an
    offset; ``placed`` puts it in a zone), else ``MomentInvalid``."""
    if MOMENT_TEXT.fullmatch(text) is None:
        raise MomentInvalid("invalid")
    try:
        moment: date | datetime = (
            date.fromisoformat(text) if DATE_ONLY.fullmatch(text) else datetime.fromisoformat(text)
        )
    except ValueError:
        raise MomentInvalid("invalid") from None
    if moment.year not in MOMENT_YEARS:
        raise MomentInvalid("year")
    return moment


def placed(moment: date | datetime, zone: ZoneInfo) -> datetime:
    """The instant a ``MomentField`` value names in ``zone``: a date is its midnight there
    (the first instant of the day, on a day that skips midnight too), a time without an
    offset is read there, a time with one is that instant."""
    if isinstance(moment, datetime):
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)
    return datetime.combine(moment, time.min, tzinfo=zone)


@extend_schema_field(
    {"type": "string", "maxLength": ZONE_NAME_MAX_LENGTH, "example": "Europe/Paris"}
)
class ZoneField(serializers.CharField):
    """``?tz=``: an IANA time zone name."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> ZoneInfo:  # type: ignore[override]
        name = super().to_internal_value(data)
        try:
            zone_validate(name)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from exc
        return ZoneInfo(name)


class WindowSerializer(StrictQuerySerializer):
    """The query of every report (the schema documents it as the report's parameters)."""

    window = WindowField(
        required=False,
        help_text=(
            "The look-back window ending now, in days or hours: 1h to 366d (8784h); 30d "
            "by default. Not together with since/until."
        ),
    )
    since = MomentField(
        required=False,
        help_text=(
            "The start of a range instead of a window (inclusive): an ISO 8601 time, or a "
            "date meaning midnight in the report's time zone; a time without an offset is "
            "read in that zone too."
        ),
    )
    until = MomentField(
        required=False,
        help_text=(
            "The end of the range (exclusive), as since; now by default. Needs since; at "
            "most 10 years after it."
        ),
    )
    tz = ZoneField(
        required=False,
        help_text=(
            "The IANA time zone of the report's days and months (and of dates in "
            "since/until), e.g. Asia/Kolkata; the account's time zone by default."
        ),
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "window" in attrs and ("since" in attrs or "until" in attrs):
            raise serializers.ValidationError(
                {"window": ["Give either window or since (and until), not both."]}
            )
        if "until" in attrs and "since" not in attrs:
            raise serializers.ValidationError({"since": ["Required with until."]})
        return attrs


@dataclass(frozen=True, slots=True)
class Span:
    """A report's stretch of time, ``since <= created_at < until`` (both in ``zone``), and
    the zone its days and months follow. ``label`` is the window as written (``30d``), or
    None for a ``since``/``until`` range."""

    label: str | None
    since: datetime
    until: datetime
    zone: ZoneInfo


class ZonedDateTimeField(serializers.DateTimeField):
    """A time as it reads in the zone it carries (``+05:30``), not converted to UTC."""

    def enforce_timezone(self, value: datetime) -> datetime:
        return value


class SpanSerializer(serializers.Serializer):
    window = serializers.CharField(
        source="label", allow_null=True, help_text="The window as asked; null for since/until."
    )
    since = ZonedDateTimeField(help_text="Inclusive, with the report's time zone offset.")
    until = ZonedDateTimeField(help_text="Exclusive, with the report's time zone offset.")
    timezone = serializers.CharField(
        source="zone.key", help_text="The IANA time zone of the report's days and months."
    )


def request_span(request: Request) -> Span:
    """The span and zone the query asks for (see the module's doc); 400 for a bad one."""
    params = WindowSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    asked = params.validated_data
    zone: ZoneInfo = asked.get("tz") or request_tenant(request).zone
    now = timezone.now()
    if "since" not in asked:
        return window_span(asked.get("window", DEFAULT_WINDOW), zone=zone, now=now)
    since = placed(asked["since"], zone).astimezone(zone)
    until = placed(asked["until"], zone).astimezone(zone) if "until" in asked else now
    if since >= until:
        raise serializers.ValidationError(
            {
                "since": [
                    "Must be earlier than until." if "until" in asked else "Must be in the past."
                ]
            }
        )
    if until - since > SPAN_MAX:
        raise serializers.ValidationError({"since": ["At most 10 years before until."]})
    return Span(label=None, since=since, until=until.astimezone(zone), zone=zone)


def window_span(window: Window, *, zone: ZoneInfo, now: datetime | None = None) -> Span:
    """The look-back ``window`` ending ``now`` (the current time by default), in ``zone``."""
    now = now or timezone.now()
    return Span(
        label=window.label,
        since=(now - window.length).astimezone(zone),
        until=now.astimezone(zone),
        zone=zone,
    )


def month_span(*, year: int, month: int, zone: ZoneInfo) -> Span:
    """The calendar month of ``zone``, from its first local midnight to the next month's
    (what ``?since=YYYY-MM-01&until=`` the next month's first day asks for)."""
    since, until = month_bounds(zone=zone, year=year, month=month)
    return Span(label=None, since=since.astimezone(zone), until=until.astimezone(zone), zone=zone)


# ---------------------------------------------------------------------------------- months

# Where a statement's month may start: no reseller's traffic is older.
FIRST_STATEMENT_YEAR = 2000
MONTH_PATTERN = r"^[0-9]{4}-[0-9]{2}$"
MONTH_TEXT = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


class MonthInvalid(ValueError):
    """A month no statement can be for: malformed, before 2000-01, or not begun yet in the
    zone (the message says which)."""


def month_parse(text: str, *, zone: ZoneInfo, now: datetime | None = None) -> tuple[int, int]:
    """``YYYY-MM`` as (year, month): a month from 2000-01 to the current one in ``zone``,
    else ``MonthInvalid``."""
    match = MONTH_TEXT.fullmatch(text)
    if match is None or int(match[1]) < FIRST_STATEMENT_YEAR:
        raise MonthInvalid(
            f"Give a month as YYYY-MM, from {FIRST_STATEMENT_YEAR}-01 (e.g. 2025-01)."
        )
    year, month = int(match[1]), int(match[2])
    today = (now or timezone.now()).astimezone(zone).date()
    if (year, month) > (today.year, today.month):
        raise MonthInvalid(f"{text} has not begun yet (time zone {zone.key}).")
    return year, month


def months_since(start: datetime, *, zone: ZoneInfo, now: datetime | None = None) -> list[date]:
    """The months of ``zone`` from the one ``start`` falls in to the current one, newest
    first, each named by its first day (a key's statements: none before it existed)."""
    first = start.astimezone(zone).date().replace(day=1)
    month = (now or timezone.now()).astimezone(zone).date().replace(day=1)
    months = []
    while month >= first:
        months.append(month)
        month = (month - timedelta(days=1)).replace(day=1)
    return months


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
