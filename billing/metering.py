"""Metering: reserve a request's worst case before dispatch, settle it from reported usage.

Design overview
---------------
Admission must be atomic under any concurrency: the sum of charges never exceeds a key's
budget or cap, and a wallet never goes negative. Each operation is one batch (one
transaction, one round trip on PostgreSQL; see ``billing.sqlops``) whose conditions are in
the SQL, so the row locks it takes are held only while the database runs it:

1. ``reserve_op``: the key's ``UPDATE`` adds the worst case to ``*_reserved_nanos`` only if
   the key is active, its tenant is not suspended (``accounts_tenant.is_active``: a worker's
   cached key can never spend past a suspension), and spent + reserved + worst case still
   fits the prepaid budget and the spend cap (resetting the cap's period in the same
   statement when it has rolled over), and marks the key row with the request id. The
   tenant is read by a scalar subquery, one primary-key probe (measured on PostgreSQL 15:
   about 12 µs more per prepared statement, 20 µs more planning unprepared; an ``EXISTS``,
   planned as a join, cost three times that to plan). Guarded by that mark, a ``wallet``
   key's hold is added to ``Wallet.reserved_nanos`` (the CHECK ``balance >= reserved``
   refuses an overdraft and aborts the batch) and the ``Reservation`` row, unique on the
   request id, is inserted. No reservation row back = refused; a second, read-only batch
   says why.
2. ``settle_op``: *claims* the reservation (``status = 'held'`` → settled / released /
   expired, with a fresh claim token; only one caller can win, so nothing is charged
   twice) and, guarded by that claim, moves the charge from reserved to spent on the key
   and, for ``wallet`` keys, posts the usage to the ledger while releasing the hold. It
   checks neither the key's status nor its tenant's: a request admitted before a revocation
   or a suspension was served by the upstream, and what it used is charged. The
   charge is the actual cost clamped to the hold, so an upstream that reports more than
   the worst case can never push a key past its budget. Releasing is settling a zero
   charge.
3. ``deleted_key_refund_op``: a deleted prepaid key's unspent cost (what it was funded,
   less what it spent, holds and was refunded) goes back to the wallet, guarded by that
   exact amount so that concurrent refunds can never both apply. Deletion runs it; so does
   whoever settled a request that was in flight when its key was deleted (the settling
   ``UPDATE`` returns the key's status: ``Settlement.refund_owed_nanos``), in a transaction
   of its own; and the periodic sweep catches up on any refund a crash left undone.

A spend cap's period is the one of the key's *stored* ``budget_period``, chosen inside each
statement from the indexes of every kind of period at ``now`` (``billing.periods``): the
caller's copy of the key may predate a change of ``budget_period`` (the proxy caches keys,
and a request can run for minutes), and an index of another kind would reset a cap early or
push ``period_index`` so far ahead that the cap never resets again.

Locks are taken in the order reservation → key → wallet, so two operations never wait on
each other in opposite orders.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from billing.exceptions import AccountSuspended, KeyInactive, ReservationRefused
from billing.ledger import OVERDRAFT_CONSTRAINT, WALLET_AVAILABLE, Guard, ledger_post_statements
from billing.models import KeyFunding, LedgerEntry, Reservation
from billing.money import Charge, format_usd
from billing.periods import period_indexes
from billing.sqlops import Batch, ConstraintViolated, Op, Sql

# The key statuses metering acts on: ``keys.ClientKey.Status`` values, named here because
# billing never imports keys (tests/keys check that the two agree).
KEY_ACTIVE = "active"
KEY_DELETED = "deleted"

# A prepaid key's cost not yet spent, held or refunded (its unspent budget, at cost).
UNSPENT = "cost_funded_nanos - cost_spent_nanos - cost_reserved_nanos - cost_refunded_nanos"

# The current period of the key's stored budget_period (params: ``period_indexes(now)``).
PERIOD = """(CASE budget_period WHEN 'daily' THEN %(daily)s WHEN 'weekly' THEN %(weekly)s
 WHEN 'monthly' THEN %(monthly)s ELSE 0 END)"""

# Only the PERIOD fragment above is interpolated into these statements; values are params.
KEY_RESERVE = f"""
UPDATE keys_clientkey
   SET client_reserved_nanos = client_reserved_nanos + %(client)s,
       cost_reserved_nanos = cost_reserved_nanos + %(cost)s,
       period_client_spent_nanos = CASE WHEN period_index < {PERIOD} THEN 0
                                        ELSE period_client_spent_nanos END,
       period_index = CASE WHEN period_index < {PERIOD} THEN {PERIOD} ELSE period_index END,
       hold_marker = %(request_id)s
 WHERE id = %(key_id)s
   AND funding = %(funding)s
   AND wallet_id = %(wallet_id)s
   AND status = 'active'
   AND (SELECT is_active FROM accounts_tenant WHERE id = keys_clientkey.tenant_id)
   AND (funding <> 'prepaid' OR (
            client_spent_nanos + client_reserved_nanos + %(client)s <= client_budget_nanos
        AND cost_spent_nanos + cost_reserved_nanos + cost_refunded_nanos + %(cost)s <= cost_funded_nanos))
   AND (spend_cap_nanos IS NULL OR
        (CASE WHEN period_index < {PERIOD} THEN 0 ELSE period_client_spent_nanos END)
        + client_reserved_nanos + %(client)s <= spend_cap_nanos)
"""  # noqa: S608

# "The key update of this batch took effect": the key row carries our request id.
KEY_MARKED = (
    "EXISTS (SELECT 1 FROM keys_clientkey WHERE id = %(key_id)s AND hold_marker = %(request_id)s)"
)

WALLET_RESERVE = f"""
UPDATE billing_wallet SET reserved_nanos = reserved_nanos + %(cost)s
 WHERE id = %(wallet_id)s AND {KEY_MARKED}
"""  # noqa: S608

RESERVATION_INSERT = """
INSERT INTO billing_reservation
       (request_id, client_key_id, wallet_id, price_id, cost_nanos, client_nanos, status,
        charged_cost_nanos, charged_client_nanos, claim_token, created_at, expires_at)
SELECT %(request_id)s, id, %(held_wallet_id)s, %(price_id)s, %(cost)s, %(client)s, 'held',
       0, 0, '', %(now)s, %(expires_at)s
  FROM keys_clientkey
 WHERE id = %(key_id)s AND hold_marker = %(marker)s
RETURNING id
"""

KEY_STATE = f"""
SELECT status, funding, client_budget_nanos, client_spent_nanos, client_reserved_nanos,
       cost_funded_nanos, cost_spent_nanos, cost_reserved_nanos, cost_refunded_nanos,
       spend_cap_nanos,
       CASE WHEN period_index < {PERIOD} THEN 0 ELSE period_client_spent_nanos END,
       (SELECT is_active FROM accounts_tenant WHERE id = keys_clientkey.tenant_id)
  FROM keys_clientkey WHERE id = %(key_id)s
"""  # noqa: S608

# Every parameter's type follows from its context (PostgreSQL prepares these statements;
# see proxy.db): hence COALESCE rather than ``%(price_id)s IS NULL``, and the expiry
# condition appended only for the sweep's claims.
RESERVATION_CLAIM = """
UPDATE billing_reservation
   SET status = %(status)s,
       finished_at = %(now)s,
       charged_cost_nanos = %(charged_cost)s,
       charged_client_nanos = %(charged_client)s,
       price_id = COALESCE(%(price_id)s, price_id),
       claim_token = %(token)s
 WHERE request_id = %(request_id)s AND status = 'held'
   AND client_key_id = %(key_id)s AND cost_nanos = %(held_cost)s AND client_nanos = %(held_client)s
{expired}RETURNING id
"""
CLAIM_ANY = RESERVATION_CLAIM.format(expired="")
CLAIM_EXPIRED = RESERVATION_CLAIM.format(expired="   AND expires_at < %(expired_before)s\n")

# A live request (a long stream) keeps its hold: the sweep expires only holds past expiry.
HOLD_EXTEND = """
UPDATE billing_reservation SET expires_at = %(expires_at)s
 WHERE request_id = %(request_id)s AND status = 'held'
RETURNING id
"""

# "The claim of this batch took effect."
CLAIMED = "EXISTS (SELECT 1 FROM billing_reservation WHERE request_id = %(request_id)s AND claim_token = %(token)s)"

KEY_SETTLE = f"""
UPDATE keys_clientkey
   SET client_reserved_nanos = client_reserved_nanos - %(held_client)s,
       cost_reserved_nanos = cost_reserved_nanos - %(held_cost)s,
       client_spent_nanos = client_spent_nanos + %(charged_client)s,
       cost_spent_nanos = cost_spent_nanos + %(charged_cost)s,
       period_client_spent_nanos = CASE WHEN period_index < {PERIOD} THEN 0
                                        ELSE period_client_spent_nanos END + %(charged_client)s,
       period_index = CASE WHEN period_index < {PERIOD} THEN {PERIOD} ELSE period_index END
 WHERE id = %(key_id)s AND {CLAIMED}
RETURNING status, {UNSPENT}
"""  # noqa: S608

WALLET_RELEASE = f"""
UPDATE billing_wallet SET reserved_nanos = reserved_nanos - %(held_cost)s
 WHERE id = %(wallet_id)s AND {CLAIMED}
"""  # noqa: S608

# A deleted prepaid key's cost neither spent, held by a request in flight, nor refunded yet.
# Only this exact amount is refunded: a concurrent refund (or settlement) changes it, and
# the refund that finds it changed does nothing.
DELETED_KEY_REFUND = f"""
UPDATE keys_clientkey
   SET cost_refunded_nanos = cost_refunded_nanos + %(refund)s,
       hold_marker = %(request_id)s
 WHERE id = %(key_id)s AND status = 'deleted' AND funding = 'prepaid'
   AND {UNSPENT} = %(refund)s
"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation as its holder knows it: enough to settle it without reading it back."""

    request_id: str
    reservation_id: int
    key_id: int
    funding: str
    # The wallet holding the cost part of the hold (wallet-funded keys only).
    wallet_id: int | None
    # The tenant's wallet, where a deleted prepaid key's released hold is refunded.
    key_wallet_id: int
    cost_nanos: int
    client_nanos: int


@dataclass(frozen=True, slots=True)
class Settlement:
    reservation_id: int
    key_id: int
    held_cost_nanos: int
    held_client_nanos: int
    charged_cost_nanos: int
    charged_client_nanos: int
    # What the upstream reported beyond the worst case we held (never charged): at cost,
    # what the operator paid the upstream for nothing; at client price, lost revenue.
    overrun_cost_nanos: int
    # The key was deleted while this request was in flight: its unspent cost, this hold's
    # unspent part included, is owed back to the wallet (``deleted_key_refund_op``).
    refund_owed_nanos: int = 0
    overrun_client_nanos: int = 0

    @property
    def is_over_hold(self) -> bool:
        """The reported usage cost more than the hold: the charge was clamped to it."""
        return self.overrun_cost_nanos > 0 or self.overrun_client_nanos > 0


def reserve_op(
    *,
    request_id: str,
    key_id: int,
    funding: str,
    wallet_id: int,
    price_id: int,
    worst_case: Charge,
    now: datetime,
    expires_at: datetime,
) -> Op[Hold]:
    """Hold ``worst_case`` against the key (and its wallet, for wallet-funded keys).

    ``funding`` and ``wallet_id`` are the key's (both immutable; checked by the statement).
    Raises ReservationRefused (with what is available) or KeyInactive; nothing is held then.
    """
    is_wallet = funding == KeyFunding.WALLET
    params = {
        "request_id": request_id,
        "key_id": key_id,
        "funding": funding,
        "wallet_id": wallet_id,
        "client": worst_case.client_nanos,
        "cost": worst_case.cost_nanos,
        **period_indexes(now),
    }
    statements = [Sql(KEY_RESERVE, params)]
    if is_wallet:
        statements.append(Sql(WALLET_RESERVE, params))
    statements.append(
        Sql(
            RESERVATION_INSERT,
            {
                **params,
                # The same value as request_id, named apart: PostgreSQL types a parameter
                # once, and the select list and the comparison would disagree.
                "marker": request_id,
                "held_wallet_id": wallet_id if is_wallet else None,
                "price_id": price_id,
                "now": now,
                "expires_at": expires_at,
            },
        )
    )
    try:
        results = yield Batch(tuple(statements))
    except ConstraintViolated as exc:
        if exc.constraint != OVERDRAFT_CONSTRAINT:
            raise
        (rows,) = yield Batch.of(Sql(WALLET_AVAILABLE, {"wallet_id": wallet_id}))
        wallet_available = max(int(rows[0][0]) if rows else 0, 0)
        raise ReservationRefused(
            f"Insufficient wallet balance: {format_usd(wallet_available)} available, "
            f"this request may cost up to {format_usd(worst_case.cost_nanos)}.",
            cost_available_nanos=wallet_available,
        ) from None
    inserted = results[-1]
    if not inserted:
        (state,) = yield Batch.of(Sql(KEY_STATE, {"key_id": key_id, **period_indexes(now)}))
        raise _refusal(state, worst_case, funding_expected=funding)
    return Hold(
        request_id=request_id,
        reservation_id=int(inserted[0][0]),
        key_id=key_id,
        funding=funding,
        wallet_id=wallet_id if is_wallet else None,
        key_wallet_id=wallet_id,
        cost_nanos=worst_case.cost_nanos,
        client_nanos=worst_case.client_nanos,
    )


def _refusal(
    state: list[tuple[object, ...]], worst_case: Charge, *, funding_expected: str
) -> Exception:
    if not state:
        return KeyInactive("Unknown key.")
    (
        status,
        funding,
        budget,
        spent,
        reserved,
        funded,
        cost_spent,
        cost_reserved,
        refunded,
        cap,
        period_spent,
        tenant_active,
    ) = state[0]
    if status != KEY_ACTIVE:
        return KeyInactive(f"This key is {status}.")
    if not tenant_active:
        return AccountSuspended()
    if funding != funding_expected:
        return KeyInactive("This key's funding does not match.")
    candidates: list[int] = []
    cost_available: int | None = None
    if funding == KeyFunding.PREPAID:
        candidates.append(int(budget) - int(spent) - int(reserved))  # type: ignore[call-overload]
        cost_available = int(funded) - int(cost_spent) - int(cost_reserved) - int(refunded)  # type: ignore[call-overload]
    if cap is not None:
        candidates.append(int(cap) - int(period_spent) - int(reserved))  # type: ignore[call-overload]
    client_available = max(min(candidates), 0) if candidates else None
    what = "budget" if funding == KeyFunding.PREPAID else "spend cap"
    return ReservationRefused(
        f"Insufficient key {what}: {format_usd(client_available or 0)} remaining, "
        f"this request may cost up to {format_usd(worst_case.client_nanos)}.",
        client_available_nanos=client_available,
        cost_available_nanos=None if cost_available is None else max(cost_available, 0),
    )


def settle_op(
    *,
    hold: Hold,
    actual: Charge,
    now: datetime,
    status: str = Reservation.Status.SETTLED,
    reason: str = "API usage",
    price_id: int | None = None,
    expired_before: datetime | None = None,
) -> Op[Settlement | None]:
    """Charge ``actual`` (clamped to the hold) and release the rest of the reservation.

    ``price_id`` is the price version ``actual`` was computed at, when it differs from the
    one reserved at (the proxy holds at the dearest candidate route and charges at the
    route that served): the reservation then records the price actually charged.
    ``expired_before`` (the expiry sweep's): claim only a hold that expired before it, so a
    request that extended its hold meanwhile keeps it.

    Returns None when the reservation was already settled, released or expired: settling
    is idempotent on the request id.
    """
    charged_cost = min(actual.cost_nanos, hold.cost_nanos)
    charged_client = min(actual.client_nanos, hold.client_nanos)
    token = secrets.token_hex(16)
    claim = {
        "request_id": hold.request_id,
        "token": token,
        "key_id": hold.key_id,
        "held_cost": hold.cost_nanos,
        "held_client": hold.client_nanos,
        "charged_cost": charged_cost,
        "charged_client": charged_client,
    }
    statements = [
        Sql(
            CLAIM_ANY if expired_before is None else CLAIM_EXPIRED,
            {
                **claim,
                "status": status,
                "now": now,
                "price_id": price_id,
                **({} if expired_before is None else {"expired_before": expired_before}),
            },
        ),
        Sql(KEY_SETTLE, {**claim, **period_indexes(now)}),
    ]
    claimed = Guard(CLAIMED, {"request_id": hold.request_id, "token": token})
    if hold.wallet_id is not None:
        if charged_cost > 0:
            statements += ledger_post_statements(
                wallet_id=hold.wallet_id,
                kind=LedgerEntry.Kind.USAGE,
                amount_nanos=-charged_cost,
                released_nanos=hold.cost_nanos,
                reason=reason,
                reference=hold.request_id,
                idempotency_key=f"usage:{hold.request_id}",
                client_key_id=hold.key_id,
                now=now,
                guard=claimed,
            )
        elif hold.cost_nanos > 0:
            statements.append(Sql(WALLET_RELEASE, {**claim, "wallet_id": hold.wallet_id}))
    results = yield Batch(tuple(statements))
    if not results[0]:
        return None
    refund_owed = 0
    if hold.wallet_id is None and results[1]:
        key_status, unspent = results[1][0]
        if key_status == KEY_DELETED:
            refund_owed = max(int(unspent), 0)  # type: ignore[call-overload]
    return Settlement(
        reservation_id=int(results[0][0][0]),
        key_id=hold.key_id,
        held_cost_nanos=hold.cost_nanos,
        held_client_nanos=hold.client_nanos,
        charged_cost_nanos=charged_cost,
        charged_client_nanos=charged_client,
        overrun_cost_nanos=max(actual.cost_nanos - charged_cost, 0),
        refund_owed_nanos=refund_owed,
        overrun_client_nanos=max(actual.client_nanos - charged_client, 0),
    )


DELETED_KEY_REFUND_REASON = "Refund of a deleted key's released reservation"


def deleted_key_refund_op(
    *,
    key_id: int,
    wallet_id: int,
    refund: int,
    now: datetime,
    reason: str = DELETED_KEY_REFUND_REASON,
    idempotency_key: str | None = None,
    actor_id: int | None = None,
) -> Op[bool]:
    """Refund ``refund``, a deleted prepaid key's whole unspent cost, to its wallet.

    Applies only if that is still exactly what the key has unspent (see
    ``DELETED_KEY_REFUND``); returns whether it did.
    """
    if refund <= 0:
        return False
    marker = f"refund:{secrets.token_hex(12)}"
    (_, _, entry) = yield Batch(
        (
            Sql(DELETED_KEY_REFUND, {"key_id": key_id, "refund": refund, "request_id": marker}),
            *ledger_post_statements(
                wallet_id=wallet_id,
                kind=LedgerEntry.Kind.KEY_REFUND,
                amount_nanos=refund,
                reason=reason,
                reference=f"key:{key_id}",
                idempotency_key=idempotency_key or f"key-refund:{key_id}:{marker}",
                client_key_id=key_id,
                actor_id=actor_id,
                now=now,
                guard=Guard(KEY_MARKED, {"key_id": key_id, "request_id": marker}),
            ),
        )
    )
    return bool(entry)


def hold_extend_op(*, hold: Hold, expires_at: datetime) -> Op[bool]:
    """Push a live request's hold expiry to ``expires_at`` (False if no longer held).

    A stream may outlive ``RESERVATION_TTL_SECONDS``; its worker extends the hold while
    bytes flow, so the sweep, which releases only the holds of dead workers, leaves it.
    """
    (rows,) = yield Batch.of(
        Sql(HOLD_EXTEND, {"request_id": hold.request_id, "expires_at": expires_at})
    )
    return bool(rows)
