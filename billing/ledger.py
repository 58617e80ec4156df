"""The ledger rule: a wallet balance changes only together with the entry that explains it.

Design overview
---------------
:func:`ledger_post_statements` are the only statements that change
``Wallet.balance_nanos``: an ``UPDATE`` of the wallet and the ``INSERT`` of the
``LedgerEntry`` carrying the balance after it, always in the same batch (one transaction).
There is no read-modify-write: the database adds the amount, and the CHECK constraint
``wallet_covers_reservations`` (balance >= reserved) refuses any debit that would eat into
money held for in-flight requests or take the wallet below zero, however many debits race.
Entries are never updated or deleted; ``check_ledger`` recomputes every balance from them.

``released_nanos`` lets settlement release a reservation and charge against it in the same
statement: the hold was already counted in ``reserved_nanos``, so the debit it covers needs
no new headroom. A ``guard`` (an SQL condition) makes both statements apply only if an
earlier statement of the batch took effect (see ``billing.sqlops``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billing.exceptions import InsufficientFunds, LedgerError
from billing.sqlops import Batch, ConstraintViolated, Op, Sql

OVERDRAFT_CONSTRAINT = "wallet_covers_reservations"

WALLET_POST = """
UPDATE billing_wallet
   SET balance_nanos = balance_nanos + %(amount)s,
       reserved_nanos = reserved_nanos - %(released)s,
       updated_at = %(now)s
 WHERE id = %(wallet_id)s AND {guard}
RETURNING balance_nanos
"""

ENTRY_INSERT = """
INSERT INTO billing_ledgerentry
       (wallet_id, kind, amount_nanos, balance_after_nanos, reason, reference,
        idempotency_key, client_key_id, actor_id, created_at)
SELECT id, %(kind)s, %(amount)s, balance_nanos, %(reason)s, %(reference)s,
       %(idempotency_key)s, %(client_key_id)s, %(actor_id)s, %(now)s
  FROM billing_wallet
 WHERE id = %(wallet_id)s AND {guard}
RETURNING id, balance_after_nanos
"""

WALLET_AVAILABLE = (
    "SELECT balance_nanos - reserved_nanos FROM billing_wallet WHERE id = %(wallet_id)s"
)


@dataclass(frozen=True, slots=True)
class Guard:
    """An SQL condition (with its params) both ledger statements must also meet."""

    condition: str
    params: dict[str, Any]


ALWAYS = Guard("1 = 1", {})


@dataclass(frozen=True, slots=True)
class Posted:
    entry_id: int
    balance_after_nanos: int


def ledger_post_statements(
    *,
    wallet_id: int,
    kind: str,
    amount_nanos: int,
    reason: str,
    now: datetime,
    reference: str = "",
    idempotency_key: str | None = None,
    client_key_id: int | None = None,
    actor_id: int | None = None,
    released_nanos: int = 0,
    guard: Guard = ALWAYS,
) -> tuple[Sql, Sql]:
    """The wallet update and its entry, for a batch. Check the amount before calling."""
    if amount_nanos == 0:
        raise LedgerError("a ledger entry must move money")
    if not reason.strip():
        raise LedgerError("a ledger entry needs a reason")
    common = {"wallet_id": wallet_id, "amount": amount_nanos, "now": now, **guard.params}
    return (
        Sql(WALLET_POST.format(guard=guard.condition), {**common, "released": released_nanos}),
        Sql(
            ENTRY_INSERT.format(guard=guard.condition),
            {
                **common,
                "kind": kind,
                "reason": reason[:500],
                "reference": reference[:200],
                "idempotency_key": idempotency_key,
                "client_key_id": client_key_id,
                "actor_id": actor_id,
            },
        ),
    )


def ledger_post_op(
    *,
    wallet_id: int,
    kind: str,
    amount_nanos: int,
    reason: str,
    now: datetime,
    reference: str = "",
    idempotency_key: str | None = None,
    client_key_id: int | None = None,
    actor_id: int | None = None,
) -> Op[Posted]:
    """Change a wallet's balance by ``amount_nanos`` (signed) and record why.

    Raises InsufficientFunds if a debit would leave less than the wallet's reservations.
    """
    statements = ledger_post_statements(
        wallet_id=wallet_id,
        kind=kind,
        amount_nanos=amount_nanos,
        reason=reason,
        now=now,
        reference=reference,
        idempotency_key=idempotency_key,
        client_key_id=client_key_id,
        actor_id=actor_id,
    )
    try:
        _, inserted = yield Batch(statements)
    except ConstraintViolated as exc:
        if exc.constraint != OVERDRAFT_CONSTRAINT:
            raise
        (rows,) = yield Batch.of(Sql(WALLET_AVAILABLE, {"wallet_id": wallet_id}))
        available = int(rows[0][0]) if rows else 0
        raise InsufficientFunds(needed_nanos=-amount_nanos, available_nanos=available) from None
    if not inserted:
        raise LedgerError(f"wallet {wallet_id} does not exist")
    entry_id, balance_after = inserted[0]
    return Posted(entry_id=int(entry_id), balance_after_nanos=int(balance_after))
