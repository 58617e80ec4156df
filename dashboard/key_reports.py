"""A key's reports in the dashboard: its usage (charts and tables), its requests (filters,
pages, CSV) and its monthly statement (a printable page, CSV).

Each page reads through the ``usage.selectors`` the REST API reads through (``usage.apis``:
``GET /api/v1/keys/{id}/usage``, ``/requests``, ``/statements/YYYY-MM``) with the signed-in
tenant, so its figures are the API's; its ``?format=csv`` is the API's CSV, built by the
same ``usage.exports`` tables. Another tenant's key id is a 404, CSV included.

One view, two renderings: an htmx request gets the page's ``report`` fragment alone (what the
key page embeds), any other the whole page. Inside the fragment, the window links, filters
and pages swap the fragment in place; they also work as plain links and forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from billing.money import format_usd
from billing.selectors import known_models
from config.exports import csv_download, csv_stream
from dashboard.access import page_key, page_tenant, reseller_page
from dashboard.forms.key_reports import RequestFilterForm
from pages.charts import span_days
from pages.forms import UsageSpanForm
from pages.reports import (
    CSV_FORMAT,
    file_day,
    month_statement,
    query_with,
    report_page,
    series,
    statement_months,
    statements_month,
    wants_csv,
    window_links,
)
from usage.exports import (
    TRACE_TABLE,
    key_usage_table,
    statement_table,
    trace_pages,
    trace_row,
)
from usage.models import Trace
from usage.selectors import UsageReport, key_usage, trace_list
from usage.windows import Span, months_since

# Rows per page of the requests list (the API's default page size).
REQUESTS_PAGE_SIZE = 50


# ---------------------------------------------------------------------------------- usage

# Chart colours, by what a series means (the stylesheet's --tg-good for profit).
CLIENT_COLOUR = "#0172ad"
COST_COLOUR = "#a15c00"
PROFIT_COLOUR = "#1e7b4c"
ERROR_COLOUR = "#b3261e"
INPUT_COLOUR = "#0172ad"
OUTPUT_COLOUR = "#7b4fbf"
CACHED_COLOUR = "#5f6b7a"


@dataclass(frozen=True, slots=True)
class UsageCharts:
    """What the usage page's Chart.js charts draw (``app.js``: labels and datasets, money
    as decimal strings of dollars); the figures themselves are in the page's tables."""

    money_by_day: dict[str, Any]
    requests_by_day: dict[str, Any]
    tokens_by_day: dict[str, Any]
    money_by_model: dict[str, Any]


def usage_charts(report: UsageReport, span: Span) -> UsageCharts:
    days = span_days(report.by_day, span)
    labels = [f"{d.date:%b} {d.date.day}" for d in days]
    models = report.by_model
    return UsageCharts(
        money_by_day={
            "labels": labels,
            "datasets": [
                series("Client spend", CLIENT_COLOUR, [format_usd(d.client_nanos) for d in days]),
                series("Cost", COST_COLOUR, [format_usd(d.cost_nanos) for d in days]),
                series("Profit", PROFIT_COLOUR, [format_usd(d.profit_nanos) for d in days]),
            ],
        },
        requests_by_day={
            "labels": labels,
            "datasets": [
                series("Requests", CLIENT_COLOUR, [d.requests for d in days]),
                series("Errors", ERROR_COLOUR, [d.errors for d in days]),
            ],
        },
        tokens_by_day={
            "labels": labels,
            "datasets": [
                series("Input", INPUT_COLOUR, [d.input_tokens for d in days]),
                series("Output", OUTPUT_COLOUR, [d.output_tokens for d in days]),
                series("Cached input", CACHED_COLOUR, [d.cached_input_tokens for d in days]),
            ],
        },
        money_by_model={
            "labels": [m.model for m in models],
            "datasets": [
                series("Client spend", CLIENT_COLOUR, [format_usd(m.client_nanos) for m in models]),
                series("Cost", COST_COLOUR, [format_usd(m.cost_nanos) for m in models]),
                series("Profit", PROFIT_COLOUR, [format_usd(m.profit_nanos) for m in models]),
            ],
        },
    )


# The usage tables' columns beyond the fewest (``pages/usage_by_model.html``).
USAGE_COLUMNS = ("traffic", "exact", "cost")


@require_GET
@reseller_page
def key_usage_page(request: HttpRequest, key_id: int) -> HttpResponse:
    """``/dashboard/keys/<id>/usage/?window=7d|30d|90d`` or ``?month=YYYY-MM``: the key's
    usage by day and by model (``GET /api/v1/keys/{id}/usage``'s report, and its CSV)."""
    tenant = page_tenant(request)
    key = page_key(request, key_id)
    form = UsageSpanForm(request.GET, zone=tenant.zone)
    span = form.span()
    report = key_usage(
        tenant=tenant, key_id=key.pk, since=span.since, until=span.until, zone=span.zone
    )
    if wants_csv(request):
        return csv_download(
            key_usage_table(report),
            filename=f"key-{key.pk}-usage-{file_day(span.since)}-{file_day(span.until)}.csv",
        )
    return report_page(
        request,
        "dashboard/key_reports/usage.html",
        {
            "tenant": tenant,
            "key": key,
            "form": form,
            "span": span,
            "last_instant": span.until - timedelta(microseconds=1),
            "report": report,
            "charts": usage_charts(report, span),
            "windows": window_links(request.GET),
            "usage_columns": USAGE_COLUMNS,
            "window_name": form.window_name,
            "month_value": form.month_value,
            "months": months_since(key.created_at, zone=tenant.zone),
            "csv_query": query_with(request.GET, format=CSV_FORMAT),
        },
    )


# ------------------------------------------------------------------------------- requests


def _page_param(number: int) -> str | None:
    """``?page=`` of a page of requests (none for the first)."""
    return None if number == 1 else str(number)


STATUS_BADGES: dict[str, str] = {
    Trace.Status.OK: "badge-good",
    Trace.Status.REFUSED: "badge-warn",
    Trace.Status.CLIENT_DISCONNECTED: "badge-warn",
    Trace.Status.UPSTREAM_ERROR: "badge-bad",
}


# The requests table's columns beyond the client's (``pages/requests_table.html``).
REQUEST_COLUMNS = ("cost", "error_class", "first_token", "tag")


def _shown_trace(trace: Trace) -> dict[str, Any]:
    """A request as the table shows it: the trace's figures, its status's label and badge."""
    return {
        "request_id": trace.request_id,
        "created_at": trace.created_at,
        "model": trace.model,
        "status_code": trace.status_code,
        "outcome": trace.get_status_display(),
        "badge": STATUS_BADGES.get(trace.status, ""),
        "error_class": trace.error_class,
        "input_tokens": trace.input_tokens,
        "output_tokens": trace.output_tokens,
        "cached_input_tokens": trace.cached_input_tokens,
        "client_nanos": trace.client_nanos,
        "cost_nanos": trace.cost_nanos,
        "latency_ms": trace.latency_ms,
        "ttft_ms": trace.ttft_ms,
        "tag": trace.tag,
    }


@require_GET
@reseller_page
def key_requests_page(request: HttpRequest, key_id: int) -> HttpResponse | StreamingHttpResponse:
    """``/dashboard/keys/<id>/requests/``: the key's requests, newest first, filtered and
    paged as ``GET /api/v1/keys/{id}/requests`` (``?model= &status= &tag= &untagged=1
    &since= &until= &page=``); ``?format=csv``: every matching request, streamed, the
    API's CSV."""
    tenant = page_tenant(request)
    key = page_key(request, key_id)
    form = RequestFilterForm(request.GET, zone=tenant.zone)
    valid = form.is_valid()
    traces = trace_list(tenant=tenant, key_id=key.pk, **(form.filters() if valid else {}))
    if wants_csv(request) and valid:
        return csv_stream(
            TRACE_TABLE,
            trace_pages(traces),
            row=trace_row,
            filename=f"key-{key.pk}-requests-{timezone.now():%Y%m%dT%H%MZ}.csv",
        )
    number = form.page_number
    rows: list[Trace] = []
    if valid:
        offset = (number - 1) * REQUESTS_PAGE_SIZE
        # One row more than the page shows: whether an older page follows, without a count.
        rows = list(traces[offset : offset + REQUESTS_PAGE_SIZE + 1])
    has_older = len(rows) > REQUESTS_PAGE_SIZE
    rows = rows[:REQUESTS_PAGE_SIZE]
    filtered = any(
        request.GET.get(name) for name in ("model", "status", "tag", "untagged", "since", "until")
    )
    return report_page(
        request,
        "dashboard/key_reports/requests.html",
        {
            "tenant": tenant,
            "key": key,
            "form": form,
            "rows": [_shown_trace(trace) for trace in rows],
            "request_columns": REQUEST_COLUMNS,
            "page_number": number,
            "newer_query": None
            if number == 1
            else query_with(request.GET, page=_page_param(number - 1)),
            "older_query": query_with(request.GET, page=_page_param(number + 1))
            if has_older
            else None,
            "filtered": filtered,
            "models": sorted(known_models()),
            "csv_query": query_with(request.GET, page=None, format=CSV_FORMAT) if valid else None,
        },
        status=200 if valid else 400,
    )


# ----------------------------------------------------------------------------- statements


@require_GET
@reseller_page
def key_statements(request: HttpRequest, key_id: int) -> HttpResponse:
    """``/dashboard/keys/<id>/statements/`` (``?month=YYYY-MM``, the month picker without
    JavaScript): to that month's statement, or to the current month's."""
    tenant = page_tenant(request)
    key = page_key(request, key_id)
    month = statements_month(request.GET.get("month", ""), zone=tenant.zone)
    return HttpResponseRedirect(
        reverse("dashboard:key-statement", kwargs={"key_id": key.pk, "month": month})
    )


@require_GET
@reseller_page
def key_statement_page(request: HttpRequest, key_id: int, month: str) -> HttpResponse:
    """``/dashboard/keys/<id>/statements/YYYY-MM/``: the key's month in the tenant's time
    zone, client prices only, printable (``GET /api/v1/keys/{id}/statements/YYYY-MM``;
    ``?format=csv``: its CSV). A month the API refuses (malformed, not begun) is a 404."""
    tenant = page_tenant(request)
    key = page_key(request, key_id)
    statement = month_statement(tenant=tenant, key_id=key.pk, month=month)
    if wants_csv(request):
        return csv_download(
            statement_table(statement),
            filename=f"statement-{key.prefix}-{statement.month}.csv",
        )
    return report_page(
        request,
        "dashboard/key_reports/statement.html",
        {
            "tenant": tenant,
            "key": key,
            "statement": statement,
            # a month before the key is an empty statement (the API answers it too)
            **statement_months(statement, key_created_at=key.created_at, zone=tenant.zone),
        },
    )
