"""How many database connections Django may hold, and what a burst gets when they are taken.

Why this exists: Django's ASGI handler runs each request's synchronous part (middleware,
DRF views, the admin) in a thread of its own (every request gets asgiref's
``ThreadSensitiveContext``, whose executor is a new one-thread pool), and Django's database
connections belong to threads. So every request in flight held its own PostgreSQL
connection: 150 concurrent REST calls on two workers opened ~150 connections, PostgreSQL
refused those past its ``max_connections`` (100) and Django answered 500.

Three bounds, per server worker (they are inherited by every Django page: the REST API,
the sub-account API, the admin and the dashboard):

* **The pool** (``settings.DATABASES["default"]["OPTIONS"]["pool"]``, PostgreSQL only):
  Django's own psycopg pool of at most ``DB_POOL_MAX`` connections. A request's thread
  borrows one at its first query and gives it back when the request ends (Django closes
  connections at ``request_finished``; with a pool, closing returns it).
* **The gate** (:class:`DjangoGate`): at most ``DJANGO_CONCURRENCY`` requests (default: the
  pool's size) run in Django at a time; the others wait in the event loop, holding neither
  a thread nor a connection, for up to ``DB_POOL_TIMEOUT`` seconds, then get 503 with
  ``Retry-After``. A burst queues instead of piling threads onto the pool.
* **The last resort** (:class:`PoolExhaustedMiddleware`): a request that still finds the
  pool empty for ``DB_POOL_TIMEOUT`` seconds (a gate wider than the pool, a connection held
  by something else in the process) gets the same 503 instead of a 500.

The proxy's model traffic never passes here: it has its own async pool
(``PROXY_DB_POOL_MAX``, ``proxy.db``). Sizing for PostgreSQL:
``workers × (DB_POOL_MAX + PROXY_DB_POOL_MAX)`` plus Celery's connections must stay below
``max_connections``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin

# What a client is told to wait before retrying: a burst drains in about a second here
# (150 REST calls on two workers), and sooner retries would only join the queue.
RETRY_AFTER_SECONDS = 2
# Paths whose clients speak JSON (the REST API and the sub-account API); pages get text.
JSON_PREFIXES = ("/api/", "/v1/")
GATE_BUSY = "Too many requests in progress; retry shortly."
POOL_BUSY = "No database connection is free; retry shortly."
BUSY_CODE = "server_busy"

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def wants_json(path: str) -> bool:
    return path.startswith(JSON_PREFIXES)


def busy_body(path: str, detail: str) -> tuple[bytes, bytes]:
    """The 503's body and content type: the API's error shape on API paths, text elsewhere."""
    if wants_json(path):
        return json.dumps({"detail": detail, "code": BUSY_CODE}).encode(), b"application/json"
    return detail.encode(), b"text/plain; charset=utf-8"


class DjangoGate:
    """At most ``limit`` requests in Django at once per worker; the rest wait their turn.

    A waiting request costs a coroutine, not a thread or a connection. One that has waited
    ``wait_seconds`` gets 503 with ``Retry-After``. ``limit`` 0 lets everything through.
    """

    def __init__(self, app: ASGIApp, *, limit: int, wait_seconds: float) -> None:
        self.app = app
        self.limit = limit
        self.wait_seconds = wait_seconds
        # Made at the first request, in the worker's own event loop (workers fork first).
        self._slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.limit <= 0:
            await self.app(scope, receive, send)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        try:
            async with asyncio.timeout(self.wait_seconds):
                await self._slots.acquire()
        except TimeoutError:
            await self._busy(scope, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()

    @staticmethod
    async def _busy(scope: dict[str, Any], send: Any) -> None:
        body, content_type = busy_body(scope["path"], GATE_BUSY)
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def is_pool_exhausted(exc: BaseException) -> bool:
    """Django's OperationalError raised because the pool had no connection in time."""
    if not isinstance(exc, OperationalError):
        return False
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # pragma: no cover - psycopg[pool] is a dependency
        return False
    return isinstance(exc.__cause__, PoolTimeout)


def busy_response(request: HttpRequest, detail: str) -> HttpResponse:
    response: HttpResponse
    if wants_json(request.path):
        response = JsonResponse({"detail": detail, "code": BUSY_CODE}, status=503)
    else:
        response = HttpResponse(detail, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class PoolExhaustedMiddleware(MiddlewareMixin):
    """A view that found the pool empty answers 503 with ``Retry-After``, not 500.

    DRF hands exceptions it has no answer for back to Django, so this covers the REST API
    and the sub-account API as well as the admin's and the dashboard's views.
    (MiddlewareMixin: usable in Django's async chain without an extra thread hop.)
    """

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_pool_exhausted(exception):
            return busy_response(request, POOL_BUSY)
        return None
