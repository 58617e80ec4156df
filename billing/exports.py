"""The CSV shape of a wallet's ledger (``config.exports``): one row per entry, newest first,
every matching entry, sent page by page.

Columns: id, created_at (ISO 8601, UTC as ``Z``, as the JSON writes it), kind, amount
(signed decimal string: debits are negative), balance_after, reason, reference, key_id,
key_label. The reason, reference and key label may carry text the reseller or its clients
chose, so a cell that could start a spreadsheet formula is guarded (``config.exports.guarded``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import QuerySet

from billing.models import LedgerEntry
from billing.money import format_usd
from config.exports import CsvTable, Row

# Entries per query of an export: one short keyset query each, no transaction across them.
LEDGER_EXPORT_PAGE_SIZE = 2_000

LEDGER_COLUMNS = (
    "id",
    "created_at",
    "kind",
    "amount",
    "balance_after",
    "reason",
    "reference",
    "key_id",
    "key_label",
)
LEDGER_TABLE = CsvTable(LEDGER_COLUMNS, (), frozenset({"reason", "reference", "key_label"}))

_VALUES = (
    "id",
    "created_at",
    "kind",
    "amount_nanos",
    "balance_after_nanos",
    "reason",
    "reference",
    "client_key_id",
    "client_key__label",
)


def ledger_row(values: dict[str, Any]) -> Row:
    """A row of ``ledger_pages`` as the CSV's row."""
    created: datetime = values["created_at"]
    return {
        "id": values["id"],
        "created_at": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "kind": values["kind"],
        "amount": format_usd(values["amount_nanos"]),
        "balance_after": format_usd(values["balance_after_nanos"]),
        "reason": values["reason"],
        "reference": values["reference"],
        "key_id": values["client_key_id"],
        "key_label": values["client_key__label"],
    }


def _page(entries: QuerySet[LedgerEntry], before: int | None, size: int) -> list[dict[str, Any]]:
    page = entries.order_by("-id")
    if before is not None:
        page = page.filter(id__lt=before)
    return list(page.values(*_VALUES)[:size])


async def ledger_pages(
    entries: QuerySet[LedgerEntry], *, page_size: int | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every entry of ``entries`` (a ``billing.selectors.ledger_entries`` queryset), newest
    first, ``page_size`` at a time: one keyset query per page on the id, each committed on
    its own, so however long the ledger the export holds one page in memory."""
    size = page_size or LEDGER_EXPORT_PAGE_SIZE
    before: int | None = None
    while True:
        page = await sync_to_async(_page)(entries, before, size)
        if page:
            yield page
        if len(page) < size:
            return
        before = page[-1]["id"]
