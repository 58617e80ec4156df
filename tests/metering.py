"""Reserve, settle and release in tests as the proxy does: the operations of
``billing.metering``, run on Django's connection (``billing.sqlops.run_sync``, the sync
driver) instead of the proxy's async one.

* ``reserve`` holds a worst case priced as ``proxy.admission.reserve`` prices it on a
  route (the dearest input-side and output rates a prompt of that size may reach).
* ``settle`` charges the reported usage at the price of the route that *served*, which
  may not be the one the hold was priced at, and records that price on the reservation,
  as ``proxy.settlement.settle`` does; ``release`` charges nothing.
* A settlement that leaves a deleted prepaid key's refund owed pays it in a transaction
  of its own, as the proxy does once the response is sent.

The proxy itself is driven through these paths in ``tests/proxy`` (the real server) and
``tests/proxy/test_settlement.py`` (admission and settlement on the development driver).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from billing.metering import Hold, Settlement, deleted_key_refund_op, reserve_op, settle_op
from billing.models import ModelPrice, Reservation
from billing.money import Charge, Usage, request_charge, worst_case_prices
from billing.sqlops import run_sync
from keys.models import ClientKey


def worst_case_charge(*, key: ClientKey, price: ModelPrice, worst_case: Usage) -> Charge:
    """What a hold of ``worst_case`` costs on a route at ``price`` (admission's pricing)."""
    prompt = worst_case.input_tokens + worst_case.cached_input_tokens
    prompt += worst_case.cache_write_tokens
    return request_charge(worst_case, worst_case_prices(price.as_prices(), prompt), key.ratio)


def reserve(
    *,
    key: ClientKey,
    price: ModelPrice,
    request_id: str,
    worst_case: Usage,
    now: datetime | None = None,
) -> Hold:
    """Hold ``worst_case`` at ``price`` (raises ReservationRefused, KeyInactive or
    AccountSuspended, holding nothing, as ``reserve_op`` does)."""
    now = now or timezone.now()
    return run_sync(
        reserve_op(
            request_id=request_id,
            key_id=key.pk,
            funding=key.funding,
            wallet_id=key.wallet_id,
            price_id=price.pk,
            worst_case=worst_case_charge(key=key, price=price, worst_case=worst_case),
            now=now,
            expires_at=now + timedelta(seconds=settings.RESERVATION_TTL_SECONDS),
        )
    )


def settle(
    *,
    key: ClientKey,
    hold: Hold,
    price: ModelPrice,
    usage: Usage,
    now: datetime | None = None,
) -> Settlement | None:
    """Charge ``usage`` at ``price``, the served route's price version (None if the hold
    was already settled, released or expired)."""
    now = now or timezone.now()
    settlement = run_sync(
        settle_op(
            hold=hold,
            actual=request_charge(usage, price.as_prices(), key.ratio),
            now=now,
            status=Reservation.Status.SETTLED,
            reason=f"API usage ({price.route.model})",
            price_id=price.pk,
        )
    )
    _refund_owed(hold, settlement, now)
    return settlement


def release(*, hold: Hold, now: datetime | None = None) -> Settlement | None:
    """Release the hold, charging nothing (the upstream failed before any output)."""
    now = now or timezone.now()
    settlement = run_sync(
        settle_op(hold=hold, actual=Charge(0, 0), now=now, status=Reservation.Status.RELEASED)
    )
    _refund_owed(hold, settlement, now)
    return settlement


def charge(
    *,
    key: ClientKey,
    price: ModelPrice,
    request_id: str,
    usage: Usage,
    now: datetime | None = None,
) -> Settlement:
    """One request served whole: held at ``usage`` and settled at ``usage``, one price."""
    held = reserve(key=key, price=price, request_id=request_id, worst_case=usage, now=now)
    settlement = settle(key=key, hold=held, price=price, usage=usage, now=now)
    assert settlement is not None  # a fresh hold always settles
    return settlement


def _refund_owed(hold: Hold, settlement: Settlement | None, now: datetime) -> None:
    if settlement is not None and settlement.refund_owed_nanos:
        run_sync(
            deleted_key_refund_op(
                key_id=hold.key_id,
                wallet_id=hold.key_wallet_id,
                refund=settlement.refund_owed_nanos,
                now=now,
            )
        )
