"""The CSV shapes of the usage reports and trace lists (``?format=csv``, ``config.exports``).

Each report is one flat table, money as decimal strings of USD (whole cents in the
sub-account API, as its JSON), figures exactly as the JSON's:

* a key's usage, a sub-account's usage, a monthly statement: one row per ``section``:
  ``total`` (the window's totals), ``model`` (one per model, ``model`` set) and ``day``
  (one per day with traffic, ``date`` set), in that order;
* the account's usage: the same sections, then ``key`` (one per key: ``key_id``,
  ``key_label``, ``key_prefix`` set) and ``tag`` (one per tag, ``tag`` set, ``""``
  untagged) after ``day``;
* usage by tag: one row per tag (``""`` untagged);
* earnings: one row per key (window and all-time figures side by side); the tenant's
  totals are the columns' sums; or one row per month (the dashboard's second table);
* requests: one row per trace, newest first, with its key (``key_id``, ``key_label``,
  ``key_prefix``), all of them: no pages, streamed (:func:`trace_pages`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import QuerySet

from billing.money import format_usd, nanos_to_cents
from config.exports import CsvTable, Row
from usage.models import Trace
from usage.selectors import (
    Earnings,
    MonthUsage,
    Statement,
    TagUsage,
    TenantUsageReport,
    UsageReport,
    UsageTotals,
    traces_after,
)

# Rows per query of a streamed export: each page is one short keyset query (no
# transaction spans the export) and a few hundred kB of CSV.
EXPORT_PAGE_SIZE = 2_000

USAGE_COLUMNS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cost",
    "client_price",
    "profit",
    "cache_savings",
    "client_cache_savings",
)
SECTIONS = ("section", "date", "model")
CLIENT_TEXT = frozenset({"model", "tag", "label", "key_label"})


def _usage(totals: UsageTotals) -> Row:
    return {
        "requests": totals.requests,
        "errors": totals.errors,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cached_input_tokens": totals.cached_input_tokens,
        "cache_write_tokens": totals.cache_write_tokens,
        "cost": format_usd(totals.cost_nanos),
        "client_price": format_usd(totals.client_nanos),
        "profit": format_usd(totals.profit_nanos),
        "cache_savings": format_usd(totals.cache_savings_nanos),
        "client_cache_savings": format_usd(totals.client_cache_savings_nanos),
    }


def sectioned_rows(
    report: UsageReport | TenantUsageReport | Statement, row: Callable[[UsageTotals], Row]
) -> list[Row]:
    """A report's ``total``, ``model`` and ``day`` sections, in that order, each row's
    figures written by ``row``: the shape every usage CSV shares (the portal's too, with
    the client's columns)."""
    totals = report.totals if isinstance(report, Statement) else report.summary
    return [
        {"section": "total", **row(totals)},
        *({"section": "model", "model": m.model, **row(m)} for m in report.by_model),
        *({"section": "day", "date": d.date.isoformat(), **row(d)} for d in report.by_day),
    ]


def key_usage_table(report: UsageReport) -> CsvTable:
    return CsvTable((*SECTIONS, *USAGE_COLUMNS), sectioned_rows(report, _usage), CLIENT_TEXT)


TENANT_SECTIONS = (*SECTIONS, "key_id", "key_label", "key_prefix", "tag")


def tenant_usage_table(report: TenantUsageReport) -> CsvTable:
    rows = [
        *sectioned_rows(report, _usage),
        *(
            {
                "section": "key",
                "key_id": k.key.pk,
                "key_label": k.key.label,
                "key_prefix": k.key.prefix,
                **_usage(k),
            }
            for k in report.by_key
        ),
        *({"section": "tag", "tag": t.tag, **_usage(t)} for t in report.by_tag),
    ]
    return CsvTable((*TENANT_SECTIONS, *USAGE_COLUMNS), rows, CLIENT_TEXT)


def tag_usage_table(tags: Iterable[TagUsage]) -> CsvTable:
    rows = [{"tag": t.tag, **_usage(t)} for t in tags]
    return CsvTable(("tag", *USAGE_COLUMNS), rows, CLIENT_TEXT)


EARNINGS_COLUMNS = (
    "key_id",
    "label",
    "prefix",
    "funding",
    "status",
    "requests",
    "revenue",
    "cost",
    "profit",
    "margin_percent",
    "all_time_revenue",
    "all_time_cost",
    "all_time_profit",
)


def earnings_table(earnings: Earnings) -> CsvTable:
    rows = [
        {
            "key_id": k.figures.key.pk,
            "label": k.figures.key.label,
            "prefix": k.figures.key.prefix,
            "funding": k.figures.key.funding,
            "status": k.figures.status,
            "requests": k.requests,
            "revenue": format_usd(k.client_nanos),
            "cost": format_usd(k.cost_nanos),
            "profit": format_usd(k.profit_nanos),
            "margin_percent": None if k.margin_percent is None else str(k.margin_percent),
            "all_time_revenue": format_usd(k.figures.client_spent_nanos),
            "all_time_cost": format_usd(k.figures.cost_spent_nanos),
            "all_time_profit": format_usd(k.figures.profit_nanos),
        }
        for k in earnings.by_key
    ]
    return CsvTable(EARNINGS_COLUMNS, rows, CLIENT_TEXT)


EARNINGS_MONTH_COLUMNS = ("month", "requests", "revenue", "cost", "profit", "margin_percent")


def earnings_month_table(months: Iterable[MonthUsage]) -> CsvTable:
    """Earnings per month (``Earnings.by_month``, or those months with the empty ones of a
    range filled in): ``month`` is its first day (ISO 8601)."""
    rows = [
        {
            "month": m.month.isoformat(),
            "requests": m.requests,
            "revenue": format_usd(m.client_nanos),
            "cost": format_usd(m.cost_nanos),
            "profit": format_usd(m.profit_nanos),
            "margin_percent": None if m.margin_percent is None else str(m.margin_percent),
        }
        for m in months
    ]
    return CsvTable(EARNINGS_MONTH_COLUMNS, rows)


# ------------------------------------------------------------------ the sub-account API

SUB_ACCOUNT_COLUMNS = (
    "requests",
    "cost_cents",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_savings_cents",
)


def _cents(totals: UsageTotals) -> Row:
    return {
        "requests": totals.requests,
        "cost_cents": nanos_to_cents(totals.client_nanos),
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cached_input_tokens": totals.cached_input_tokens,
        "cache_savings_cents": nanos_to_cents(totals.client_cache_savings_nanos),
    }


def sub_account_usage_table(report: UsageReport) -> CsvTable:
    return CsvTable((*SECTIONS, *SUB_ACCOUNT_COLUMNS), sectioned_rows(report, _cents), CLIENT_TEXT)


def sub_account_tag_table(tags: Iterable[TagUsage]) -> CsvTable:
    rows = [{"tag": t.tag, **_cents(t)} for t in tags]
    return CsvTable(("tag", *SUB_ACCOUNT_COLUMNS), rows, CLIENT_TEXT)


# --------------------------------------------------------------------------- statements

STATEMENT_COLUMNS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "client_price",
    "cache_savings",
)


def _client_price(totals: UsageTotals) -> Row:
    return {
        "requests": totals.requests,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cached_input_tokens": totals.cached_input_tokens,
        "client_price": format_usd(totals.client_nanos),
        "cache_savings": format_usd(totals.client_cache_savings_nanos),
    }


def statement_table(statement: Statement) -> CsvTable:
    """Client prices only: never a cost or a profit."""
    rows = sectioned_rows(statement, _client_price)
    return CsvTable((*SECTIONS, *STATEMENT_COLUMNS), rows, CLIENT_TEXT)


# ----------------------------------------------------------------------------- requests

TRACE_COLUMNS = (
    "request_id",
    "created_at",
    "key_id",
    "key_label",
    "key_prefix",
    "model",
    "endpoint",
    "upstream",
    "tag",
    "status",
    "status_code",
    "error_class",
    "is_stream",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "is_usage_estimated",
    "cost",
    "client_price",
    "cache_savings",
    "client_cache_savings",
    "latency_ms",
    "ttft_ms",
)
# The proxy writes these from what the client sent (or names them itself).
TRACE_CLIENT_TEXT = frozenset({"request_id", "key_label", "model", "tag", "error_class"})
TRACE_TABLE = CsvTable(TRACE_COLUMNS, (), TRACE_CLIENT_TEXT)


def _utc(at: datetime) -> str:
    """As the JSON writes it (DRF: ISO 8601, UTC as ``Z``)."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def trace_row(values: dict[str, Any]) -> Row:
    """A row of ``traces_after`` as the CSV's row."""
    return {
        **values,
        "created_at": _utc(values["created_at"]),
        "key_id": values["client_key_id"],
        "key_label": values["client_key__label"],
        "key_prefix": values["client_key__prefix"],
        "upstream": values["upstream__name"],
        "cost": format_usd(values["cost_nanos"]),
        "client_price": format_usd(values["client_nanos"]),
        "cache_savings": format_usd(values["cache_savings_nanos"]),
        "client_cache_savings": format_usd(values["client_cache_savings_nanos"]),
    }


async def trace_pages(
    traces: QuerySet[Trace], *, page_size: int | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every row of a trace list, newest first, ``page_size`` (``EXPORT_PAGE_SIZE``) at a
    time: one keyset query per page (``traces_after``), each in the request's own thread
    (``sync_to_async``) and committed on its own, so the export holds no transaction and
    no more than a page in memory however many rows it sends."""
    size = page_size or EXPORT_PAGE_SIZE
    after: tuple[datetime, int] | None = None
    while True:
        page = await sync_to_async(traces_after)(traces, after=after, limit=size)
        if page:
            yield page
        if len(page) < size:
            return
        after = (page[-1]["created_at"], page[-1]["id"])
