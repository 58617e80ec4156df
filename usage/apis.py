"""Reseller REST API for what the proxy recorded, read-only:

* under ``/api/v1/``: a key's requests and usage, the tenant's usage (all keys, and by
  tag) and earnings, money as decimal strings (``UsdField``);
* in the sub-account API under ``/v1/``: a sub-account's usage and the sub-accounts' usage
  by tag, money as whole cents of client price (``CentsField``, half up). The sub-accounts
  themselves are ``keys.apis.sub_accounts``.

Every read answers CSV too, on ``?format=csv`` or ``Accept: text/csv`` (``config.exports``;
the shapes are ``usage.exports``'s); a request list's CSV is every matching row, streamed.

Validate → selector → serialize, nothing else. Every read goes through ``usage.selectors``
with the caller's tenant, so another tenant's key id answers 404 and tenant-wide reports
never include another tenant's traces. Money is nano-dollars inside.

Every report takes its span and time zone from ``usage.windows.request_span`` (``?window=``
or ``?since=&until=``, ``?tz=``) and states them before the report; its days and months are
local to that zone.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_actor, request_tenant
from billing.money import format_usd
from billing.serializers import CURRENCY, CentsField, UsdField
from config.exports import CsvApiView, csv_stream
from config.openapi import FORMAT_PARAMETER, PAGE_PARAMETERS, error_responses, paginated, with_csv
from config.pagination import Pagination
from config.serializers import StrictQuerySerializer
from keys.models import TAG_MAX_LENGTH
from usage.exports import (
    TRACE_TABLE,
    earnings_table,
    key_usage_table,
    statement_table,
    sub_account_tag_table,
    sub_account_usage_table,
    tag_usage_table,
    tenant_usage_table,
    trace_pages,
    trace_row,
)
from usage.models import MODEL_MAX_LENGTH, Trace
from usage.selectors import (
    KeyEarnings,
    KeyUsage,
    earnings_summary,
    key_statement,
    key_usage,
    request_list,
    sub_account_usage,
    tag_usage,
    tenant_usage,
    trace_list,
)
from usage.services import key_traces_delete
from usage.windows import (
    MONTH_PATTERN,
    MonthInvalid,
    SpanSerializer,
    WindowSerializer,
    by_tag_in_window,
    month_parse,
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


def _day(at: datetime) -> str:
    return f"{at:%Y%m%d}"


def _now_stamp() -> str:
    return f"{timezone.now():%Y%m%dT%H%MZ}"


def _trace_csv(traces: Any, *, filename: str) -> StreamingHttpResponse:
    return csv_stream(TRACE_TABLE, trace_pages(traces), row=trace_row, filename=filename)


TRACES_CSV = (
    "CSV: every matching request (no pages; `page` and `page_size` are ignored), newest "
    "first, streamed, one row each: request_id, created_at, key_id, key_label, key_prefix, "
    "model, endpoint, upstream, tag, status, status_code, error_class, is_stream, "
    "input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, "
    "is_usage_estimated, cost, client_price, cache_savings, client_cache_savings, latency_ms, "
    "ttft_ms."
)
USAGE_CSV_COLUMNS = (
    "requests, errors, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, "
    "cost, client_price, profit, cache_savings, client_cache_savings"
)
SUB_ACCOUNT_CSV_COLUMNS = (
    "requests, cost_cents, input_tokens, output_tokens, cached_input_tokens, cache_savings_cents"
)
SECTIONED_CSV = (
    "CSV: one table, a `section` column saying what each row is: `total` (the window), "
    "`model` (one per model, `model` set), `day` (one per local day with traffic, `date` "
    "set); columns section, date, model, {columns}."
)
TENANT_USAGE_CSV = (
    "CSV: one table, a `section` column saying what each row is: `total` (the window), "
    "`model` (one per model, `model` set), `day` (one per local day with traffic, `date` "
    "set), `key` (one per key, `key_id`, `key_label` and `key_prefix` set), `tag` (one per "
    "tag, `tag` set, empty for untagged); columns section, date, model, key_id, key_label, "
    f"key_prefix, tag, {USAGE_CSV_COLUMNS}."
)


class TraceListApi(CsvApiView):
    """``GET /api/v1/keys/{id}/requests``: the key's requests, newest first, paginated.

    ``?since=``/``?until=`` (ISO 8601, ``since`` inclusive, ``until`` exclusive), ``?model=``,
    ``?status=``, ``?tag=`` (``?tag=`` with nothing keeps untagged requests). A deleted
    key's requests stay readable. ``?format=csv``: every matching request, streamed.
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
        parameters=[FilterSerializer, *PAGE_PARAMETERS, FORMAT_PARAMETER],
        responses=with_csv(
            {200: paginated(OutputSerializer), **error_responses(400, 404)},
            csv_description=TRACES_CSV,
        ),
    )
    def get(self, request: Request, key_id: int) -> Response | StreamingHttpResponse:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        traces = trace_list(tenant=request_tenant(request), key_id=key_id, **filters.validated_data)
        if self.wants_csv(request):
            return _trace_csv(traces, filename=f"key-{key_id}-requests-{_now_stamp()}.csv")
        paginator = Pagination()
        page = paginator.paginate_queryset(traces, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class RequestListApi(CsvApiView):
    """``GET /api/v1/requests``: the requests of all the tenant's keys (deleted ones too),
    newest first, paginated, each with its key. The filters of a key's requests, and
    ``?key=<id>`` for one key's (another tenant's key: 404). ``?format=csv``: every
    matching request, streamed."""

    class FilterSerializer(TraceListApi.FilterSerializer):
        key = serializers.IntegerField(
            required=False, min_value=1, max_value=2**63 - 1, help_text="One key's requests."
        )

    class OutputSerializer(TraceListApi.OutputSerializer):
        class KeySerializer(serializers.Serializer):
            id = serializers.IntegerField()
            label = serializers.CharField()  # type: ignore[assignment]
            prefix = serializers.CharField()

        key = KeySerializer(source="client_key")

    @extend_schema(
        summary="All the keys' requests",
        tags=["usage"],
        parameters=[FilterSerializer, *PAGE_PARAMETERS, FORMAT_PARAMETER],
        responses=with_csv(
            {200: paginated(OutputSerializer), **error_responses(400, 404)},
            csv_description=TRACES_CSV,
        ),
    )
    def get(self, request: Request) -> Response | StreamingHttpResponse:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = dict(filters.validated_data)
        key_id = wanted.pop("key", None)
        traces = request_list(tenant=request_tenant(request), key_id=key_id, **wanted)
        if self.wants_csv(request):
            return _trace_csv(traces, filename=f"requests-{_now_stamp()}.csv")
        paginator = Pagination()
        page = paginator.paginate_queryset(traces, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class KeyTracesDeleteApi(APIView):
    """``DELETE /api/v1/keys/{id}/requests``: delete the key's requests (a privacy request),
    after counting them into its usage, which keeps its figures. ``deleted``: how many."""

    class OutputSerializer(serializers.Serializer):
        deleted = serializers.IntegerField(source="deleted_count")

    @extend_schema(
        summary="Delete a key's requests",
        tags=["usage"],
        responses={200: OutputSerializer, **error_responses(404)},
    )
    def delete(self, request: Request, key_id: int) -> Response:
        deletion = key_traces_delete(
            tenant=request_tenant(request), key_id=key_id, actor=request_actor(request)
        )
        return Response(self.OutputSerializer(deletion).data)


class ModelUsageSerializer(UsageTotalsSerializer):
    model = serializers.CharField()


class DayUsageSerializer(serializers.Serializer):
    """A local date in the report's time zone."""

    date = serializers.DateField()
    requests = serializers.IntegerField()
    cost = UsdField(source="cost_nanos")
    client_price = UsdField(source="client_nanos")


class KeyUsageApi(CsvApiView):
    """``GET /api/v1/keys/{id}/usage?window=30d``: the key's totals, per model and per day
    (local to the report's time zone) in the window or ``since``/``until`` range."""

    class OutputSerializer(serializers.Serializer):
        summary = UsageSummarySerializer()
        by_model = ModelUsageSerializer(many=True)
        by_day = DayUsageSerializer(many=True)

    # The schema's account of the answer: ``get`` puts the window before the report.
    class ResponseSerializer(SpanSerializer, OutputSerializer):
        """A key's usage in the window: totals, per model and per local day."""

    @extend_schema(
        summary="A key's usage",
        tags=["usage"],
        parameters=[WindowSerializer, FORMAT_PARAMETER],
        responses=with_csv(
            {200: ResponseSerializer, **error_responses(400, 404)},
            csv_description=SECTIONED_CSV.format(columns=USAGE_CSV_COLUMNS),
        ),
    )
    def get(self, request: Request, key_id: int) -> Response:
        span = request_span(request)
        report = key_usage(
            tenant=request_tenant(request),
            key_id=key_id,
            since=span.since,
            until=span.until,
            zone=span.zone,
        )
        if self.wants_csv(request):
            return self.csv_response(
                key_usage_table(report),
                filename=f"key-{key_id}-usage-{_day(span.since)}-{_day(span.until)}.csv",
            )
        return Response({**window_fields(span), **self.OutputSerializer(report).data})


# A report's ``by_key`` lists every key with traffic (or, in earnings, with spend ever):
# a thousand or more. Through DRF's serializers each costs ~100 field calls, most of a
# request's time; these build the same JSON directly (``tests/usage`` holds them equal to
# the serializers', which stay the schema's account of it).


def _margin(margin: Any) -> str | None:
    return None if margin is None else str(margin)


def key_usage_json(k: KeyUsage) -> dict[str, Any]:
    """``TenantUsageApi.OutputSerializer.KeySerializer(k).data``, faster."""
    return {
        "requests": k.requests,
        "input_tokens": k.input_tokens,
        "output_tokens": k.output_tokens,
        "cached_input_tokens": k.cached_input_tokens,
        "cache_write_tokens": k.cache_write_tokens,
        "cost": format_usd(k.cost_nanos),
        "client_price": format_usd(k.client_nanos),
        "cache_savings": format_usd(k.cache_savings_nanos),
        "client_cache_savings": format_usd(k.client_cache_savings_nanos),
        "profit": format_usd(k.profit_nanos),
        "errors": k.errors,
        "id": k.key.pk,
        "label": str(k.key.label),
        "prefix": str(k.key.prefix),
    }


def key_earnings_json(k: KeyEarnings) -> dict[str, Any]:
    """``EarningsApi.OutputSerializer.KeySerializer(k).data``, faster."""
    figures = k.figures
    key = figures.key
    return {
        "id": key.pk,
        "label": str(key.label),
        "prefix": str(key.prefix),
        "funding": str(key.funding),
        "status": str(figures.status),
        "requests": k.requests,
        "revenue": format_usd(k.client_nanos),
        "cost": format_usd(k.cost_nanos),
        "profit": format_usd(k.profit_nanos),
        "margin_percent": _margin(k.margin_percent),
        "cache_savings": format_usd(k.cache_savings_nanos),
        "client_cache_savings": format_usd(k.client_cache_savings_nanos),
        "all_time": {
            "revenue": format_usd(figures.client_spent_nanos),
            "cost": format_usd(figures.cost_spent_nanos),
            "profit": format_usd(figures.profit_nanos),
        },
    }


class TenantUsageApi(CsvApiView):
    """``GET /api/v1/usage?window=30d``: all the tenant's usage in the window or range:
    totals, per key, per model, per local day and per tag, read in one snapshot."""

    class OutputSerializer(serializers.Serializer):
        class KeySerializer(UsageSummarySerializer):
            id = serializers.IntegerField(source="key.id")
            label = serializers.CharField(source="key.label")  # type: ignore[assignment]
            prefix = serializers.CharField(source="key.prefix")

        class TagSerializer(UsageSummarySerializer):
            tag = serializers.CharField()

        summary = UsageSummarySerializer()
        by_key = KeySerializer(many=True)
        by_model = ModelUsageSerializer(many=True)
        by_day = DayUsageSerializer(many=True)
        by_tag = TagSerializer(many=True)

    # The schema's account of the answer: ``get`` puts the window before the report.
    class ResponseSerializer(SpanSerializer, OutputSerializer):
        """The tenant's usage in the window: totals, per key, model, local day and tag."""

    @extend_schema(
        summary="The account's usage",
        tags=["usage"],
        parameters=[WindowSerializer, FORMAT_PARAMETER],
        responses=with_csv(
            {200: ResponseSerializer, **error_responses(400)},
            csv_description=TENANT_USAGE_CSV,
        ),
    )
    def get(self, request: Request) -> Response:
        span = request_span(request)
        report = tenant_usage(
            tenant=request_tenant(request), since=span.since, until=span.until, zone=span.zone
        )
        if self.wants_csv(request):
            return self.csv_response(
                tenant_usage_table(report),
                filename=f"usage-{_day(span.since)}-{_day(span.until)}.csv",
            )
        body = self.OutputSerializer(dataclasses.replace(report, by_key=[])).data
        body["by_key"] = [key_usage_json(k) for k in report.by_key]
        return Response({**window_fields(span), **body})


class TagUsageApi(CsvApiView):
    """``GET /api/v1/usage/by-tag?window=30d``: usage per tag across the tenant's keys,
    largest client price first; untagged requests are the tag ``""``."""

    class OutputSerializer(UsageSummarySerializer):
        tag = serializers.CharField()

    ResponseSerializer = by_tag_in_window(OutputSerializer)

    @extend_schema(
        summary="Usage per tag",
        tags=["usage"],
        parameters=[WindowSerializer, FORMAT_PARAMETER],
        responses=with_csv(
            {200: ResponseSerializer, **error_responses(400)},
            csv_description=f"CSV: one row per tag; columns tag, {USAGE_CSV_COLUMNS}.",
        ),
    )
    def get(self, request: Request) -> Response:
        span = request_span(request)
        tags = tag_usage(tenant=request_tenant(request), since=span.since, until=span.until)
        if self.wants_csv(request):
            return self.csv_response(
                tag_usage_table(tags),
                filename=f"usage-by-tag-{_day(span.since)}-{_day(span.until)}.csv",
            )
        return Response(
            {**window_fields(span), "by_tag": self.OutputSerializer(tags, many=True).data}
        )


class EarningsApi(CsvApiView):
    """``GET /api/v1/earnings?window=30d``: revenue (client prices), cost, profit and margin
    in the window or ``since``/``until`` range (from rollups and traces), per local month
    with traffic (``by_month``); ``all_time`` from the keys' settled counters; and both per
    key. ``margin_percent`` is null without revenue. ``cache_savings`` (at cost) and
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

        class MonthSerializer(serializers.Serializer):
            month = serializers.DateField(
                help_text="The month's first day, in the report's time zone."
            )
            requests = serializers.IntegerField()
            revenue = UsdField(source="client_nanos")
            cost = UsdField(source="cost_nanos")
            profit = UsdField(source="profit_nanos")
            margin_percent = serializers.CharField(allow_null=True)

        requests = serializers.IntegerField(source="window.requests")
        revenue = UsdField(source="window.client_nanos")
        cost = UsdField(source="window.cost_nanos")
        profit = UsdField(source="window.profit_nanos")
        margin_percent = serializers.CharField(source="window.margin_percent", allow_null=True)
        cache_savings = UsdField(source="window.cache_savings_nanos")
        client_cache_savings = UsdField(source="window.client_cache_savings_nanos")
        all_time = AllTimeSerializer(source="*")
        by_key = KeySerializer(many=True)
        by_month = MonthSerializer(many=True)

    # The schema's account of the answer: ``get`` puts the window before the earnings.
    class ResponseSerializer(SpanSerializer, OutputSerializer):
        """Revenue, cost, profit and margin in the window, all time, per key and per month."""

    @extend_schema(
        summary="Earnings",
        tags=["usage"],
        parameters=[WindowSerializer, FORMAT_PARAMETER],
        responses=with_csv(
            {200: ResponseSerializer, **error_responses(400)},
            csv_description=(
                "CSV: one row per key (the tenant's totals are the columns' sums); columns "
                "key_id, label, prefix, funding, status, requests, revenue, cost, profit, "
                "margin_percent, all_time_revenue, all_time_cost, all_time_profit."
            ),
        ),
    )
    def get(self, request: Request) -> Response:
        span = request_span(request)
        earnings = earnings_summary(
            tenant=request_tenant(request), since=span.since, until=span.until, zone=span.zone
        )
        if self.wants_csv(request):
            return self.csv_response(
                earnings_table(earnings),
                filename=f"earnings-{_day(span.since)}-{_day(span.until)}.csv",
            )
        body = self.OutputSerializer(dataclasses.replace(earnings, by_key=[])).data
        body["by_key"] = [key_earnings_json(k) for k in earnings.by_key]
        return Response({**window_fields(span), **body})


def statement_month(text: str, *, zone: ZoneInfo) -> tuple[int, int]:
    """``YYYY-MM`` as (year, month) (``usage.windows.month_parse``), else a 400 saying why."""
    try:
        return month_parse(text, zone=zone)
    except MonthInvalid as exc:
        raise serializers.ValidationError({"month": [str(exc)]}) from exc


class KeyStatementApi(CsvApiView):
    """``GET /api/v1/keys/{id}/statements/YYYY-MM``: what a reseller attaches to the invoice
    it sends its client for a month, in client prices only (never cost or profit): the
    reseller (display name, support email), the key, the month in the reseller's time zone
    (its first day and the next month's, both starting at local midnight), the totals, and
    per model and per local day. The current month so far is allowed, a later one is a 400."""

    class OutputSerializer(serializers.Serializer):
        class ResellerSerializer(serializers.Serializer):
            display_name = serializers.CharField(source="name")
            support_email = serializers.CharField()

        class KeySerializer(serializers.Serializer):
            id = serializers.IntegerField()
            label = serializers.CharField()  # type: ignore[assignment]
            prefix = serializers.CharField()

        class PeriodSerializer(serializers.Serializer):
            month = serializers.CharField()
            start = serializers.DateField(source="first_day", help_text="The month's first day.")
            end = serializers.DateField(
                source="next_first_day", help_text="The next month's first day (exclusive)."
            )
            timezone = serializers.CharField(source="zone.key")
            since = serializers.DateTimeField(help_text="The start's local midnight, in UTC.")
            until = serializers.DateTimeField(help_text="The end's local midnight, in UTC.")

        class TotalsSerializer(serializers.Serializer):
            requests = serializers.IntegerField()
            input_tokens = serializers.IntegerField()
            output_tokens = serializers.IntegerField()
            cached_input_tokens = serializers.IntegerField()
            client_price = UsdField(source="client_nanos")
            cache_savings = UsdField(
                source="client_cache_savings_nanos",
                help_text="What cached reads saved the client: cached tokens at the input "
                "price less at the cached price, at the client's prices.",
            )

        class ModelSerializer(TotalsSerializer):
            model = serializers.CharField()

        class DaySerializer(serializers.Serializer):
            date = serializers.DateField()
            requests = serializers.IntegerField()
            client_price = UsdField(source="client_nanos")

        reseller = ResellerSerializer(source="tenant")
        key = KeySerializer()
        period = PeriodSerializer(source="*")
        currency = serializers.SerializerMethodField()
        totals = TotalsSerializer()
        by_model = ModelSerializer(many=True)
        by_day = DaySerializer(many=True)

        def get_currency(self, statement: Any) -> str:
            return CURRENCY

    @extend_schema(
        summary="A key's monthly statement",
        tags=["usage"],
        parameters=[
            OpenApiParameter(
                "month",
                {"type": "string", "pattern": MONTH_PATTERN},
                location=OpenApiParameter.PATH,
                description=(
                    "YYYY-MM, a month of the reseller's time zone, from 2000-01 to the current one."
                ),
            ),
            FORMAT_PARAMETER,
        ],
        responses=with_csv(
            {200: OutputSerializer, **error_responses(400, 404)},
            csv_description=(
                "CSV: one table, a `section` column saying what each row is: `total` (the "
                "month), `model` (one per model), `day` (one per local day with traffic); "
                "columns section, date, model, requests, input_tokens, output_tokens, "
                "cached_input_tokens, client_price, cache_savings (at the client's prices)."
            ),
        ),
    )
    def get(self, request: Request, key_id: int, month: str) -> Response:
        tenant = request_tenant(request)
        year, number = statement_month(month, zone=tenant.zone)
        statement = key_statement(tenant=tenant, key_id=key_id, year=year, month=number)
        if self.wants_csv(request):
            prefix = statement.key.prefix
            return self.csv_response(
                statement_table(statement), filename=f"statement-{prefix}-{statement.month}.csv"
            )
        return Response(self.OutputSerializer(statement).data)


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


class SubAccountUsageApi(CsvApiView):
    """``GET /v1/sub-accounts/{id}/usage?window=30d``: totals, per model and per day (local
    to the report's time zone: the account's, or ``?tz=``), in cents of client price (each
    figure rounded once, half up, from its exact sum)."""

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
        """A sub-account's usage in the window, in cents: totals, per model, per local day."""

    @extend_schema(
        summary="A sub-account's usage",
        tags=["sub-accounts"],
        parameters=[WindowSerializer, FORMAT_PARAMETER],
        responses=with_csv(
            {200: ResponseSerializer, **error_responses(400, 404)},
            csv_description=SECTIONED_CSV.format(columns=SUB_ACCOUNT_CSV_COLUMNS),
        ),
    )
    def get(self, request: Request, key_id: int) -> Response:
        span = request_span(request)
        report = sub_account_usage(
            tenant=request_tenant(request),
            key_id=key_id,
            since=span.since,
            until=span.until,
            zone=span.zone,
        )
        if self.wants_csv(request):
            return self.csv_response(
                sub_account_usage_table(report),
                filename=f"sub-account-{key_id}-usage-{_day(span.since)}-{_day(span.until)}.csv",
            )
        return Response({**window_fields(span), **self.OutputSerializer(report).data})


class SubAccountTagUsageApi(CsvApiView):
    """``GET /v1/usage/by-tag?window=30d``: the sub-accounts' usage per tag, in cents,
    largest first; untagged requests are the tag ``""``."""

    class OutputSerializer(SubAccountUsageTotalsSerializer):
        tag = serializers.CharField()

    ResponseSerializer = by_tag_in_window(OutputSerializer)

    @extend_schema(
        summary="Sub-account usage per tag",
        tags=["sub-accounts"],
        parameters=[WindowSerializer, FORMAT_PARAMETER],
        responses=with_csv(
            {200: ResponseSerializer, **error_responses(400)},
            csv_description=f"CSV: one row per tag; columns tag, {SUB_ACCOUNT_CSV_COLUMNS}.",
        ),
    )
    def get(self, request: Request) -> Response:
        span = request_span(request)
        tags = tag_usage(
            tenant=request_tenant(request),
            since=span.since,
            until=span.until,
            sub_accounts_only=True,
        )
        if self.wants_csv(request):
            return self.csv_response(
                sub_account_tag_table(tags),
                filename=f"sub-account-usage-by-tag-{_day(span.since)}-{_day(span.until)}.csv",
            )
        return Response(
            {**window_fields(span), "by_tag": self.OutputSerializer(tags, many=True).data}
        )
