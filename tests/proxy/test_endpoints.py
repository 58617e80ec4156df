"""How each endpoint reads a request (every field the proxy acts on, its type checked) and
rewrites it for one route: model name, output bounded by the hold."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest

from proxy.endpoints import (
    CHAT,
    CHAT_LIMITS,
    EMBEDDINGS,
    MESSAGES,
    RESPONSES,
    Endpoint,
    RequestInvalid,
    parse_count_tokens,
    request_object,
)
from proxy.upstreams.base import UpstreamTarget
from proxy.wire import anthropic, openai
from proxy.wire.base import input_is_unbounded


def target(base_url: str, kind: str = "openai") -> UpstreamTarget:
    return UpstreamTarget(upstream_id=1, name="u", kind=kind, base_url=base_url, timeout_seconds=30)


VLLM = target("http://10.0.0.5:8000/v1")


def prepared(
    endpoint: Endpoint, payload: dict[str, Any], *, bound: int = 100, to: UpstreamTarget = VLLM
) -> tuple[bytes, bytes]:
    raw = orjson.dumps(payload)
    return raw, endpoint.prepare(endpoint.parse(payload), raw, to, payload["model"], bound)


CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("base_url", "field"),
    [
        ("https://api.openai.com/v1", "max_completion_tokens"),
        ("https://API.OpenAI.com:443/v1", "max_completion_tokens"),
        ("https://acme.openai.azure.com/openai/v1", "max_completion_tokens"),
        ("https://acme.cognitiveservices.azure.com/openai/v1", "max_completion_tokens"),
        ("https://openrouter.ai/api/v1", "max_tokens"),
        ("http://127.0.0.1:11434/v1", "max_tokens"),
        ("https://api.openai.com.evil.example/v1", "max_tokens"),
    ],
)
def test_a_chat_without_limit_gets_the_field_its_upstream_understands(
    base_url: str, field: str
) -> None:
    _, body = prepared(CHAT, CHAT_BODY, bound=16_384, to=target(base_url))
    sent = orjson.loads(body)
    assert sent[field] == 16_384
    assert set(sent) & {"max_tokens", "max_completion_tokens"} == {field}


OPENAI = target("https://api.openai.com/v1")


@pytest.mark.parametrize(
    ("to", "field"),
    [(VLLM, "max_tokens"), (OPENAI, "max_completion_tokens")],
    ids=["vllm", "openai"],
)
def test_a_limit_within_the_bound_in_the_upstreams_own_field_is_passed_on_byte_for_byte(
    to: UpstreamTarget, field: str
) -> None:
    raw, body = prepared(CHAT, {**CHAT_BODY, field: 100}, bound=100, to=to)
    assert body is raw


@pytest.mark.parametrize(
    "client",
    [
        {},
        {"max_completion_tokens": 1},
        {"max_tokens": 1},
        {"max_completion_tokens": 7, "max_tokens": 30},
        {"max_completion_tokens": 30, "max_tokens": 7},
        {"max_tokens": 7, "max_completion_tokens": 30},
        {"max_completion_tokens": 500},
        {"max_tokens": 500},
        {"max_completion_tokens": 500, "max_tokens": 900},
        {"max_completion_tokens": 100, "max_tokens": 100},
        {"max_completion_tokens": None, "max_tokens": 7},
        {"max_completion_tokens": 7, "max_tokens": None},
    ],
    ids=repr,
)
@pytest.mark.parametrize(
    ("to", "field", "other"),
    [
        (VLLM, "max_tokens", "max_completion_tokens"),
        (OPENAI, "max_completion_tokens", "max_tokens"),
    ],
    ids=["vllm", "openai"],
)
def test_the_upstream_is_told_the_clients_smallest_limit_in_the_one_field_it_honours(
    client: dict[str, Any], to: UpstreamTarget, field: str, other: str
) -> None:
    """Whatever limit fields the client set, and however they differ, the upstream gets
    exactly one: its own, at the smaller of the client's smallest limit and the route's
    bound. An upstream that ignores the other field would otherwise produce up to its own
    default, and the hold (which covers only that bound) would not cover it."""
    payload = {**CHAT_BODY, **client}
    limits = [v for v in client.values() if v is not None]
    parsed = CHAT.parse(payload)
    assert parsed.max_output_tokens == (min(limits) if limits else None)
    # The proxy bounds each route by the client's limit and the route's (proxy.forwarding).
    bound = min([*limits, 100])

    _, body = prepared(CHAT, payload, bound=bound, to=to)

    sent = orjson.loads(body)
    assert sent[field] == bound
    assert other not in sent
    assert {k: v for k, v in sent.items() if k not in CHAT_LIMITS} == CHAT_BODY


def test_a_null_limit_counts_as_none() -> None:
    _, body = prepared(CHAT, {**CHAT_BODY, "max_tokens": None})
    assert orjson.loads(body)["max_tokens"] == 100


def test_a_stream_asks_for_usage_and_is_bounded() -> None:
    _, body = prepared(CHAT, {**CHAT_BODY, "stream": True, "stream_options": {"x": 1}})
    sent = orjson.loads(body)
    assert sent["stream_options"] == {"x": 1, "include_usage": True}
    assert sent["max_tokens"] == 100


def test_the_routes_model_name_replaces_the_clients() -> None:
    raw = orjson.dumps({**CHAT_BODY, "max_tokens": 5})
    body = CHAT.prepare(CHAT.parse(orjson.loads(raw)), raw, VLLM, "upstream-name", 100)
    assert orjson.loads(body) == {**CHAT_BODY, "max_tokens": 5, "model": "upstream-name"}


def test_responses_get_max_output_tokens() -> None:
    _, body = prepared(RESPONSES, {"model": "m", "input": "hi"})
    assert orjson.loads(body)["max_output_tokens"] == 100
    raw, body = prepared(RESPONSES, {"model": "m", "input": "hi", "max_output_tokens": 7})
    assert body is raw


def test_messages_limit_is_lowered_to_the_bound() -> None:
    anthropic = target("https://api.anthropic.com", kind="anthropic")
    payload = {"model": "m", "max_tokens": 4096, "messages": [{"role": "user", "content": "x"}]}
    _, body = prepared(MESSAGES, payload, to=anthropic)
    assert orjson.loads(body)["max_tokens"] == 100


def test_embeddings_are_not_given_an_output_limit() -> None:
    raw, body = prepared(EMBEDDINGS, {"model": "m", "input": "hi"})
    assert body is raw


@pytest.mark.parametrize(
    ("body", "unbounded"),
    [
        (CHAT_BODY, False),
        ({"model": "m", "input": "hi", "previous_response_id": "resp_1"}, True),
        ({"model": "m", "input": "hi", "conversation": "conv_1"}, True),
        ({"model": "m", "input": [{"type": "input_file", "file_id": "file-1"}]}, True),
        ({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}, True),
        ({"model": "m", "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, True),
        (
            {"model": "m", "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}]},
            True,
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}}]}]},
            False,
        ),
    ],
)  # fmt: skip
def test_input_the_body_does_not_carry_is_recognised(body: dict[str, Any], unbounded: bool) -> None:
    assert input_is_unbounded(orjson.dumps(body)) is unbounded
    assert input_is_unbounded(json.dumps(body).encode()) is unbounded


# --------------------------------------------------------------------------- field types
#
# Every field the proxy acts on, each with a value of every other JSON type (and the
# out-of-range integers): the table the server tests (test_request_fields.py) send too.

ABSENT = object()  # the field left out of the body

NOT_STRING: list[Any] = [5, 1.5, True, ["m"], {"id": "m"}]
NOT_ARRAY: list[Any] = ["hi", 5, True, {"role": "user", "content": "hi"}]
NOT_STRING_OR_ARRAY: list[Any] = [5, 1.5, True, {"text": "hi"}]
NOT_BOOLEAN: list[Any] = ["true", "yes", "false", 1, 0, 1.0, {}, []]
NOT_OBJECT: list[Any] = ["true", '{"include_usage": true}', 1, True, [{"include_usage": True}]]
# 1e20 is also what orjson makes of an integer past 64 bits.
NOT_COUNT: list[Any] = ["100", "abc", 100.0, 1.5, 1e20, True, {}, []]
BELOW_ONE = [0, -1]
MISSING: list[Any] = [None, ABSENT, ""]  # "" only for the model, a blank name

FIELDS: dict[str, list[tuple[str, list[Any]]]] = {
    "chat": [
        ("model", NOT_STRING + MISSING),
        ("messages", NOT_ARRAY + MISSING[:2]),
        ("stream", NOT_BOOLEAN),
        ("stream_options", NOT_OBJECT),
        ("stream_options.include_usage", NOT_BOOLEAN),
        ("max_tokens", NOT_COUNT + BELOW_ONE),
        ("max_completion_tokens", NOT_COUNT + BELOW_ONE),
        ("n", NOT_COUNT + BELOW_ONE + [129]),
    ],
    "responses": [
        ("model", NOT_STRING + MISSING),
        ("input", NOT_STRING_OR_ARRAY + MISSING[:2]),
        ("stream", NOT_BOOLEAN),
        ("max_output_tokens", NOT_COUNT + BELOW_ONE),
    ],
    "embeddings": [
        ("model", NOT_STRING + MISSING),
        ("input", NOT_STRING_OR_ARRAY + MISSING[:2]),
        ("stream", [*NOT_BOOLEAN, True]),
    ],
    "messages": [
        ("model", NOT_STRING + MISSING),
        ("messages", NOT_ARRAY + MISSING[:2]),
        ("stream", NOT_BOOLEAN),
        ("max_tokens", NOT_COUNT + BELOW_ONE + MISSING[:2]),
    ],
    "count_tokens": [
        ("model", NOT_STRING + MISSING),
        ("messages", NOT_ARRAY + MISSING[:2]),
    ],
}
ANTHROPIC_ENDPOINTS = frozenset({"messages", "count_tokens"})


def value_id(value: Any) -> str:
    return "absent" if value is ABSENT else orjson.dumps(value).decode()


WRONG_FIELD_CASES = [
    pytest.param(endpoint, field, value, id=f"{endpoint}-{field}-{value_id(value)}")
    for endpoint, fields in FIELDS.items()
    for field, values in fields
    for value in values
]


def with_field(body: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    """``body`` with ``field`` (``a.b`` for a nested one) set to ``value``, or left out."""
    name, _, nested = field.partition(".")
    if nested:
        # A nested field is read when its parent is (stream options: when streaming).
        return {**body, "stream": True, name: with_field({}, nested, value)}
    changed = {k: v for k, v in body.items() if k != name}
    if value is not ABSENT:
        changed[name] = value
    return changed


def assert_refusal_names_the_field(
    refusal: RequestInvalid, endpoint: str, field: str, value: Any
) -> None:
    """The message in the format's own words, starting from the field's name."""
    assert (refusal.status, refusal.code, refusal.param) == (400, "invalid_request", field)
    message = refusal.message
    if endpoint in ANTHROPIC_ENDPOINTS:
        assert message.startswith(f"{field}: "), message
    elif value in (None, ABSENT, ""):
        assert message == f"Missing required parameter: '{field}'."
    elif field == "stream" and value is True:
        assert message == "Invalid 'stream': embeddings cannot be streamed."
    else:
        assert message.startswith((f"Invalid type for '{field}': ", f"Invalid '{field}': "))


PARSE_BODIES: dict[str, dict[str, Any]] = {
    "chat": CHAT_BODY,
    "responses": {"model": "m", "input": "hi"},
    "embeddings": {"model": "m", "input": "hi"},
    "messages": {"model": "m", "max_tokens": 10, "messages": CHAT_BODY["messages"]},
    "count_tokens": {"model": "m", "messages": CHAT_BODY["messages"]},
}


def parse(endpoint: str, body: dict[str, Any]) -> Any:
    parsers = {
        "chat": CHAT.parse,
        "responses": RESPONSES.parse,
        "embeddings": EMBEDDINGS.parse,
        "messages": MESSAGES.parse,
        "count_tokens": parse_count_tokens,
    }
    return parsers[endpoint](body)


@pytest.mark.parametrize(("endpoint", "field", "value"), WRONG_FIELD_CASES)
def test_a_field_of_the_wrong_type_is_refused_naming_it(
    endpoint: str, field: str, value: Any
) -> None:
    with pytest.raises(RequestInvalid) as refused:
        parse(endpoint, with_field(PARSE_BODIES[endpoint], field, value))

    assert_refusal_names_the_field(refused.value, endpoint, field, value)


def test_the_bodies_the_refusals_start_from_are_taken() -> None:
    """Each refusal above is the changed field's doing."""
    for endpoint, body in PARSE_BODIES.items():
        parse(endpoint, body)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("true", "Invalid type for 'stream': expected a boolean, but got a string instead."),
        (1, "Invalid type for 'stream': expected a boolean, but got an integer instead."),
        (1.0, "Invalid type for 'stream': expected a boolean, but got a decimal number instead."),
        ({}, "Invalid type for 'stream': expected a boolean, but got an object instead."),
        ([], "Invalid type for 'stream': expected a boolean, but got an array instead."),
    ],
)
def test_openai_endpoints_word_a_wrong_type_as_openai_does(value: Any, message: str) -> None:
    with pytest.raises(RequestInvalid, match=re.escape(message)):
        CHAT.parse({**CHAT_BODY, "stream": value})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("stream", "true", "stream: Input should be a valid boolean"),
        ("max_tokens", "100", "max_tokens: Input should be a valid integer"),
        ("max_tokens", 0, "max_tokens: Input should be greater than or equal to 1"),
        ("max_tokens", None, "max_tokens: Field required"),
        ("messages", {}, "messages: Input should be a valid list"),
        ("model", 5, "model: Input should be a valid string"),
    ],
)
def test_anthropic_endpoints_word_a_refusal_as_anthropic_does(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(RequestInvalid) as refused:
        MESSAGES.parse({**PARSE_BODIES["messages"], field: value})
    assert refused.value.message == message


def test_chat_range_refusals_say_the_bound() -> None:
    with pytest.raises(RequestInvalid) as refused:
        CHAT.parse({**CHAT_BODY, "n": 129})
    assert refused.value.message == (
        "Invalid 'n': integer above maximum value. Expected a value <= 128, but got 129 instead."
    )
    with pytest.raises(RequestInvalid) as refused:
        CHAT.parse({**CHAT_BODY, "max_tokens": 0})
    assert refused.value.message == (
        "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, "
        "but got 0 instead."
    )


def test_each_chat_output_limit_is_checked_even_when_the_other_bounds_the_hold() -> None:
    """A float ``max_tokens`` beside a valid ``max_completion_tokens`` is no limit the proxy
    would lower, and an upstream that honours ``max_tokens`` could read it as 500."""
    for wrong in (500.0, "500", True):
        with pytest.raises(RequestInvalid) as refused:
            CHAT.parse({**CHAT_BODY, "max_completion_tokens": 10, "max_tokens": wrong})
        assert refused.value.param == "max_tokens"


def test_null_is_read_as_absent_where_the_field_is_optional() -> None:
    nulls = {"stream": None, "max_tokens": None, "max_completion_tokens": None, "n": None}
    chat = CHAT.parse({**CHAT_BODY, **nulls, "stream_options": None})
    assert (chat.is_stream, chat.max_output_tokens, chat.choices) == (False, None, 1)
    chat = CHAT.parse({**CHAT_BODY, "stream": True, "stream_options": {"include_usage": None}})
    assert chat.is_stream is True
    responses = RESPONSES.parse({**PARSE_BODIES["responses"], "stream": None})
    assert (responses.is_stream, responses.max_output_tokens) == (False, None)
    responses = RESPONSES.parse({**PARSE_BODIES["responses"], "max_output_tokens": None})
    assert responses.max_output_tokens is None
    assert EMBEDDINGS.parse({**PARSE_BODIES["embeddings"], "stream": None}).is_stream is False
    assert MESSAGES.parse({**PARSE_BODIES["messages"], "stream": None}).is_stream is False


def test_the_values_the_proxy_acts_on_are_read() -> None:
    chat = CHAT.parse(
        {**CHAT_BODY, "stream": True, "n": 3, "max_tokens": 50, "max_completion_tokens": 20}
    )
    assert (chat.model, chat.is_stream, chat.choices, chat.max_output_tokens) == ("m", True, 3, 20)
    assert CHAT.parse({**CHAT_BODY, "max_tokens": 50}).max_output_tokens == 50
    assert CHAT.parse({**CHAT_BODY, "stream": False}).is_stream is False
    responses = RESPONSES.parse({"model": "m", "input": [], "max_output_tokens": 16})
    assert responses.max_output_tokens == 16
    messages = MESSAGES.parse({**PARSE_BODIES["messages"], "stream": True})
    assert (messages.is_stream, messages.max_output_tokens) == (True, 10)
    assert parse_count_tokens(PARSE_BODIES["count_tokens"]) == "m"


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b'{"model": "m", "messages": [', "invalid_json", "The request body is not valid JSON."),
        (b"", "invalid_json", "The request body is not valid JSON."),
        (b'["m"]', "invalid_request", "The request body must be a JSON object."),
        (b'"m"', "invalid_request", "The request body must be a JSON object."),
        (b"null", "invalid_request", "The request body must be a JSON object."),
    ],
)
def test_a_body_that_is_no_json_object_is_refused(body: bytes, code: str, message: str) -> None:
    with pytest.raises(RequestInvalid) as refused:
        request_object(body)
    assert (refused.value.status, refused.value.code, refused.value.message) == (400, code, message)
    assert refused.value.param is None


def test_the_error_bodies_carry_the_field_in_each_formats_way() -> None:
    assert orjson.loads(openai.error_body(400, "Bad.", "invalid_request", "stream")) == {
        "error": {
            "message": "Bad.",
            "type": "invalid_request_error",
            "param": "stream",
            "code": "invalid_request",
        }
    }
    assert orjson.loads(anthropic.error_body(400, "stream: Bad", "invalid_request", "stream")) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "stream: Bad"},
    }
