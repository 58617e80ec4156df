"""Reseller REST API for what the proxy recorded: a key's requests and usage, usage by tag,
earnings, and the sub-account API (``/v1/sub-accounts``), which speaks integer cents.

Validate → selector or service → serialize, nothing else. Every read goes through
``proxy.selectors`` with the caller's tenant, so another tenant's key id answers 404 and
tenant-wide reports never include another tenant's traces. Money is nano-dollars inside:
decimal strings (``UsdField``) on ``/api/v1/``, whole cents (``nanos_to_cents``, half up)
on the sub-account API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Tenant
from billing.money import MAX_AMOUNT_NANOS, NANOS_PER_CENT, cents_to_nanos, nanos_to_cents
from billing.serializers import UsdField
from config.openapi import PAGE_PARAMETERS, error_responses, paginated
from config.pagination import Pagination
from keys.models import ClientKey
from keys.services import MAX_LIMIT, key_create, key_delete, key_update
from proxy.models import Trace
from proxy.selectors import (
    earnings_summary,
    key_usage,
    sub_account_get,
    sub_account_list,
    sub_account_usage,
    tag_usage,
    trace_list,
)

MODEL_NAME_MAX_LENGTH = 200
TAG_MAX_LENGTH = 100
SUB_ACCOUNT_NAME_MAX_LENGTH = 200
MAX_SPEND_CAP_CENTS = MAX_AMOUNT_NANOS // NANOS_PER_CENT


def _tenant(request: Request) -> Tenant:
    """The caller's tenant: set by ApiTokenAuthentication, required by IsTenantMember."""
    return request.tenant  # type: ignore[attr-defined]


def _actor(request: Request) -> AbstractBaseUser | None:
    return request.user if isinstance(request.user, AbstractBaseUser) else None


# ------------------------------------------------------------------------------ windows


@dataclass(frozen=True, slots=True)
class Window:
    """A look-back window ending now, as the caller wrote it (``30d``, ``12h``)."""

    label: str
    length: timedelta


WINDOW_TEXT = re.compile(r"(\d{1,4})([dh])", re.ASCII)
WINDOW_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1)}
WINDOW_MIN = timedelta(hours=1)
WINDOW_MAX = timedelta(days=366)
DEFAULT_WINDOW = Window(label="30d", length=timedelta(days=30))


class WindowField(serializers.CharField):
    """``?window=``: a whole number of days or hours, ``1h`` to ``366d``."""

    default_error_messages = {
        **serializers.CharField.default_error_messages,
        "invalid": "Give a number of days or hours, from 1h to 366d (e.g. 30d, 24h).",
    }

    def to_internal_value(self, data: Any) -> Window:  # type: ignore[override]
        match = WINDOW_TEXT.fullmatch(super().to_internal_value(data).strip())
        if match is None:
            self.fail("invalid")
        count, unit = int(match[1]), match[2]
        length = count * WINDOW_UNITS[unit]
        if not WINDOW_MIN <= length <= WINDOW_MAX:
            self.fail("invalid")
        return Window(label=f"{count}{unit}", length=length)


class WindowSerializer(serializers.Serializer):
    window = WindowField(
        required=False, help_text="The look-back window ending now: 1h to 366d; 30d by default."
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


def _span(request: Request) -> Span:
    """The window the query asks for, ending now (400 for a malformed one)."""
    params = WindowSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    window: Window = params.validated_data.get("window", DEFAULT_WINDOW)
    until = timezone.now()
    return Span(label=window.label, since=until - window.length, until=until)


def _window_fields(span: Span) -> dict[str, Any]:
    return SpanSerializer(span).data


def _by_tag_in_window(
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


# ------------------------------------------------------------------- /api/v1/ (USD strings)


class UsageTotalsSerializer(serializers.Serializer):
    """Instance: ``proxy.selectors.UsageTotals``."""

    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    cost = UsdField(source="cost_nanos")
    client_price = UsdField(source="client_nanos")


class UsageSummarySerializer(UsageTotalsSerializer):
    profit = UsdField(source="profit_nanos")
    errors = serializers.IntegerField()  # type: ignore[assignment]


class TraceListApi(APIView):
    """``GET /api/v1/keys/{id}/requests``: the key's requests, newest first, paginated.

    ``?since=``/``?until=`` (ISO 8601, ``since`` inclusive, ``until`` exclusive), ``?model=``,
    ``?status=``, ``?tag=`` (``?tag=`` with nothing keeps untagged requests). A deleted
    key's requests stay readable.
    """

    class FilterSerializer(serializers.Serializer):
        since = serializers.DateTimeField(required=False, help_text="ISO 8601; inclusive.")
        until = serializers.DateTimeField(required=False, help_text="ISO 8601; exclusive.")
        model = serializers.CharField(max_length=MODEL_NAME_MAX_LENGTH, required=False)
        status = serializers.ChoiceField(choices=Trace.Status.choices, required=False)
        tag = serializers.CharField(
            max_length=TAG_MAX_LENGTH,
            required=False,
            allow_blank=True,
            trim_whitespace=False,
            help_text="Empty keeps the untagged requests.",
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if "since" in attrs and "until" in attrs and attrs["since"] >= attrs["until"]:
                raise serializers.ValidationError({"until": ["Must be later than since."]})
            return attrs

    class OutputSerializer(serializers.Serializer):
        request_id = serializers.CharField()
        created_at = serializers.DateTimeField()
        model = serializers.CharField()
        endpoint = serializers.CharField()
        upstream = serializers.CharField(source="upstream.name", allow_null=True)
        tag = serializers.CharField()
        status = serializers.CharField()
        status_code = serializers.IntegerField()
        error_class = serializers.CharField()
        is_stream = serializers.BooleanField()
        input_tokens = serializers.IntegerField()
        output_tokens = serializers.IntegerField()
        cached_input_tokens = serializers.IntegerField()
        cache_write_tokens = serializers.IntegerField()
        is_usage_estimated = serializers.BooleanField()
        cost = UsdField(source="cost_nanos")
        client_price = UsdField(source="client_nanos")
        latency_ms = serializers.IntegerField()
        ttft_ms = serializers.IntegerField(allow_null=True)

    @extend_schema(
        summary="A key's requests",
        tags=["usage"],
        parameters=[FilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(OutputSerializer), **error_responses(400, 404)},
    )
    def get(self, request: Request, key_id: int) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        traces = trace_list(tenant=_tenant(request), key_id=key_id, **filters.validated_data)
        paginator = Pagination()
        page = paginator.paginate_queryset(traces, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class KeyUsageApi(APIView):
    """``GET /api/v1/keys/{id}/usage?window=30d``: the key's totals, per model and per UTC
    day in the window (``1h`` to ``366d``, 30 days by default)."""

    class OutputSerializer(serializers.Serializer):
        class ModelSerializer(UsageTotalsSerializer):
            model = serializers.CharField()

        class DaySerializer(serializers.Serializer):
            date = serializers.DateField()
            requests = serializers.IntegerField()
            cost = UsdField(source="cost_nanos")
            client_price = UsdField(source="client_nanos")

        summary = UsageSummarySerializer()
        by_model = ModelSerializer(many=True)
        by_day = DaySerializer(many=True)

    # The schema's account of the answer: ``get`` puts the window before the report.
    class ResponseSerializer(SpanSerializer, OutputSerializer):
        """A key's usage in the window: totals, per model and per UTC day."""

    @extend_schema(
        summary="A key's usage",
        tags=["usage"],
        parameters=[WindowSerializer],
        responses={200: ResponseSerializer, **error_responses(400, 404)},
    )
    def get(self, request: Request, key_id: int) -> Response:
        span = _span(request)
        report = key_usage(
            tenant=_tenant(request), key_id=key_id, since=span.since, until=span.until
        )
        return Response({**_window_fields(span), **self.OutputSerializer(report).data})


class TagUsageApi(APIView):
    """``GET /api/v1/usage/by-tag?window=30d``: usage per tag across the tenant's keys,
    largest client price first; untagged requests are the tag ``""``."""

    class OutputSerializer(UsageSummarySerializer):
        tag = serializers.CharField()

    ResponseSerializer = _by_tag_in_window(OutputSerializer)

    @extend_schema(
        summary="Usage per tag",
        tags=["usage"],
        parameters=[WindowSerializer],
        responses={200: ResponseSerializer, **error_responses(400)},
    )
    def get(self, request: Request) -> Response:
        span = _span(request)
        tags = tag_usage(tenant=_tenant(request), since=span.since, until=span.until)
        return Response(
            {**_window_fields(span), "by_tag": self.OutputSerializer(tags, many=True).data}
        )


class EarningsApi(APIView):
    """``GET /api/v1/earnings?window=30d``: revenue (client prices), cost, profit and margin
    in the window, from traces; ``all_time`` from the keys' settled counters; and both per key.
    ``margin_percent`` is null without revenue."""

    class OutputSerializer(serializers.Serializer):
        class AllTimeSerializer(serializers.Serializer):
            revenue = UsdField(source="all_time_client_nanos")
            cost = UsdField(source="all_time_cost_nanos")
            profit = UsdField(source="all_time_profit_nanos")
            margin_percent = serializers.CharField(
                source="all_time_margin_percent", allow_null=True
            )

        class KeySerializer(serializers.Serializer):
            class KeyAllTimeSerializer(serializers.Serializer):
                revenue = UsdField(source="client_spent_nanos")
                cost = UsdField(source="cost_spent_nanos")
                profit = UsdField(source="profit_nanos")

            id = serializers.IntegerField(source="figures.key.id")
            label = serializers.CharField(source="figures.key.label")  # type: ignore[assignment]
            prefix = serializers.CharField(source="figures.key.prefix")
            funding = serializers.CharField(source="figures.key.funding")
            status = serializers.CharField(source="figures.status")
            requests = serializers.IntegerField()
            revenue = UsdField(source="client_nanos")
            cost = UsdField(source="cost_nanos")
            profit = UsdField(source="profit_nanos")
            margin_percent = serializers.CharField(allow_null=True)
            all_time = KeyAllTimeSerializer(source="figures")

        requests = serializers.IntegerField(source="window.requests")
        revenue = UsdField(source="window.client_nanos")
        cost = UsdField(source="window.cost_nanos")
        profit = UsdField(source="window.profit_nanos")
        margin_percent = serializers.CharField(source="window.margin_percent", allow_null=True)
        all_time = AllTimeSerializer(source="*")
        by_key = KeySerializer(many=True)

    # The schema's account of the answer: ``get`` puts the window before the earnings.
    class ResponseSerializer(SpanSerializer, OutputSerializer):
        """Revenue, cost, profit and margin in the window, all time, and per key."""

    @extend_schema(
        summary="Earnings",
        tags=["usage"],
        parameters=[WindowSerializer],
        responses={200: ResponseSerializer, **error_responses(400)},
    )
    def get(self, request: Request) -> Response:
        span = _span(request)
        earnings = earnings_summary(tenant=_tenant(request), since=span.since, until=span.until)
        return Response({**_window_fields(span), **self.OutputSerializer(earnings).data})


# --------------------------------------------------------------- /v1/sub-accounts (cents)


class CentsField(serializers.IntegerField):
    """Nano-dollars shown as whole cents (``nanos_to_cents``: half up); output only."""

    def to_representation(self, value: int) -> int:
        return nanos_to_cents(value)


class SubAccountOutputSerializer(serializers.Serializer):
    """The sub-account object; its instance is the wallet-funded ``ClientKey``.

    ``spend_cap_cents`` is null without a cap; ``spent_cents`` is all the client price
    it has been charged.
    """

    id = serializers.IntegerField()
    name = serializers.CharField(source="label")
    spend_cap_cents = CentsField(source="spend_cap_nanos", allow_null=True)
    rate_limit_rpm = serializers.IntegerField(source="requests_per_minute")
    default_tag = serializers.CharField()
    status = serializers.CharField(source="effective_status")
    spent_cents = CentsField(source="client_spent_nanos")
    created_at = serializers.DateTimeField()


class SubAccountUsageTotalsSerializer(serializers.Serializer):
    """Instance: ``proxy.selectors.UsageTotals``; ``cost_cents`` is the client price."""

    requests = serializers.IntegerField()
    cost_cents = CentsField(source="client_nanos")
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()


def _unknown_fields(serializer: serializers.Serializer) -> None:
    """A typo in a write must not pass for success: unknown fields are a 400."""
    unknown = sorted(set(serializer.initial_data) - set(serializer.fields))
    if unknown:
        raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})


class SubAccountCreateApi(APIView):
    """``POST /v1/sub-accounts``: a wallet-funded key at ratio 1:1, drawing live from the
    wallet up to ``spend_cap_cents`` (no cap when left out or null). The answer carries
    the secret as ``key``; no other response shows it."""

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=SUB_ACCOUNT_NAME_MAX_LENGTH)
        spend_cap_cents = serializers.IntegerField(
            min_value=0, max_value=MAX_SPEND_CAP_CENTS, allow_null=True, default=None
        )
        rate_limit_rpm = serializers.IntegerField(
            min_value=1, max_value=MAX_LIMIT, default=settings.DEFAULT_KEY_RPM
        )
        default_tag = serializers.CharField(max_length=TAG_MAX_LENGTH, allow_blank=True, default="")

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            _unknown_fields(self)
            return attrs

    # The schema's account of the answer, which ``post`` builds as the sub-account + ``key``.
    class ResponseSerializer(SubAccountOutputSerializer):
        """A new sub-account and its secret."""

        key = serializers.CharField(help_text="The secret client key, shown only here.")

    @extend_schema(
        summary="Create a sub-account",
        tags=["sub-accounts"],
        request=InputSerializer,
        responses={201: ResponseSerializer, **error_responses(400)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        cap = data["spend_cap_cents"]
        issued = key_create(
            tenant=_tenant(request),
            actor=_actor(request),
            label=data["name"],
            funding=ClientKey.Funding.WALLET,
            spend_cap_nanos=None if cap is None else cents_to_nanos(cap),
            rpm=data["rate_limit_rpm"],
            default_tag=data["default_tag"],
        )
        body = {**SubAccountOutputSerializer(issued.key).data, "key": issued.secret}
        return Response(body, status=status.HTTP_201_CREATED)


class SubAccountListApi(APIView):
    """``GET /v1/sub-accounts``: the tenant's sub-accounts, newest first, paginated."""

    @extend_schema(
        summary="List sub-accounts",
        tags=["sub-accounts"],
        parameters=PAGE_PARAMETERS,
        responses={200: paginated(SubAccountOutputSerializer), **error_responses(404)},
    )
    def get(self, request: Request) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(
            sub_account_list(tenant=_tenant(request)), request, view=self
        )
        return paginator.get_paginated_response(SubAccountOutputSerializer(page, many=True).data)


class SubAccountDetailApi(APIView):
    """``GET /v1/sub-accounts/{id}``: one sub-account (a deleted one shows ``deleted``)."""

    @extend_schema(
        summary="Read a sub-account",
        tags=["sub-accounts"],
        responses={200: SubAccountOutputSerializer, **error_responses(404)},
    )
    def get(self, request: Request, key_id: int) -> Response:
        key = sub_account_get(tenant=_tenant(request), key_id=key_id)
        return Response(SubAccountOutputSerializer(key).data)


class SubAccountUpdateApi(APIView):
    """``PATCH /v1/sub-accounts/{id}``: change ``name``, ``spend_cap_cents`` (null: no cap),
    ``rate_limit_rpm`` or ``default_tag``; only the fields sent change."""

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=SUB_ACCOUNT_NAME_MAX_LENGTH, required=False)
        spend_cap_cents = serializers.IntegerField(
            min_value=0, max_value=MAX_SPEND_CAP_CENTS, allow_null=True, required=False
        )
        rate_limit_rpm = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, required=False)
        default_tag = serializers.CharField(
            max_length=TAG_MAX_LENGTH, allow_blank=True, required=False
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            _unknown_fields(self)
            return attrs

    @extend_schema(
        summary="Change a sub-account",
        tags=["sub-accounts"],
        request=InputSerializer,
        responses={200: SubAccountOutputSerializer, **error_responses(400, 404, 409)},
    )
    def patch(self, request: Request, key_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        changes: dict[str, Any] = {}
        if "name" in data:
            changes["label"] = data["name"]
        if "spend_cap_cents" in data:
            cap = data["spend_cap_cents"]
            changes["spend_cap"] = None if cap is None else cents_to_nanos(cap)
        if "rate_limit_rpm" in data:
            changes["rpm"] = data["rate_limit_rpm"]
        if "default_tag" in data:
            changes["default_tag"] = data["default_tag"]
        tenant = _tenant(request)
        key = sub_account_get(tenant=tenant, key_id=key_id)
        key = key_update(tenant=tenant, actor=_actor(request), key_id=key.pk, changes=changes)
        return Response(SubAccountOutputSerializer(key).data)


class SubAccountDeleteApi(APIView):
    """``DELETE /v1/sub-accounts/{id}``: the key stops working at once; 204. A wallet-funded
    key set nothing aside, so nothing is refunded. A second delete is a 409."""

    @extend_schema(
        summary="Delete a sub-account",
        tags=["sub-accounts"],
        responses={204: None, **error_responses(404, 409)},
    )
    def delete(self, request: Request, key_id: int) -> Response:
        tenant = _tenant(request)
        key = sub_account_get(tenant=tenant, key_id=key_id)
        key_delete(tenant=tenant, actor=_actor(request), key_id=key.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SubAccountUsageApi(APIView):
    """``GET /v1/sub-accounts/{id}/usage?window=30d``: totals, per model and per UTC day,
    in cents of client price (each figure rounded once, half up, from its exact sum)."""

    class OutputSerializer(serializers.Serializer):
        class ModelSerializer(SubAccountUsageTotalsSerializer):
            model = serializers.CharField()

        class DaySerializer(serializers.Serializer):
            date = serializers.DateField()
            requests = serializers.IntegerField()
            cost_cents = CentsField(source="client_nanos")

        summary = SubAccountUsageTotalsSerializer()
        by_model = ModelSerializer(many=True)
        by_day = DaySerializer(many=True)

    # The schema's account of the answer: ``get`` puts the window before the report.
    class ResponseSerializer(SpanSerializer, OutputSerializer):
        """A sub-account's usage in the window, in cents: totals, per model, per UTC day."""

    @extend_schema(
        summary="A sub-account's usage",
        tags=["sub-accounts"],
        parameters=[WindowSerializer],
        responses={200: ResponseSerializer, **error_responses(400, 404)},
    )
    def get(self, request: Request, key_id: int) -> Response:
        span = _span(request)
        report = sub_account_usage(
            tenant=_tenant(request), key_id=key_id, since=span.since, until=span.until
        )
        return Response({**_window_fields(span), **self.OutputSerializer(report).data})


class SubAccountTagUsageApi(APIView):
    """``GET /v1/usage/by-tag?window=30d``: the sub-accounts' usage per tag, in cents,
    largest first; untagged requests are the tag ``""``."""

    class OutputSerializer(SubAccountUsageTotalsSerializer):
        tag = serializers.CharField()

    ResponseSerializer = _by_tag_in_window(OutputSerializer)

    @extend_schema(
        summary="Sub-account usage per tag",
        tags=["sub-accounts"],
        parameters=[WindowSerializer],
        responses={200: ResponseSerializer, **error_responses(400)},
    )
    def get(self, request: Request) -> Response:
        span = _span(request)
        tags = tag_usage(
            tenant=_tenant(request),
            since=span.since,
            until=span.until,
            sub_accounts_only=True,
        )
        return Response(
            {**_window_fields(span), "by_tag": self.OutputSerializer(tags, many=True).data}
        )
