"""Settlement: charge what the upstream reported, release the rest of the hold.

Design overview
---------------
The charge is ``billing.money.request_charge`` of the reported usage at the price of the
route that actually served the request, run through ``billing.metering.settle_op``, which
claims the reservation (so a settlement, a release and the expiry sweep can never both
apply), clamps the charge to the hold, and posts wallet usage to the ledger in the same
transaction. It completes before the response's last byte is sent, so a crash after the
client saw the answer cannot lose the charge. Nothing reported (upstream failed before any
output) → release, charge nothing.
"""

from __future__ import annotations

from datetime import datetime

from billing.metering import Hold, Settlement, hold_extend_op, settle_op
from billing.money import Charge, Usage, request_charge
from proxy.admission import KeyInfo, RouteInfo
from proxy.db import Database


async def settle(
    db: Database, *, key: KeyInfo, route: RouteInfo, hold: Hold, usage: Usage, now: datetime
) -> tuple[Charge, Settlement | None]:
    actual = request_charge(usage, route.prices, key.ratio)
    settlement = await db.run(
        settle_op(
            hold=hold,
            actual=actual,
            now=now,
            status="settled",
            reason=f"API usage ({route.model})",
            price_id=route.price_id,
        )
    )
    return actual, settlement


async def release(db: Database, *, hold: Hold, now: datetime) -> Settlement | None:
    return await db.run(
        settle_op(
            hold=hold,
            actual=Charge(0, 0),
            now=now,
            status="released",
        )
    )


async def extend(db: Database, *, hold: Hold, expires_at: datetime) -> bool:
    return await db.run(hold_extend_op(hold=hold, expires_at=expires_at))
