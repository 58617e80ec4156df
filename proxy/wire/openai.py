"""OpenAI wire format: chat completions, responses, embeddings, models, errors."""

from __future__ import annotations

from typing import Any

import orjson

from billing.money import Usage
from proxy.wire.base import StreamScanner, int_or_zero

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    502: "upstream_error",
    503: "upstream_error",
    504: "timeout",
}


def error_body(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> bytes:
    """OpenAI's error object; ``param`` names the request field at fault, if one is."""
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": ERROR_TYPES.get(status, "api_error"),
                "param": param,
                "code": code,
            }
        }
    )


def stream_error_event(message: str, code: str) -> bytes:
    """An error in a stream that has started: OpenAI sends ``data: {"error": ...}``."""
    error = {"message": message, "type": "upstream_error", "param": None, "code": code}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


def chat_usage(usage: Any) -> Usage | None:
    """``usage`` of a chat completion (or its final stream chunk)."""
    if not isinstance(usage, dict):
        return None
    prompt = int_or_zero(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details") or {}
    cached = min(
        int_or_zero(details.get("cached_tokens")) if isinstance(details, dict) else 0, prompt
    )
    return Usage(
        input_tokens=prompt - cached,
        cached_input_tokens=cached,
        output_tokens=int_or_zero(usage.get("completion_tokens")),
    )


def responses_usage(usage: Any) -> Usage | None:
    """``usage`` of a Responses API response."""
    if not isinstance(usage, dict):
        return None
    prompt = int_or_zero(usage.get("input_tokens"))
    details = usage.get("input_tokens_details") or {}
    cached = min(
        int_or_zero(details.get("cached_tokens")) if isinstance(details, dict) else 0, prompt
    )
    return Usage(
        input_tokens=prompt - cached,
        cached_input_tokens=cached,
        output_tokens=int_or_zero(usage.get("output_tokens")),
    )


def embeddings_usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    return Usage(input_tokens=int_or_zero(usage.get("prompt_tokens")))


class ChatStreamScanner(StreamScanner):
    """Chat completion chunks. The proxy always asks the upstream for a final usage chunk
    (``stream_options.include_usage``); when the client did not ask for it, that chunk
    (``"choices": []`` with usage) is dropped so the client sees the stream it expects."""

    usage_marker = b'"usage":{'
    usage_marker_spaced = b'"usage": {'
    content_marker = b'"delta":{"content"'
    end_markers = (b"data: [DONE]",)

    def __init__(self, *, hide_usage_chunk: bool) -> None:
        super().__init__()
        self.hide_usage_chunk = hide_usage_chunk

    def _inspect(self, events: bytes) -> bytes:
        kept: list[bytes] = []
        for event in events.split(b"\n\n"):
            if self.has_usage(event) and event.startswith(b"data:"):
                try:
                    chunk = orjson.loads(event[5:].strip())
                except orjson.JSONDecodeError:
                    kept.append(event)
                    continue
                usage = chat_usage(chunk.get("usage")) if isinstance(chunk, dict) else None
                if usage is not None:
                    self.state.usage = usage
                    if self.hide_usage_chunk and not chunk.get("choices"):
                        continue
            kept.append(event)
        return b"\n\n".join(kept)


class ResponsesStreamScanner(StreamScanner):
    """Responses API events: usage arrives in ``response.completed`` (or ``.incomplete``)."""

    usage_marker = b'"usage":{'
    usage_marker_spaced = b'"usage": {'
    content_marker = b'.delta"'
    end_markers = (b"response.completed", b"response.incomplete", b"response.failed")

    def _inspect(self, events: bytes) -> bytes:
        for event in events.split(b"\n\n"):
            if not self.has_usage(event):
                continue
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    try:
                        data = orjson.loads(line[5:].strip())
                    except orjson.JSONDecodeError:
                        continue
                    response = data.get("response") if isinstance(data, dict) else None
                    usage = (
                        responses_usage(response.get("usage"))
                        if isinstance(response, dict)
                        else None
                    )
                    if usage is not None:
                        self.state.usage = usage
        return events
