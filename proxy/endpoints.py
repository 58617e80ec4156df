"""The proxied endpoints: for each, its wire format and how to read and rewrite a request.

The pipeline (``proxy.pipeline``, ``proxy.forwarding``) is shared; an :class:`Endpoint`
answers only the questions that differ between formats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from billing.money import Usage
from proxy.admission import ProxyError
from proxy.upstreams.base import UpstreamTarget
from proxy.upstreams.openai import chat_output_limit_field
from proxy.wire import anthropic, openai
from proxy.wire.base import ParsedRequest, StreamScanner

# (parsed request, raw body, upstream, upstream's model name, output bound) -> upstream body
Prepare = Callable[[ParsedRequest, bytes, UpstreamTarget, str, int], bytes]


class ErrorBody(Protocol):
    """A format's error object; ``param`` names the request field at fault, if one is."""

    def __call__(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ) -> bytes: ...


class RequestInvalid(ProxyError):
    """The client's request body is not one this endpoint can take (400), refused before
    anything is held or sent; ``param`` names the field at fault (OpenAI's error object
    carries it)."""

    def __init__(
        self, message: str, *, param: str | None = None, code: str = "invalid_request"
    ) -> None:
        super().__init__(400, message, code)
        self.param = param


# --------------------------------------------------------------------------- field types
#
# The proxy acts on a few fields of a body: the model, whether it streams, its output limits,
# chat's n. Each is read with its JSON type checked, and a value of another type is refused
# (400, naming the field) instead of being forwarded: an upstream may read it otherwise than
# the proxy did. A lenient server reads ``"stream": "true"`` as true and streams to a proxy
# waiting for one JSON answer (502, the work uncharged); ``"max_tokens": 500.0`` escapes the
# bound the hold covers. ``null`` is read as absent, as OpenAI takes it for its optional
# fields (``"stream": null``, ``"max_tokens": null``); a field the format requires is
# missing when null.


@dataclass(frozen=True, slots=True)
class JsonType:
    """A JSON type a field may have, as each format names it in its messages."""

    python: tuple[type, ...]  # exactly these (orjson's types; ``bool`` is not an integer here)
    openai_name: str  # "Invalid type for 'n': expected an integer, ..."
    anthropic_name: str  # pydantic's words: "n: Input should be a valid integer"


BOOLEAN = JsonType((bool,), "a boolean", "a valid boolean")
INTEGER = JsonType((int,), "an integer", "a valid integer")
STRING = JsonType((str,), "a string", "a valid string")
ARRAY = JsonType((list,), "an array", "a valid list")
OBJECT = JsonType((dict,), "an object", "a valid dictionary")
STRING_OR_ARRAY = JsonType((str, list), "a string or an array", "a valid string or list")

_JSON_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a decimal number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


class Wording:
    """How a format words a refused field: its SDKs show the message as it came."""

    def wrong_type(self, name: str, expected: JsonType, value: Any) -> RequestInvalid:
        raise NotImplementedError

    def missing(self, name: str) -> RequestInvalid:
        raise NotImplementedError

    def below(self, name: str, minimum: int, value: int) -> RequestInvalid:
        raise NotImplementedError

    def above(self, name: str, maximum: int, value: int) -> RequestInvalid:
        raise NotImplementedError


class OpenAIWording(Wording):
    """OpenAI's own messages for these faults."""

    def wrong_type(self, name: str, expected: JsonType, value: Any) -> RequestInvalid:
        got = _JSON_NAMES.get(type(value), "another type")
        return RequestInvalid(
            f"Invalid type for '{name}': expected {expected.openai_name}, but got {got} instead.",
            param=name,
        )

    def missing(self, name: str) -> RequestInvalid:
        return RequestInvalid(f"Missing required parameter: '{name}'.", param=name)

    def below(self, name: str, minimum: int, value: int) -> RequestInvalid:
        return RequestInvalid(
            f"Invalid '{name}': integer below minimum value. "
            f"Expected a value >= {minimum}, but got {value} instead.",
            param=name,
        )

    def above(self, name: str, maximum: int, value: int) -> RequestInvalid:
        return RequestInvalid(
            f"Invalid '{name}': integer above maximum value. "
            f"Expected a value <= {maximum}, but got {value} instead.",
            param=name,
        )


class AnthropicWording(Wording):
    """Anthropic's (pydantic's) messages: the field's path, then the fault."""

    def wrong_type(self, name: str, expected: JsonType, value: Any) -> RequestInvalid:
        return RequestInvalid(f"{name}: Input should be {expected.anthropic_name}", param=name)

    def missing(self, name: str) -> RequestInvalid:
        return RequestInvalid(f"{name}: Field required", param=name)

    def below(self, name: str, minimum: int, value: int) -> RequestInvalid:
        return RequestInvalid(
            f"{name}: Input should be greater than or equal to {minimum}", param=name
        )

    def above(self, name: str, maximum: int, value: int) -> RequestInvalid:
        return RequestInvalid(
            f"{name}: Input should be less than or equal to {maximum}", param=name
        )


OPENAI_WORDING = OpenAIWording()
ANTHROPIC_WORDING = AnthropicWording()


def request_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestInvalid("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise RequestInvalid("The request body must be a JSON object.")
    return payload


def _optional(
    payload: dict[str, Any], name: str, expected: JsonType, wording: Wording, path: str = ""
) -> Any:
    """The field's value, or None when absent or null; ``path`` names a nested field."""
    value = payload.get(name)
    if value is None or type(value) in expected.python:
        return value
    raise wording.wrong_type(path or name, expected, value)


def _required(payload: dict[str, Any], name: str, expected: JsonType, wording: Wording) -> Any:
    value = _optional(payload, name, expected, wording)
    if value is None:
        raise wording.missing(name)
    return value


def _model(payload: dict[str, Any], wording: Wording) -> str:
    model: str = _required(payload, "model", STRING, wording)
    if not model.strip():
        raise wording.missing("model")
    return model


def _flag(payload: dict[str, Any], name: str, wording: Wording) -> bool:
    return _optional(payload, name, BOOLEAN, wording) is True


def _count(
    payload: dict[str, Any], name: str, wording: Wording, *, maximum: int | None = None
) -> int | None:
    """A positive integer field (an output limit, chat's n), or None when absent or null."""
    value: int | None = _optional(payload, name, INTEGER, wording)
    if value is None:
        return None
    if value < 1:
        raise wording.below(name, 1, value)
    if maximum is not None and value > maximum:
        raise wording.above(name, maximum, value)
    return value


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
    wording = OPENAI_WORDING
    model = _model(payload, wording)
    _required(payload, "messages", ARRAY, wording)
    is_stream = _flag(payload, "stream", wording)
    # Read by prepare_chat and chat_scanner (the usage chunk is always asked for, and hidden
    # again unless the client asked too).
    options = _optional(payload, "stream_options", OBJECT, wording)
    if options is not None:
        path = "stream_options.include_usage"
        _optional(options, "include_usage", BOOLEAN, wording, path)
    # Both limits are checked; the smaller bounds the hold, and every one is bounded.
    completion_limit = _count(payload, "max_completion_tokens", wording)
    tokens_limit = _count(payload, "max_tokens", wording)
    choices = _count(payload, "n", wording, maximum=MAX_CHOICES) or 1
    return ParsedRequest(
        model=model,
        is_stream=is_stream,
        max_output_tokens=_chat_limit(completion_limit, tokens_limit),
        payload=payload,
        choices=choices,
    )


# Two names for one limit: OpenAI's own API honours the first (and refuses the second for
# its reasoning models), most other OpenAI-compatible servers only the second.
CHAT_LIMITS = ("max_completion_tokens", "max_tokens")
# For each, the other one (dropped when an upstream is told its own).
OTHER_CHAT_LIMITS = {name: tuple(n for n in CHAT_LIMITS if n != name) for name in CHAT_LIMITS}


def _chat_limit(completion: int | None, tokens: int | None) -> int | None:
    """The client's output limit: a client that set both asked for no more than either."""
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
    wording = OPENAI_WORDING
    model = _model(payload, wording)
    _required(payload, "input", STRING_OR_ARRAY, wording)
    return ParsedRequest(
        model=model,
        is_stream=_flag(payload, "stream", wording),
        max_output_tokens=_count(payload, "max_output_tokens", wording),
        payload=payload,
    )


def parse_embeddings(payload: dict[str, Any]) -> ParsedRequest:
    wording = OPENAI_WORDING
    model = _model(payload, wording)
    _required(payload, "input", STRING_OR_ARRAY, wording)
    if _flag(payload, "stream", wording):
        raise RequestInvalid("Invalid 'stream': embeddings cannot be streamed.", param="stream")
    return ParsedRequest(model=model, is_stream=False, max_output_tokens=0, payload=payload)


# --------------------------------------------------------------------------- Anthropic


def parse_messages(payload: dict[str, Any]) -> ParsedRequest:
    wording = ANTHROPIC_WORDING
    model = _model(payload, wording)
    _required(payload, "messages", ARRAY, wording)
    max_tokens = _count(payload, "max_tokens", wording)
    if max_tokens is None:
        raise wording.missing("max_tokens")
    return ParsedRequest(
        model=model,
        is_stream=_flag(payload, "stream", wording),
        max_output_tokens=max_tokens,
        payload=payload,
    )


def parse_count_tokens(payload: dict[str, Any]) -> str:
    """``/v1/messages/count_tokens`` (free, not an :class:`Endpoint`): the model asked for."""
    wording = ANTHROPIC_WORDING
    model = _model(payload, wording)
    _required(payload, "messages", ARRAY, wording)
    return model


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
    error_body: ErrorBody
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
