from __future__ import annotations


class AccountError(Exception):
    """Base of account-domain errors."""


class EmailTaken(AccountError):
    pass
