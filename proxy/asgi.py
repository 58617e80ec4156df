"""The ASGI application: the proxy's lean path for ``/v1/*`` model traffic, Django for the rest.

The proxy answers its own paths whatever the method: a method a path does not serve is a 405
with ``Allow``, and a handler that fails before it answers is a 500, both in the wire
format's error shape (``proxy.wire.error_wire``). Every other path is Django's, which
answers an unknown ``/v1/`` path in the same shape (``config.exceptions``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from proxy import info
from proxy.endpoints import CHAT, EMBEDDINGS, MESSAGES, RESPONSES
from proxy.io import header_dict, respond
from proxy.pipeline import metered
from proxy.runtime import close_runtime
from proxy.wire import error_wire

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/v1/chat/completions"): partial(metered, endpoint=CHAT),
    ("POST", "/v1/responses"): partial(metered, endpoint=RESPONSES),
    ("POST", "/v1/embeddings"): partial(metered, endpoint=EMBEDDINGS),
    ("POST", "/v1/messages"): partial(metered, endpoint=MESSAGES),
    ("POST", "/v1/messages/count_tokens"): info.count_tokens,
    ("GET", "/v1/models"): info.models_list,
    ("GET", "/v1/key"): info.key_info,
}

# Each proxy path's methods, as a 405's ``Allow`` header lists them.
ALLOWED_METHODS = {
    path: ", ".join(method for method, each in ROUTES if each == path) for _, path in ROUTES
}


async def method_not_allowed(scope: dict[str, Any], send: Any, allowed: str) -> None:
    wire = error_wire(scope["path"], header_dict(scope))
    message = f"{scope['method']} is not allowed here; use {allowed}."
    await respond(
        send,
        405,
        wire.error_body(405, message, "method_not_allowed"),
        headers=[(b"allow", allowed.encode())],
    )


async def guarded(handler: Handler, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Run a proxy handler; if it fails before it has answered, answer a JSON 500 in its
    wire's shape instead of the server's plain-text one. (The handlers answer every
    failure they expect themselves; this is for the ones they do not.)

    Nothing wraps ``send``, which every chunk of a stream goes through (a wrapper cost
    0.7 µs a call here): if the answer had already started, the server refuses the second
    start (an ASGI server must; uvicorn raises RuntimeError) and the connection is cut,
    as it would have been without this.
    """
    try:
        await handler(scope, receive, send)
    except Exception:
        logger.exception("proxy handler failed")
        wire = error_wire(scope["path"], header_dict(scope))
        await respond(send, 500, wire.error_body(500, "Internal server error.", "server_error"))


class ProxyApplication:
    """Routes proxy paths to their handlers and hands everything else to Django."""

    def __init__(self, django_app: Handler) -> None:
        self.django_app = django_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                path = path[:-1]
            handler = ROUTES.get((scope["method"], path))
            if handler is not None:
                await guarded(handler, scope, receive, send)
                return
            allowed = ALLOWED_METHODS.get(path)
            if allowed is not None:
                await method_not_allowed(scope, send, allowed)
                return
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.django_app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await close_runtime()
                await send({"type": "lifespan.shutdown.complete"})
                return
