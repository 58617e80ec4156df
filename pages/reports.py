"""What a key's report pages do the same way in the dashboard and in the portal: one view,
two renderings (the page's ``report`` fragment for htmx, the whole page otherwise), the
query strings of their window links, pages and CSV links, and the months around a monthly
statement.

The figures are not here: each page app reads its own columns of the ``usage`` selectors'
reports (the portal only the client's), and passes the partials of
``pages/templates/pages/`` the columns it shows.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils import timezone
from django.utils.cache import patch_vary_headers

from accounts.models import Tenant
from pages.forms import USAGE_WINDOWS
from usage.selectors import Statement, key_statement
from usage.windows import MonthInvalid, month_parse, months_since

CSV_FORMAT = "csv"
# The partial (``{% partialdef report %}``) an htmx request gets instead of the whole page.
FRAGMENT = "report"


def wants_csv(request: HttpRequest) -> bool:
    return request.GET.get("format") == CSV_FORMAT


def file_day(at: datetime) -> str:
    """A download's file name's date."""
    return f"{at:%Y%m%d}"


def month_text(first_day: date) -> str:
    """A month as its URLs and ``?month=`` write it."""
    return f"{first_day:%Y-%m}"


def report_page(
    request: HttpRequest, template: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    """The whole page, or only its fragment for htmx (the answer varies on HX-Request, so
    no cache hands the fragment to a page load)."""
    context["pushes_url"] = _pushes_url(request)
    name = f"{template}#{FRAGMENT}" if request.htmx else template  # type: ignore[attr-defined]
    response = render(request, name, context, status=status)
    patch_vary_headers(response, ("HX-Request",))
    return response


def _pushes_url(request: HttpRequest) -> bool:
    """Whether the fragment's links put their URL in the address bar: on its own page, yes
    (a reload shows the same report); embedded in another page (the key's page), no."""
    htmx = request.htmx  # type: ignore[attr-defined]
    if not htmx or not htmx.current_url:
        return True
    return bool(urlsplit(htmx.current_url).path == request.path)


def query_with(params: QueryDict, **changes: str | None) -> str:
    """``params`` as a query string with ``changes`` made (None removes a parameter)."""
    query = params.copy()
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return f"?{query.urlencode()}" if query else ""


def window_links(params: QueryDict) -> list[dict[str, Any]]:
    """The usage span picker's windows (``pages/usage_span_controls.html``), each keeping
    the page's other parameters."""
    return [
        {
            "name": name,
            "days": window.length.days,
            "query": query_with(params, window=name, month=None, format=None),
        }
        for name, window in USAGE_WINDOWS.items()
    ]


def series(label: str, colour: str, data: list[str] | list[int]) -> dict[str, Any]:
    """One dataset of a chart (``app.js``), its line and its bars in one colour."""
    return {"label": label, "data": data, "borderColor": colour, "backgroundColor": colour}


def statements_month(asked: str, *, zone: ZoneInfo) -> str:
    """The month the statement picker asked for (``?month=YYYY-MM``), or the current month
    when it cannot be read."""
    try:
        month_parse(asked, zone=zone)
    except MonthInvalid:
        return month_text(timezone.now().astimezone(zone).date())
    return asked


def month_statement(*, tenant: Tenant, key_id: int, month: str) -> Statement:
    """The key's statement of ``month`` (``YYYY-MM``, a URL's) in the tenant's time zone; a
    month that cannot be (malformed, before 2000, not begun) is a 404."""
    try:
        year, number = month_parse(month, zone=tenant.zone)
    except MonthInvalid:
        raise Http404("No such month.") from None
    return key_statement(tenant=tenant, key_id=key_id, year=year, month=number)


def statement_months(
    statement: Statement, *, key_created_at: datetime, zone: ZoneInfo
) -> dict[str, Any]:
    """A statement's navigation: every month of the key's, newest first (with the
    statement's own even when it is before the key: an empty statement), the statement's
    neighbours among them and its last day."""
    months = months_since(key_created_at, zone=zone)
    if statement.first_day not in months:
        months = sorted({*months, statement.first_day}, reverse=True)
    index = months.index(statement.first_day)
    return {
        "months": [(month_text(m), m) for m in months],
        "month_value": statement.month,
        "newer_month": month_text(months[index - 1]) if index > 0 else None,
        "older_month": month_text(months[index + 1]) if index + 1 < len(months) else None,
        "last_day": statement.next_first_day - timedelta(days=1),
    }
