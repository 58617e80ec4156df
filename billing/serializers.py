"""The REST APIs' money fields: decimal strings (or whole cents in the sub-account API) at
the edge, integer nano-dollars inside."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from billing.money import MoneyError, format_usd, nanos_to_cents, parse_usd

CURRENCY = "USD"


class UsdField(serializers.Field):
    """A USD amount: a decimal string in and out, nano-dollars inside.

    In: a JSON string that ``billing.money.parse_usd`` reads exactly, as it is sent:
    ``"100"``, ``"12.50"``, ``"0.000000001"`` (ASCII digits, an optional point, at most 9
    decimal places that count). Refused, each with a 400 naming the field: a JSON number
    (the API speaks decimal strings; a fraction would arrive as a float), a boolean, a blank
    string (where the field is optional, null leaves it unset; ``""`` is no amount), a
    sign, an exponent, spaces, separators (``"1_0"``, ``"1,000"``), non-ASCII digits,
    NaN and infinities. Out: ``format_usd`` (``"140.00"``, ``"-0.25"``).
    """

    default_error_messages = {
        "not_text": 'Send the amount as a decimal string, e.g. "12.50", not as a JSON {kind}.',
        "blank": "May not be blank.",
        "blank_or_null": "May not be blank; send null to leave it unset.",
        "negative": "Must not be negative.",
    }

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, str):
            kind = {bool: "boolean", int: "number", float: "number"}.get(type(data), "value")
            self.fail("not_text", kind=kind)
        if not data.strip():
            self.fail("blank_or_null" if self.allow_null else "blank")
        try:
            nanos = parse_usd(data)
        except MoneyError as exc:
            raise serializers.ValidationError(str(exc)[:1].upper() + str(exc)[1:] + ".") from exc
        if data.startswith("-"):
            self.fail("negative")
        return nanos

    def to_representation(self, value: int) -> str:
        return format_usd(value)


class CentsField(serializers.IntegerField):
    """Nano-dollars shown as whole cents (``nanos_to_cents``: half up); output only. The
    sub-account API's money."""

    def to_representation(self, value: int) -> int:
        return nanos_to_cents(value)
