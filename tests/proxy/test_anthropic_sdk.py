"""The Anthropic wire format through the real server, with the official ``anthropic`` SDK."""

from __future__ import annotations

from collections.abc import Sequence

import anthropic
import httpx
import pytest
from anthropic.types import (
    MessageParam,
    RawContentBlockDeltaEvent,
    RawMessageStreamEvent,
    TextBlock,
    TextDelta,
)

from tests.proxy.conftest import (
    CLAUDE_PRICE,
    UPSTREAM_SECRET,
    Expected,
    World,
    assert_books_clean,
    assert_charged,
    assert_nothing_charged,
    charge_seen,
    key_row,
    trace_for,
)
from tests.proxy.upstream_fake import Record

MESSAGES: list[MessageParam] = [
    {"role": "user", "content": "Write one short sentence about lighthouses, please."}
]
SYSTEM = "You are terse."


def text_of(content: Sequence[object]) -> str:
    blocks = [b for b in content if isinstance(b, TextBlock)]
    assert len(blocks) == len(content)
    return "".join(b.text for b in blocks)


def sdk(world: World, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=world.url, api_key=secret, max_retries=0, timeout=20)


def claude_charge(seen: Record) -> Expected:
    return charge_seen(seen, CLAUDE_PRICE)


def test_message_is_charged_usage_times_posted_price(world: World) -> None:
    issued = world.key()

    raw = sdk(world, issued.secret).messages.with_raw_response.create(
        model="claude-fake", max_tokens=100, system=SYSTEM, messages=MESSAGES
    )
    message = raw.parse()

    assert text_of(message.content) == "Hello from the fake upstream"
    seen = world.fake.last("claude-fake")
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == UPSTREAM_SECRET
    assert seen.headers["anthropic-version"]
    assert seen.reported.cached_tokens > 0
    assert message.usage.cache_read_input_tokens == seen.reported.cached_tokens
    expected = claude_charge(seen)
    request_id = raw.headers["x-request-id"]
    assert_charged(issued, request_id, expected, endpoint="messages", is_stream=False)
    trace = trace_for(request_id)
    assert (trace.input_tokens, trace.cached_input_tokens, trace.output_tokens) == (
        seen.reported.uncached_tokens,
        seen.reported.cached_tokens,
        seen.reported.output_tokens,
    )
    assert trace.upstream_id == world.upstreams["fake-anthropic"].pk


def test_streamed_message_is_charged_from_message_start_and_message_delta(world: World) -> None:
    issued = world.key()

    with sdk(world, issued.secret).messages.with_streaming_response.create(
        model="claude-fake", max_tokens=100, system=SYSTEM, messages=MESSAGES, stream=True
    ) as response:
        request_id = response.headers["x-request-id"]
        events: list[RawMessageStreamEvent] = list(response.parse())

    assert [e.type for e in events][0] == "message_start"
    assert events[-1].type == "message_stop"
    text = "".join(
        e.delta.text
        for e in events
        if isinstance(e, RawContentBlockDeltaEvent) and isinstance(e.delta, TextDelta)
    )
    assert text == "Hello from the fake upstream"
    assert_charged(
        issued,
        request_id,
        claude_charge(world.fake.last("claude-fake")),
        endpoint="messages",
        is_stream=True,
    )
    assert trace_for(request_id).ttft_ms is not None


def test_stream_helper_gets_the_final_message(world: World) -> None:
    issued = world.key()

    with sdk(world, issued.secret).messages.stream(
        model="claude-fake", max_tokens=3, messages=MESSAGES
    ) as stream:
        final = stream.get_final_message()

    assert text_of(final.content) == "Hello from the"
    seen = world.fake.last("claude-fake")
    assert seen.reported.output_tokens == 3
    key = key_row(issued)
    assert key.client_spent_nanos == claude_charge(seen).client_nanos
    assert_books_clean()


def test_count_tokens_is_forwarded_and_free(world: World) -> None:
    issued = world.key()

    counted = sdk(world, issued.secret).messages.count_tokens(
        model="claude-fake", system=SYSTEM, messages=MESSAGES
    )

    seen = world.fake.last("claude-fake")
    assert seen.path == "/v1/messages/count_tokens"
    assert counted.input_tokens == seen.reported.prompt_tokens
    assert_nothing_charged(issued)
    assert_books_clean()


def test_models_list_in_anthropic_shape(world: World) -> None:
    issued = world.key(models=["claude-fake", "gpt-fake"])

    page = sdk(world, issued.secret).models.list()

    # Only the key's models that speak the Anthropic format.
    assert [m.id for m in page.data] == ["claude-fake"]
    assert page.data[0].type == "model"
    assert page.data[0].display_name == "claude-fake"
    assert_books_clean()


def test_models_list_in_anthropic_shape_names_no_upstream(world: World) -> None:
    """Anthropic's model objects have no owner field; nothing else in them may say where
    the traffic goes either."""
    issued = world.key()

    listed = httpx.get(
        f"{world.url}/v1/models",
        headers={"x-api-key": issued.secret, "anthropic-version": "2023-06-01"},
    )

    assert listed.status_code == 200
    models = listed.json()["data"]
    assert models and all(set(m) == {"type", "id", "display_name", "created_at"} for m in models)
    for upstream in world.upstreams.values():
        assert upstream.name not in listed.text
        assert upstream.base_url.split("//")[1].split("/")[0] not in listed.text
    assert_books_clean()


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
def test_unknown_key_gets_an_anthropic_error(world: World, header: str) -> None:
    value = "tg-not-a-real-key-000000000000000000000000000"
    headers = {
        header: value if header == "x-api-key" else f"Bearer {value}",
        "anthropic-version": "2023-06-01",
    }

    response = httpx.post(
        f"{world.url}/v1/messages",
        headers=headers,
        json={"model": "claude-fake", "max_tokens": 10, "messages": MESSAGES},
    )

    assert response.status_code == 401
    assert response.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Invalid API key."},
    }
    assert world.fake.records == []


def test_sdk_raises_authentication_error_on_a_revoked_key(world: World) -> None:
    from keys.services import key_update

    issued = world.key()
    client = sdk(world, issued.secret)
    client.messages.create(model="claude-fake", max_tokens=5, messages=MESSAGES)
    key_update(tenant=world.tenant, actor=None, key_id=issued.key.pk, changes={"status": "revoked"})

    with pytest.raises(anthropic.AuthenticationError) as refused:
        client.messages.create(model="claude-fake", max_tokens=5, messages=MESSAGES)

    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert len(world.fake.for_model("claude-fake")) == 1
    assert_books_clean()


def test_max_tokens_above_the_routes_output_limit_is_lowered_to_it(world: World) -> None:
    """Claude Code asks for 32,000; the hold covers the route's limit, so does the request."""
    world.route(
        "claude-capped",
        "fake-anthropic",
        CLAUDE_PRICE,
        max_output_tokens=3,
        upstream_model="claude-fake",
    )
    issued = world.key()

    raw = sdk(world, issued.secret).messages.with_raw_response.create(
        model="claude-capped", max_tokens=32_000, messages=MESSAGES
    )

    seen = world.fake.last("claude-fake")
    assert seen.body["max_tokens"] == 3
    assert raw.parse().usage.output_tokens == 3
    assert_charged(
        issued,
        raw.headers["x-request-id"],
        claude_charge(seen),
        endpoint="messages",
        is_stream=False,
    )
