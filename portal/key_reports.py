"""A bound key's reports in the portal, at the client's prices: its usage (charts and
tables by day and by model), its requests (filters, keyset pages, CSV) and its printable
monthly statement (CSV too), under its reseller's name.

Each page reads the reseller's own report selectors (``usage.selectors.key_usage``,
``key_statement``, ``request_list``) with the key's reseller as tenant, so its figures are
the reseller's reports' figures, but it reads only the client's columns of them: the
spend (``client_nanos``) and what caching saved at that price, never the reseller's cost,
profit or ratio. The key is reached only through the signed-in client's binding
(``portal.selectors.binding_get``): any other key id answers 404, whatever the method.

One view, two renderings: an htmx request gets the page's ``report`` fragment alone (what
the key's page embeds), any other the whole page; inside the fragment the window links,
filters and pages swap it in place, and work as plain links and forms without JavaScript.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from functools import partial, wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponseBase,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    QueryDict,
)
from django.urls import reverse
from django.utils import timezone

from billing.money import format_usd
from config.exports import csv_download, csv_stream
from keys.models import ClientKey
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
from portal.access import client_page, page_client
from portal.exports import REQUEST_TABLE, request_row, usage_table
from portal.key_forms import Cursor, Outcome, RequestFilterForm
from portal.key_selectors import Row, client_requests, requests_after, requests_page
from portal.models import PortalBinding
from portal.selectors import binding_get
from usage.models import Trace
from usage.selectors import UsageReport, key_usage
from usage.windows import Span, months_since

# Requests a page of the list shows, and how many the key's own page shows.
REQUESTS_PAGE_SIZE = 50
# Rows per query of the streamed CSV of requests.
EXPORT_PAGE_SIZE = 2_000

# (request, binding, and the URL's other parameters, e.g. a statement's month)
KeyView = Callable[..., HttpResponseBase]


def bound_key_page(*methods: str) -> Callable[[KeyView], Callable[..., HttpResponseBase]]:
    """A page of a key the signed-in client bound, taking ``methods``; the view gets the
    binding (its key and the key's reseller loaded). The binding is looked up first, so a
    key id the client has not bound answers 404 whatever the method (never a 405 that would
    tell a key's pages from a missing one's)."""

    def decorate(view: KeyView) -> Callable[..., HttpResponseBase]:
        @wraps(view)
        def wrapped(request: HttpRequest, key_id: int, **kwargs: Any) -> HttpResponseBase:
            binding = binding_get(client=page_client(request), key_id=key_id)
            if request.method not in methods:
                return HttpResponseNotAllowed(methods)
            return view(request, binding, **kwargs)

        return client_page(wrapped)

    return decorate


# ---------------------------------------------------------------------------------- usage

# Pico's primary blue (what the client spent) and the pages' red for errors.
SPEND_COLOUR = "#0172ad"
ERROR_COLOUR = "#b3261e"


def usage_charts(report: UsageReport, span: Span) -> dict[str, dict[str, Any]]:
    """What the usage charts draw (``app.js``): the spend (dollars as decimal strings) and
    the requests of every day of the span, traffic or not, and the spend per model."""
    days = span_days(report.by_day, span)
    labels = [f"{d.date:%b} {d.date.day}" for d in days]
    return {
        "spend_by_day": {
            "labels": labels,
            "datasets": [series("Spend", SPEND_COLOUR, [format_usd(d.client_nanos) for d in days])],
        },
        "requests_by_day": {
            "labels": labels,
            "datasets": [
                series("Requests", SPEND_COLOUR, [d.requests for d in days]),
                series("Errors", ERROR_COLOUR, [d.errors for d in days]),
            ],
        },
        "spend_by_model": {
            "labels": [m.model for m in report.by_model],
            "datasets": [
                series("Spend", SPEND_COLOUR, [format_usd(m.client_nanos) for m in report.by_model])
            ],
        },
    }


# The usage tables' columns beyond the fewest (``pages/usage_by_model.html``): never the
# reseller's "cost".
USAGE_COLUMNS = ("traffic", "exact", "totals", "model_links")


def usage_context(key: ClientKey, params: QueryDict) -> dict[str, Any]:
    """The usage fragment's context for the query ``params`` (the last 30 days when it is
    empty); ``report`` is None when the query cannot be read (the form's errors say why)."""
    zone = key.tenant.zone
    form = UsageSpanForm(params, zone=zone)
    context: dict[str, Any] = {
        "key": key,
        "form": form,
        "zone": zone,
        "usage_url": reverse("portal:key-usage", kwargs={"key_id": key.pk}),
        "requests_url": reverse("portal:key-requests", kwargs={"key_id": key.pk}),
        "windows": window_links(params),
        "usage_columns": USAGE_COLUMNS,
        "window_name": form.window_name,
        "month_value": form.month_value,
        "months": months_since(key.created_at, zone=zone),
        "report": None,
    }
    if not form.is_valid():
        return context
    span = form.span()
    report = key_usage(
        tenant=key.tenant, key_id=key.pk, since=span.since, until=span.until, zone=span.zone
    )
    context.update(
        span=span,
        last_instant=span.until - timedelta(microseconds=1),
        report=report,
        charts=usage_charts(report, span),
        csv_query=query_with(params, format=CSV_FORMAT),
    )
    return context


@bound_key_page("GET")
def key_usage_page(request: HttpRequest, binding: PortalBinding) -> HttpResponseBase:
    """``/portal/keys/<id>/usage/?window=7d|30d|90d`` or ``?month=YYYY-MM``: the key's
    spend and requests by day and by model; ``?format=csv``: the same as a table. A query
    that cannot be read is a 400 page saying why."""
    key = binding.key
    context = usage_context(key, request.GET)
    report = context["report"]
    if report is not None and wants_csv(request):
        span = context["span"]
        return csv_download(
            usage_table(report),
            filename=f"key-{key.prefix}-usage-{file_day(span.since)}-{file_day(span.until)}.csv",
        )
    context["report_title"] = "Usage"
    status = 200 if report is not None else 400
    return report_page(request, "portal/keys/usage.html", context, status=status)


# ------------------------------------------------------------------------------- requests


def shown_requests(rows: list[Row]) -> list[Row]:
    """Requests as the table shows them: each with its outcome's label and badge."""
    shown = []
    for row in rows:
        _, label, badge = Outcome.of(row["status"])
        shown.append({**row, "outcome": label, "badge": badge})
    return shown


async def _request_pages(traces: QuerySet[Trace]) -> AsyncIterator[list[Row]]:
    """Every request of ``traces``, newest first, a page a query, each in the request's
    own thread, so the export holds no transaction and no more than a page in memory."""
    after: Cursor | None = None
    while True:
        page = await sync_to_async(requests_after)(traces, after=after, limit=EXPORT_PAGE_SIZE)
        if page:
            yield page
        if len(page) < EXPORT_PAGE_SIZE:
            return
        after = Cursor(at=page[-1]["created_at"], trace_id=page[-1]["id"])


@bound_key_page("GET")
def key_requests_page(request: HttpRequest, binding: PortalBinding) -> HttpResponseBase:
    """``/portal/keys/<id>/requests/``: the key's requests, newest first (``?model=``,
    ``?status=ok|error|stopped``), a page at a time (``?before=`` / ``?after=``);
    ``?format=csv``: every matching request, streamed."""
    key = binding.key
    zone = key.tenant.zone
    form = RequestFilterForm(request.GET)
    valid = form.is_valid()
    traces = (
        client_requests(
            key=key, model=form.cleaned_data["model"], outcome=form.cleaned_data["status"]
        )
        if valid
        else None
    )
    if traces is not None and wants_csv(request):
        return csv_stream(
            REQUEST_TABLE,
            _request_pages(traces),
            row=partial(request_row, zone=zone),
            filename=f"key-{key.prefix}-requests-{timezone.now():%Y%m%dT%H%MZ}.csv",
        )
    context: dict[str, Any] = {
        "key": key,
        "zone": zone,
        "form": form,
        "report_title": "Requests",
        "requests_url": reverse("portal:key-requests", kwargs={"key_id": key.pk}),
        "models": key.allowed_models,
        "rows": [],
        "is_filtered": form.is_filtered,
        "newer_query": None,
        "older_query": None,
        "is_paged": False,
    }
    if traces is not None:
        asked = form.cleaned_data
        page = requests_page(
            traces, before=asked["before"], after=asked["after"], size=REQUESTS_PAGE_SIZE
        )
        params = request.GET
        context.update(
            rows=shown_requests(page.rows),
            is_paged=bool(asked["before"] or asked["after"]),
            newer_query=(
                query_with(params, after=str(page.newer), before=None, format=None)
                if page.newer
                else None
            ),
            older_query=(
                query_with(params, before=str(page.older), after=None, format=None)
                if page.older
                else None
            ),
            newest_query=query_with(params, before=None, after=None, format=None),
            csv_query=query_with(params, before=None, after=None, format=CSV_FORMAT),
        )
    return report_page(
        request, "portal/keys/requests.html", context, status=200 if traces is not None else 400
    )


# ----------------------------------------------------------------------------- statements


@bound_key_page("GET")
def key_statements(request: HttpRequest, binding: PortalBinding) -> HttpResponseBase:
    """``/portal/keys/<id>/statements/`` (``?month=YYYY-MM``: the month picker without
    JavaScript): to that month's statement, or to the current month's."""
    key = binding.key
    month = statements_month(request.GET.get("month", ""), zone=key.tenant.zone)
    return HttpResponseRedirect(
        reverse("portal:key-statement", kwargs={"key_id": key.pk, "month": month})
    )


@bound_key_page("GET")
def key_statement_page(
    request: HttpRequest, binding: PortalBinding, month: str
) -> HttpResponseBase:
    """``/portal/keys/<id>/statements/YYYY-MM/``: the key's month in its reseller's time
    zone, at the client's prices, printable, under the reseller's name; ``?format=csv``:
    its CSV. A month that cannot be (malformed, before 2000, not begun) is a 404."""
    key = binding.key
    tenant = key.tenant
    statement = month_statement(tenant=tenant, key_id=key.pk, month=month)
    if wants_csv(request):
        return csv_download(
            usage_table(statement), filename=f"statement-{key.prefix}-{statement.month}.csv"
        )
    return report_page(
        request,
        "portal/keys/statement.html",
        {
            "key": key,
            "reseller": tenant,
            "statement": statement,
            "report_title": "Statements",
            **statement_months(statement, key_created_at=key.created_at, zone=tenant.zone),
        },
    )
