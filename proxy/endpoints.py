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
    payload: dict[str, Any],
    limit_fields: tuple[str, ...],
    output_bound: int,
    absent_field: str | None,
) -> dict[str, Any]:
    """Changes that bound the request's output by ``output_bound``: the hold covers that
    much output and no more, and settlement never charges beyond the hold.

    Every limit the client set above the bound is lowered to it; a request that set none
    gets ``absent_field`` (the limit this upstream understands), or it would reach the
    upstream unbounded and an overrun would be served uncharged.
    """
    changes: dict[str, Any] = {}
    limited = False
    for name in limit_fields:
        value = payload.get(name)
        if isinstance(value, int):
            limited = True
            if value > output_bound:
                changes[name] = output_bound
    if not limited and absent_field is not None:
        changes[absent_field] = output_bound
    return changes


def _rewrite(
    payload: dict[str, Any], raw: bytes, target_model: str, changes: dict[str, Any]
) -> bytes:
    """The body for the upstream: ``changes`` and the route's model name applied, or the
    client's bytes as they came when nothing changes."""
    if payload.get("model") != target_model:
        changes["model"] = target_model
    if not changes:
        return raw
    return orjson.dumps({**payload, **changes})


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
        max_output_tokens=_positive_int(payload, "max_completion_tokens", "max_tokens"),
        payload=payload,
        choices=choices,
    )


CHAT_LIMITS = ("max_completion_tokens", "max_tokens")


def prepare_chat(
    parsed: ParsedRequest, raw: bytes, target: UpstreamTarget, target_model: str, output_bound: int
) -> bytes:
    payload = parsed.payload
    changes = _bounded(payload, CHAT_LIMITS, output_bound, chat_output_limit_field(target))
    if parsed.is_stream:
        # Always ask for the final usage chunk: settlement needs it (hidden again if unasked).
        options = payload.get("stream_options")
        options = dict(options) if isinstance(options, dict) else {}
        options["include_usage"] = True
        changes["stream_options"] = options
    return _rewrite(payload, raw, target_model, changes)


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


def prepare_plain(*limit_fields: str) -> Prepare:
    """For a format with one output limit (added when absent), or none (embeddings)."""

    def prepare(
        parsed: ParsedRequest,
        raw: bytes,
        target: UpstreamTarget,
        target_model: str,
        output_bound: int,
    ) -> bytes:
        absent = limit_fields[0] if limit_fields else None
        changes = _bounded(parsed.payload, limit_fields, output_bound, absent)
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
    prepare=prepare_plain(),
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
