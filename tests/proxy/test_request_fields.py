"""Fields the proxy acts on, of the wrong type, through the real server and the official SDKs.

Each is refused with 400 in its format's own error shape, naming the field, before anything
is held or sent: the fake upstream sees nothing, no reservation is made, the ledger does not
move. ``null`` where the field is optional is taken as absent, and the request is served.
The table of fields and values is ``tests.proxy.test_endpoints.FIELDS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest

from billing.models import LedgerEntry, Reservation
from tests.proxy.conftest import (
    CLAUDE_PRICE,
    EMBED_PRICE,
    GPT_PRICE,
    World,
    assert_charged,
    assert_nothing_charged,
    charge_seen,
    post,
    trace_for,
)
from tests.proxy.test_endpoints import ABSENT, ANTHROPIC_ENDPOINTS, WRONG_FIELD_CASES, with_field

pytestmark = pytest.mark.usefixtures("books_balance")

# Any: the SDKs type their parameters; these tests send what the types would not allow.
PROMPT: Any = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
ANTHROPIC_VERSION = {"anthropic-version": "2023-06-01"}

# Each endpoint's path and a body it serves (the test changes one field of it).
ENDPOINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "gpt-fake", "messages": PROMPT}),
    "responses": ("/v1/responses", {"model": "gpt-fake", "input": "Name a colour."}),
    "embeddings": ("/v1/embeddings", {"model": "embed-fake", "input": "Name a colour."}),
    "messages": ("/v1/messages", {"model": "claude-fake", "max_tokens": 50, "messages": PROMPT}),
    "count_tokens": ("/v1/messages/count_tokens", {"model": "claude-fake", "messages": PROMPT}),
}


def sdk_call(world: World, secret: str, endpoint: str) -> Callable[[dict[str, Any]], Any]:
    """The SDK method of ``endpoint``, called with its body's fields and ``extra_body``."""
    _, body = ENDPOINTS[endpoint]
    if endpoint in ANTHROPIC_ENDPOINTS:
        claude = anthropic.Anthropic(base_url=world.url, api_key=secret, max_retries=0, timeout=20)
        methods: dict[str, Callable[..., Any]] = {
            "messages": claude.messages.create,
            "count_tokens": claude.messages.count_tokens,
        }
    else:
        client = openai.OpenAI(
            base_url=f"{world.url}/v1", api_key=secret, max_retries=0, timeout=20
        )
        methods = {
            "chat": client.chat.completions.create,
            "responses": client.responses.create,
            "embeddings": client.embeddings.create,
        }
    method = methods[endpoint]
    return lambda extra: method(**body, extra_body=extra)


def sdk_extra_body(field: str, value: Any) -> dict[str, Any]:
    """What ``extra_body`` must carry for the SDK to send the changed field (it is merged
    over the SDK's own fields, so a null there sends null)."""
    name, _, nested = field.partition(".")
    if nested:
        return {"stream": True, name: {nested: value}}
    return {name: value}


def assert_refused_in_the_formats_shape(
    endpoint: str, field: str, status: int, body: dict[str, Any]
) -> str:
    assert status == 400, body
    if endpoint in ANTHROPIC_ENDPOINTS:
        assert set(body) == {"type", "error"} and body["type"] == "error", body
        error = body["error"]
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith(f"{field}: ")
    else:
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, body
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error",
            "invalid_request",
            field,
        )
        assert f"'{field}'" in error["message"]
    message: str = error["message"]
    return message


@pytest.mark.parametrize(("endpoint", "field", "value"), WRONG_FIELD_CASES)
def test_a_field_of_the_wrong_type_is_refused_before_anything_is_held(
    world: World, endpoint: str, field: str, value: Any
) -> None:
    issued = world.key()
    entries = LedgerEntry.objects.count()
    path, body = ENDPOINTS[endpoint]

    response = post(world, path, with_field(body, field, value), issued.secret, **ANTHROPIC_VERSION)

    message = assert_refused_in_the_formats_shape(
        endpoint, field, response.status_code, response.json()
    )
    # The official SDK sends the same field through extra_body and raises on the answer.
    if value is ABSENT:
        pass  # extra_body can add or replace a field, not leave one out
    elif endpoint in ANTHROPIC_ENDPOINTS:
        with pytest.raises(anthropic.BadRequestError) as claude_error:
            sdk_call(world, issued.secret, endpoint)(sdk_extra_body(field, value))
        assert claude_error.value.body == response.json()
    else:
        with pytest.raises(openai.BadRequestError) as openai_error:
            sdk_call(world, issued.secret, endpoint)(sdk_extra_body(field, value))
        error = openai_error.value
        assert (error.param, error.code, error.type) == (
            field,
            "invalid_request",
            "invalid_request_error",
        )
        assert isinstance(error.body, dict) and error.body["message"] == message
    # Nothing was sent, held or charged.
    assert world.fake.records == []
    assert not Reservation.objects.exists()
    assert LedgerEntry.objects.count() == entries
    assert_nothing_charged(issued)
    if endpoint != "count_tokens":  # the free endpoint writes no trace
        trace = trace_for(response.headers["x-request-id"])
        assert (trace.status, trace.status_code, trace.cost_nanos) == ("refused", 400, 0)


def test_an_integer_past_64_bits_is_no_output_limit(world: World) -> None:
    """JSON has no integer bound; the proxy's parser reads this one as a decimal number."""
    issued = world.key()
    body = b'{"model": "gpt-fake", "messages": [], "max_tokens": 100000000000000000000}'

    response = post(world, "/v1/chat/completions", body, issued.secret)

    assert_refused_in_the_formats_shape("chat", "max_tokens", response.status_code, response.json())
    assert world.fake.records == []
    assert not Reservation.objects.exists()
    assert_nothing_charged(issued)


# ---------------------------------------------------------------------------- null is absent


def test_chat_takes_null_for_each_optional_field_the_proxy_reads(world: World) -> None:
    issued = world.key()
    client = openai.OpenAI(
        base_url=f"{world.url}/v1", api_key=issued.secret, max_retries=0, timeout=20
    )

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-fake",
        messages=PROMPT,
        stream=None,
        stream_options=None,
        max_tokens=None,
        max_completion_tokens=None,
        n=None,
    )

    assert raw.parse().choices[0].message.content
    seen = world.fake.last("gpt-fake")
    assert seen.body["stream"] is None and seen.body["n"] is None
    expected = charge_seen(seen, GPT_PRICE)
    request_id = raw.headers["x-request-id"]
    assert_charged(issued, request_id, expected, endpoint="chat.completions", is_stream=False)


NULL_USAGE: Any = {"include_usage": None}


def test_a_stream_with_a_null_include_usage_is_served_and_charged(world: World) -> None:
    issued = world.key()
    client = openai.OpenAI(
        base_url=f"{world.url}/v1", api_key=issued.secret, max_retries=0, timeout=20
    )

    with client.chat.completions.with_streaming_response.create(
        model="gpt-fake",
        messages=PROMPT,
        stream=True,
        stream_options=NULL_USAGE,
    ) as response:
        chunks = list(response.parse())
        request_id = response.headers["x-request-id"]

    # The client did not ask for the usage chunk (null is not true): it stays hidden.
    assert chunks and all(chunk.usage is None for chunk in chunks)
    expected = charge_seen(world.fake.last("gpt-fake"), GPT_PRICE)
    assert_charged(issued, request_id, expected, endpoint="chat.completions", is_stream=True)


def test_responses_take_null_for_the_stream_and_the_output_limit(world: World) -> None:
    issued = world.key()
    client = openai.OpenAI(
        base_url=f"{world.url}/v1", api_key=issued.secret, max_retries=0, timeout=20
    )

    raw = client.responses.with_raw_response.create(
        model="gpt-fake", input="Name a colour.", max_output_tokens=None, stream=None
    )

    assert raw.parse().output_text
    expected = charge_seen(world.fake.last("gpt-fake"), GPT_PRICE)
    request_id = raw.headers["x-request-id"]
    assert_charged(issued, request_id, expected, endpoint="responses", is_stream=False)


def test_embeddings_take_a_null_stream(world: World) -> None:
    issued = world.key()
    client = openai.OpenAI(
        base_url=f"{world.url}/v1", api_key=issued.secret, max_retries=0, timeout=20
    )

    raw = client.embeddings.with_raw_response.create(
        model="embed-fake", input="Name a colour.", extra_body={"stream": None}
    )

    assert raw.parse().data
    seen = world.fake.last("embed-fake")
    assert seen.body["stream"] is None
    expected = charge_seen(seen, EMBED_PRICE)
    request_id = raw.headers["x-request-id"]
    assert_charged(issued, request_id, expected, endpoint="embeddings", is_stream=False)


def test_messages_take_a_null_stream(world: World) -> None:
    issued = world.key()
    claude = anthropic.Anthropic(
        base_url=world.url, api_key=issued.secret, max_retries=0, timeout=20
    )

    raw = claude.messages.with_raw_response.create(
        model="claude-fake",
        max_tokens=50,
        messages=PROMPT,
        extra_body={"stream": None},
    )

    assert raw.parse().content
    seen = world.fake.last("claude-fake")
    assert seen.body["stream"] is None
    expected = charge_seen(seen, CLAUDE_PRICE)
    request_id = raw.headers["x-request-id"]
    assert_charged(issued, request_id, expected, endpoint="messages", is_stream=False)
