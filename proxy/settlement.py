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

The upstream is told to produce no more than the hold covers (``proxy.endpoints``), but it
may not obey: when the reported usage costs more than the hold, the client is charged the
hold and the rest is the operator's loss. Such a settlement is logged here and flagged on
its trace (``Trace.is_over_hold``, ``overrun_cost_nanos``), from what the settlement
already returns: no extra round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from datetime import datetime
from typing import Any

from billing.metering import (
    Hold,
    Settlement,
    deleted_key_refund_op,
    hold_extend_op,
    settle_op,
)
from billing.models import Reservation
from billing.money import Charge, Usage, format_usd, request_charge
from proxy.admission import KeyInfo, RouteInfo
from proxy.db import Database

logger = logging.getLogger(__name__)


async def settle(
    db: Database, *, key: KeyInfo, route: RouteInfo, hold: Hold, usage: Usage, now: datetime
) -> tuple[Charge, Settlement | None]:
    actual = request_charge(usage, route.prices, key.ratio)
    settlement = await db.run(
        settle_op(
            hold=hold,
            actual=actual,
            now=now,
            status=Reservation.Status.SETTLED,
            reason=f"API usage ({route.model})",
            price_id=route.price_id,
        )
    )
    _refund_later(db, hold, settlement, now)
    if settlement is not None and settlement.is_over_hold:
        logger.warning(
            "request %s: upstream %s (model %s) reported usage over the hold (%s): "
            "charged %s USD, %s USD of cost and %s USD of client price uncharged",
            hold.request_id,
            route.target.name,
            route.target_model,
            usage,
            format_usd(settlement.charged_cost_nanos),
            format_usd(settlement.overrun_cost_nanos),
            format_usd(settlement.overrun_client_nanos),
        )
    return actual, settlement


async def release(db: Database, *, hold: Hold, now: datetime) -> Settlement | None:
    settlement = await db.run(
        settle_op(
            hold=hold,
            actual=Charge(0, 0),
            now=now,
            status=Reservation.Status.RELEASED,
        )
    )
    _refund_later(db, hold, settlement, now)
    return settlement


# Strong references to money work running in the background until it finishes.
_BACKGROUND: set[asyncio.Task[Any]] = set()


def in_background(awaitable: Coroutine[Any, Any, Any], *, failure: str) -> None:
    """Run money work nothing waits on, off the request's path; log ``failure`` if it fails
    (each such piece has a sweep that finishes it)."""
    task = asyncio.get_running_loop().create_task(awaitable)
    _BACKGROUND.add(task)

    def done(task: asyncio.Task[Any]) -> None:
        _BACKGROUND.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("%s: %s", failure, task.exception())

    task.add_done_callback(done)


async def shielded[T](awaitable: Awaitable[T]) -> T | None:
    """Finish money work even if the request's task is being cancelled. A failure is logged
    and gives ``None``: the request goes on, and what failed is left to expire or to the
    sweep."""
    try:
        return await asyncio.shield(awaitable)
    except Exception:
        logger.exception("settlement step failed")
        return None


def _refund_later(db: Database, hold: Hold, settlement: Settlement | None, now: datetime) -> None:
    """The key was deleted while this request was in flight: pay back what it owes, off
    the response's path (a deleted key's refund is rare, and nothing waits on it). If this
    fails, the reservation sweep pays it (``keys.services.deleted_keys_refund``)."""
    if settlement is None or not settlement.refund_owed_nanos:
        return
    in_background(
        db.run(
            deleted_key_refund_op(
                key_id=hold.key_id,
                wallet_id=hold.key_wallet_id,
                refund=settlement.refund_owed_nanos,
                now=now,
            )
        ),
        failure="a deleted key's refund is left to the sweep",
    )


async def extend(db: Database, *, hold: Hold, expires_at: datetime) -> bool:
    return await db.run(hold_extend_op(hold=hold, expires_at=expires_at))
