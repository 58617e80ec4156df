"""The two calls Tollgate makes to Stripe's API: open a Checkout Session, read one back.

Both go through the official SDK (``stripe``), with a client made from the settings:
``STRIPE_SECRET_KEY``, ``STRIPE_API_BASE`` (Stripe's API, or a local fake of it in tests) and
``STRIPE_TIMEOUT_SECONDS``. The SDK retries a call that failed on the network or with a 409
or 5xx twice, with the same idempotency key, so a retry never opens a second session.

What Stripe answers is read into a :class:`CheckoutSession` holding only what the top-up
flow checks; Stripe's errors come out as ``stripe.StripeError`` for the caller to turn into
its own. Never call these inside a transaction that holds row locks: a slow Stripe would
hold the locks for as long (house rule: calls out after the commit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import stripe
from django.conf import settings

from billing.exceptions import TopUpsNotConfigured

# Retries of a call that failed on the network or with 409/5xx, by the SDK, with backoff.
MAX_NETWORK_RETRIES = 2


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    """A Checkout Session as Stripe reports it (amounts in cents)."""

    id: str
    url: str
    amount_total: int | None
    currency: str
    payment_status: str
    status: str
    client_reference_id: str | None
    payment_intent: str | None
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_stripe(cls, data: Mapping[str, Any]) -> CheckoutSession:
        """From Stripe's JSON (a webhook event's ``data.object``, or an API answer)."""
        intent = data.get("payment_intent")
        if isinstance(intent, Mapping):  # expanded
            intent = intent.get("id")
        return cls(
            id=str(data["id"]),
            url=str(data.get("url") or ""),
            amount_total=data.get("amount_total"),
            currency=str(data.get("currency") or ""),
            payment_status=str(data.get("payment_status") or ""),
            status=str(data.get("status") or ""),
            client_reference_id=data.get("client_reference_id"),
            payment_intent=intent,
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        )

    @property
    def is_paid(self) -> bool:
        """Stripe's word that the money was taken: ``payment_status`` ``paid`` (a delayed
        method such as a bank debit completes the session ``unpaid`` and pays later)."""
        return self.payment_status == "paid"


def is_configured() -> bool:
    """Whether card top-ups can be made: a secret key to call Stripe with."""
    return bool(settings.STRIPE_SECRET_KEY)


# A secret or restricted key's prefix says which of the account's two modes it acts in.
LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")
TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")


def is_live_key() -> bool | None:
    """Whether ``STRIPE_SECRET_KEY`` is a live-mode key (``sk_live_``/``rk_live_``), a
    test-mode one (``sk_test_``/``rk_test_``: False), or None when there is no key or its
    prefix says neither."""
    key = settings.STRIPE_SECRET_KEY or ""
    if key.startswith(LIVE_KEY_PREFIXES):
        return True
    if key.startswith(TEST_KEY_PREFIXES):
        return False
    return None


def stripe_client() -> stripe.StripeClient:
    """A client for this server's Stripe account; TopUpsNotConfigured without a key."""
    if not is_configured():
        raise TopUpsNotConfigured()
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        max_network_retries=MAX_NETWORK_RETRIES,
        http_client=stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS),
    )


def checkout_session_create(*, params: dict[str, Any], idempotency_key: str) -> CheckoutSession:
    """``POST /v1/checkout/sessions``. Stripe answers a repeat of ``idempotency_key`` (within
    24 hours) with the session the first call opened."""
    session = stripe_client().v1.checkout.sessions.create(
        params,  # type: ignore[arg-type] # a plain dict of SessionCreateParams' shape
        options={"idempotency_key": idempotency_key},
    )
    return CheckoutSession.from_stripe(session.to_dict())


def checkout_session_retrieve(*, session_id: str) -> CheckoutSession:
    """``GET /v1/checkout/sessions/{id}``: the session as it is now."""
    session = stripe_client().v1.checkout.sessions.retrieve(session_id)
    return CheckoutSession.from_stripe(session.to_dict())
