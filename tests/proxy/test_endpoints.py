"""How each endpoint rewrites a request for one route: model name, output bounded by the hold."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from proxy.endpoints import CHAT, CHAT_LIMITS, EMBEDDINGS, MESSAGES, RESPONSES, Endpoint
from proxy.upstreams.base import UpstreamTarget
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
    # The proxy bounds each route by the client's limit and the route's (proxy.views).
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
