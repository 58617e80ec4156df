"""Encryption at rest for secrets the database must give back (Fernet: AES-128-CBC + HMAC),
each kind with its own key derived (HKDF-SHA256) from FIELD_ENCRYPTION_KEY (defaults to
SECRET_KEY): upstream API keys and alert webhook secrets (``billing.crypto``), and the
authenticator (TOTP) keys of two-factor sign-in. A key of one kind cannot decrypt another's.

Rotation, as Django's SECRET_KEY_FALLBACKS: encryption always uses FIELD_ENCRYPTION_KEY;
decryption tries it, then each of FIELD_ENCRYPTION_KEY_FALLBACKS (a ``MultiFernet`` per
kind), so what a former key encrypted still reads. ``manage.py reencrypt_secrets``
(``accounts.reencryption``) then moves every column of ``ENCRYPTED_COLUMNS`` to the current
key, after which the fallbacks can go.

Secrets we only need to recognise (API tokens, client keys, backup codes) are not
encrypted but hashed (``accounts.hashing``).
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

# HKDF "info" of each kind of secret. Never change one: what it encrypted would not decrypt.
UPSTREAM_KEYS = b"tollgate-upstream-keys"
TOTP_KEYS = b"tollgate-totp-keys"


@dataclass(frozen=True, slots=True)
class EncryptedColumn:
    """A database column holding secrets encrypted here (blank: no secret)."""

    kind: str  # the name reports use
    label: str
    model: str  # "app_label.ModelName": accounts imports no other app
    field: str
    purpose: bytes


# Every column this module's keys encrypt: what ``reencrypt_secrets`` moves to the current
# key. A new encrypted column must be listed here (tests/accounts/test_key_rotation.py
# checks every model), or removing a fallback key would make it unreadable.
ENCRYPTED_COLUMNS = (
    EncryptedColumn(
        kind="upstream_api_keys",
        label="upstream API keys",
        model="billing.Upstream",
        field="api_key_encrypted",
        purpose=UPSTREAM_KEYS,
    ),
    EncryptedColumn(
        kind="alert_webhook_secrets",
        label="alert webhook secrets",
        model="alerts.AlertSettings",
        field="webhook_secret_encrypted",
        purpose=UPSTREAM_KEYS,
    ),
    EncryptedColumn(
        kind="authenticator_keys",
        label="authenticator keys",
        model="accounts.AuthenticatorDevice",
        field="encrypted_key",
        purpose=TOTP_KEYS,
    ),
)


@functools.cache
def _fernet(secret: str, purpose: bytes) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


@functools.cache
def _keyring(secrets: tuple[str, ...], purpose: bytes) -> MultiFernet:
    # The current key first: MultiFernet encrypts (and rotates) with its first key only.
    return MultiFernet(_fernet(secret, purpose) for secret in dict.fromkeys(secrets))


def _current(purpose: bytes) -> Fernet:
    return _fernet(settings.FIELD_ENCRYPTION_KEY, purpose)


def _all_keys(purpose: bytes) -> MultiFernet:
    return _keyring(
        (settings.FIELD_ENCRYPTION_KEY, *settings.FIELD_ENCRYPTION_KEY_FALLBACKS), purpose
    )


def encrypt(plaintext: str, *, purpose: bytes = UPSTREAM_KEYS) -> str:
    """``plaintext`` encrypted for ``purpose`` with the current FIELD_ENCRYPTION_KEY."""
    return _current(purpose).encrypt(plaintext.encode()).decode()


def decrypt(token: str, *, purpose: bytes = UPSTREAM_KEYS) -> str:
    """Raises cryptography.fernet.InvalidToken when ``token`` was not encrypted for
    ``purpose`` with FIELD_ENCRYPTION_KEY nor with any of FIELD_ENCRYPTION_KEY_FALLBACKS."""
    return _all_keys(purpose).decrypt(token.encode()).decode()


def reencrypt(token: str, *, purpose: bytes) -> str | None:
    """``token`` encrypted again with the current key (same secret, same timestamp), or
    None when it already is. Raises InvalidToken when no key reads it."""
    try:
        _current(purpose).decrypt(token.encode())
    except InvalidToken:
        return _all_keys(purpose).rotate(token.encode()).decode()
    return None
