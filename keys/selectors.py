"""Tenant-scoped reads of client keys (the only road to a tenant's key) and of the
sub-accounts among them, and the audit of every key's money counters."""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from django.db.models import F, Q, QuerySet, Sum
from django.utils import timezone

from accounts.hashing import CLIENT_KEY_PREFIX, secret_matches, secret_prefix
from accounts.models import Tenant
from billing.models import LedgerEntry, Reservation
from billing.money import PriceRatio
from billing.periods import BudgetPeriod, period_index, period_indexes
from billing.selectors import (
    LedgerProblem,
    ledger_audit,
    ledger_problem,
    ledger_snapshot,
    totals_by,
)
from keys.models import EXPIRED, ClientKey

# What ``?status=`` may ask for: the stored states plus the derived ``expired``.
LISTABLE_STATUSES = (*ClientKey.Status.values, EXPIRED)

# Ratios and margins are shown to 6 places; the margin percentage to 2.
RATIO_DISPLAY_PLACES = 6
MARGIN_PERCENT_QUANTUM = Decimal("0.01")


def key_list(
    *,
    tenant: Tenant,
    include_deleted: bool = False,
    status: str | None = None,
    tag: str | None = None,
    label_contains: str = "",
) -> QuerySet[ClientKey]:
    """The tenant's keys, newest first: all but deleted ones, or those in one ``status``
    (one of LISTABLE_STATUSES, where ``expired`` and ``active`` follow the expiry time);
    only those whose default tag is ``tag`` ("" for untagged) and whose label contains
    ``label_contains`` (any case) when given."""
    keys = ClientKey.objects.for_tenant(tenant)
    if tag is not None:
        keys = keys.filter(default_tag=tag)
    if label_contains:
        keys = keys.filter(label__icontains=label_contains)
    if status is None:
        return keys if include_deleted else keys.visible()
    now = timezone.now()
    if status == EXPIRED:
        return keys.filter(status=ClientKey.Status.ACTIVE, expires_at__lte=now)
    if status == ClientKey.Status.ACTIVE:
        return keys.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), status=status)
    return keys.filter(status=status)


def key_tags(*, tenant: Tenant) -> list[str]:
    """The default tags the tenant's keys carry (deleted keys' too), sorted; untagged
    keys add nothing."""
    return list(
        ClientKey.objects.for_tenant(tenant)
        .exclude(default_tag="")
        .order_by("default_tag")
        .values_list("default_tag", flat=True)
        .distinct()
    )


def key_get(*, tenant: Tenant, key_id: int) -> ClientKey:
    """The tenant's key, deleted or not; another tenant's id raises DoesNotExist (404)."""
    return ClientKey.objects.for_tenant(tenant).get(pk=key_id)


def key_for_secret(*, tenant: Tenant, secret: str) -> ClientKey | None:
    """The tenant's key whose secret is ``secret`` (in any state), or None: no such key, or
    another tenant's."""
    key = ClientKey.objects.for_tenant(tenant).filter(prefix=secret_prefix(secret)).first()
    if key is None or not secret_matches(secret, key.digest):
        return None
    return key


def key_for_any_secret(*, secret: str) -> ClientKey | None:
    """Whichever tenant's key has the secret ``secret`` (in any state), with its tenant
    loaded, or None. Not tenant-scoped on purpose: holding the secret is the authority, as
    it is on the proxy, so this serves only a holder proving it (the portal binding a
    key). Looked up by the indexed prefix, then the keyed hash compared in constant time."""
    prefix = secret_prefix(secret)
    if not secret.startswith(CLIENT_KEY_PREFIX) or not prefix.isprintable():
        # No key's prefix has a control character, and PostgreSQL refuses a NUL in a
        # parameter: such a secret is unknown, not a failed query.
        return None
    key = ClientKey.objects.select_related("tenant").filter(prefix=prefix).first()
    if key is None or not secret_matches(secret, key.digest):
        return None
    return key


def sub_account_list(*, tenant: Tenant) -> QuerySet[ClientKey]:
    """The tenant's sub-accounts (``ClientKeyQuerySet.sub_accounts``), newest first,
    deleted ones left out."""
    return (
        ClientKey.objects.for_tenant(tenant).sub_accounts().visible().order_by("-created_at", "-pk")
    )


def sub_account_get(*, tenant: Tenant, key_id: int) -> ClientKey:
    """The tenant's sub-account, deleted or not; any other key id (another tenant's, or a
    prepaid or marked-up key of this tenant) raises DoesNotExist (404)."""
    return ClientKey.objects.for_tenant(tenant).sub_accounts().get(pk=key_id)


def ratio_margin_percent(ratio: PriceRatio) -> Decimal:
    """A price ratio's margin as a percentage to 2 places (``40.00``, ``33.33``): one
    rounding, half up, of the fraction to 4 places; the x100 is exact."""
    return (ratio.margin(places=4) * 100).quantize(MARGIN_PERCENT_QUANTUM)


def ratio_is_internal_share(ratio: PriceRatio) -> bool:
    """Cost equals client price: no markup, the reseller passes usage on at cost."""
    return ratio.cost_nanos == ratio.client_nanos


@dataclass(frozen=True, slots=True)
class KeyFigures:
    """A key as its reseller sees it: status, price ratio and money (nano-dollars).

    ``None`` marks a figure that does not apply: a wallet-funded key has no client budget,
    and without a spend cap nothing but the wallet bounds what remains.
    """

    key: ClientKey
    status: str
    ratio: Decimal
    margin: Decimal
    margin_percent: Decimal
    client_budget_nanos: int | None
    client_spent_nanos: int
    client_reserved_nanos: int
    client_remaining_nanos: int | None
    cost_funded_nanos: int
    cost_spent_nanos: int
    cost_refunded_nanos: int
    profit_nanos: int
    spend_cap_nanos: int | None
    period_spent_nanos: int


def key_figures(*, key: ClientKey, now: datetime | None = None) -> KeyFigures:
    """The numbers the API and dashboard show for one key.

    ``period_spent`` is what counts against the spend cap now: zero once the key's budget
    period has rolled over, even before the next request resets the stored counter.
    Prepaid keys have ``client_budget - client_spent`` left; wallet-funded keys have
    ``spend_cap - period_spent`` (never below zero, as a cap may be lowered under it).
    """
    now = now or timezone.now()
    period_spent = (
        key.period_client_spent_nanos
        if key.period_index >= period_index(key.budget_period, now)
        else 0
    )
    if key.is_prepaid:
        budget: int | None = key.client_budget_nanos
        remaining: int | None = key.client_budget_nanos - key.client_spent_nanos
    else:
        budget = None
        remaining = (
            None if key.spend_cap_nanos is None else max(key.spend_cap_nanos - period_spent, 0)
        )
    ratio = key.ratio
    return KeyFigures(
        key=key,
        status=key.effective_status,
        ratio=ratio.as_decimal(places=RATIO_DISPLAY_PLACES),
        margin=ratio.margin(places=RATIO_DISPLAY_PLACES),
        margin_percent=ratio_margin_percent(ratio),
        client_budget_nanos=budget,
        client_spent_nanos=key.client_spent_nanos,
        client_reserved_nanos=key.client_reserved_nanos,
        client_remaining_nanos=remaining,
        cost_funded_nanos=key.cost_funded_nanos,
        cost_spent_nanos=key.cost_spent_nanos,
        cost_refunded_nanos=key.cost_refunded_nanos,
        profit_nanos=key.profit_nanos,
        spend_cap_nanos=key.spend_cap_nanos,
        period_spent_nanos=period_spent,
    )


# A share of a budget or cap in whole percent: compared exactly, in integers (used × 100 ≥
# limit × percent), never as a rounded float.
FULL_PERCENT = 100


@dataclass(frozen=True, slots=True)
class KeyUse:
    """What a key has used of what bounds it, in client nano-dollars: a prepaid key's
    spend and budget (``is_cap`` false), or a wallet-funded key's spend this period and its
    spend cap (``is_cap`` true). What the alerts measure, the reseller's and the client's."""

    used_nanos: int
    limit_nanos: int
    is_cap: bool

    def has_reached(self, percent: int) -> bool:
        """Whether ``percent`` % of the limit is used (exactly; a zero limit has no share)."""
        return self.limit_nanos > 0 and self.used_nanos * FULL_PERCENT >= (
            self.limit_nanos * percent
        )

    @property
    def is_exhausted(self) -> bool:
        """Nothing remains (``KeyFigures.client_remaining_nanos`` is 0)."""
        return self.used_nanos >= self.limit_nanos

    @property
    def used_percent(self) -> int:
        """Whole percent used, rounded down (a zero limit counts as wholly used)."""
        if self.limit_nanos <= 0:
            return FULL_PERCENT
        return self.used_nanos * FULL_PERCENT // self.limit_nanos

    @property
    def remaining_nanos(self) -> int:
        return max(self.limit_nanos - self.used_nanos, 0)


def key_use(*, key: ClientKey, now: datetime | None = None) -> KeyUse | None:
    """The key's use of its budget or cap as ``key_figures`` counts it (a capped key's
    spend restarts with its period), or None for a wallet-funded key without a spend cap:
    nothing but the wallet bounds it, so it has no share to pass."""
    figures = key_figures(key=key, now=now)
    if key.is_prepaid:
        return KeyUse(
            used_nanos=figures.client_spent_nanos,
            limit_nanos=key.client_budget_nanos,
            is_cap=False,
        )
    if key.spend_cap_nanos is None:
        return None
    return KeyUse(
        used_nanos=figures.period_spent_nanos, limit_nanos=key.spend_cap_nanos, is_cap=True
    )


# ------------------------------------------------------------------ the tenant's keys at a glance


def prepaid_set_aside_nanos(*, tenant: Tenant) -> int:
    """What the wallet has paid into the tenant's prepaid keys and has neither been spent
    nor come back: for each prepaid key, ``cost_funded - cost_spent - cost_refunded``.

    That is every prepaid key's unspent budget at cost (what its holds for requests in
    flight keep is part of it, as they may yet be released), revoked and expired keys
    included: their money stays in the key until it is deleted, which refunds it. A deleted
    key counts only what it still owes the wallet (its requests in flight when it was
    deleted, refunded as they settle). The wallet's own holds (wallet-funded keys'
    requests) are ``Wallet.reserved_nanos``, not counted here.
    """
    total = (
        ClientKey.objects.for_tenant(tenant)
        .filter(funding=ClientKey.Funding.PREPAID)
        .aggregate(
            unspent=Sum(
                F("cost_funded_nanos") - F("cost_spent_nanos") - F("cost_refunded_nanos"),
                default=0,
            )
        )["unspent"]
    )
    return int(total)


# A key is near its limit once it has used this share (in percent) of its prepaid budget,
# or of its spend cap in the current period.
NEAR_LIMIT_PERCENT = 80


@dataclass(frozen=True, slots=True)
class KeyNearLimit:
    """An active key that has used ``NEAR_LIMIT_PERCENT`` or more of its limit: a prepaid
    key's client budget (``is_cap`` false), or a wallet-funded key's spend cap in the
    current period (``is_cap`` true). Money in client prices, nano-dollars."""

    figures: KeyFigures
    used_nanos: int
    limit_nanos: int
    is_cap: bool

    @property
    def used_percent(self) -> int:
        """Whole percent used, rounded down (99 until the limit is wholly reached)."""
        return self.used_nanos * 100 // self.limit_nanos


@dataclass(frozen=True, slots=True)
class KeysNearLimit:
    """The keys nearest their limit first (at most the number asked for), and how many
    keys are near theirs in all."""

    keys: list[KeyNearLimit]
    count: int


def keys_near_limit(
    *, tenant: Tenant, limit: int = 10, now: datetime | None = None
) -> KeysNearLimit:
    """The tenant's active keys that have used ``NEAR_LIMIT_PERCENT`` or more of their
    limit, the largest share used first (ties: the newest key first).

    A prepaid key's use is its client spend against its client budget; a wallet-funded
    key's is its spend in the current budget period against its spend cap (``key_figures``'
    ``period_spent``: nothing once the period has rolled over). Keys without a budget or
    cap, revoked, expired and deleted keys are never near a limit. Two queries however many
    keys there are: the shares are compared exactly (as fractions) over three columns of
    the candidates, then the few shown are loaded.
    """
    now = now or timezone.now()
    # A wallet key's stored period spend counts only while its period is the current one.
    current_period = functools.reduce(
        operator.or_,
        [
            Q(budget_period=kind, period_index__gte=index)
            for kind, index in period_indexes(now).items()
        ],
        Q(budget_period=BudgetPeriod.NONE),
    )
    candidates = key_list(tenant=tenant, status=ClientKey.Status.ACTIVE).filter(
        Q(funding=ClientKey.Funding.PREPAID, client_budget_nanos__gt=0)
        | (Q(funding=ClientKey.Funding.WALLET, spend_cap_nanos__gt=0) & current_period)
    )
    near = []
    for pk, funding, spent, budget, period_spent, cap in candidates.order_by().values_list(
        "pk",
        "funding",
        "client_spent_nanos",
        "client_budget_nanos",
        "period_client_spent_nanos",
        "spend_cap_nanos",
    ):
        used, of = (spent, budget) if funding == ClientKey.Funding.PREPAID else (period_spent, cap)
        if of and used * 100 >= of * NEAR_LIMIT_PERCENT:  # ``of``: the filter's positive one
            near.append((Fraction(used, of), pk))
    near.sort(reverse=True)
    shown = [pk for _, pk in near[:limit]]
    keys = ClientKey.objects.for_tenant(tenant).in_bulk(shown)
    result = []
    for pk in shown:
        use = key_use(key=keys[pk], now=now)
        assert use is not None  # noqa: S101 - candidates have a budget or a cap
        result.append(
            KeyNearLimit(
                figures=key_figures(key=keys[pk], now=now),
                used_nanos=use.used_nanos,
                limit_nanos=use.limit_nanos,
                is_cap=use.is_cap,
            )
        )
    return KeysNearLimit(keys=result, count=len(near))


# ----------------------------------------------------------------------------- ledger audit


def key_ledger_audit() -> list[LedgerProblem]:
    """Recompute every key's cached money counters from the rows that explain them; [] if
    all agree: ``client_reserved`` / ``cost_reserved`` == SUM of its held reservations,
    ``cost_funded == -SUM(key_funding)``, ``cost_refunded == SUM(key_refund)``, and
    ``cost_spent == -SUM(usage)`` for wallet-funded keys (prepaid keys post no usage).

    Read it inside ``ledger_snapshot``, as ``books_audit`` does, for one consistent view.
    """
    held = totals_by(
        Reservation.objects.filter(status=Reservation.Status.HELD),
        "client_key_id",
        client=Sum("client_nanos"),
        cost=Sum("cost_nanos"),
    )
    posted: dict[tuple[int, str], int] = {}
    for row in (
        LedgerEntry.objects.filter(client_key__isnull=False)
        .order_by()
        .values("client_key_id", "kind")
        .annotate(total=Sum("amount_nanos"))
    ):
        posted[(row["client_key_id"], row["kind"])] = int(row["total"] or 0)
    problems = []
    counters = [
        "client_reserved_nanos",
        "cost_reserved_nanos",
        "cost_funded_nanos",
        "cost_refunded_nanos",
        "cost_spent_nanos",
    ]
    for key in ClientKey.objects.order_by("pk").only("funding", *counters):
        key_held = held.get(key.pk, {})
        funded = -posted.get((key.pk, LedgerEntry.Kind.KEY_FUNDING), 0)
        refunded = posted.get((key.pk, LedgerEntry.Kind.KEY_REFUND), 0)
        usage = -posted.get((key.pk, LedgerEntry.Kind.USAGE), 0)
        # (check, what the books say, the cached counter)
        checks = [
            ("key_client_reserved", key_held.get("client", 0), "client_reserved_nanos"),
            ("key_cost_reserved", key_held.get("cost", 0), "cost_reserved_nanos"),
            ("key_cost_funded", funded, "cost_funded_nanos"),
            ("key_cost_refunded", refunded, "cost_refunded_nanos"),
        ]
        if key.funding == ClientKey.Funding.WALLET:
            checks.append(("key_cost_spent", usage, "cost_spent_nanos"))
        for check, expected, counter in checks:
            actual = getattr(key, counter)
            if actual != expected:
                what = counter.removesuffix("_nanos")
                problems.append(ledger_problem(check, "client_key", key.pk, expected, actual, what))
        if key.funding == ClientKey.Funding.PREPAID and usage:
            # A prepaid key paid for its usage when it was funded; a usage entry charges twice.
            problems.append(
                ledger_problem("key_usage_entries", "client_key", key.pk, 0, usage, "usage posted")
            )
    return problems


def books_audit() -> list[LedgerProblem]:
    """Every books invariant, wallets (``billing.selectors.ledger_audit``) and keys
    (``key_ledger_audit``), read in one snapshot: what ``manage.py check_ledger`` runs."""
    with ledger_snapshot():
        return [*ledger_audit(), *key_ledger_audit()]
