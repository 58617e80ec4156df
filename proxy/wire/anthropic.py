"""Anthropic wire format: messages (and count_tokens), models, errors."""

from __future__ import annotations

from typing import Any

import orjson

from billing.money import Usage
from proxy.wire.base import StreamScanner, int_or_zero

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_body(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> bytes:
    """Anthropic's error object: it has no ``code`` or ``param`` (a refused field's path
    starts the message)."""
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
        }
    )


def stream_error_event(message: str, code: str) -> bytes:
    """An error in a stream that has started: Anthropic sends an ``error`` event."""
    error = {"type": "error", "error": {"type": "api_error", "message": message}}
    return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"


def messages_usage(usage: Any, *, output_tokens: int | None = None) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    cache_writes = int_or_zero(usage.get("cache_creation_input_tokens"))
    # ``cache_creation`` splits the writes by how long they are kept (newer API versions).
    split = usage.get("cache_creation")
    hour_writes = (
        int_or_zero(split.get("ephemeral_1h_input_tokens")) if isinstance(split, dict) else 0
    )
    return Usage(
        input_tokens=int_or_zero(usage.get("input_tokens")),
        cached_input_tokens=int_or_zero(usage.get("cache_read_input_tokens")),
        cache_write_tokens=cache_writes,
        cache_write_1h_tokens=min(hour_writes, cache_writes),
        output_tokens=int_or_zero(usage.get("output_tokens"))
        if output_tokens is None
        else output_tokens,
    )


class MessagesStreamScanner(StreamScanner):
    """``message_start`` carries input usage; each ``message_delta`` the cumulative output
    (and, on newer API versions, updated input figures)."""

    usage_marker = b'"usage"'
    content_marker = b'"type":"content_block_delta"'
    end_markers = (b"message_stop",)

    def _inspect(self, events: bytes) -> bytes:
        for event in events.split(b"\n\n"):
            if self.usage_marker not in event:
                continue
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                try:
                    data = orjson.loads(line[5:].strip())
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(data, dict):
                    continue
                kind = data.get("type")
                if kind == "message_start":
                    message = data.get("message") or {}
                    seen = messages_usage(
                        message.get("usage") if isinstance(message, dict) else None
                    )
                    if seen is not None:
                        self.state.input_seen = seen
                elif kind == "message_delta":
                    delta_usage = data.get("usage")
                    if isinstance(delta_usage, dict):
                        start = self.state.input_seen or Usage()
                        merged = {
                            "input_tokens": delta_usage.get("input_tokens", start.input_tokens),
                            "cache_read_input_tokens": delta_usage.get(
                                "cache_read_input_tokens", start.cached_input_tokens
                            ),
                            "cache_creation_input_tokens": delta_usage.get(
                                "cache_creation_input_tokens", start.cache_write_tokens
                            ),
                            "cache_creation": delta_usage.get(
                                "cache_creation",
                                {"ephemeral_1h_input_tokens": start.cache_write_1h_tokens},
                            ),
                            "output_tokens": delta_usage.get("output_tokens", 0),
                        }
                        self.state.usage = messages_usage(merged)
        return events
