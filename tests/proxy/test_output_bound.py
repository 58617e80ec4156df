"""Output the hold does not cover: the upstream is told the bound in the field it honours.

A request is held for its output limit; settlement charges the reported usage clamped to
the hold. An upstream that ignores the limit it was sent (an OpenAI-compatible server that
only knows ``max_tokens``, sent ``max_completion_tokens``) produces up to its own default,
and the operator pays for output nobody is charged for. The fake plays such a server
(``upstream_fake.MAX_TOKENS_ONLY``). Prices are all output, so that no input slack in the
hold can hide an overrun.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.proxy import upstream_fake
from tests.proxy.conftest import (
    GPT_PRICE,
    RATIO,
    Price,
    World,
    assert_charged,
    expected_charge,
    post,
    reservation_of,
)

pytestmark = pytest.mark.usefixtures("books_balance")

OUTPUT_ONLY = Price(input=0, output=GPT_PRICE.output, cached=0)
ROUTE_MAX_OUTPUT = 3
PROMPT = [{"role": "user", "content": "Say hello."}]


@pytest.mark.parametrize(
    ("limits", "bound"),
    [
        ({"max_completion_tokens": 1}, 1),
        ({"max_tokens": 2}, 2),
        ({"max_completion_tokens": 2, "max_tokens": 4}, 2),
        ({"max_completion_tokens": 4, "max_tokens": 2}, 2),
        ({"max_completion_tokens": 50}, ROUTE_MAX_OUTPUT),
        ({}, ROUTE_MAX_OUTPUT),
    ],
    ids=repr,
)
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_server_that_only_honours_max_tokens_is_told_the_bound_there(
    world: World, limits: dict[str, int], bound: int, stream: bool
) -> None:
    """Whatever limit fields the client sent, the server produces no more than the hold
    covers, and the charge is exactly what it reported, never clamped."""
    world.route(
        "gpt-max-tokens-only",
        "fake-openai",
        OUTPUT_ONLY,
        max_output_tokens=ROUTE_MAX_OUTPUT,
        upstream_model=upstream_fake.MAX_TOKENS_ONLY,
    )
    issued = world.key()
    body: dict[str, Any] = {"model": "gpt-max-tokens-only", "messages": PROMPT, **limits}
    if stream:
        body["stream"] = True

    response = post(world, "/v1/chat/completions", body, issued.secret)

    assert response.status_code == 200
    seen = world.fake.last(upstream_fake.MAX_TOKENS_ONLY)
    assert seen.body["max_tokens"] == bound
    assert "max_completion_tokens" not in seen.body
    assert seen.reported.output_tokens == bound
    request_id = response.headers["x-request-id"]
    expected = expected_charge(OUTPUT_ONLY, input_tokens=0, output_tokens=bound, ratio=RATIO)
    assert_charged(issued, request_id, expected, endpoint="chat.completions", is_stream=stream)
    held = reservation_of(request_id)
    assert (held.cost_nanos, held.client_nanos) == (expected.cost_nanos, expected.client_nanos)
