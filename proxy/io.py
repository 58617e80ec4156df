"""The proxy's raw ASGI input and output: request headers and body in, whole responses out.

Plain functions over ASGI's ``scope``, ``receive`` and ``send``, shared by every proxy
handler; a streamed answer starts with :data:`SSE_HEADERS` and is written chunk by chunk
where it is forwarded.
"""

from __future__ import annotations

import secrets
from typing import Any

Send = Any
Receive = Any
Scope = dict[str, Any]

JSON = b"application/json"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


class BodyTooLarge(Exception):
    pass


def header_dict(scope: Scope) -> dict[str, str]:
    """The request's headers by name. A repeated header's values are joined by commas, as
    RFC 9110 (5.3) combines them and Django does for the REST API: keeping only the last
    would let a second ``Authorization`` pick the key unseen (admission refuses a joined
    credential)."""
    raw = scope["headers"]
    # "latin1" is the spelling CPython matches first: it spares normalising the codec's
    # name on each of the ~40 decodes of a request (more than the length check costs).
    headers = {name.decode("latin1"): value.decode("latin1") for name, value in raw}
    if len(headers) != len(raw):
        # Rare (a client repeating a header): build it again, joining.
        headers = {}
        for name, value in raw:
            field = name.decode("latin1")
            text = value.decode("latin1")
            headers[field] = f"{headers[field]},{text}" if field in headers else text
    return headers


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client went away before sending its request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = JSON,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)
