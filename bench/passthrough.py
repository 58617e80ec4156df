"""The floor: a bare pass-through to the mock upstream, served like Tollgate.

The same server and worker count as Tollgate in the same run and the same upstream client
(one shared aiohttp session per worker); no authentication, limits, reservation, settlement
or trace. What it adds to the direct figures is what serving an ASGI app and calling the
upstream from Python costs on this machine before Tollgate does any work of its own.

    python -m config.serve --port 8200 --workers 2 passthrough:app   (from bench/)
"""
from __future__ import annotations

import os

import aiohttp

UPSTREAM = os.environ.get("PASSTHROUGH_UPSTREAM", "http://127.0.0.1:9100")
_session: aiohttp.ClientSession | None = None


def session() -> aiohttp.ClientSession:
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                                         skip_auto_headers=("User-Agent",))
    return _session


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _session is not None:
                    await _session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    headers = {name.decode(): value.decode() for name, value in scope["headers"]
               if name in (b"content-type", b"authorization", b"x-api-key", b"anthropic-version")}
    async with session().post(UPSTREAM + scope["path"], data=b"".join(chunks), headers=headers) as response:
        content_type = response.headers.get("content-type", "application/json").encode()
        if content_type.startswith(b"text/event-stream"):
            await send({"type": "http.response.start", "status": response.status,
                        "headers": [(b"content-type", content_type)]})
            async for data in response.content.iter_any():
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = await response.read()
    await send({"type": "http.response.start", "status": response.status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
