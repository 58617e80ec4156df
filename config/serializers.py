"""What the REST API reads requests with: every write's body (house rule 15's
``InputSerializer``s derive from ``StrictInputSerializer``) and every read's query
(``StrictQuerySerializer``).

A write is exact or refused, never guessed at:

* an unknown field is a 400 naming it, with the errors of the other fields, so a typo
  (``"spendcap": "5"``) cannot pass for success and create a key without a cap;
* a value is taken only in its own JSON type: ``"60"`` is not the integer 60, nor ``60.0``
  or ``true``; ``0`` is not the text ``"0"``. Money is a decimal string
  (``billing.serializers.UsdField``), cents an integer.

``config.openapi`` documents the first rule as ``additionalProperties: false``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

UNKNOWN_FIELD = "Unknown field."


BLANK_PARAMETER = "May not be blank; leave the parameter out instead."


class _ExtraErrorsSerializer(serializers.Serializer):
    """Adds errors of its own to the field errors of DRF's reading, all reported at once."""

    def extra_errors(self, data: Any) -> dict[str, list[str]]:
        raise NotImplementedError

    def to_internal_value(self, data: Any) -> Any:
        errors = self.extra_errors(data) if isinstance(data, Mapping) else {}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if errors and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **errors}) from exc
            raise
        if errors:
            raise serializers.ValidationError(errors)
        return value


class StrictInputSerializer(_ExtraErrorsSerializer):
    """Any field not listed here is refused with a 400 naming it."""

    def unknown_field_message(self, name: str) -> str:
        return UNKNOWN_FIELD

    def extra_errors(self, data: Mapping[str, Any]) -> dict[str, list[str]]:
        writable = {name for name, field in self.fields.items() if not field.read_only}
        return {
            name: [self.unknown_field_message(name)]
            for name in sorted(set(data) - writable, key=str)
        }


class StrictQuerySerializer(_ExtraErrorsSerializer):
    """Query parameters: a parameter sent blank (``?status=``) is a 400 naming it, where
    DRF would take it for one not sent, unless its field allows blank (``?tag=``).
    Parameters it does not know are left to others (``?page=``)."""

    def extra_errors(self, data: Mapping[str, Any]) -> dict[str, list[str]]:
        return {
            name: [BLANK_PARAMETER]
            for name, field in self.fields.items()
            if data.get(name) == "" and not getattr(field, "allow_blank", False)
        }


class StrictCharField(serializers.CharField):
    """Text, only from a JSON string (DRF's own would turn ``0`` into ``"0"``), at most
    ``max_length`` characters as sent: DRF measures after trimming whitespace, so a value
    longer than the schema's ``maxLength`` passed when it began with a space or a control
    character that ``str.strip`` removes."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """An integer, only from a JSON integer (DRF's own also takes ``"60"`` and ``60.0``)."""

    default_error_messages = {
        **serializers.IntegerField.default_error_messages,
        "invalid": "A whole number is required, as a JSON integer (not a string or a fraction).",
    }

    def to_internal_value(self, data: Any) -> int:
        # bool is a subclass of int: true is not 1.
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """true or false, only as JSON booleans (DRF's own also takes ``"yes"``, ``1``, ``"on"``)."""

    default_error_messages = {
        **serializers.BooleanField.default_error_messages,
        "invalid": "Must be true or false, as a JSON boolean.",
    }

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data
