"""The REST API's OpenAPI schema (drf-spectacular, served at ``/api/v1/schema/``).

Each view documents itself with ``@extend_schema`` on its method; this module holds what they
share: the reseller token's security scheme, the error shapes of ``config.exceptions``, the
page of ``config.pagination.Pagination``, and the two rules the generator needs for this
codebase's layout:

* a path served by ``config.routing.by_method`` is one Django view in front of one ``APIView`` per
  HTTP method, so the generator documents each method from its own view;
* every API has nested ``InputSerializer``/``OutputSerializer`` classes (house rule 15), so a
  component is named after where its serializer lives (``KeyCreateApi.InputSerializer`` is
  ``KeyCreateInput``) rather than after its bare class name, which would collide.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from django.urls import URLPattern, URLResolver
from drf_spectacular import generators, openapi
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from config.pagination import Pagination

# ------------------------------------------------------------------------ authentication


class ApiTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiTokenAuthentication"
    name = "resellerApiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "The reseller API token (`tgr-…`, from `manage.py create_reseller`): "
                "`Authorization: Bearer <reseller API token>`."
            ),
        }


# ------------------------------------------------------------------- what a write takes

# billing.serializers.UsdField: what parse_usd reads (billing.money.USD_TEXT) without the
# sign, and what format_usd writes.
USD_INPUT_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
USD_OUTPUT_PATTERN = r"^-?[0-9]+\.[0-9]{2,9}$"


class UsdFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "billing.serializers.UsdField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        if direction == "request":
            return {
                "type": "string",
                "format": "decimal",
                "pattern": USD_INPUT_PATTERN,
                "example": "12.50",
                "description": (
                    "USD as a decimal string: digits and an optional point, at most 9 "
                    "decimal places. Not a JSON number, not blank."
                ),
            }
        return {"type": "string", "format": "decimal", "pattern": USD_OUTPUT_PATTERN}


class StrictInputSchema(OpenApiSerializerExtension):
    """``config.serializers.StrictInputSerializer``: its fields and no other."""

    target_class = "config.serializers.StrictInputSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        return schema


# -------------------------------------------------------------------------- the generator


def _per_method(pattern: URLPattern | URLResolver) -> list[URLPattern | URLResolver]:
    """The pattern, or for a ``by_method`` path one pattern per method's ``APIView``."""
    if not isinstance(pattern, URLPattern):
        return [pattern]
    views = getattr(pattern.callback, "views_by_method", None)
    if views is None:
        return [pattern]
    return [URLPattern(pattern.pattern, view, name=pattern.name) for view in views.values()]


class EndpointEnumerator(generators.EndpointEnumerator):
    def _get_api_endpoints(self, patterns: Any, prefix: str) -> list[Any]:
        patterns = self.patterns if patterns is None else patterns
        expanded = [each for pattern in patterns for each in _per_method(pattern)]
        return super()._get_api_endpoints(expanded, prefix)


class SchemaGenerator(generators.SchemaGenerator):
    endpoint_inspector_cls = EndpointEnumerator


CAPITALS = re.compile(r"(?<!^)(?=[A-Z])")


def component_name(serializer_class: type[serializers.Serializer]) -> str:
    """``KeyCreateApi.InputSerializer`` → ``KeyCreateInput``, ``KeyOutputSerializer`` →
    ``Key``, ``LedgerEntryListApi.OutputSerializer`` → ``LedgerEntry`` (one item of the
    list): the qualified name without ``Serializer``, ``Api``, ``Output`` and ``List``."""
    return "".join(
        part.removesuffix("Serializer")
        .removesuffix("Api")
        .removesuffix("Output")
        # "List" names the operation, not what one serialized object is.
        .removesuffix("List")
        for part in serializer_class.__qualname__.split(".")
    )


class AutoSchema(openapi.AutoSchema):
    def get_operation_id(self) -> str:
        """One ``APIView`` per operation (house rule 15), so the view names it:
        ``KeyTopUpApi`` → ``key_top_up``."""
        view_name = type(self.view).__name__
        if not view_name.endswith("Api"):
            return super().get_operation_id()
        return CAPITALS.sub("_", view_name.removesuffix("Api")).lower()

    def get_serializer_name(self, serializer: serializers.Serializer, direction: Any) -> str:
        return component_name(type(serializer))


# -------------------------------------------------------------------------- shared shapes


class ErrorSerializer(serializers.Serializer):
    """An error other than a field's: ``{detail, code}``; ``code`` is stable for clients
    (``insufficient_funds``, ``not_found``, ``conflict``, ``parse_error``,
    ``not_authenticated``, ``throttled``…)."""

    detail = serializers.CharField()
    code = serializers.CharField()


MESSAGES_SCHEMA = {"type": "array", "items": {"type": "string"}}
# DRF's own shape for bad input; a serializer cannot say "any key", so this is a raw schema.
FIELD_ERRORS_SCHEMA = {
    "type": "object",
    "description": (
        "`{field: [message, …]}`; `non_field_errors` for the body as a whole; for a list, "
        '`{field: {index: [message, …]}}` (e.g. `{"models": {"0": ["…"]}}`).'
    ),
    "additionalProperties": {
        "oneOf": [
            MESSAGES_SCHEMA,
            {"type": "object", "additionalProperties": MESSAGES_SCHEMA},
        ]
    },
}
# A 400 is field errors, or an error of the whole request: a body that is not JSON
# (`parse_error`), an amount the books cannot take (`invalid_amount`).
BAD_REQUEST_SCHEMA = {
    "oneOf": [
        FIELD_ERRORS_SCHEMA,
        {"$ref": f"#/components/schemas/{component_name(ErrorSerializer)}"},
    ]
}

ERROR_DESCRIPTIONS = {
    400: (
        "Bad input: `{field: [message]}`, or `{detail, code}` for a body that is not JSON "
        "(`parse_error`)."
    ),
    401: "No valid reseller API token.",
    402: "The wallet cannot fund it: `{detail, code: insufficient_funds}`.",
    404: "Not found: no such id for this tenant (never 403), or a page past the last one.",
    409: "Not possible in the key's state (deleted, wallet-funded…): `{detail, code: conflict}`.",
    429: "Too many requests: the REST API's courtesy throttle.",
    502: "Stripe refused or did not answer: `{detail, code: stripe_error}`; nothing charged.",
    503: "Card top-ups are not configured on this server: `{detail, code: top_ups_not_configured}`.",
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """The error answers of an operation: ``statuses`` plus the 401 and 429 of every call
    (whose ``ErrorSerializer`` also makes the component a 400 refers to)."""
    return {
        code: OpenApiResponse(
            response=BAD_REQUEST_SCHEMA if code == 400 else ErrorSerializer,
            description=ERROR_DESCRIPTIONS[code],
        )
        for code in sorted({*statuses, 401, 429})
    }


PAGE_PARAMETERS = [
    OpenApiParameter(
        "page", {"type": "integer", "minimum": 1}, description="A page number, from 1."
    ),
    OpenApiParameter(
        "page_size",
        {"type": "integer", "minimum": 1},
        description=(
            f"Results per page: {Pagination.page_size} by default, "
            f"at most {Pagination.max_page_size} (a larger size reads as "
            f"{Pagination.max_page_size})."
        ),
    ),
]


@functools.cache
def paginated(item: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The page ``config.pagination.Pagination`` answers with, ``results`` being ``item``s.

    Cached: one class per item, so the schema has one component per list shape.
    """

    class Page(serializers.Serializer):
        count = serializers.IntegerField(
            help_text=(
                f"Results on all pages, counted up to {Pagination.count_limit:,}: past that, "
                "a lower bound (`count_is_exact` is false)."
            )
        )
        count_is_exact = serializers.BooleanField(
            help_text=(
                f"False when the list holds more than {Pagination.count_limit:,} results and "
                "`count` is a lower bound; `next` says whether another page follows either way."
            )
        )
        next = serializers.URLField(allow_null=True, help_text="The next page; null on the last.")
        previous = serializers.URLField(
            allow_null=True, help_text="The previous page; null on the first."
        )
        results = item(many=True)

    Page.__name__ = Page.__qualname__ = f"Paginated{component_name(item)}"
    return Page


# ------------------------------------------------------------------------- CSV downloads

FORMAT_PARAMETER = OpenApiParameter(
    "format",
    {"type": "string", "enum": ["json", "csv"]},
    description=(
        "`csv` for a CSV download (as `Accept: text/csv` does); JSON by default. Errors are "
        "JSON either way."
    ),
)


def with_csv(
    responses: dict[int, Any], *, csv_description: str
) -> dict[int | tuple[int, str], Any]:
    """An operation's answers with a CSV alternative to its 200 (``config.exports``): the
    200 in JSON and in ``text/csv`` (whose columns ``csv_description`` gives), every error
    in JSON only."""
    description = (
        f"JSON by default; `text/csv` with `?format=csv` or `Accept: text/csv`. {csv_description}"
    )
    answers: dict[int | tuple[int, str], Any] = {}
    for code, response in responses.items():
        if code == 200:
            answers[(code, "application/json")] = OpenApiResponse(
                response=response, description=description
            )
            answers[(code, "text/csv")] = OpenApiResponse(
                response={"type": "string"}, description=description
            )
        else:
            answers[(code, "application/json")] = response
    return answers
