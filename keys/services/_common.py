"""What more than one write shares: the input rules that both creating and updating a key (or
creating and topping one up) apply, the refusals' words, and a quote's effect on the wallet."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.models import Tenant
from billing.exceptions import InsufficientFunds
from billing.money import MAX_AMOUNT_NANOS
from billing.selectors import known_models, wallet_for_tenant
from keys.exceptions import ClientKeyInvalid

MAX_LIMIT = 1_000_000


KEY_DELETED = "This key was deleted."
KEY_ALREADY_DELETED = "This key was already deleted."


def _validate_amount(field: str, value: int | None, *, required: bool) -> int | None:
    if value is None:
        if required:
            raise ClientKeyInvalid(field, "This field is required.")
        return None
    if value <= 0:
        raise ClientKeyInvalid(field, "Must be greater than zero.")
    if value > MAX_AMOUNT_NANOS:
        raise ClientKeyInvalid(field, "Must be at most 1,000,000.")
    return value


def _validate_models(models: list[str]) -> list[str]:
    cleaned = sorted({m.strip() for m in models if m and m.strip()})
    unknown = sorted(set(cleaned) - known_models())
    if unknown:
        raise ClientKeyInvalid("models", f"Unknown models: {', '.join(unknown)}.")
    return cleaned


def _validate_limits(*, rpm: int, tpm: int | None, max_concurrency: int) -> None:
    for field, value in (("rpm", rpm), ("max_concurrency", max_concurrency)):
        if not 1 <= value <= MAX_LIMIT:
            raise ClientKeyInvalid(field, f"Must be between 1 and {MAX_LIMIT:,}.")
    if tpm is not None and not 1 <= tpm <= 10**9:
        raise ClientKeyInvalid("tpm", "Must be between 1 and 1,000,000,000, or null for no limit.")


# ------------------------------------------------------------------------------- quotes
# What a write would do, answered without writing: the dashboard shows them before the
# reseller confirms. Each runs the write's own rules and arithmetic (the same functions),
# so a quote raises what the write would raise for its input, and a quote's figures are
# what the write then does if nothing changes between them. A refusal that depends on the
# wallet's balance (which may change before the write) is carried as ``refusal`` instead.


@dataclass(frozen=True)
class WalletEffect:
    """What a write does to the wallet's available balance (balance less what requests in
    flight hold), and what it would refuse for lack of funds."""

    available_nanos: int
    change_nanos: int

    @property
    def available_after_nanos(self) -> int:
        return self.available_nanos + self.change_nanos

    @property
    def refusal(self) -> InsufficientFunds | None:
        """The InsufficientFunds the write would raise, exactly as the ledger raises it."""
        if self.available_after_nanos >= 0:
            return None
        return InsufficientFunds(
            needed_nanos=-self.change_nanos, available_nanos=self.available_nanos
        )


def _wallet_effect(*, tenant: Tenant, change_nanos: int) -> WalletEffect:
    wallet = wallet_for_tenant(tenant=tenant)
    return WalletEffect(available_nanos=wallet.available_nanos, change_nanos=change_nanos)
