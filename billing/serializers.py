"""The REST API's money field: decimal strings at the edge, integer nano-dollars inside."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from billing.money import USD_DECIMAL_PLACES, MoneyError, format_usd, parse_usd

CURRENCY = "USD"

# parse_usd accepts at most 1e9 USD, ten whole digits; 19 leaves room to say "out of range"
# instead of "too many digits", and DRF checks both bounds before it quantizes, so no
# Decimal context limit can turn odd input ("1e999999") into a server error.
USD_MAX_WHOLE_DIGITS = 19


class UsdField(serializers.DecimalField):
    """A USD amount: ``"100.00"`` or ``100`` in, nano-dollars out, ``format_usd`` back.

    Input is exact: more than 9 decimal places, NaN, infinities and non-numbers are
    refused, never rounded. A JSON number is read from its shortest decimal form
    (``34.2`` is 34.20 USD); booleans are not numbers.
    """

    default_error_messages = {
        **serializers.DecimalField.default_error_messages,
        # Only absurd amounts get here; say so rather than quote our digit limits.
        "max_digits": "Amount out of range.",
        "max_whole_digits": "Amount out of range.",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            max_digits=USD_MAX_WHOLE_DIGITS + USD_DECIMAL_PLACES,
            decimal_places=USD_DECIMAL_PLACES,
            **kwargs,
        )

    def to_internal_value(self, data: Any) -> int:  # type: ignore[override]
        if isinstance(data, bool):
            self.fail("invalid")
        amount = super().to_internal_value(data)
        try:
            return parse_usd(amount)
        except MoneyError as exc:
            raise serializers.ValidationError(str(exc).capitalize() + ".") from exc

    def to_representation(self, value: int) -> str:  # type: ignore[override]
        return format_usd(value)
