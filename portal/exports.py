"""The CSV downloads of the portal (``?format=csv`` on a bound key's reports): the client's
own columns, in the prices the client pays, built as ``config.exports.CsvTable``s.

Their columns are the portal's own, not the reseller's CSVs with columns left out: a
column is added here, by name, or it does not exist. Money is a decimal string of US
dollars to the nano-dollar (``billing.money.format_usd``); counts are whole numbers.

* usage (``/usage/``) and the monthly statement (``/statements/YYYY-MM/``): one row per
  ``section``: ``total``, then ``model`` (one per model, ``model`` set), then ``day`` (one
  per day with traffic, ``date`` set, in the reseller's time zone);
* requests (``/requests/``): one row per request, newest first, every one that matches
  the filters, streamed page by page; ``time`` in ISO 8601 with the reseller's offset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from billing.money import format_usd
from config.exports import CsvTable, Row
from portal.key_forms import Outcome
from usage.exports import sectioned_rows
from usage.selectors import Statement, UsageReport, UsageTotals

USAGE_COLUMNS = (
    "section",
    "date",
    "model",
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "spend_usd",
    "cache_savings_usd",
)
# Text the key's callers chose (a model's name, a request id): guarded against formulas.
CALLER_TEXT = frozenset({"model", "request_id"})


def _spend(totals: UsageTotals) -> Row:
    return {
        "requests": totals.requests,
        "errors": totals.errors,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cached_input_tokens": totals.cached_input_tokens,
        "cache_write_tokens": totals.cache_write_tokens,
        "spend_usd": format_usd(totals.client_nanos),
        "cache_savings_usd": format_usd(totals.client_cache_savings_nanos),
    }


def usage_table(report: UsageReport | Statement) -> CsvTable:
    """A usage report's or a statement's sections, at the client's prices."""
    return CsvTable(USAGE_COLUMNS, sectioned_rows(report, _spend), CALLER_TEXT)


REQUEST_COLUMNS = (
    "request_id",
    "time",
    "model",
    "status",
    "http_status",
    "stream",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "spend_usd",
    "cache_savings_usd",
    "latency_ms",
    "first_token_ms",
)
REQUEST_TABLE = CsvTable(REQUEST_COLUMNS, (), CALLER_TEXT)


def _local(at: datetime, zone: ZoneInfo) -> str:
    return at.astimezone(zone).isoformat()


def request_row(values: dict[str, Any], *, zone: ZoneInfo) -> Row:
    """A request (``portal.key_selectors.REQUEST_COLUMNS``) as the CSV's row."""
    return {
        "request_id": values["request_id"],
        "time": _local(values["created_at"], zone),
        "model": values["model"],
        "status": Outcome.of(values["status"])[0],
        "http_status": values["status_code"],
        "stream": values["is_stream"],
        "input_tokens": values["input_tokens"],
        "output_tokens": values["output_tokens"],
        "cached_input_tokens": values["cached_input_tokens"],
        "cache_write_tokens": values["cache_write_tokens"],
        "spend_usd": format_usd(values["client_nanos"]),
        "cache_savings_usd": format_usd(values["client_cache_savings_nanos"]),
        "latency_ms": values["latency_ms"],
        "first_token_ms": values["ttft_ms"],
    }
