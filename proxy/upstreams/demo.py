"""The built-in demo model: an upstream answered in this process, with no provider called.

``manage.py seed_demo`` makes one upstream of kind ``demo``
(``billing.services.upstream_demo_ensure``; nothing else can) and posts a price for its
model, ``tollgate-demo``. A request for it goes the way of every request (the key, the
limits, the hold, fallback, settlement before the last byte, the trace); only its answer is
made here instead of by a provider's server: a short canned reply that says it is a demo
and quotes the client's last message, in the wire format the endpoint speaks (OpenAI chat
completions and Anthropic messages, streamed or not; Anthropic token counting), with usage
counted by :func:`demo_tokens`. Other endpoints (responses, embeddings) get a 400 saying
what the demo answers. An operator who turns the upstream off in the admin takes the model
away (404, as for any model without an active route).

The reply honours the output limit the proxy sets on the request, so it is never longer
than the hold covers, and a stream comes a token at a time, as a model's would.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import orjson

from proxy.upstreams.base import DEMO_KIND, UpstreamAdapter, UpstreamTarget
from proxy.wire import openai

CHAT_PATH = "/chat/completions"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

# The demo's tokenizer: a word, or one other non-space character, with the spaces before
# it (about what a real tokenizer makes of English text: a little fewer tokens).
_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])")
# Chat formats wrap each message in a few tokens of their own (OpenAI counts 3), and the
# reply is primed with 3 more.
MESSAGE_OVERHEAD_TOKENS = 3
REPLY_PRIMING_TOKENS = 3
# How much of the client's last message the reply quotes.
QUOTED_WORDS = 24
# Between two tokens of a stream: 100 tokens a second.
TOKEN_INTERVAL_SECONDS = 0.01

JSON = "application/json"
EVENT_STREAM = "text/event-stream; charset=utf-8"


def demo_tokens(text: str) -> list[str]:
    """``text`` cut into the demo's tokens; joined, they give back the text (less any
    trailing spaces)."""
    return _TOKEN.findall(text)


def _text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts
    (OpenAI's ``{"type": "text", "text": …}``, Anthropic's text blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def prompt_tokens(payload: dict[str, Any]) -> int:
    """The request's input tokens: its messages (and Anthropic's ``system``) as the demo's
    tokens, with each message's wrapping and the reply's priming."""
    count = REPLY_PRIMING_TOKENS
    system = payload.get("system")
    if system:
        count += MESSAGE_OVERHEAD_TOKENS + len(demo_tokens(_text(system)))
    messages = payload.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            count += MESSAGE_OVERHEAD_TOKENS + len(demo_tokens(_text(message.get("content"))))
    return count


def reply_text(payload: dict[str, Any]) -> str:
    """The demo's answer: what it is, and the start of the client's last message."""
    model = payload.get("model") or DEMO_KIND
    text = (
        f"Hello from {model}, Tollgate's built-in demo model. This reply is canned: no AI "
        "provider was called. Your request was still admitted, charged at this model's "
        "posted price and traced, like any other."
    )
    said = ""
    messages = payload.get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            said = " ".join(_text(message.get("content")).split())
            break
    if said:
        words = said.split(" ")
        quoted = " ".join(words[:QUOTED_WORDS]) + (" …" if len(words) > QUOTED_WORDS else "")
        text += f' You said: "{quoted}"'
    return text


def _output_limit(payload: dict[str, Any]) -> int | None:
    """The output limit the proxy set on the request (it always sets one)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if type(value) is int and value > 0:
            return value
    return None


class Reply:
    """One reply to one request: its tokens, cut at the request's output limit."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.model = str(payload.get("model") or DEMO_KIND)
        self.input_tokens = prompt_tokens(payload)
        tokens = demo_tokens(reply_text(payload))
        limit = _output_limit(payload)
        self.is_cut = limit is not None and len(tokens) > limit
        self.tokens = tokens[:limit] if self.is_cut else tokens
        self.text = "".join(self.tokens)
        self.created = int(time.time())


# --------------------------------------------------------------------------- OpenAI chat


def _chat_usage(reply: Reply, choices: int) -> dict[str, Any]:
    output = len(reply.tokens) * choices
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": output,
        "total_tokens": reply.input_tokens + output,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _choices(payload: dict[str, Any]) -> int:
    n = payload.get("n")
    return n if type(n) is int and n > 0 else 1


def chat_completion(payload: dict[str, Any]) -> bytes:
    reply = Reply(payload)
    choices = _choices(payload)
    finish = "length" if reply.is_cut else "stop"
    return orjson.dumps(
        {
            "id": "chatcmpl-demo" + secrets.token_hex(12),
            "object": "chat.completion",
            "created": reply.created,
            "model": reply.model,
            "choices": [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": reply.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
                for index in range(choices)
            ],
            "usage": _chat_usage(reply, choices),
            "system_fingerprint": None,
        }
    )


def chat_events(payload: dict[str, Any]) -> list[bytes]:
    """The chunks of a streamed chat completion, one event each, then ``[DONE]``; the
    usage chunk only when the request asked for it (the proxy always does)."""
    reply = Reply(payload)
    choices = _choices(payload)
    head = {
        "id": "chatcmpl-demo" + secrets.token_hex(12),
        "object": "chat.completion.chunk",
        "created": reply.created,
        "model": reply.model,
        "system_fingerprint": None,
    }

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

    events = []
    for index in range(choices):
        events.append(chunk(index, {"role": "assistant", "content": "", "refusal": None}))
        events.extend(chunk(index, {"content": token}) for token in reply.tokens)
        events.append(chunk(index, {}, "length" if reply.is_cut else "stop"))
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        usage = {**head, "choices": [], "usage": _chat_usage(reply, choices)}
        events.append(b"data: " + orjson.dumps(usage) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


# --------------------------------------------------------------------------- Anthropic


def message(payload: dict[str, Any]) -> bytes:
    reply = Reply(payload)
    return orjson.dumps(
        {
            "id": "msg_demo" + secrets.token_hex(12),
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": "max_tokens" if reply.is_cut else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.input_tokens,
                "output_tokens": len(reply.tokens),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
    )


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def message_events(payload: dict[str, Any]) -> list[bytes]:
    """A streamed message: ``message_start`` with the input usage, a text block a token per
    delta, ``message_delta`` with the output usage, ``message_stop``."""
    reply = Reply(payload)
    start: dict[str, Any] = {
        "id": "msg_demo" + secrets.token_hex(12),
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    return [
        _event("message_start", {"type": "message_start", "message": start}),
        _event("content_block_start", block),
        _event("ping", {"type": "ping"}),
        *(
            _event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": token},
                },
            )
            for token in reply.tokens
        ),
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "max_tokens" if reply.is_cut else "end_turn",
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": len(reply.tokens)},
            },
        ),
        _event("message_stop", {"type": "message_stop"}),
    ]


# --------------------------------------------------------------------------- the adapter


class DemoStream:
    """A streamed answer's events, a token's time apart; closing it ends them (the client
    went away)."""

    def __init__(self, events: Sequence[bytes]) -> None:
        self._events = events
        self._closed = False

    def close(self) -> None:
        self._closed = True

    async def iter_any(self) -> AsyncIterator[bytes]:
        for number, event in enumerate(self._events):
            if number:
                await asyncio.sleep(TOKEN_INTERVAL_SECONDS)
            if self._closed:
                return
            yield event


class DemoResponse:
    """An answer made here, read by forwarding as it reads a provider's
    (``proxy.upstreams.base.UpstreamResponse``)."""

    def __init__(
        self,
        *,
        status: int = 200,
        body: bytes = b"",
        events: Sequence[bytes] = (),
        content_type: str = JSON,
    ) -> None:
        self.status = status
        self.headers = {"content-type": content_type}
        self._body = body
        self.content = DemoStream(events)

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        pass

    def close(self) -> None:
        self.content.close()


class DemoAdapter(UpstreamAdapter):
    """The ``demo`` kind: answers in this process; its base URL is never called."""

    kind = DEMO_KIND

    async def open(
        self,
        session: aiohttp.ClientSession,
        target: UpstreamTarget,
        *,
        path: str,
        body: bytes,
        client_headers: dict[str, str],
    ) -> DemoResponse:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            # The proxy has checked the body before it gets here; this is for safety only.
            return DemoResponse(
                status=400, body=openai.error_body(400, "The request body must be a JSON object.")
            )
        is_stream = payload.get("stream") is True
        if path == CHAT_PATH:
            if is_stream:
                return DemoResponse(events=chat_events(payload), content_type=EVENT_STREAM)
            return DemoResponse(body=chat_completion(payload))
        if path == MESSAGES_PATH:
            if is_stream:
                return DemoResponse(events=message_events(payload), content_type=EVENT_STREAM)
            return DemoResponse(body=message(payload))
        if path == COUNT_TOKENS_PATH:
            return DemoResponse(body=orjson.dumps({"input_tokens": prompt_tokens(payload)}))
        return DemoResponse(
            status=400,
            body=openai.error_body(
                400,
                f"The demo model {payload.get('model') or ''} answers chat completions "
                "(/v1/chat/completions) and messages (/v1/messages) only.",
                "demo_endpoint_unsupported",
                "model",
            ),
        )
