"""Reads for wallets, the ledger, routes and prices. Tenant-owned rows take the tenant."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.db.models import F, Max, Min, QuerySet, Sum, Window
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import Tenant
from billing.models import LedgerEntry, ModelPrice, ModelRoute, Reservation, Upstream, Wallet
from billing.money import div_round_half_up, format_usd


def wallet_for_tenant(*, tenant: Tenant) -> Wallet:
    return Wallet.objects.get(tenant=tenant)


def ledger_entries(
    *,
    tenant: Tenant,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[LedgerEntry]:
    """The tenant's ledger, newest first; only entries of ``kind`` when given, and only
    those posted in ``[since, until)`` when either is given."""
    entries = LedgerEntry.objects.filter(wallet__tenant=tenant)
    if kind is not None:
        entries = entries.filter(kind=kind)
    if since is not None:
        entries = entries.filter(created_at__gte=since)
    if until is not None:
        entries = entries.filter(created_at__lt=until)
    return entries.select_related("client_key").order_by("-id")


# ------------------------------------------------------------------------ the wallet's course

# The runway's look-back: the wallet's recent draw, averaged per day over this many days.
RUNWAY_LOOKBACK_DAYS = 7
# What the wallet pays out for the reseller's keys: wallet-funded keys' requests, and the
# client budgets of prepaid keys bought or topped up. Refunds of deleted keys are not
# netted off (they are money coming back, not a slower pace of spending), and the
# operator's adjustments are not spending at all.
DRAWING_KINDS = (LedgerEntry.Kind.USAGE, LedgerEntry.Kind.KEY_FUNDING)


@dataclass(frozen=True, slots=True)
class Runway:
    """How long the wallet's available money lasts at its recent pace: ``available`` ÷
    the average daily draw over the last ``lookback_days`` (``DRAWING_KINDS``)."""

    available_nanos: int
    drawn_nanos: int
    lookback_days: int

    @property
    def daily_nanos(self) -> int:
        """The average day's draw (half up to the nano-dollar)."""
        return div_round_half_up(self.drawn_nanos, self.lookback_days)

    @property
    def days(self) -> int | None:
        """Whole days left, rounded down (0: less than a day); None when nothing was drawn
        in the look-back, so no pace to go by."""
        if self.drawn_nanos <= 0:
            return None
        return max(self.available_nanos, 0) * self.lookback_days // self.drawn_nanos


def wallet_runway(
    *, tenant: Tenant, wallet: Wallet | None = None, now: datetime | None = None
) -> Runway:
    """The wallet's ``Runway``: its available money now (balance less what requests in
    flight hold) over what it paid out for keys (``DRAWING_KINDS``) in the
    ``RUNWAY_LOOKBACK_DAYS`` × 24 hours before ``now``, per day. One query (and one for the
    wallet when not given), bounded by the look-back's entries."""
    now = now or timezone.now()
    wallet = wallet or wallet_for_tenant(tenant=tenant)
    drawn = LedgerEntry.objects.filter(
        wallet=wallet,
        kind__in=DRAWING_KINDS,
        amount_nanos__lt=0,
        created_at__gte=now - timedelta(days=RUNWAY_LOOKBACK_DAYS),
        created_at__lt=now,
    ).aggregate(total=Sum("amount_nanos", default=0))["total"]
    return Runway(
        available_nanos=wallet.available_nanos,
        drawn_nanos=-int(drawn),
        lookback_days=RUNWAY_LOOKBACK_DAYS,
    )


# The longest balance history drawn at once: a year of days.
BALANCE_HISTORY_MAX_DAYS = 366


@dataclass(frozen=True, slots=True)
class DayBalance:
    """The wallet's balance at the end of a local day (now, for today)."""

    day: date
    balance_nanos: int


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of the local date ``day`` in ``zone``, in UTC."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def wallet_daily_balances(
    *,
    tenant: Tenant,
    first_day: date,
    last_day: date,
    zone: ZoneInfo,
    wallet: Wallet | None = None,
    now: datetime | None = None,
) -> list[DayBalance]:
    """The wallet's balance at the end of every local day (in ``zone``) from ``first_day``
    to ``last_day`` inclusive, oldest first: the ``balance_after`` of the day's last entry
    (in posting order), or the day before's when the day had none. Days after today are
    left out; at most ``BALANCE_HISTORY_MAX_DAYS`` (the last ones).

    Bounded work however long the history: one grouped query over the range's entries
    (each day's last entry id, and the range's first), one for those few entries, and one
    probe when the range holds no entry at all. The balance before the range is the first
    entry's ``balance_after`` less its amount, so nothing older is read.
    """
    now = now or timezone.now()
    last_day = min(last_day, now.astimezone(zone).date())
    first_day = max(first_day, last_day - timedelta(days=BALANCE_HISTORY_MAX_DAYS - 1))
    if first_day > last_day:
        return []
    wallet = wallet or wallet_for_tenant(tenant=tenant)
    start = _local_midnight(first_day, zone)
    end = _local_midnight(last_day + timedelta(days=1), zone)
    per_day = {
        row["day"]: row
        for row in LedgerEntry.objects.filter(
            wallet=wallet, created_at__gte=start, created_at__lt=end
        )
        .annotate(day=TruncDate("created_at", tzinfo=zone))
        .order_by()
        .values("day")
        .annotate(last_id=Max("id"), first_id=Min("id"))
    }
    if per_day:
        first_id = min(row["first_id"] for row in per_day.values())
        wanted = {first_id, *(row["last_id"] for row in per_day.values())}
        entries = {
            pk: (amount, after)
            for pk, amount, after in LedgerEntry.objects.filter(pk__in=wanted).values_list(
                "id", "amount_nanos", "balance_after_nanos"
            )
        }
        amount, after = entries[first_id]
        balance = after - amount
    else:
        entries = {}
        before = (
            LedgerEntry.objects.filter(wallet=wallet, created_at__lt=start)
            .order_by("-created_at", "-id")
            .values_list("balance_after_nanos", flat=True)
            .first()
        )
        balance = before or 0
    balances = []
    day = first_day
    while day <= last_day:
        if day in per_day:
            balance = entries[per_day[day]["last_id"]][1]
        balances.append(DayBalance(day=day, balance_nanos=balance))
        day += timedelta(days=1)
    return balances


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
