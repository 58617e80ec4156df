from __future__ import annotations

from datetime import datetime


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


class CodeRefused(AccountError):
    """A two-factor code (authenticator or backup code) that does not match."""


class CodeThrottled(AccountError):
    """Codes are refused for a while after wrong ones (django-otp's throttle); ``until`` is
    when the next one will be checked."""

    def __init__(self, until: datetime | None) -> None:
        self.until = until
        super().__init__("too many wrong codes; wait before the next")


class PasswordRefused(AccountError):
    """The account's password, asked again to confirm a change, was wrong."""
