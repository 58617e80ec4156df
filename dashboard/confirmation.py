"""Writes confirmed after a preview: nothing that moves money is saved before the reseller
saw what it does, and a confirmation is used at most once.

A preview (a full page when JavaScript is off, an htmx fragment as the user types) carries
a hidden ``preview_token``: a fresh nonce and an HMAC of the nonce, the signed-in user, the
action and the exact terms it showed. The write goes ahead only when the posted token
matches the posted terms (so changing a field after the preview shows a new preview
instead of saving) and its nonce was not used before: reloading the confirmed POST, going
back to it, or a double click never writes twice. The nonce is claimed with ``cache.add``
(atomic in Redis and in the local-memory cache) for a day.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare, salted_hmac

TOKEN_FIELD = "preview_token"  # noqa: S105 - a form field name, not a secret
SALT = "dashboard.confirmation"
NONCE_TTL_SECONDS = 24 * 3600


def _digest(request: HttpRequest, action: str, terms: Mapping[str, Any], nonce: str) -> str:
    # default=str: datetimes and Decimals as their exact text.
    canonical = json.dumps(
        {"action": action, "user": request.user.pk, "nonce": nonce, "terms": terms},
        sort_keys=True,
        default=str,
    )
    return salted_hmac(SALT, canonical, algorithm="sha256").hexdigest()


def preview_token(request: HttpRequest, *, action: str, terms: Mapping[str, Any]) -> str:
    """The token a preview of ``terms`` carries, to be posted back with them."""
    nonce = secrets.token_urlsafe(16)
    return f"{nonce}.{_digest(request, action, terms, nonce)}"


def preview_confirmed(request: HttpRequest, *, action: str, terms: Mapping[str, Any]) -> bool:
    """True once for a POST whose token is a preview's of exactly these terms."""
    nonce, _, digest = request.POST.get(TOKEN_FIELD, "").partition(".")
    if not nonce or not constant_time_compare(digest, _digest(request, action, terms, nonce)):
        return False
    return bool(cache.add(f"{SALT}:{nonce}", 1, NONCE_TTL_SECONDS))
