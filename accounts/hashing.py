"""Secrets shown once and stored as a keyed hash.

A secret looks like ``tg-<43 url-safe chars>`` (32 random bytes). We store its first
``PREFIX_LENGTH`` characters (indexed, for lookup and display), its last 4 (for display)
and HMAC-SHA256(TOKEN_HASH_KEY, secret). Random secrets have full entropy, so a fast keyed
hash is the right tool; password hashers would only make every request slower.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.conf import settings

CLIENT_KEY_PREFIX = "tg-"
RESELLER_TOKEN_PREFIX = "tgr-"  # noqa: S105 - a public prefix on every token, not a secret
SECRET_BYTES = 32
PREFIX_LENGTH = 12


@dataclass(frozen=True, slots=True)
class NewSecret:
    secret: str
    prefix: str
    last4: str
    digest: str


def secret_digest(secret: str) -> str:
    key = settings.TOKEN_HASH_KEY.encode()
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def secret_prefix(secret: str) -> str:
    return secret[:PREFIX_LENGTH]


def secret_matches(secret: str, digest: str) -> bool:
    return hmac.compare_digest(secret_digest(secret), digest)


def secret_generate(kind_prefix: str) -> NewSecret:
    secret = kind_prefix + secrets.token_urlsafe(SECRET_BYTES)
    return NewSecret(
        secret=secret,
        prefix=secret_prefix(secret),
        last4=secret[-4:],
        digest=secret_digest(secret),
    )


def backup_code_digest(code: str) -> str:
    """The keyed hash a backup code is stored as: HMAC-SHA256(TOKEN_HASH_KEY, purpose +
    code), the code as ``accounts.services.code_normalize`` writes it. The purpose keeps a
    backup code's hash from ever equalling an API secret's."""
    return secret_digest("backup-code:" + code)
