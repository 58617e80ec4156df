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
