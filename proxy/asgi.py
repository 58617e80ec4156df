"""The ASGI application: the proxy's lean path for ``/v1/*`` model traffic, Django for the rest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from proxy import info
from proxy.endpoints import CHAT, EMBEDDINGS, MESSAGES, RESPONSES
from proxy.runtime import close_runtime
from proxy.views import metered

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
                await handler(scope, receive, send)
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
