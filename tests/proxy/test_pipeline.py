"""The metered pipeline's bookkeeping through the real server: what a request refused after
admission began leaves behind (its trace, its rate-limit slot), and what an in-flight
request object never shows."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from proxy.endpoints import CHAT
from proxy.exchange import Exchange, Outcome
from tests.proxy.conftest import (
    World,
    assert_books_clean,
    assert_nothing_charged,
    now_utc,
    post,
    trace_for,
)

PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def test_a_stream_refused_after_parsing_is_traced_with_its_model_and_tag_as_not_streamed(
    world: World,
) -> None:
    issued = world.key(models=["claude-fake"], default_tag="acme")
    body = {"model": "gpt-fake", "messages": PROMPT, "stream": True}

    response = post(
        world, "/v1/chat/completions", body, issued.secret, **{"x-tollgate-tag": "batch-7"}
    )

    assert response.status_code == 403, response.text
    trace = trace_for(response.headers["x-request-id"])
    assert (trace.status, trace.status_code, trace.error_class) == (
        "refused",
        403,
        "model_not_allowed",
    )
    # What the client asked for and how it tagged it; never streamed, never routed.
    assert (trace.model, trace.tag, trace.is_stream) == ("gpt-fake", "batch-7", False)
    assert (trace.upstream_id, trace.price_id, trace.ttft_ms) == (None, None, None)
    assert (trace.input_tokens, trace.output_tokens, trace.cost_nanos) == (0, 0, 0)
    assert world.fake.records == []
    assert_nothing_charged(issued)
    assert_books_clean()


def test_a_request_refused_by_its_reservation_hands_its_rate_limit_slot_back(
    world: World,
) -> None:
    """The limiter admits a request before its reservation is refused (402): the slot it
    took must be handed back at once, or a key allowed one request at a time would be
    locked out until the slot expired."""
    # $0.01 of client budget: the route's whole output limit does not fit, 20 tokens do.
    issued = world.key(client_budget_nanos=10_000_000, your_cost_nanos=6_000_000, max_concurrency=1)
    chat = {"model": "gpt-fake", "messages": PROMPT}

    refused = post(world, "/v1/chat/completions", chat, issued.secret)
    served = post(world, "/v1/chat/completions", {**chat, "max_tokens": 20}, issued.secret)

    assert refused.status_code == 402, refused.text
    assert served.status_code == 200, served.text
    assert trace_for(refused.headers["x-request-id"]).status == "refused"
    assert trace_for(served.headers["x-request-id"]).status == "ok"
    assert_books_clean()


def test_a_request_in_flight_never_shows_its_key_or_body_in_a_repr() -> None:
    secret = "tg-secret-never-shown"
    key: Any = SimpleNamespace(id=1, tenant_id=1, default_tag="")
    unused: Any = None  # the runtime, send, receive and hold: not needed to show it
    exchange = Exchange(
        unused,
        unused,
        unused,
        CHAT,
        {"authorization": f"Bearer {secret}"},
        "req_1",
        0.0,
        now_utc(),
        key,
        b'{"messages": "private words"}',
    )

    # Admitted and answered: every field set, as when an error is logged mid-request.
    exchange.parsed = CHAT.parse({"model": "gpt-fake", "messages": PROMPT})
    exchange.routes = []
    exchange.hold = unused
    exchange.response_headers = []
    exchange.outcome = Outcome()

    shown = repr(exchange) + str(exchange)

    assert secret not in shown
    assert "private words" not in shown
