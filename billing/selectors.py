"""Reads for wallets, the ledger, routes and prices. Tenant-owned rows take the tenant."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import F, QuerySet, Sum, Window
from django.utils import timezone

from accounts.models import Tenant
from billing.models import LedgerEntry, ModelPrice, ModelRoute, Reservation, Upstream, Wallet
from billing.money import format_usd


def wallet_for_tenant(*, tenant: Tenant) -> Wallet:
    return Wallet.objects.get(tenant=tenant)


def ledger_entries(*, tenant: Tenant, kind: str | None = None) -> QuerySet[LedgerEntry]:
    """The tenant's ledger, newest first; only entries of ``kind`` when given."""
    entries = LedgerEntry.objects.filter(wallet__tenant=tenant)
    if kind is not None:
        entries = entries.filter(kind=kind)
    return entries.select_related("client_key").order_by("-id")


def upstream_get(*, name: str) -> Upstream:
    """An upstream by its name (operator-wide, not tenant-owned); a miss raises DoesNotExist."""
    return Upstream.objects.get(name=name)


def known_models() -> set[str]:
    return set(
        ModelRoute.objects.filter(is_active=True, upstream__is_active=True).values_list(
            "model", flat=True
        )
    )


def price_current(*, route: ModelRoute, at: datetime | None = None) -> ModelPrice | None:
    """The price version in force for a route at ``at`` (now by default)."""
    return (
        route.prices.filter(effective_from__lte=at or timezone.now())
        .order_by("-effective_from", "-pk")
        .first()
    )


def ledger_mismatches() -> list[tuple[int, int, int]]:
    """(wallet id, cached balance, sum of entries) for every wallet whose books disagree."""
    sums = dict(
        LedgerEntry.objects.values("wallet_id")
        .annotate(total=Sum("amount_nanos"))
        .values_list("wallet_id", "total")
    )
    return [
        (wallet_id, balance, int(sums.get(wallet_id) or 0))
        for wallet_id, balance in Wallet.objects.values_list("id", "balance_nanos")
        if balance != int(sums.get(wallet_id) or 0)
    ]


# ----------------------------------------------------------------------------- ledger audit


@dataclass(frozen=True, slots=True)
class LedgerProblem:
    """One broken books invariant: which rule, on which row, what the books say it should
    hold (``expected_nanos``, derived from entries or reservations) and what it holds."""

    check: str
    model: str
    object_id: int
    expected_nanos: int
    actual_nanos: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "model": self.model,
            "id": self.object_id,
            "expected": format_usd(self.expected_nanos),
            "actual": format_usd(self.actual_nanos),
            "message": self.message,
        }


def ledger_problem(
    check: str, model: str, object_id: int, expected: int, actual: int, what: str
) -> LedgerProblem:
    return LedgerProblem(
        check=check,
        model=model,
        object_id=object_id,
        expected_nanos=expected,
        actual_nanos=actual,
        message=f"{model} {object_id}: {what} is {format_usd(actual)}, the books say {format_usd(expected)}",
    )


def totals_by(queryset: QuerySet[Any], group: str, **totals: Any) -> dict[Any, dict[str, int]]:
    """``{group value: {name: int total}}``; ``order_by()`` keeps Meta.ordering out of GROUP BY."""
    rows = queryset.order_by().values(group).annotate(**totals)
    return {row[group]: {name: int(row[name] or 0) for name in totals} for row in rows}


@contextmanager
def ledger_snapshot() -> Iterator[None]:
    """Run the reads inside in one snapshot of the books: on PostgreSQL a REPEATABLE READ
    transaction (when this is the outermost one), so a request settling between two
    queries of an audit cannot show up as a false mismatch."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def ledger_audit() -> list[LedgerProblem]:
    """Recompute every wallet's cached money counters from the rows that explain them; []
    if all agree.

    * wallet ``balance == SUM(entries)``, ``reserved == SUM(cost of its held reservations)``,
      ``0 <= reserved <= balance``;
    * each entry's ``balance_after`` is the running sum of its wallet's entries in id order
      (ids are drawn while the wallet row is locked, so id order is posting order).

    The keys' counters are audited by ``keys.selectors.key_ledger_audit``; ``check_ledger``
    runs both in one snapshot (``keys.selectors.books_audit``).
    """
    with ledger_snapshot():
        return [*_audit_wallets(), *_audit_running_balances()]


def _audit_wallets() -> list[LedgerProblem]:
    entries = totals_by(LedgerEntry.objects.all(), "wallet_id", total=Sum("amount_nanos"))
    held = totals_by(
        Reservation.objects.filter(status=Reservation.Status.HELD, wallet__isnull=False),
        "wallet_id",
        total=Sum("cost_nanos"),
    )
    problems = []
    for wallet_id, balance, reserved in Wallet.objects.order_by("pk").values_list(
        "id", "balance_nanos", "reserved_nanos"
    ):
        expected = entries.get(wallet_id, {}).get("total", 0)
        if balance != expected:
            problems.append(
                ledger_problem("wallet_balance", "wallet", wallet_id, expected, balance, "balance")
            )
        expected = held.get(wallet_id, {}).get("total", 0)
        if reserved != expected:
            problems.append(
                ledger_problem(
                    "wallet_reserved", "wallet", wallet_id, expected, reserved, "reserved"
                )
            )
        if reserved < 0 or reserved > balance:
            problems.append(
                ledger_problem(
                    "wallet_overdrawn",
                    "wallet",
                    wallet_id,
                    min(max(reserved, 0), balance),
                    reserved,
                    "reserved (must be between 0 and the balance)",
                )
            )
    return problems


def _audit_running_balances() -> list[LedgerProblem]:
    running = Window(Sum("amount_nanos"), partition_by=[F("wallet_id")], order_by=F("id").asc())
    wrong = (
        LedgerEntry.objects.annotate(running_nanos=running)
        .exclude(balance_after_nanos=F("running_nanos"))
        .order_by("id")
        .values_list("id", "running_nanos", "balance_after_nanos")
    )
    return [
        ledger_problem(
            "entry_balance_after", "ledger_entry", pk, int(expected), after, "balance_after"
        )
        for pk, expected, after in wrong
    ]
