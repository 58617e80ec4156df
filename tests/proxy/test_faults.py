"""Upstream and client faults through the real server: the right status, and nothing lost
or charged twice (every hold settled or released, the books balanced)."""

from __future__ import annotations

import sqlite3
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from anthropic.types import MessageParam
from django.conf import settings
from django.db import connection
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from billing.models import Reservation
from tests.proxy import upstream_fake
from tests.proxy.conftest import (
    BACKUP_PRICE,
    CLAUDE_PRICE,
    FAULT_PRICE,
    RATIO,
    Price,
    World,
    assert_books_clean,
    assert_charged,
    assert_nothing_charged,
    charge_seen,
    expected_charge,
    key_row,
    post,
    reservation_of,
    trace_for,
    wait_for,
)
from usage.models import Trace

STORY = "Tell me a long story about a lighthouse keeper and the sea."
PROMPT = [{"role": "user", "content": STORY}]
OPENAI_PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": STORY}]
ANTHROPIC_PROMPT: list[MessageParam] = [{"role": "user", "content": STORY}]
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
# How a content event starts, per wire format.
CONTENT_EVENTS = {
    "/v1/chat/completions": b'"delta":{"content"',
    "/v1/messages": b"event: content_block_delta",
}


def assert_released(
    world: World, issued: Any, response: httpx.Response, *, error_class: str
) -> None:
    """Refused by the upstream before any output: the hold released, nothing charged."""
    request_id = response.headers["x-request-id"]
    wait_for(lambda: reservation_of(request_id).status != Reservation.Status.HELD)
    assert reservation_of(request_id).status == Reservation.Status.RELEASED
    assert_nothing_charged(issued)
    trace = trace_for(request_id)
    assert (trace.status, trace.status_code) == ("upstream_error", response.status_code)
    assert trace.error_class == error_class
    assert (trace.cost_nanos, trace.client_nanos, trace.output_tokens) == (0, 0, 0)
    assert_books_clean()


# ---------------------------------------------------------------------------- before any output


def test_upstream_500_without_fallback_is_passed_on_and_charges_nothing(world: World) -> None:
    issued = world.key()

    response = post(
        world, "/v1/chat/completions", {"model": "fault-500", "messages": PROMPT}, issued.secret
    )

    assert response.status_code == 500
    assert response.json()["error"]["message"] == "The fake upstream broke (500)."
    assert len(world.fake.for_model("fault-500")) == 1  # not retried on the same route
    assert_released(world, issued, response, error_class="upstream_http_500")


def test_upstream_500_with_a_fallback_route_is_served_by_the_fallback(world: World) -> None:
    issued = world.key()
    client = openai.OpenAI(base_url=f"{world.url}/v1", api_key=issued.secret, max_retries=0)

    with client.chat.completions.with_streaming_response.create(
        model="gpt-500-fallback", messages=OPENAI_PROMPT, stream=True
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = [c for c in response.parse() if isinstance(c, ChatCompletionChunk)]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert text == "Hello from the fake upstream"
    assert [r.model for r in world.fake.records] == ["fault-500", "gpt-fake"]
    seen = world.fake.last("gpt-fake")
    expected = charge_seen(seen, BACKUP_PRICE)
    trace = assert_charged(
        issued, request_id, expected, endpoint="chat.completions", is_stream=True
    )
    assert trace.upstream_id == world.upstreams["fake-openai-backup"].pk


def test_upstream_timeout_is_a_504_and_charges_nothing(world: World) -> None:
    issued = world.key()

    response = post(
        world,
        "/v1/chat/completions",
        {"model": upstream_fake.FAULT_TIMEOUT, "messages": PROMPT},
        issued.secret,
    )

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    # The proxy hung up on the upstream rather than waiting for its late answer.
    seen = world.fake.last(upstream_fake.FAULT_TIMEOUT)
    world.fake.wait_until(lambda: seen.is_cancelled)
    assert_released(world, issued, response, error_class="upstream_timeout")


def test_upstream_timeout_with_a_fallback_route_is_served_by_the_fallback(world: World) -> None:
    issued = world.key()

    response = post(
        world,
        "/v1/chat/completions",
        {"model": "gpt-timeout-fallback", "messages": PROMPT},
        issued.secret,
    )

    assert response.status_code == 200, response.text
    seen = world.fake.last("gpt-fake")
    expected = charge_seen(seen, BACKUP_PRICE)
    assert_charged(
        issued,
        response.headers["x-request-id"],
        expected,
        endpoint="chat.completions",
        is_stream=False,
    )


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/chat/completions", {"model": "gpt-unreachable", "messages": PROMPT}, {}),
        (
            "/v1/messages",
            {"model": "claude-unreachable", "max_tokens": 50, "messages": PROMPT},
            ANTHROPIC_HEADERS,
        ),
    ],
    ids=["openai", "anthropic"],
)
def test_connection_refused_without_fallback_is_a_502_and_charges_nothing(
    world: World, path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    issued = world.key()

    response = post(world, path, body, issued.secret, **headers)

    assert response.status_code == 502
    if path == "/v1/messages":
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "api_error"
    else:
        assert response.json()["error"]["code"] == "upstream_connect_error"
    assert_released(world, issued, response, error_class="upstream_connect_error")


@pytest.mark.parametrize(
    ("path", "body", "headers", "price", "served_model"),
    [
        (
            "/v1/chat/completions",
            {"model": "gpt-unreachable-fallback", "messages": PROMPT},
            {},
            BACKUP_PRICE,
            "gpt-fake",
        ),
        (
            "/v1/messages",
            {"model": "claude-unreachable-fallback", "max_tokens": 50, "messages": PROMPT},
            ANTHROPIC_HEADERS,
            CLAUDE_PRICE,
            "claude-fake",
        ),
    ],
    ids=["openai", "anthropic"],
)
def test_connection_refused_with_a_fallback_route_is_served_by_the_fallback(
    world: World,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    price: Price,
    served_model: str,
) -> None:
    issued = world.key()

    response = post(world, path, body, issued.secret, **headers)

    assert response.status_code == 200, response.text
    seen = world.fake.last(served_model)
    expected = charge_seen(seen, price)
    endpoint = "messages" if path == "/v1/messages" else "chat.completions"
    trace = assert_charged(
        issued, response.headers["x-request-id"], expected, endpoint=endpoint, is_stream=False
    )
    assert trace.upstream_model == served_model


def test_malformed_upstream_json_is_a_502_and_charges_nothing(world: World) -> None:
    issued = world.key()

    response = post(
        world,
        "/v1/chat/completions",
        {"model": upstream_fake.FAULT_BADJSON, "messages": PROMPT},
        issued.secret,
    )

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_invalid_response"
    request_id = response.headers["x-request-id"]
    wait_for(lambda: reservation_of(request_id).status != Reservation.Status.HELD)
    assert reservation_of(request_id).status == Reservation.Status.RELEASED
    assert_nothing_charged(issued)
    trace = trace_for(request_id)
    assert (trace.status, trace.status_code, trace.cost_nanos) == ("upstream_error", 502, 0)
    assert trace.error_class.startswith("upstream_invalid")
    assert_books_clean()


@pytest.mark.parametrize(
    ("path", "model", "headers"),
    [
        ("/v1/chat/completions", upstream_fake.FAULT_400, {}),
        ("/v1/messages", "claude-400", ANTHROPIC_HEADERS),
    ],
    ids=["openai", "anthropic"],
)
def test_upstream_400_is_passed_through_with_its_body_and_charges_nothing(
    world: World, path: str, model: str, headers: dict[str, str]
) -> None:
    issued = world.key()
    body: dict[str, Any] = {"model": model, "messages": PROMPT, "max_tokens": 50}

    response = post(world, path, body, issued.secret, **headers)

    assert response.status_code == 400
    anthropic = path == "/v1/messages"
    assert response.content == upstream_fake._error_body(
        anthropic, "invalid_request_error", "Unsupported parameter: 'fake'."
    )
    assert_released(world, issued, response, error_class="upstream_http_400")


def test_upstream_refusing_our_credentials_is_a_502_that_never_quotes_the_upstream_key(
    world: World,
) -> None:
    issued = world.key()
    body: dict[str, Any] = {"model": upstream_fake.FAULT_401, "messages": PROMPT, "max_tokens": 50}

    response = post(world, "/v1/chat/completions", body, issued.secret)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth_error"
    assert upstream_fake.LEAKED_KEY_FRAGMENT not in response.text
    assert_released(world, issued, response, error_class="upstream_http_401")


def test_upstream_without_usage_is_charged_an_estimate_marked_as_such(world: World) -> None:
    issued = world.key()
    body = orjson.dumps({"model": upstream_fake.NO_USAGE, "messages": PROMPT})

    response = httpx.post(
        f"{world.url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {issued.secret}", "content-type": "application/json"},
    )

    assert response.status_code == 200
    trace = trace_for(response.headers["x-request-id"])
    assert trace.is_usage_estimated
    assert trace.input_tokens == len(body) // 4
    expected = expected_charge(
        FAULT_PRICE, input_tokens=trace.input_tokens, output_tokens=trace.output_tokens, ratio=RATIO
    )
    key = key_row(issued)
    assert (key.cost_spent_nanos, key.client_spent_nanos) == (
        expected.cost_nanos,
        expected.client_nanos,
    )
    assert (trace.cost_nanos, trace.client_nanos) == (expected.cost_nanos, expected.client_nanos)
    assert_books_clean()


# ---------------------------------------------------------------------------- after output started


def stream_raw(
    world: World, secret: str, path: str, body: bytes, *, stop_after: int | None = None
) -> tuple[str, bytes]:
    """POST a streaming request; read it all (or close after ``stop_after`` SSE events).
    Returns the request id and the bytes received."""
    headers = {
        "Authorization": f"Bearer {secret}",
        "content-type": "application/json",
        **ANTHROPIC_HEADERS,
    }
    received = b""
    with httpx.stream(
        "POST", f"{world.url}{path}", content=body, headers=headers, timeout=20
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        for chunk in response.iter_raw():
            received += chunk
            if stop_after is not None and received.count(b"\n\n") >= stop_after:
                break
    return request_id, received


@pytest.mark.parametrize(
    ("path", "model", "price"),
    [
        ("/v1/chat/completions", upstream_fake.FAULT_MIDSTREAM, FAULT_PRICE),
        ("/v1/messages", "claude-midstream", CLAUDE_PRICE),
    ],
    ids=["openai", "anthropic"],
)
def test_upstream_dying_mid_stream_is_charged_for_what_it_produced(
    world: World, path: str, model: str, price: Price
) -> None:
    issued = world.key()
    body = orjson.dumps({"model": model, "messages": PROMPT, "max_tokens": 100, "stream": True})

    request_id, received = stream_raw(world, issued.secret, path, body)

    seen = world.fake.last(upstream_fake.FAULT_MIDSTREAM)
    assert seen.chunks_sent == upstream_fake.MIDSTREAM_CHUNKS
    # The client got what was produced, then an error event in its format (no end marker).
    assert received.count(b"Hello") == 1
    assert b"[DONE]" not in received and b"message_stop" not in received
    last_event = received.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    if path == "/v1/messages":
        assert last_event.startswith(b"event: error\ndata: ")
        assert orjson.loads(last_event.split(b"data: ", 1)[1])["error"]["type"] == "api_error"
    else:
        assert orjson.loads(last_event.removeprefix(b"data: "))["error"]["type"] == "upstream_error"
    trace = trace_for(request_id)
    assert (trace.status, trace.status_code, trace.is_usage_estimated) == (
        "upstream_error",
        200,
        True,
    )
    assert trace.error_class.startswith("upstream_stream_")
    # Output: one token per content event that arrived. Input: what the upstream reported
    # at the start (Anthropic's message_start), else estimated from the body.
    assert trace.output_tokens == upstream_fake.MIDSTREAM_CHUNKS
    if path == "/v1/messages":
        prompt, cached = upstream_fake.prompt_usage(orjson.loads(body))
        assert (trace.input_tokens, trace.cached_input_tokens) == (prompt - cached, cached)
    else:
        assert (trace.input_tokens, trace.cached_input_tokens) == (len(body) // 4, 0)
    expected = expected_charge(
        price,
        input_tokens=trace.input_tokens,
        cached_tokens=trace.cached_input_tokens,
        output_tokens=trace.output_tokens,
        ratio=RATIO,
    )
    assert expected.cost_nanos > 0
    key = key_row(issued)
    assert (key.cost_spent_nanos, key.client_spent_nanos) == (
        expected.cost_nanos,
        expected.client_nanos,
    )
    assert (key.cost_reserved_nanos, key.client_reserved_nanos) == (0, 0)
    assert (trace.cost_nanos, trace.client_nanos) == (expected.cost_nanos, expected.client_nanos)
    assert reservation_of(request_id).status == Reservation.Status.SETTLED
    assert_books_clean()


def test_sdks_raise_when_the_upstream_dies_mid_stream(world: World) -> None:
    """A truncated answer must not pass for a complete one."""
    issued = world.key()
    openai_client = openai.OpenAI(base_url=f"{world.url}/v1", api_key=issued.secret, max_retries=0)
    anthropic_client = anthropic.Anthropic(base_url=world.url, api_key=issued.secret, max_retries=0)
    got: list[str] = []

    with pytest.raises(openai.APIError, match="incomplete"):
        for chunk in openai_client.chat.completions.create(
            model=upstream_fake.FAULT_MIDSTREAM, messages=OPENAI_PROMPT, stream=True
        ):
            got.extend(c.delta.content or "" for c in chunk.choices)
    with pytest.raises(anthropic.APIStatusError, match="incomplete"):
        with anthropic_client.messages.stream(
            model="claude-midstream", max_tokens=50, messages=ANTHROPIC_PROMPT
        ) as stream:
            for text in stream.text_stream:
                got.append(text)

    assert "".join(got) == "Hello from the" * 2
    assert_books_clean()


@pytest.mark.parametrize(
    ("path", "model", "price"),
    [
        ("/v1/chat/completions", "slow-stream", FAULT_PRICE),
        ("/v1/messages", "claude-slow", FAULT_PRICE),
    ],
    ids=["openai", "anthropic"],
)
def test_client_disconnect_mid_stream_cancels_the_upstream_and_charges_what_was_produced(
    world: World, path: str, model: str, price: Price
) -> None:
    issued = world.key()
    body = orjson.dumps({"model": model, "messages": PROMPT, "max_tokens": 1000, "stream": True})

    request_id, received = stream_raw(world, issued.secret, path, body, stop_after=6)

    seen = world.fake.last(upstream_fake.SLOW_STREAM)
    # The proxy stopped the upstream call: the fake saw its answer cancelled part-way.
    world.fake.wait_until(lambda: seen.is_cancelled, timeout=5)
    assert 0 < seen.chunks_sent < upstream_fake.SLOW_CHUNKS
    trace = trace_for(request_id)
    assert (trace.status, trace.is_usage_estimated) == ("client_disconnected", True)
    # Charged for the content that reached the proxy: at least what the client read,
    # at most what the upstream sent before it was cut off.
    got = received.count(CONTENT_EVENTS[path])
    assert got <= trace.output_tokens <= seen.chunks_sent
    expected = expected_charge(
        price,
        input_tokens=trace.input_tokens,
        cached_tokens=trace.cached_input_tokens,
        output_tokens=trace.output_tokens,
        ratio=RATIO,
    )
    key = key_row(issued)
    assert (key.cost_spent_nanos, key.client_spent_nanos) == (
        expected.cost_nanos,
        expected.client_nanos,
    )
    assert (trace.cost_nanos, trace.client_nanos) == (expected.cost_nanos, expected.client_nanos)
    # Not the whole hold: the hold covered 1,000 output tokens.
    held = reservation_of(request_id)
    assert held.status == Reservation.Status.SETTLED
    assert held.charged_cost_nanos == expected.cost_nanos < held.cost_nanos
    assert (key.cost_reserved_nanos, key.client_reserved_nanos) == (0, 0)
    assert_books_clean()


def test_client_hanging_up_on_a_non_streamed_request_pays_for_the_finished_answer(
    world: World,
) -> None:
    """Only streams are watched for a hang-up: a non-streamed answer the upstream finished
    (and billed the operator for) is charged as reported, and the trace says so."""
    issued = world.key()
    body = {"model": "slow-stream", "messages": PROMPT}
    headers = {"Authorization": f"Bearer {issued.secret}"}

    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{world.url}/v1/chat/completions", json=body, headers=headers, timeout=0.3)

    seen = world.fake.last("slow-stream")
    world.fake.wait_until(lambda: seen.is_finished, timeout=5)
    expected = charge_seen(seen, FAULT_PRICE)
    trace = wait_for(lambda: Trace.objects.filter(client_key=issued.key).first())
    assert_charged(issued, trace.request_id, expected, endpoint="chat.completions", is_stream=False)


@pytest.mark.skipif(settings.IS_POSTGRES, reason="locks the SQLite file to make the database fail")
def test_database_failing_during_admission_does_not_leak_the_concurrency_slot(world: World) -> None:
    """A hold that cannot be written (the database refuses) fails the request with a 503
    in the endpoint's shape, and hands back the rate-limit slot it took: at
    max_concurrency=1 a leaked slot would lock the key out until it expires (15 minutes)."""
    issued = world.key(max_concurrency=1)
    body = {"model": "gpt-fake", "messages": PROMPT}
    blocker = sqlite3.connect(connection.settings_dict["NAME"], timeout=1)
    try:
        # Another writer holds the database for longer than the server's 5 s busy timeout.
        blocker.execute("BEGIN EXCLUSIVE")
        failed = post(world, "/v1/chat/completions", body, issued.secret)
    finally:
        blocker.rollback()
        blocker.close()

    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "service_unavailable"
    assert world.fake.records == []
    served = post(world, "/v1/chat/completions", body, issued.secret)
    assert served.status_code == 200, served.text
    assert_books_clean()
