"""What the proxy pipeline needs to know about one endpoint's wire format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billing.money import Usage

# Worst-case input tokens: every token is at least one byte of the request body, plus a
# fixed allowance for the chat template / tool preamble and one for each image or file
# referenced by URL (those cost tokens the body's bytes do not show). Only the hold uses
# this bound; the charge is what the upstream reports.
TEMPLATE_ALLOWANCE_TOKENS = 512
PER_ATTACHMENT_TOKENS = 3_000
_ATTACHMENT_MARKERS = (
    b'"image_url"',
    b'"input_image"',
    b'"type":"image"',
    b'"type": "image"',
    b'"type":"document"',
    b'"type": "document"',
    b'"input_file"',
)


# Requests whose input the body does not bound at all: the upstream adds what they refer to
# (a stored response or conversation, a file or a document by reference, the results of
# server-side tools). Their hold takes the route's context window as the input bound.
_UNBOUNDED_INPUT_MARKERS = (
    b'"previous_response_id"',
    b'"conversation"',
    b'"file_id"',
    b'"file_url"',
    b'"mcp_servers"',
    b'"container"',
    b'"web_search',
    b'"web_fetch',
    b'"file_search"',
    b'"code_interpreter"',
    b'"code_execution',
)


def input_is_unbounded(body: bytes) -> bool:
    """The body refers to input it does not carry (see ``_UNBOUNDED_INPUT_MARKERS``; a
    document by URL too). A false positive only makes the hold larger."""
    if any(marker in body for marker in _UNBOUNDED_INPUT_MARKERS):
        return True
    return b'"document"' in body and b'"url"' in body


def input_token_bound(body: bytes) -> int:
    attachments = sum(body.count(marker) for marker in _ATTACHMENT_MARKERS)
    return len(body) + TEMPLATE_ALLOWANCE_TOKENS + attachments * PER_ATTACHMENT_TOKENS


def estimated_input_tokens(body: bytes) -> int:
    """When an upstream never reported usage (client gone mid-stream): about 4 bytes a token."""
    return max(1, len(body) // 4)


def int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


@dataclass(slots=True)
class StreamState:
    """What a stream scanner learned so far."""

    usage: Usage | None = None
    events: int = 0
    # Partial usage seen before the final report (Anthropic's message_start).
    input_seen: Usage | None = None


class StreamScanner:
    """Passes an upstream SSE byte stream through, event-aligned, and watches for usage.

    ``feed`` returns the bytes to forward now: everything up to the last complete event.
    The incomplete tail waits for the next read, so an event is never split across a
    filter decision. Bytes are forwarded as received; only events that carry usage are
    parsed.
    """

    usage_marker: bytes = b'"usage"'
    # The marker as Python's json.dumps writes it (``"usage": {``), when ``usage_marker``
    # is written compact: OpenAI-compatible servers use both.
    usage_marker_spaced: bytes | None = None
    # Counted to estimate output when a stream is cut short: about one token per event.
    content_marker: bytes = b"data:"
    # Where the answer ends for a client (the SDKs stop reading there): the proxy holds
    # this event and anything after it back until the charge is settled.
    end_markers: tuple[bytes, ...] = ()

    def __init__(self) -> None:
        self.state = StreamState()
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        if self._tail:
            data = self._tail + data
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._tail = data
            return b""
        complete, self._tail = data[: cut + 2], data[cut + 2 :]
        self.state.events += complete.count(self.content_marker)
        if self.has_usage(complete):
            complete = self._inspect(complete)
        return complete

    def has_usage(self, data: bytes) -> bool:
        spaced = self.usage_marker_spaced
        return self.usage_marker in data or (spaced is not None and spaced in data)

    def is_end(self, out: bytes) -> bool:
        return any(marker in out for marker in self.end_markers)

    def finish(self) -> bytes:
        rest, self._tail = self._tail, b""
        if rest and self.has_usage(rest):
            rest = self._inspect(rest)
        return rest

    def _inspect(self, events: bytes) -> bytes:
        """Read usage from the events in ``events``; return what to forward."""
        return events

    def estimated_usage(self, request_body: bytes) -> Usage:
        """Usage of a stream cut short before the upstream reported it: the input as
        reported (if any) or estimated, and about one output token per content event."""
        output = self.state.events
        if self.state.input_seen is not None:
            seen = self.state.input_seen
            return Usage(
                input_tokens=seen.input_tokens,
                cached_input_tokens=seen.cached_input_tokens,
                cache_write_tokens=seen.cache_write_tokens,
                cache_write_1h_tokens=seen.cache_write_1h_tokens,
                output_tokens=max(seen.output_tokens, output),
            )
        return Usage(input_tokens=estimated_input_tokens(request_body), output_tokens=output)


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    model: str
    is_stream: bool
    max_output_tokens: int | None
    # The JSON object, when the endpoint has to rewrite it for the upstream.
    payload: dict[str, Any]
    # Completions generated (chat's ``n``): each may produce up to the output limit.
    choices: int = 1
