"""Reseller REST API for what the proxy recorded, read-only:

* under ``/api/v1/``: a key's requests and usage, usage by tag and earnings, money as
  decimal strings (``UsdField``);
* in the sub-account API under ``/v1/``: a sub-account's usage and the sub-accounts' usage
  by tag, money as whole cents of client price (``CentsField``, half up). The sub-accounts
  themselves are ``keys.apis.sub_accounts``.

Validate → selector → serialize, nothing else. Every read goes through ``usage.selectors``
with the caller's tenant, so another tenant's key id answers 404 and tenant-wide reports
never include another tenant's traces. Money is nano-dollars inside.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_tenant
from billing.serializers import CentsField, UsdField
from config.openapi import PAGE_PARAMETERS, error_responses, paginated
from config.pagination import Pagination
from config.serializers import StrictQuerySerializer
from keys.models import TAG_MAX_LENGTH
from usage.models import MODEL_MAX_LENGTH, Trace
from usage.selectors import (
    earnings_summary,
    key_usage,
    sub_account_usage,
    tag_usage,
    trace_list,
)
from usage.windows import (
    SpanSerializer,
    WindowSerializer,
    by_tag_in_window,
    request_span,
    window_fields,
)


class UsageTotalsSerializer(serializers.Serializer):
    """Instance: ``usage.selectors.UsageTotals``."""

    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    cost = UsdField(source="cost_nanos")
    client_price = UsdField(source="client_nanos")
    cache_savings = UsdField(
        source="cache_savings_nanos",
        help_text="What cached reads saved at cost: cached tokens at the input rate "
        "less at the cached rate.",
    )
    client_cache_savings = UsdField(
        source="client_cache_savings_nanos", help_text="The same saving at client price."
    )


class UsageSummarySerializer(UsageTotalsSerializer):
    profit = UsdField(source="profit_nanos")
    errors = serializers.IntegerField()  # type: ignore[assignment]


class TraceListApi(APIView):
    """``GET /api/v1/keys/{id}/requests``: the key's requests, newest first, paginated.

    ``?since=``/``?until=`` (ISO 8601, ``since`` inclusive, ``until`` exclusive), ``?model=``,
    ``?status=``, ``?tag=`` (``?tag=`` with nothing keeps untagged requests). A deleted
    key's requests stay readable.
    """

    class FilterSerializer(StrictQuerySerializer):
        since = serializers.DateTimeField(required=False, help_text="ISO 8601; inclusive.")
        until = serializers.DateTimeField(required=False, help_text="ISO 8601; exclusive.")
        model = serializers.CharField(max_length=MODEL_MAX_LENGTH, required=False)
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
        cache_savings = UsdField(source="cache_savings_nanos")
        client_cache_savings = UsdField(source="client_cache_savings_nanos")
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
        traces = trace_list(tenant=request_tenant(request), key_id=key_id, **filters.validated_data)
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
        span = request_span(request)
        report = key_usage(
            tenant=request_tenant(request), key_id=key_id, since=span.since, until=span.until
        )
        return Response({**window_fields(span), **self.OutputSerializer(report).data})


class TagUsageApi(APIView):
    """``GET /api/v1/usage/by-tag?window=30d``: usage per tag across the tenant's keys,
    largest client price first; untagged requests are the tag ``""``."""

    class OutputSerializer(UsageSummarySerializer):
        tag = serializers.CharField()

    ResponseSerializer = by_tag_in_window(OutputSerializer)

    @extend_schema(
        summary="Usage per tag",
        tags=["usage"],
        parameters=[WindowSerializer],
        responses={200: ResponseSerializer, **error_responses(400)},
    )
    def get(self, request: Request) -> Response:
        span = request_span(request)
        tags = tag_usage(tenant=request_tenant(request), since=span.since, until=span.until)
        return Response(
            {**window_fields(span), "by_tag": self.OutputSerializer(tags, many=True).data}
        )


class EarningsApi(APIView):
    """``GET /api/v1/earnings?window=30d``: revenue (client prices), cost, profit and margin
    in the window, from traces; ``all_time`` from the keys' settled counters; and both per key.
    ``margin_percent`` is null without revenue. ``cache_savings`` (at cost) and
    ``client_cache_savings`` are what prompt caching saved in the window."""

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
            cache_savings = UsdField(source="cache_savings_nanos")
            client_cache_savings = UsdField(source="client_cache_savings_nanos")
            all_time = KeyAllTimeSerializer(source="figures")

        requests = serializers.IntegerField(source="window.requests")
        revenue = UsdField(source="window.client_nanos")
        cost = UsdField(source="window.cost_nanos")
        profit = UsdField(source="window.profit_nanos")
        margin_percent = serializers.CharField(source="window.margin_percent", allow_null=True)
        cache_savings = UsdField(source="window.cache_savings_nanos")
        client_cache_savings = UsdField(source="window.client_cache_savings_nanos")
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
        span = request_span(request)
        earnings = earnings_summary(
            tenant=request_tenant(request), since=span.since, until=span.until
        )
        return Response({**window_fields(span), **self.OutputSerializer(earnings).data})


# ------------------------------------------------------------------ the sub-account API


class SubAccountUsageTotalsSerializer(serializers.Serializer):
    """Instance: ``usage.selectors.UsageTotals``; ``cost_cents`` is the client price."""

    requests = serializers.IntegerField()
    cost_cents = CentsField(source="client_nanos")
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    cache_savings_cents = CentsField(
        source="client_cache_savings_nanos",
        help_text="What cached reads saved, at client price: cached tokens at the input "
        "rate less at the cached rate.",
    )


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
        span = request_span(request)
        report = sub_account_usage(
            tenant=request_tenant(request), key_id=key_id, since=span.since, until=span.until
        )
        return Response({**window_fields(span), **self.OutputSerializer(report).data})


class SubAccountTagUsageApi(APIView):
    """``GET /v1/usage/by-tag?window=30d``: the sub-accounts' usage per tag, in cents,
    largest first; untagged requests are the tag ``""``."""

    class OutputSerializer(SubAccountUsageTotalsSerializer):
        tag = serializers.CharField()

    ResponseSerializer = by_tag_in_window(OutputSerializer)

    @extend_schema(
        summary="Sub-account usage per tag",
        tags=["sub-accounts"],
        parameters=[WindowSerializer],
        responses={200: ResponseSerializer, **error_responses(400)},
    )
    def get(self, request: Request) -> Response:
        span = request_span(request)
        tags = tag_usage(
            tenant=request_tenant(request),
            since=span.since,
            until=span.until,
            sub_accounts_only=True,
        )
        return Response(
            {**window_fields(span), "by_tag": self.OutputSerializer(tags, many=True).data}
        )
