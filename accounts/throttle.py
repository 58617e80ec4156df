"""Courtesy limits on what the account forms trigger: emails to one address, sign-ups from
one client address.

A count per (scope, who) in the cache, which is Redis shared by every worker when
``REDIS_URL`` is set (an in-process cache otherwise, so per process in development): at
most ``limit`` events in a fixed window that starts with the first. ``cache.add`` then
``cache.incr`` are each atomic in Redis, so two workers never both take the last place.
Not a hard cap on anything that costs money (those live in the proxy's rate limiter): a
cache flush only forgets the counts.
"""

from __future__ import annotations

import hashlib

from django.core.cache import cache

HOUR_SECONDS = 3600


def throttle_allow(*, scope: str, who: str, limit: int, window_seconds: int = HOUR_SECONDS) -> bool:
    """Count one event of ``scope`` for ``who`` (an email address, a client address) and
    say whether it is within ``limit`` per window; the refused ones count too."""
    # Hashed: the cache key stays short and plain whatever the address holds.
    digest = hashlib.sha256(who.strip().lower().encode()).hexdigest()[:32]
    key = f"tg:throttle:{scope}:{digest}"
    cache.add(key, 0, timeout=window_seconds)
    try:
        count = cache.incr(key)
    except ValueError:
        # The window ended between add and incr: this event starts the next one.
        cache.add(key, 1, timeout=window_seconds)
        count = 1
    return count <= limit
