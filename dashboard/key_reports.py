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
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    QueryDict,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from billing.money import format_usd
from billing.selectors import known_models
from config.exports import csv_download, csv_stream
from dashboard.access import page_key, page_tenant, reseller_page
from dashboard.forms.key_reports import RequestFilterForm
from pages.forms import USAGE_WINDOWS, UsageSpanForm
from usage.exports import (
    TRACE_TABLE,
    key_usage_table,
    statement_table,
    trace_pages,
    trace_row,
)
from usage.models import Trace
from usage.selectors import DayUsage, UsageReport, key_statement, key_usage, trace_list
from usage.windows import MonthInvalid, Span, month_parse, months_since

# Rows per page of the requests list (the API's default page size).
REQUESTS_PAGE_SIZE = 50
CSV_FORMAT = "csv"
FRAGMENT = "report"


def _wants_csv(request: HttpRequest) -> bool:
    return request.GET.get("format") == CSV_FORMAT


def _day(at: datetime) -> str:
    """A file name's date, as the API's downloads name theirs."""
    return f"{at:%Y%m%d}"


def _page(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    """The whole page, or only its fragment for htmx (the answer varies on HX-Request, so
    no cache hands the fragment to a page load)."""
    context["pushes_url"] = _pushes_url(request)
    name = f"{template}#{FRAGMENT}" if request.htmx else template  # type: ignore[attr-defined]
    response = render(request, name, context)
    patch_vary_headers(response, ("HX-Request",))
    return response


def _pushes_url(request: HttpRequest) -> bool:
    """Whether the fragment's links put their URL in the address bar: on its own page, yes
    (a reload shows the same report); embedded in another page (the key page), no."""
    htmx = request.htmx  # type: ignore[attr-defined]
    if not htmx or not htmx.current_url:
        return True
    return bool(urlsplit(htmx.current_url).path == request.path)


def _query(request: HttpRequest, **changes: str | None) -> str:
    """This page's query string with ``changes`` made (None removes a parameter)."""
    query: QueryDict = request.GET.copy()
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return f"?{query.urlencode()}" if query else ""


# ---------------------------------------------------------------------------------- usage

# Chart colours, by what a series means (the stylesheet's --tg-good for profit).
CLIENT_COLOUR = "#0172ad"
COST_COLOUR = "#a15c00"
PROFIT_COLOUR = "#1e7b4c"
ERROR_COLOUR = "#b3261e"
INPUT_COLOUR = "#0172ad"
OUTPUT_COLOUR = "#7b4fbf"
CACHED_COLOUR = "#5f6b7a"


def _series(label: str, colour: str, data: list[str] | list[int]) -> dict[str, Any]:
    return {"label": label, "data": data, "borderColor": colour, "backgroundColor": colour}


def _dates(span: Span) -> list[date]:
    """Every local date the span touches, oldest first (a chart's days, traffic or not)."""
    first = span.since.astimezone(span.zone).date()
    last = (span.until - timedelta(microseconds=1)).astimezone(span.zone).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass(frozen=True, slots=True)
class UsageCharts:
    """What the usage page's Chart.js charts draw (``app.js``: labels and datasets, money
    as decimal strings of dollars); the figures themselves are in the page's tables."""

    money_by_day: dict[str, Any]
    requests_by_day: dict[str, Any]
    tokens_by_day: dict[str, Any]
    money_by_model: dict[str, Any]


def usage_charts(report: UsageReport, span: Span) -> UsageCharts:
    dates = _dates(span)
    by_date: dict[date, DayUsage] = {day.date: day for day in report.by_day}
    days = [by_date.get(day) for day in dates]
    labels = [f"{day:%b} {day.day}" for day in dates]

    def money(day: DayUsage | None, name: str) -> str:
        return format_usd(getattr(day, name) if day is not None else 0)

    def count(day: DayUsage | None, name: str) -> int:
        return int(getattr(day, name)) if day is not None else 0

    models = report.by_model
    return UsageCharts(
        money_by_day={
            "labels": labels,
            "datasets": [
                _series("Client spend", CLIENT_COLOUR, [money(d, "client_nanos") for d in days]),
                _series("Cost", COST_COLOUR, [money(d, "cost_nanos") for d in days]),
                _series("Profit", PROFIT_COLOUR, [money(d, "profit_nanos") for d in days]),
            ],
        },
        requests_by_day={
            "labels": labels,
            "datasets": [
                _series("Requests", CLIENT_COLOUR, [count(d, "requests") for d in days]),
                _series("Errors", ERROR_COLOUR, [count(d, "errors") for d in days]),
            ],
        },
        tokens_by_day={
            "labels": labels,
            "datasets": [
                _series("Input", INPUT_COLOUR, [count(d, "input_tokens") for d in days]),
                _series("Output", OUTPUT_COLOUR, [count(d, "output_tokens") for d in days]),
                _series(
                    "Cached input", CACHED_COLOUR, [count(d, "cached_input_tokens") for d in days]
                ),
            ],
        },
        money_by_model={
            "labels": [m.model for m in models],
            "datasets": [
                _series(
                    "Client spend", CLIENT_COLOUR, [format_usd(m.client_nanos) for m in models]
                ),
                _series("Cost", COST_COLOUR, [format_usd(m.cost_nanos) for m in models]),
                _series("Profit", PROFIT_COLOUR, [format_usd(m.profit_nanos) for m in models]),
            ],
        },
    )


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
    if _wants_csv(request):
        return csv_download(
            key_usage_table(report),
            filename=f"key-{key.pk}-usage-{_day(span.since)}-{_day(span.until)}.csv",
        )
    shown_month = form.cleaned_data.get("month") if form.is_valid() else None
    return _page(
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
            "windows": [
                {
                    "name": name,
                    "days": window.length.days,
                    "query": _query(request, window=name, month=None, format=None),
                }
                for name, window in USAGE_WINDOWS.items()
            ],
            "window_name": form.window_name,
            "month_value": f"{shown_month[0]:04d}-{shown_month[1]:02d}" if shown_month else "",
            "months": months_since(key.created_at, zone=tenant.zone),
            "csv_query": _query(request, format=CSV_FORMAT),
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
    if _wants_csv(request) and valid:
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
    response = _page(
        request,
        "dashboard/key_reports/requests.html",
        {
            "tenant": tenant,
            "key": key,
            "form": form,
            "rows": [(trace, STATUS_BADGES.get(trace.status, "")) for trace in rows],
            "page_number": number,
            "newer_query": None if number == 1 else _query(request, page=_page_param(number - 1)),
            "older_query": _query(request, page=_page_param(number + 1)) if has_older else None,
            "filtered": filtered,
            "models": sorted(known_models()),
            "csv_query": _query(request, page=None, format=CSV_FORMAT) if valid else None,
        },
    )
    if not valid:
        response.status_code = 400
    return response


# ----------------------------------------------------------------------------- statements


def _month_text(first_day: date) -> str:
    return f"{first_day:%Y-%m}"


@require_GET
@reseller_page
def key_statements(request: HttpRequest, key_id: int) -> HttpResponse:
    """``/dashboard/keys/<id>/statements/`` (``?month=YYYY-MM``, the month picker without
    JavaScript): to that month's statement, or to the current month's."""
    tenant = page_tenant(request)
    key = page_key(request, key_id)
    month = request.GET.get("month", "")
    try:
        month_parse(month, zone=tenant.zone)
    except MonthInvalid:
        month = _month_text(timezone.now().astimezone(tenant.zone).date())
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
    try:
        year, number = month_parse(month, zone=tenant.zone)
    except MonthInvalid:
        raise Http404("No such month.") from None
    statement = key_statement(tenant=tenant, key_id=key.pk, year=year, month=number)
    if _wants_csv(request):
        return csv_download(
            statement_table(statement),
            filename=f"statement-{key.prefix}-{statement.month}.csv",
        )
    months = months_since(key.created_at, zone=tenant.zone)
    if statement.first_day not in months:  # a month before the key (the API answers it too)
        months = sorted({*months, statement.first_day}, reverse=True)
    index = months.index(statement.first_day)
    newer = months[index - 1] if index > 0 else None
    older = months[index + 1] if index + 1 < len(months) else None
    return _page(
        request,
        "dashboard/key_reports/statement.html",
        {
            "tenant": tenant,
            "key": key,
            "statement": statement,
            "last_day": statement.next_first_day - timedelta(days=1),
            "months": [(_month_text(m), m) for m in months],
            "month_value": statement.month,
            "newer_month": _month_text(newer) if newer else None,
            "older_month": _month_text(older) if older else None,
        },
    )
