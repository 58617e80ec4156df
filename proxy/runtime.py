"""Per-worker state of the proxy: connections and caches, created in the serving loop.

Nothing here is needed for correctness across workers: limits live in Redis (or in this
process without it), money in the database. A worker holds one aiohttp session (pooled
keep-alive connections to upstreams), one database pool, one rate limiter client, the key
and route caches, and the trace buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
from django.conf import settings
from django.db import connections

from accounts.events import CHANNEL, config_listen, config_unlisten
from proxy.admission import Catalog, LimitRefusals
from proxy.db import Database, database_from_settings
from proxy.ratelimit import RateLimiter, rate_limiter_from_settings
from proxy.traces import TraceWriter
from proxy.upstreams.anthropic import AnthropicAdapter
from proxy.upstreams.base import DEMO_KIND, UpstreamAdapter
from proxy.upstreams.demo import DemoAdapter
from proxy.upstreams.openai import OpenAIAdapter

logger = logging.getLogger(__name__)

ADAPTERS: dict[str, UpstreamAdapter] = {
    "openai": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    DEMO_KIND: DemoAdapter(),
}


class Runtime:
    def __init__(self) -> None:
        self.db: Database = database_from_settings()
        self.catalog = Catalog(self.db)
        self.limiter: RateLimiter = rate_limiter_from_settings()
        self.refusals = LimitRefusals()
        self.traces = TraceWriter(self.db, settings.PROXY_TRACE_FLUSH_MS)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
            skip_auto_headers=("User-Agent",),
            auto_decompress=True,
        )
        config_listen(self.catalog.on_config_changed)
        self._subscriber: asyncio.Task[None] | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        if settings.REDIS_URL:
            self._subscriber = asyncio.get_running_loop().create_task(self._subscribe())
        if settings.CELERY_TASK_ALWAYS_EAGER:
            # No broker, so no Celery beat (make run): the worker runs the periodic tasks.
            self._housekeeper = asyncio.get_running_loop().create_task(self._housekeep())

    async def _subscribe(self) -> None:
        """Drop cached keys and routes when any process announces a change."""
        import redis.asyncio as redis

        while True:
            try:
                client = redis.Redis.from_url(settings.REDIS_URL)
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.catalog.on_config_changed(message["data"].decode())
                        elif message.get("type") == "subscribe":
                            # Listening (again): whatever was announced while nobody
                            # listened is unknown, so nothing cached before now is trusted.
                            self.catalog.forget_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("config subscription lost; retrying", exc_info=True)
                self.catalog.forget_all()
                await asyncio.sleep(1)

    async def _housekeep(self) -> None:
        """Every CELERY_BEAT_SCHEDULE entry, run in this process on its schedule."""
        from django.utils.module_loading import import_string

        schedule = [
            (str(entry["task"]), float(str(entry["schedule"])))
            for entry in settings.CELERY_BEAT_SCHEDULE.values()
        ]
        tasks = {name: import_string(name) for name, _ in schedule}
        due = {name: 0.0 for name, _ in schedule}
        while True:
            now = asyncio.get_running_loop().time()
            for name, every in schedule:
                if now >= due[name]:
                    due[name] = now + every
                    try:
                        await asyncio.to_thread(_run_periodic, tasks[name])
                    except Exception:
                        logger.exception("periodic task %s failed", name)
            await asyncio.sleep(min(every for _, every in schedule))

    async def close(self) -> None:
        config_unlisten(self.catalog.on_config_changed)
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscriber
        await self.traces.close()
        await self.session.close()
        await self.limiter.close()
        await self.db.close()


def _run_periodic(task: Any) -> None:
    try:
        task.apply()
    finally:
        # The executor's thread outlives the task: hand its connection back (to Django's
        # pool on PostgreSQL) rather than keep it checked out until the next run.
        connections.close_all()


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    global _runtime  # noqa: PLW0603 - one per worker process, created in its event loop
    if _runtime is None:
        _runtime = Runtime()
    return _runtime


async def close_runtime() -> None:
    global _runtime  # noqa: PLW0603
    if _runtime is not None:
        runtime, _runtime = _runtime, None
        await runtime.close()
