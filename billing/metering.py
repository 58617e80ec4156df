"""Metering: reserve a request's worst case before dispatch, settle it from reported usage.

Design overview
---------------
Admission must be atomic under any concurrency: the sum of charges never exceeds a key's
budget or cap, and a wallet never goes negative. Both are guaranteed the same way, by
conditional ``UPDATE``s whose ``WHERE`` clause is the rule itself (the row lock taken by the
update serialises competitors; the loser updates no row and is refused):

1. ``reserve_op`` adds the worst case to the key's ``*_reserved_nanos`` only if
   spent + reserved + worst case still fits the prepaid budget and the spend cap (resetting
   the cap's period in the same statement when it has rolled over); for ``wallet`` keys it
   then adds the cost to ``Wallet.reserved_nanos`` only if the wallet's balance still covers
   all its reservations. A ``Reservation`` row, unique on the request id, records the hold.
2. ``settle_op`` *claims* the reservation (``status = 'held'`` → settled/released/expired;
   only one caller can win, so nothing is charged twice), moves the actual charge — clamped
   to the hold, so an upstream that reports more than the worst case can never push a key
   past its budget — from reserved to spent, and for ``wallet`` keys posts the usage to the
   ledger in the same transaction. Releasing is settling a zero charge. A prepaid key that
   was deleted while the request was in flight refunds the released part at once.

A spend cap's period is the one of the key's *stored* ``budget_period``, chosen inside each
statement from the indexes of every kind of period at ``now`` (``keys.periods``): the
caller's copy of the key may predate a change of ``budget_period`` (the proxy caches keys,
and a request can run for minutes), and an index of another kind would reset a cap early or
push ``period_index`` so far ahead that the cap never resets again.

Locks are always taken in the order reservation → key → wallet, so two operations never
wait on each other in opposite orders. Every operation is an ``Op`` (see ``billing.sqlops``)
run by the sync services or by the proxy's async driver: one implementation for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from billing.exceptions import KeyInactive, ReservationRefused
from billing.ledger import ledger_post_op
from billing.money import Charge, format_usd
from billing.sqlops import Op, Sql
from keys.periods import period_indexes

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
       period_index = CASE WHEN period_index < {PERIOD} THEN {PERIOD} ELSE period_index END
 WHERE id = %(key_id)s
   AND status = 'active'
   AND (funding <> 'prepaid' OR (
            client_spent_nanos + client_reserved_nanos + %(client)s <= client_budget_nanos
        AND cost_spent_nanos + cost_reserved_nanos + cost_refunded_nanos + %(cost)s <= cost_funded_nanos))
   AND (spend_cap_nanos IS NULL OR
        (CASE WHEN period_index < {PERIOD} THEN 0 ELSE period_client_spent_nanos END)
        + client_reserved_nanos + %(client)s <= spend_cap_nanos)
RETURNING funding, wallet_id
"""  # noqa: S608

KEY_STATE = f"""
SELECT status, funding, client_budget_nanos, client_spent_nanos, client_reserved_nanos,
       cost_funded_nanos, cost_spent_nanos, cost_reserved_nanos, cost_refunded_nanos,
       spend_cap_nanos,
       CASE WHEN period_index < {PERIOD} THEN 0 ELSE period_client_spent_nanos END
  FROM keys_clientkey WHERE id = %(key_id)s
"""  # noqa: S608

WALLET_RESERVE = """
UPDATE billing_wallet
   SET reserved_nanos = reserved_nanos + %(cost)s
 WHERE id = %(wallet_id)s AND balance_nanos - reserved_nanos >= %(cost)s
RETURNING id
"""

WALLET_AVAILABLE = "SELECT balance_nanos - reserved_nanos FROM billing_wallet WHERE id = %(wallet_id)s"

RESERVATION_INSERT = """
INSERT INTO billing_reservation
       (request_id, client_key_id, wallet_id, price_id, cost_nanos, client_nanos, status,
        charged_cost_nanos, charged_client_nanos, created_at, expires_at)
VALUES (%(request_id)s, %(key_id)s, %(wallet_id)s, %(price_id)s, %(cost)s, %(client)s, 'held',
        0, 0, %(now)s, %(expires_at)s)
RETURNING id
"""

RESERVATION_CLAIM = """
UPDATE billing_reservation
   SET status = %(status)s,
       finished_at = %(now)s,
       charged_cost_nanos = CASE WHEN cost_nanos < %(cost)s THEN cost_nanos ELSE %(cost)s END,
       charged_client_nanos = CASE WHEN client_nanos < %(client)s THEN client_nanos ELSE %(client)s END
 WHERE request_id = %(request_id)s AND status = 'held'
RETURNING id, client_key_id, wallet_id, cost_nanos, client_nanos,
          charged_cost_nanos, charged_client_nanos
"""

KEY_SETTLE = f"""
UPDATE keys_clientkey
   SET client_reserved_nanos = client_reserved_nanos - %(held_client)s,
       cost_reserved_nanos = cost_reserved_nanos - %(held_cost)s,
       client_spent_nanos = client_spent_nanos + %(client)s,
       cost_spent_nanos = cost_spent_nanos + %(cost)s,
       period_client_spent_nanos = CASE WHEN period_index < {PERIOD} THEN 0
                                        ELSE period_client_spent_nanos END + %(client)s,
       period_index = CASE WHEN period_index < {PERIOD} THEN {PERIOD} ELSE period_index END
 WHERE id = %(key_id)s
RETURNING funding, status, wallet_id
"""  # noqa: S608

KEY_REFUND_RELEASED = """
UPDATE keys_clientkey SET cost_refunded_nanos = cost_refunded_nanos + %(refund)s WHERE id = %(key_id)s
"""

WALLET_RELEASE = """
UPDATE billing_wallet SET reserved_nanos = reserved_nanos - %(held)s WHERE id = %(wallet_id)s
"""


@dataclass(frozen=True, slots=True)
class Hold:
    reservation_id: int
    wallet_id: int | None


@dataclass(frozen=True, slots=True)
class Settlement:
    reservation_id: int
    key_id: int
    held_cost_nanos: int
    held_client_nanos: int
    charged_cost_nanos: int
    charged_client_nanos: int
    # What the upstream reported beyond the worst case we held (never charged).
    overrun_cost_nanos: int


def reserve_op(
    *,
    request_id: str,
    key_id: int,
    price_id: int,
    worst_case: Charge,
    now: datetime,
    expires_at: datetime,
    period: int | None = None,
) -> Op[Hold]:
    """Hold ``worst_case`` against the key (and its wallet, for wallet-funded keys).

    Raises ReservationRefused (with what is available) or KeyInactive; nothing is held then.
    ``period`` is ignored (the statement picks the stored budget_period's period at
    ``now``); it is accepted only until the proxy's callers stop passing it.
    """
    periods = period_indexes(now)
    params = {
        "client": worst_case.client_nanos,
        "cost": worst_case.cost_nanos,
        "key_id": key_id,
        **periods,
    }
    rows = yield Sql(KEY_RESERVE, params)
    if not rows:
        state = yield Sql(KEY_STATE, {"key_id": key_id, **periods})
        raise _refusal(state, worst_case)
    funding, key_wallet_id = rows[0]
    wallet_id = int(key_wallet_id) if funding == "wallet" else None
    if wallet_id is not None:
        held = yield Sql(WALLET_RESERVE, {"cost": worst_case.cost_nanos, "wallet_id": wallet_id})
        if not held:
            available = yield Sql(WALLET_AVAILABLE, {"wallet_id": wallet_id})
            wallet_available = int(available[0][0]) if available else 0
            raise ReservationRefused(
                f"Insufficient wallet balance: {format_usd(max(wallet_available, 0))} available, "
                f"this request may cost up to {format_usd(worst_case.cost_nanos)}.",
                cost_available_nanos=max(wallet_available, 0),
            )
    inserted = yield Sql(
        RESERVATION_INSERT,
        {
            "request_id": request_id,
            "key_id": key_id,
            "wallet_id": wallet_id,
            "price_id": price_id,
            "cost": worst_case.cost_nanos,
            "client": worst_case.client_nanos,
            "now": now,
            "expires_at": expires_at,
        },
    )
    return Hold(reservation_id=int(inserted[0][0]), wallet_id=wallet_id)


def _refusal(state: list[tuple[object, ...]], worst_case: Charge) -> Exception:
    if not state:
        return KeyInactive("Unknown key.")
    (status, funding, budget, spent, reserved, funded, cost_spent, cost_reserved, refunded,
     cap, period_spent) = state[0]
    if status != "active":
        return KeyInactive(f"This key is {status}.")
    candidates: list[int] = []
    cost_available: int | None = None
    if funding == "prepaid":
        candidates.append(int(budget) - int(spent) - int(reserved))  # type: ignore[call-overload]
        cost_available = int(funded) - int(cost_spent) - int(cost_reserved) - int(refunded)  # type: ignore[call-overload]
    if cap is not None:
        candidates.append(int(cap) - int(period_spent) - int(reserved))  # type: ignore[call-overload]
    client_available = max(min(candidates), 0) if candidates else None
    what = "budget" if funding == "prepaid" else "spend cap"
    return ReservationRefused(
        f"Insufficient key {what}: {format_usd(client_available or 0)} remaining, "
        f"this request may cost up to {format_usd(worst_case.client_nanos)}.",
        client_available_nanos=client_available,
        cost_available_nanos=None if cost_available is None else max(cost_available, 0),
    )


def settle_op(
    *,
    request_id: str,
    actual: Charge,
    now: datetime,
    status: str = "settled",
    reason: str = "API usage",
    period: int | None = None,
) -> Op[Settlement | None]:
    """Charge ``actual`` (clamped to the hold) and release the rest of the reservation.

    Returns None when the reservation was already settled, released or expired: settling
    is idempotent on the request id. ``period`` is ignored, as in :func:`reserve_op`.
    """
    claimed = yield Sql(
        RESERVATION_CLAIM,
        {
            "status": status,
            "now": now,
            "cost": actual.cost_nanos,
            "client": actual.client_nanos,
            "request_id": request_id,
        },
    )
    if not claimed:
        return None
    row = claimed[0]
    reservation_id, key_id = int(row[0]), int(row[1])
    wallet_id = int(row[2]) if row[2] is not None else None
    held_cost, held_client, charged_cost, charged_client = (int(v) for v in row[3:])
    key_rows = yield Sql(
        KEY_SETTLE,
        {
            "held_client": held_client,
            "held_cost": held_cost,
            "client": charged_client,
            "cost": charged_cost,
            "key_id": key_id,
            **period_indexes(now),
        },
    )
    funding, key_status, key_wallet_id = key_rows[0]
    if wallet_id is not None:
        if charged_cost > 0:
            yield from ledger_post_op(
                wallet_id=wallet_id,
                kind="usage",
                amount_nanos=-charged_cost,
                released_nanos=held_cost,
                reason=reason,
                reference=request_id,
                idempotency_key=f"usage:{request_id}",
                client_key_id=key_id,
                now=now,
            )
        elif held_cost > 0:
            yield Sql(WALLET_RELEASE, {"held": held_cost, "wallet_id": wallet_id})
    elif funding == "prepaid" and key_status == "deleted" and held_cost > charged_cost:
        # The key's unspent cost was refunded at deletion, except what this request held.
        refund = held_cost - charged_cost
        yield Sql(KEY_REFUND_RELEASED, {"refund": refund, "key_id": key_id})
        yield from ledger_post_op(
            wallet_id=int(key_wallet_id),
            kind="key_refund",
            amount_nanos=refund,
            reason="Refund of a deleted key's released reservation",
            reference=request_id,
            idempotency_key=f"refund:{request_id}",
            client_key_id=key_id,
            now=now,
        )
    return Settlement(
        reservation_id=reservation_id,
        key_id=key_id,
        held_cost_nanos=held_cost,
        held_client_nanos=held_client,
        charged_cost_nanos=charged_cost,
        charged_client_nanos=charged_client,
        overrun_cost_nanos=max(actual.cost_nanos - charged_cost, 0),
    )
