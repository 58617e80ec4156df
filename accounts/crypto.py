"""Encryption at rest for secrets the database must give back (Fernet: AES-128-CBC + HMAC),
each kind with its own key derived (HKDF-SHA256) from FIELD_ENCRYPTION_KEY (defaults to
SECRET_KEY): upstream API keys and alert webhook secrets (``billing.crypto``), and the
authenticator (TOTP) keys of two-factor sign-in. A key of one kind cannot decrypt another's.

Secrets we only need to recognise (API tokens, client keys, backup codes) are not
encrypted but hashed (``accounts.hashing``).
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

# HKDF "info" of each kind of secret. Never change one: what it encrypted would not decrypt.
UPSTREAM_KEYS = b"tollgate-upstream-keys"
TOTP_KEYS = b"tollgate-totp-keys"


@functools.cache
def _fernet(secret: str, purpose: bytes) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(plaintext: str, *, purpose: bytes = UPSTREAM_KEYS) -> str:
    return _fernet(settings.FIELD_ENCRYPTION_KEY, purpose).encrypt(plaintext.encode()).decode()


def decrypt(token: str, *, purpose: bytes = UPSTREAM_KEYS) -> str:
    """Raises cryptography.fernet.InvalidToken when ``token`` was not encrypted for
    ``purpose`` with this FIELD_ENCRYPTION_KEY."""
    return _fernet(settings.FIELD_ENCRYPTION_KEY, purpose).decrypt(token.encode()).decode()
