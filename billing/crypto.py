"""Encryption at rest for upstream API keys (and alert webhook secrets) stored in the
database: ``accounts.crypto`` with the upstream keys' own derived key."""

from __future__ import annotations

from accounts.crypto import UPSTREAM_KEYS
from accounts.crypto import decrypt as _decrypt
from accounts.crypto import encrypt as _encrypt


def encrypt(plaintext: str) -> str:
    return _encrypt(plaintext, purpose=UPSTREAM_KEYS)


def decrypt(token: str) -> str:
    return _decrypt(token, purpose=UPSTREAM_KEYS)
