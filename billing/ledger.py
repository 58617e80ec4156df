"""The ledger rule: a wallet balance changes only together with the entry that explains it.

Design overview
---------------
:func:`ledger_post_op` is the only code that changes ``Wallet.balance_nanos``. In one
transaction it applies a conditional ``UPDATE`` to the wallet (a debit succeeds only if the
wallet still covers it after its other reservations: no read-modify-write, so concurrent
debits can never overdraw it) and inserts the ``LedgerEntry`` with the balance after it.
Entries are never updated or deleted; ``check_ledger`` recomputes every balance from them.

``released_nanos`` lets settlement release a reservation and charge against it in the same
statement: the hold was already counted in ``reserved_nanos``, so the debit it covers needs
no new headroom.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from billing.exceptions import InsufficientFunds, LedgerError
from billing.sqlops import Op, Sql

WALLET_POST = """
UPDATE billing_wallet
   SET balance_nanos = balance_nanos + %(amount)s,
       reserved_nanos = reserved_nanos - %(released)s,
       updated_at = %(now)s
 WHERE id = %(wallet_id)s
   AND balance_nanos + %(amount)s >= reserved_nanos - %(released)s
RETURNING balance_nanos
"""

WALLET_AVAILABLE = "SELECT balance_nanos - reserved_nanos FROM billing_wallet WHERE id = %(wallet_id)s"

ENTRY_INSERT = """
INSERT INTO billing_ledgerentry
       (wallet_id, kind, amount_nanos, balance_after_nanos, reason, reference,
        idempotency_key, client_key_id, actor_id, created_at)
VALUES (%(wallet_id)s, %(kind)s, %(amount)s, %(balance_after)s, %(reason)s, %(reference)s,
        %(idempotency_key)s, %(client_key_id)s, %(actor_id)s, %(now)s)
RETURNING id
"""


@dataclass(frozen=True, slots=True)
class Posted:
    entry_id: int
    balance_after_nanos: int


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
    released_nanos: int = 0,
) -> Op[Posted]:
    """Change a wallet's balance by ``amount_nanos`` (signed) and record why.

    Raises InsufficientFunds if a debit would leave less than the wallet's other
    reservations. Callers run it inside their own transaction (it is an ``Op``).
    """
    if amount_nanos == 0:
        raise LedgerError("a ledger entry must move money")
    if not reason.strip():
        raise LedgerError("a ledger entry needs a reason")
    rows = yield Sql(
        WALLET_POST,
        {"amount": amount_nanos, "released": released_nanos, "now": now, "wallet_id": wallet_id},
    )
    if not rows:
        available = yield Sql(WALLET_AVAILABLE, {"wallet_id": wallet_id})
        if not available:
            raise LedgerError(f"wallet {wallet_id} does not exist")
        raise InsufficientFunds(needed_nanos=-amount_nanos, available_nanos=int(available[0][0]))
    balance_after = int(rows[0][0])
    inserted = yield Sql(
        ENTRY_INSERT,
        {
            "wallet_id": wallet_id,
            "kind": kind,
            "amount": amount_nanos,
            "balance_after": balance_after,
            "reason": reason[:500],
            "reference": reference[:200],
            "idempotency_key": idempotency_key,
            "client_key_id": client_key_id,
            "actor_id": actor_id,
            "now": now,
        },
    )
    return Posted(entry_id=int(inserted[0][0]), balance_after_nanos=balance_after)
