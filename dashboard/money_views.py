"""The reseller's money pages: the overview, the wallet's ledger and earnings.

Thin, read-only views: every figure comes from the selectors the REST API answers with
(``billing.selectors`` for the wallet and its ledger, ``usage.selectors`` for earnings and
usage, ``keys.selectors`` for keys), in the tenant's time zone, so a page and the API never
disagree. The wallet and earnings filters are GET forms that work without JavaScript; with
it, htmx swaps just the results (the template's ``results`` partial).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, QueryDict
from django.shortcuts import render
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from billing.exports import LEDGER_TABLE, ledger_pages, ledger_row
from billing.models import LedgerEntry
from billing.selectors import (
    ledger_entries,
    top_up_list,
    wallet_daily_balances,
    wallet_for_tenant,
    wallet_runway,
)
from billing.stripe_api import is_configured as card_top_ups_configured
from config.exports import CSV_CONTENT_TYPE, attachment, csv_stream
from dashboard.access import page_tenant, reseller_page
from dashboard.forms.money import EarningsRangeForm, LedgerFilterForm
from keys.selectors import NEAR_LIMIT_PERCENT, key_list, keys_near_limit, prepaid_set_aside_nanos
from pages.charts import (
    balance_chart,
    daily_spend_chart,
    every_day,
    every_month,
    monthly_earnings_chart,
    next_month,
)
from usage.exports import earnings_month_table, earnings_table
from usage.selectors import (
    earnings_summary,
    earnings_totals,
    tenant_daily_usage,
)
from usage.sums import day_start

# The overview's chart: the last 30 local days, today included.
OVERVIEW_DAYS = 30
# The overview lists at most this many keys near their limit.
NEAR_LIMIT_SHOWN = 10
# The earnings page lists the keys that earned most in the range, this many at most (the
# CSV has every key): a table of a thousand rows would cost more to render than the report.
EARNINGS_KEYS_SHOWN = 50
# Ledger entries per page, and the days the balance chart shows when no range is asked.
LEDGER_PAGE_SIZE = 50
BALANCE_DEFAULT_DAYS = 90
# The wallet page lists this many of the latest card top-ups (each links to its page).
RECENT_TOP_UPS = 5


def _results(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    """The whole page, or only its ``results`` partial for an htmx request (a history
    restore asks for the whole page)."""
    htmx = getattr(request, "htmx", None)
    partial = bool(htmx) and not htmx.history_restore_request  # type: ignore[union-attr]
    response = render(request, f"{template}#results" if partial else template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _query(params: QueryDict, **changes: Any) -> str:
    """``?…`` of ``params`` with ``changes`` (None drops a parameter)."""
    query = params.copy()
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = str(value)
    return f"?{query.urlencode()}" if query else "?"


# ------------------------------------------------------------------------------- overview


@require_GET
@reseller_page
def overview(request: HttpRequest) -> HttpResponse:
    tenant = page_tenant(request)
    zone = tenant.zone
    now = timezone.now()
    today = now.astimezone(zone).date()
    wallet = wallet_for_tenant(tenant=tenant)
    month = earnings_totals(
        tenant=tenant, since=day_start(today.replace(day=1), zone), until=now, zone=zone
    )
    first_day = today - timedelta(days=OVERVIEW_DAYS - 1)
    days = every_day(
        tenant_daily_usage(tenant=tenant, since=day_start(first_day, zone), until=now, zone=zone),
        first_day,
        today,
    )
    return render(
        request,
        "dashboard/overview.html",
        {
            "tenant": tenant,
            "wallet": wallet,
            "set_aside_nanos": prepaid_set_aside_nanos(tenant=tenant),
            "runway": wallet_runway(tenant=tenant, wallet=wallet, now=now),
            "month": month,
            "month_start": today.replace(day=1),
            "days": days,
            "chart": daily_spend_chart(days),
            "near_limit": keys_near_limit(tenant=tenant, limit=NEAR_LIMIT_SHOWN, now=now),
            "near_limit_percent": NEAR_LIMIT_PERCENT,
            "has_keys": key_list(tenant=tenant).exists(),
        },
    )


# --------------------------------------------------------------------------------- wallet


def _day_bounds(
    since: date | None, until: date | None, zone: ZoneInfo
) -> tuple[datetime | None, datetime | None]:
    """Local days (both included) as the instants ``[since's midnight, after until's)``."""
    return (
        None if since is None else day_start(since, zone),
        None if until is None else day_start(until + timedelta(days=1), zone),
    )


@require_GET
@reseller_page
def wallet(request: HttpRequest) -> HttpResponseBase:
    """The ledger (``billing.selectors.ledger_entries``, as ``GET /api/v1/wallet/ledger``)
    filtered by kind and local days, 50 entries a page, or all of them as CSV
    (``?format=csv``); the balance at the end of each day of the range; the latest card
    top-ups and the "Top up" button (when Stripe is configured)."""
    tenant = page_tenant(request)
    zone = tenant.zone
    now = timezone.now()
    today = now.astimezone(zone).date()
    form = LedgerFilterForm(request.GET)
    filters = form.cleaned_data if form.is_valid() else {}
    kind = filters.get("kind") or None
    since_day, until_day = filters.get("since"), filters.get("until")
    since, until = _day_bounds(since_day, until_day, zone)
    entries = ledger_entries(tenant=tenant, kind=kind, since=since, until=until)

    if request.GET.get("format") == "csv":
        stamp = f"{since_day or 'start'}-{until_day or today}"
        return csv_stream(
            LEDGER_TABLE, ledger_pages(entries), row=ledger_row, filename=f"ledger-{stamp}.csv"
        )

    page = _ledger_page(entries, request.GET)
    wallet = wallet_for_tenant(tenant=tenant)
    chart_last = min(until_day or today, today)
    chart_first = since_day or (chart_last - timedelta(days=BALANCE_DEFAULT_DAYS - 1))
    balances = wallet_daily_balances(
        tenant=tenant, first_day=chart_first, last_day=chart_last, zone=zone, wallet=wallet, now=now
    )
    params = request.GET
    return _results(
        request,
        "dashboard/wallet/wallet.html",
        {
            "tenant": tenant,
            "wallet": wallet,
            "form": form,
            "entries": page.entries,
            "is_first_page": "before" not in params and "after" not in params,
            "newer_url": None
            if page.newer_than is None
            else _query(params, before=None, after=page.newer_than),
            "older_url": None
            if page.older_than is None
            else _query(params, after=None, before=page.older_than),
            "newest_url": _query(params, before=None, after=None),
            "csv_url": _query(params, before=None, after=None, format="csv"),
            "is_filtered": bool(kind or since_day or until_day),
            "balances": balances,
            "balance_first": balances[0].day if balances else None,
            "balance_last": balances[-1].day if balances else None,
            "balance_chart": balance_chart(balances),
            "can_top_up": card_top_ups_configured(),
            "top_ups": list(top_up_list(tenant=tenant)[:RECENT_TOP_UPS]),
        },
    )


@dataclass(frozen=True, slots=True)
class _LedgerPage:
    """Up to ``LEDGER_PAGE_SIZE`` entries, newest first, and the ids the links to the pages
    either side continue from (None: no page there)."""

    entries: list[LedgerEntry]
    newer_than: int | None
    older_than: int | None


def _entry_id(params: QueryDict, name: str) -> int | None:
    text = params.get(name, "")
    return int(text) if text.isdigit() and len(text) < 19 else None


def _ledger_page(entries: QuerySet[LedgerEntry], params: QueryDict) -> _LedgerPage:
    """The page ``?before=ID`` (entries older than it) or ``?after=ID`` (newer), else the
    newest: keyset pages on the id, so a page deep in a long ledger costs what the first
    does (an offset would read every entry before it)."""
    size = LEDGER_PAGE_SIZE
    after, before = _entry_id(params, "after"), _entry_id(params, "before")
    if after is not None:
        newer = list(entries.filter(id__gt=after).order_by("id")[: size + 1])
        shown = newer[:size][::-1]
        more_newer, more_older = len(newer) > size, True
    else:
        newest = entries if before is None else entries.filter(id__lt=before)
        older = list(newest[: size + 1])
        shown = older[:size]
        more_newer, more_older = before is not None, len(older) > size
    return _LedgerPage(
        entries=shown,
        newer_than=shown[0].pk if shown and more_newer else None,
        older_than=shown[-1].pk if shown and more_older else None,
    )


# ------------------------------------------------------------------------------- earnings


@require_GET
@reseller_page
def earnings(request: HttpRequest) -> HttpResponse:
    """Revenue, cost, profit and margin per client key and per month over whole local
    months (``usage.selectors.earnings_summary``, as ``GET /api/v1/earnings``); the last
    twelve by default. ``?format=csv`` downloads the keys' table as the API's CSV,
    ``&table=months`` the months'."""
    tenant = page_tenant(request)
    zone = tenant.zone
    now = timezone.now()
    this_month = now.astimezone(zone).date().replace(day=1)
    start, end = EarningsRangeForm.default_range(this_month)
    asked = "start" in request.GET or "end" in request.GET
    form = EarningsRangeForm(
        request.GET if asked else None,
        this_month=this_month,
        initial={"start": start, "end": end},
    )
    if asked and form.is_valid():
        start, end = form.cleaned_data["start"], form.cleaned_data["end"]
    since = day_start(start, zone)
    until = min(day_start(next_month(end), zone), now)
    report = earnings_summary(tenant=tenant, since=since, until=until, zone=zone)
    months = every_month(report.by_month, start, end)

    if request.GET.get("format") == "csv":
        stamp = f"{start:%Y%m}-{end:%Y%m}"
        if request.GET.get("table") == "months":
            table, name = earnings_month_table(months), f"earnings-by-month-{stamp}.csv"
        else:
            table, name = earnings_table(report), f"earnings-by-key-{stamp}.csv"
        response = HttpResponse(table.encode(), content_type=CSV_CONTENT_TYPE)
        response["Content-Disposition"] = attachment(name)
        return response

    with_traffic = [k for k in report.by_key if k.requests or k.client_nanos or k.cost_nanos]
    range_query = {"start": f"{start:%Y-%m}", "end": f"{end:%Y-%m}"}
    return _results(
        request,
        "dashboard/earnings/earnings.html",
        {
            "tenant": tenant,
            "form": form,
            "start": start,
            "end": end,
            "report": report,
            "months": months,
            "keys": with_traffic[:EARNINGS_KEYS_SHOWN],
            "more_keys": max(len(with_traffic) - EARNINGS_KEYS_SHOWN, 0),
            "quiet_keys": len(report.by_key) - len(with_traffic),
            "chart": monthly_earnings_chart(months),
            "csv_keys_url": "?" + urlencode({**range_query, "format": "csv"}),
            "csv_months_url": "?" + urlencode({**range_query, "format": "csv", "table": "months"}),
        },
    )
