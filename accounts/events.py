"""Telling proxy workers that cached configuration changed (keys, tenants, routes, prices).

Each proxy worker caches keys (with their tenant's ``is_active``) and routes; a change made
through a service is announced after its transaction commits: to listeners in this process,
and on a Redis channel that every worker subscribes to when ``REDIS_URL`` is set. Caches
also expire on their own (a few seconds), and every money operation re-checks the key's
status and its tenant's in the database, so a lost message can never let a revoked key, or
a suspended tenant's, spend.

Topics: ``key:<prefix>`` (one key), ``tenant:<id>`` (every key of a tenant: one message
however many keys it has), ``routes`` (routes, upstreams and prices).

It lives in ``accounts``, the bottom of the app graph, because the services of every app
announce through it (tenants here, keys in ``keys``, routes and prices in ``billing``)
and the proxy listens: infrastructure that every app may import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import transaction

CHANNEL = "tg:config"
logger = logging.getLogger(__name__)
_listeners: list[Callable[[str], None]] = []


def config_listen(listener: Callable[[str], None]) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def config_unlisten(listener: Callable[[str], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def config_changed(topic: str) -> None:
    """Announce ``topic`` (see above) once the current transaction commits."""
    transaction.on_commit(lambda: _publish(topic))


def _publish(topic: str) -> None:
    for listener in list(_listeners):
        listener(topic)
    if settings.REDIS_URL:
        import redis

        try:
            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
            client.publish(CHANNEL, topic)
            client.close()
        except redis.RedisError:
            # Caches expire on their own; the database still enforces status on spend.
            logger.warning("could not publish config change %s", topic)
