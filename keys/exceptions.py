from __future__ import annotations


class ClientKeyError(Exception):
    code = "key_error"


class ClientKeyInvalid(ClientKeyError):
    """Input that breaks a key rule; ``field`` names the offending input."""

    code = "invalid"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class ClientKeyStateConflict(ClientKeyError):
    """The operation does not apply to the key in its current state (deleted, wallet-funded…)."""

    code = "conflict"
