"""The proxied endpoints: for each, its wire format and how to read and rewrite a request.

The pipeline in ``proxy.views`` is shared; an :class:`Endpoint` answers only the questions
that differ between formats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from billing.money import Usage
from proxy.upstreams.base import UpstreamTarget
from proxy.upstreams.openai import chat_output_limit_field
from proxy.wire import anthropic, openai
from proxy.wire.base import ParsedRequest, StreamScanner

# (parsed request, raw body, upstream, upstream's model name, output bound) -> upstream body
Prepare = Callable[[ParsedRequest, bytes, UpstreamTarget, str, int], bytes]


class RequestInvalid(ValueError):
    """The client's request body is not one this endpoint can take (400)."""


def _model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RequestInvalid("'model' is required.")
    return model


def _positive_int(payload: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestInvalid(f"'{name}' must be a positive integer.")
        return value
    return None


def _stream(payload: dict[str, Any]) -> bool:
    return payload.get("stream") is True


def _bounded(
    parsed: ParsedRequest, field: str, output_bound: int, others: tuple[str, ...] = ()
) -> tuple[dict[str, Any], list[str]]:
    """Changes that bound the request's output by ``output_bound``: the hold covers that
    much output and no more, and settlement never charges beyond the hold.

    The upstream is told the smaller of the client's limit and the bound in ``field``, the
    one limit field this upstream honours. The ``others`` (a chat's other name for the same
    limit) are dropped: an upstream that ignores a field would produce up to its own
    default, and one that knows both may prefer the one that says more. Returns (fields
    to set, fields to drop).
    """
    payload = parsed.payload
    limit = output_bound
    if parsed.max_output_tokens is not None and parsed.max_output_tokens < limit:
        limit = parsed.max_output_tokens
    value = payload.get(field)
    changes = {} if type(value) is int and value == limit else {field: limit}
    return changes, [name for name in others if name in payload]


def _rewrite(
    payload: dict[str, Any],
    raw: bytes,
    target_model: str,
    changes: dict[str, Any],
    dropped: list[str] | None = None,
) -> bytes:
    """The body for the upstream: ``changes`` and the route's model name applied and the
    ``dropped`` fields left out, or the client's bytes as they came when nothing changes."""
    if payload.get("model") != target_model:
        changes["model"] = target_model
    if not changes and not dropped:
        return raw
    body = {**payload, **changes}
    for name in dropped or ():
        del body[name]
    return orjson.dumps(body)


# --------------------------------------------------------------------------- OpenAI


# OpenAI's own bound on chat's ``n``.
MAX_CHOICES = 128


def parse_chat(payload: dict[str, Any]) -> ParsedRequest:
    if not isinstance(payload.get("messages"), list):
        raise RequestInvalid("'messages' must be a list.")
    choices = _positive_int(payload, "n") or 1
    if choices > MAX_CHOICES:
        raise RequestInvalid(f"'n' must be at most {MAX_CHOICES}.")
    return ParsedRequest(
        model=_model(payload),
        is_stream=_stream(payload),
        max_output_tokens=_chat_limit(payload),
        payload=payload,
        choices=choices,
    )


# Two names for one limit: OpenAI's own API honours the first (and refuses the second for
# its reasoning models), most other OpenAI-compatible servers only the second.
CHAT_LIMITS = ("max_completion_tokens", "max_tokens")
# For each, the other one (dropped when an upstream is told its own).
OTHER_CHAT_LIMITS = {name: tuple(n for n in CHAT_LIMITS if n != name) for name in CHAT_LIMITS}


def _chat_limit(payload: dict[str, Any]) -> int | None:
    """The client's output limit: a client that set both asked for no more than either."""
    completion = _positive_int(payload, "max_completion_tokens")
    tokens = _positive_int(payload, "max_tokens")
    if completion is None or (tokens is not None and tokens < completion):
        return tokens
    return completion


def prepare_chat(
    parsed: ParsedRequest, raw: bytes, target: UpstreamTarget, target_model: str, output_bound: int
) -> bytes:
    payload = parsed.payload
    field = chat_output_limit_field(target)
    changes, dropped = _bounded(parsed, field, output_bound, OTHER_CHAT_LIMITS[field])
    if parsed.is_stream:
        # Always ask for the final usage chunk: settlement needs it (hidden again if unasked).
        options = payload.get("stream_options")
        options = dict(options) if isinstance(options, dict) else {}
        options["include_usage"] = True
        changes["stream_options"] = options
    return _rewrite(payload, raw, target_model, changes, dropped)


def chat_scanner(parsed: ParsedRequest) -> StreamScanner:
    options = parsed.payload.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    return openai.ChatStreamScanner(hide_usage_chunk=not asked)


def parse_responses(payload: dict[str, Any]) -> ParsedRequest:
    if "input" not in payload:
        raise RequestInvalid("'input' is required.")
    return ParsedRequest(
        model=_model(payload),
        is_stream=_stream(payload),
        max_output_tokens=_positive_int(payload, "max_output_tokens"),
        payload=payload,
    )


def parse_embeddings(payload: dict[str, Any]) -> ParsedRequest:
    if "input" not in payload:
        raise RequestInvalid("'input' is required.")
    if _stream(payload):
        raise RequestInvalid("Embeddings cannot be streamed.")
    return ParsedRequest(
        model=_model(payload), is_stream=False, max_output_tokens=0, payload=payload
    )


# --------------------------------------------------------------------------- Anthropic


def parse_messages(payload: dict[str, Any]) -> ParsedRequest:
    if not isinstance(payload.get("messages"), list):
        raise RequestInvalid("messages: Field required")
    max_tokens = _positive_int(payload, "max_tokens")
    if max_tokens is None:
        raise RequestInvalid("max_tokens: Field required")
    return ParsedRequest(
        model=_model(payload),
        is_stream=_stream(payload),
        max_output_tokens=max_tokens,
        payload=payload,
    )


def prepare_plain(limit_field: str | None) -> Prepare:
    """For a format with one output limit field, or none (embeddings)."""

    def prepare(
        parsed: ParsedRequest,
        raw: bytes,
        target: UpstreamTarget,
        target_model: str,
        output_bound: int,
    ) -> bytes:
        changes: dict[str, Any] = {}
        if limit_field is not None:
            changes, _ = _bounded(parsed, limit_field, output_bound)
        return _rewrite(parsed.payload, raw, target_model, changes)

    return prepare


@dataclass(frozen=True)
class Endpoint:
    name: str
    kind: str  # the upstream kind (and error shape) this endpoint speaks
    upstream_path: str
    parse: Callable[[dict[str, Any]], ParsedRequest]
    # The body for one route: its model name, its output bounded by what the hold covers.
    prepare: Prepare
    usage_from_body: Callable[[dict[str, Any]], Usage | None]
    scanner: Callable[[ParsedRequest], StreamScanner] | None
    error_body: Callable[[int, str, str | None], bytes]
    # An error event inside a stream that has already started (the SDKs raise on it).
    stream_error: Callable[[str, str], bytes]


CHAT = Endpoint(
    name="chat.completions",
    kind="openai",
    upstream_path="/chat/completions",
    parse=parse_chat,
    prepare=prepare_chat,
    usage_from_body=lambda body: openai.chat_usage(body.get("usage")),
    scanner=chat_scanner,
    error_body=openai.error_body,
    stream_error=openai.stream_error_event,
)

RESPONSES = Endpoint(
    name="responses",
    kind="openai",
    upstream_path="/responses",
    parse=parse_responses,
    prepare=prepare_plain("max_output_tokens"),
    usage_from_body=lambda body: openai.responses_usage(body.get("usage")),
    scanner=lambda parsed: openai.ResponsesStreamScanner(),
    error_body=openai.error_body,
    stream_error=openai.stream_error_event,
)

EMBEDDINGS = Endpoint(
    name="embeddings",
    kind="openai",
    upstream_path="/embeddings",
    parse=parse_embeddings,
    prepare=prepare_plain(None),
    usage_from_body=lambda body: openai.embeddings_usage(body.get("usage")),
    scanner=None,
    error_body=openai.error_body,
    stream_error=openai.stream_error_event,
)

MESSAGES = Endpoint(
    name="messages",
    kind="anthropic",
    upstream_path="/v1/messages",
    parse=parse_messages,
    prepare=prepare_plain("max_tokens"),
    usage_from_body=lambda body: anthropic.messages_usage(body.get("usage")),
    scanner=lambda parsed: anthropic.MessagesStreamScanner(),
    error_body=anthropic.error_body,
    stream_error=anthropic.stream_error_event,
)
