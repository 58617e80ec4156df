"""Reads for wallets, the ledger, routes and prices. Tenant-owned rows take the tenant."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.db.models import F, QuerySet, Sum, Window
from django.utils import timezone

from accounts.models import Tenant
from billing.models import (
    LedgerEntry,
    ModelPrice,
    ModelRoute,
    Reservation,
    TopUp,
    Upstream,
    Wallet,
)
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


# ----------------------------------------------------------------------------- card top-ups


def top_up_list(*, tenant: Tenant) -> QuerySet[TopUp]:
    """The tenant's card top-ups, newest first."""
    return TopUp.objects.filter(tenant=tenant).order_by("-id")


def top_up_get(*, tenant: Tenant, top_up_id: int) -> TopUp:
    """One of the tenant's top-ups; TopUp.DoesNotExist (a 404) for any other id, another
    tenant's included."""
    return TopUp.objects.get(tenant=tenant, pk=top_up_id)


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


# The balance after a wallet's last entry posted before a moment (NULL before its first):
# one probe of the ledger's (wallet, created_at, id) index, ``ledger_wallet_time``.
BALANCE_BEFORE = (
    "(SELECT balance_after_nanos FROM billing_ledgerentry"
    " WHERE wallet_id = %s AND created_at < %s ORDER BY created_at DESC, id DESC LIMIT 1)"
)


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
    to ``last_day`` inclusive, oldest first: the ``balance_after`` of the last entry posted
    before the next local midnight (0 before the first entry). Days after today are left
    out (today's is the balance now); at most ``BALANCE_HISTORY_MAX_DAYS``, the last ones.

    One query (and one for the wallet when not given) whatever the length of the history
    or the number of entries in the range: a scalar subquery per day, each a single probe
    of the ledger's (wallet, created_at, id) index (``ledger_wallet_time``), so a wallet
    posting an entry per request costs no more than a quiet one.
    """
    now = now or timezone.now()
    last_day = min(last_day, now.astimezone(zone).date())
    first_day = max(first_day, last_day - timedelta(days=BALANCE_HISTORY_MAX_DAYS - 1))
    if first_day > last_day:
        return []
    wallet = wallet or wallet_for_tenant(tenant=tenant)
    days = [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]
    # The end of each day; today's is now (an entry posted a moment later is tomorrow's).
    ends = [min(_local_midnight(day + timedelta(days=1), zone), now) for day in days]
    # One statement of a probe per day, written once: built by the ORM, each day's
    # subquery would cost more to compile than the database takes to answer it.
    params = [
        value
        for end in ends
        for value in (wallet.pk, connection.ops.adapt_datetimefield_value(end))
    ]
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join([BALANCE_BEFORE] * len(ends)), params)
        row = cursor.fetchone()
    return [DayBalance(day=day, balance_nanos=int(row[n] or 0)) for n, day in enumerate(days)]


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

    * each card top-up's entries (found by their ``stripe:<session id>`` idempotency keys)
      are what its row says: the card's payment and the fee once if it is credited, none
      otherwise, refund, dispute and shortfall-collection debits adding up to what it took
      back, a won dispute's credit to what it gave back, never more taken back (net) than
      it owes, and the shortfall debits it paid for earlier top-ups to what it says it paid.

    The keys' counters are audited by ``keys.selectors.key_ledger_audit``; ``check_ledger``
    runs both in one snapshot (``keys.selectors.books_audit``).
    """
    with ledger_snapshot():
        return [*_audit_wallets(), *_audit_running_balances(), *_audit_top_ups()]


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


# The ledger entries a top-up posts, by kind: its idempotency keys start "stripe:<session>".
TOP_UP_ENTRY_KINDS: dict[str, str] = {
    LedgerEntry.Kind.TOP_UP: "credit",
    LedgerEntry.Kind.TOP_UP_FEE: "fee",
    LedgerEntry.Kind.TOP_UP_REFUND: "reversed",
    LedgerEntry.Kind.TOP_UP_DISPUTE: "reversed",
    LedgerEntry.Kind.TOP_UP_DISPUTE_WON: "reinstated",
    # "stripe:<paying session>:shortfall-of:<owing session>": counted twice, as what the
    # paying top-up paid and as what the owing one took back (see _audit_top_ups).
    LedgerEntry.Kind.TOP_UP_SHORTFALL: "shortfall_paid",
}
TOP_UP_PARTS = ("credit", "fee", "reversed", "reinstated", "shortfall_paid")


def _audit_top_ups() -> list[LedgerProblem]:
    posted: dict[str, dict[str, int]] = {}

    def sums_of(session: str) -> dict[str, int]:
        return posted.setdefault(session, dict.fromkeys(TOP_UP_PARTS, 0))

    for key, kind, amount in LedgerEntry.objects.filter(
        kind__in=list(TOP_UP_ENTRY_KINDS), idempotency_key__startswith="stripe:"
    ).values_list("idempotency_key", "kind", "amount_nanos"):
        parts = str(key).split(":")
        sums_of(parts[1])[TOP_UP_ENTRY_KINDS[kind]] += amount
        if kind == LedgerEntry.Kind.TOP_UP_SHORTFALL:
            # The owing top-up gave this up too: part of what it took back.
            sums_of(parts[-1])["reversed"] += amount
    problems = []
    for top_up in TopUp.objects.exclude(stripe_session_id=None).order_by("pk"):
        sums = posted.get(str(top_up.stripe_session_id), dict.fromkeys(TOP_UP_PARTS, 0))
        credited = top_up.status == TopUp.Status.CREDITED
        expected = {
            "credit": top_up.total_nanos if credited else 0,
            "fee": -top_up.fee_nanos if credited else 0,
            "reversed": -top_up.reversed_nanos,
            "reinstated": top_up.reinstated_nanos,
            "shortfall_paid": -top_up.earlier_shortfall_paid_nanos,
        }
        for part, what in (
            ("credit", "the card payment posted"),
            ("fee", "the fee posted"),
            ("reversed", "what refunds and disputes took back (and shortfall collected)"),
            ("reinstated", "what a won dispute gave back"),
            ("shortfall_paid", "what it paid towards earlier top-ups' shortfall"),
        ):
            if sums[part] != expected[part]:
                problems.append(
                    ledger_problem(
                        f"top_up_{part}", "top_up", top_up.pk, expected[part], sums[part], what
                    )
                )
        if top_up.taken_back_nanos > top_up.owed_nanos:
            problems.append(
                ledger_problem(
                    "top_up_reversed_owed",
                    "top_up",
                    top_up.pk,
                    top_up.owed_nanos,
                    top_up.taken_back_nanos,
                    "taken back (more than refunds and disputes owe)",
                )
            )
    return problems
