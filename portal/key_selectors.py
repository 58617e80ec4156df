"""A bound key's requests as its client reads them: ``usage.selectors.request_list`` with
the reseller as tenant, read as plain values of the client's columns only.

A trace also carries the reseller's side of the request (its cost, the upstream that
served it, the upstream's model name): none of those columns is ever read here, so no page
or CSV of the portal can show them, whatever its template does.

Pages are keyset pages on ``(created_at, id)``, newest first, the order of the trace
indexes (``usage_trace_key_newest``): one short query a page however deep, and stable while
new requests arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet

from keys.models import ClientKey
from portal.key_forms import Cursor, Outcome
from usage.models import Trace
from usage.selectors import request_list

# What the portal reads of a trace: never cost_nanos, cache_savings_nanos (at cost),
# upstream, upstream_model, price, tag or error_class.
REQUEST_COLUMNS = (
    "id",
    "request_id",
    "created_at",
    "model",
    "status",
    "status_code",
    "is_stream",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "client_nanos",
    "client_cache_savings_nanos",
    "latency_ms",
    "ttft_ms",
)

Row = dict[str, Any]


def client_requests(
    *, key: ClientKey, model: str | None = None, outcome: str | None = None
) -> QuerySet[Trace]:
    """The key's requests (its reseller's traces of it), newest first, of one model and
    one ``Outcome`` when given."""
    traces = request_list(tenant=key.tenant, key_id=key.pk, model=model or None)
    if outcome:
        traces = traces.filter(status__in=Outcome.STATUSES[outcome])
    # request_list joins the key and the upstream for the reseller's lists: not needed here.
    return traces.select_related(None)


def _older(traces: QuerySet[Trace], cursor: Cursor) -> QuerySet[Trace]:
    # created_at <= at bounds the index scan; the OR orders ties on created_at by id.
    return traces.filter(created_at__lte=cursor.at).filter(
        Q(created_at__lt=cursor.at) | Q(created_at=cursor.at, id__lt=cursor.trace_id)
    )


def _newer(traces: QuerySet[Trace], cursor: Cursor) -> QuerySet[Trace]:
    return traces.filter(created_at__gte=cursor.at).filter(
        Q(created_at__gt=cursor.at) | Q(created_at=cursor.at, id__gt=cursor.trace_id)
    )


def requests_after(traces: QuerySet[Trace], *, after: Cursor | None, limit: int) -> list[Row]:
    """The next ``limit`` requests (``REQUEST_COLUMNS``) older than ``after`` (the newest
    without it): a page of a streamed export."""
    page = traces.order_by("-created_at", "-id")
    if after is not None:
        page = _older(page, after)
    return list(page.values(*REQUEST_COLUMNS)[:limit])


def row_cursor(row: Row) -> Cursor:
    return Cursor(at=row["created_at"], trace_id=row["id"])


@dataclass(frozen=True, slots=True)
class RequestsPage:
    """Up to a page of requests, newest first, and where the pages either side begin
    (None: no page there)."""

    rows: list[Row]
    newer: Cursor | None
    older: Cursor | None


def requests_page(
    traces: QuerySet[Trace], *, before: Cursor | None, after: Cursor | None, size: int
) -> RequestsPage:
    """The page of requests older than ``before``, or newer than ``after``, else the
    newest. Each reads one row more than it shows, to know whether a page follows."""
    if after is not None:
        ascending = _newer(traces, after).order_by("created_at", "id")
        newer = list(ascending.values(*REQUEST_COLUMNS)[: size + 1])
        rows = newer[:size][::-1]
        more_newer, more_older = len(newer) > size, True
    else:
        older = traces.order_by("-created_at", "-id")
        if before is not None:
            older = _older(older, before)
        found = list(older.values(*REQUEST_COLUMNS)[: size + 1])
        rows = found[:size]
        more_newer, more_older = before is not None, len(found) > size
    return RequestsPage(
        rows=rows,
        newer=row_cursor(rows[0]) if rows and more_newer else None,
        older=row_cursor(rows[-1]) if rows and more_older else None,
    )
