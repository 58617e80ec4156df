from __future__ import annotations

from billing.money import format_usd


class BillingError(Exception):
    """Base of billing-domain errors. ``code`` is stable for API clients."""

    code = "billing_error"


class LedgerError(BillingError):
    code = "ledger_error"


class InsufficientFunds(BillingError):
    """The wallet cannot cover a debit after its other reservations."""

    code = "insufficient_funds"

    def __init__(self, *, needed_nanos: int, available_nanos: int) -> None:
        self.needed_nanos = needed_nanos
        self.available_nanos = available_nanos
        super().__init__(
            f"The wallet has {format_usd(max(available_nanos, 0))} available; "
            f"this needs {format_usd(needed_nanos)}."
        )


class ReservationRefused(BillingError):
    """A request's worst case does not fit the key's budget, cap, or the wallet.

    Carries what is still available (client prices for the key, cost for the wallet) so
    the proxy can say how many output tokens would fit.
    """

    code = "insufficient_budget"

    def __init__(
        self,
        message: str,
        *,
        client_available_nanos: int | None = None,
        cost_available_nanos: int | None = None,
    ) -> None:
        self.client_available_nanos = client_available_nanos
        self.cost_available_nanos = cost_available_nanos
        super().__init__(message)


class KeyInactive(BillingError):
    code = "key_inactive"


class AccountSuspended(KeyInactive):
    """The key's own status is fine, but its reseller (tenant) is suspended."""

    code = "account_suspended"

    def __init__(self) -> None:
        super().__init__("The account this API key belongs to is suspended.")


class UpstreamInvalid(BillingError):
    code = "invalid_upstream"


class PriceInvalid(BillingError):
    code = "invalid_price"


# ------------------------------------------------------------------- card top-ups (Stripe)


class TopUpsNotConfigured(BillingError):
    """No ``STRIPE_SECRET_KEY``: card top-ups are off (the API answers 503)."""

    code = "top_ups_not_configured"

    def __init__(self) -> None:
        super().__init__(
            "Card top-ups are not configured on this server; ask the operator to credit "
            "your wallet."
        )


class TopUpInvalid(BillingError):
    """An amount a card top-up cannot take (below the minimum, above the maximum, or not
    whole cents). ``field`` names the input it belongs to."""

    code = "invalid_amount"
    field = "amount"


class TopUpCheckoutFailed(BillingError):
    """Stripe refused to open the Checkout Session, or did not answer (the API answers 502);
    the top-up's row is left ``failed`` with Stripe's error."""

    code = "stripe_error"


class StripeEventRejected(BillingError):
    """A webhook event names one of Tollgate's top-ups but disagrees with it (another
    session, amount, currency or tenant): nothing is credited, and no retry can fix it."""

    code = "stripe_event_rejected"


class StripeWebhookRefused(BillingError):
    """A webhook request that is not a genuine, recent Stripe event (no or a bad signature,
    a stale timestamp, a body that is not an event), or no webhook secret configured."""

    code = "webhook_refused"
