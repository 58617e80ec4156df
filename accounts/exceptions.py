from __future__ import annotations


class AccountError(Exception):
    """Base of account-domain errors."""


class EmailTaken(AccountError):
    pass


class TenantInvalid(AccountError):
    """A tenant setting that breaks its rule; ``field`` names the offending input."""

    code = "invalid"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)
