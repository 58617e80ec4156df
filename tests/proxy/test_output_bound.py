"""Output the hold does not cover: the upstream is told the bound in the field it honours,
and a settlement that still finds more output than the hold is recorded as money lost.

A request is held for its output limit; settlement charges the reported usage clamped to
the hold. An upstream that ignores the limit it was sent (an OpenAI-compatible server that
only knows ``max_tokens``, sent ``max_completion_tokens``) produces up to its own default,
and the operator pays for output nobody is charged for. The fake plays such servers
(``upstream_fake.MAX_TOKENS_ONLY``, ``IGNORES_LIMITS``). Prices are all output, so that no
input slack in the hold can hide an overrun.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from tests.proxy import upstream_fake
from tests.proxy.conftest import (
    GPT_PRICE,
    RATIO,
    Price,
    World,
    assert_books_clean,
    assert_charged,
    expected_charge,
    key_row,
    post,
    reservation_of,
    trace_for,
    usd,
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
    trace = assert_charged(
        issued, request_id, expected, endpoint="chat.completions", is_stream=stream
    )
    assert (trace.is_over_hold, trace.overrun_cost_nanos) == (False, 0)
    held = reservation_of(request_id)
    assert (held.cost_nanos, held.client_nanos) == (expected.cost_nanos, expected.client_nanos)


def admin_client() -> Client:
    operator = get_user_model().objects.create_superuser(
        username="operator", email="operator@example.com", password=None
    )
    client = Client()
    client.force_login(operator)
    return client


def test_usage_over_the_hold_is_flagged_logged_and_counted_in_the_admin(world: World) -> None:
    """An upstream that ignores every limit (asked for 1 token, it produces 5): the client
    is charged the hold, no more; the trace carries the reported usage, the flag and the
    cost nobody was charged; the server logs it; the admin counts it, per upstream too."""
    world.route(
        "gpt-overrun", "fake-openai", OUTPUT_ONLY, upstream_model=upstream_fake.IGNORES_LIMITS
    )
    world.route(
        "claude-overrun",
        "fake-anthropic",
        OUTPUT_ONLY,
        upstream_model=upstream_fake.IGNORES_LIMITS,
    )
    world.route("gpt-honest", "fake-openai", OUTPUT_ONLY, upstream_model="gpt-fake")
    issued = world.key()
    held = expected_charge(OUTPUT_ONLY, input_tokens=0, output_tokens=1, ratio=RATIO)
    produced = upstream_fake.DEFAULT_CHUNKS
    reported = expected_charge(OUTPUT_ONLY, input_tokens=0, output_tokens=produced, ratio=RATIO)

    over: list[str] = []
    for path, body in (
        ("/v1/chat/completions", {"model": "gpt-overrun", "messages": PROMPT, "max_tokens": 1}),
        (
            "/v1/chat/completions",
            {"model": "gpt-overrun", "messages": PROMPT, "max_tokens": 1, "stream": True},
        ),
        ("/v1/messages", {"model": "claude-overrun", "messages": PROMPT, "max_tokens": 1}),
    ):
        response = post(world, path, body, issued.secret)
        assert response.status_code == 200
        over.append(response.headers["x-request-id"])
    assert [
        r.reported.output_tokens for r in world.fake.for_model(upstream_fake.IGNORES_LIMITS)
    ] == [produced] * 3
    honest = post(
        world,
        "/v1/chat/completions",
        {"model": "gpt-honest", "messages": PROMPT, "max_tokens": 1},
        issued.secret,
    )
    assert honest.status_code == 200

    # The client paid each hold, not a nano-dollar more.
    key = key_row(issued)
    assert (key.cost_spent_nanos, key.client_spent_nanos) == (
        4 * held.cost_nanos,
        4 * held.client_nanos,
    )
    for request_id in over:
        trace = trace_for(request_id)
        assert trace.output_tokens == produced
        assert (trace.cost_nanos, trace.client_nanos) == (held.cost_nanos, held.client_nanos)
        assert trace.is_over_hold is True
        assert trace.overrun_cost_nanos == reported.cost_nanos - held.cost_nanos > 0
        reservation = reservation_of(request_id)
        assert reservation.charged_cost_nanos == reservation.cost_nanos == held.cost_nanos
    clean = trace_for(honest.headers["x-request-id"])
    assert (clean.is_over_hold, clean.overrun_cost_nanos, clean.output_tokens) == (False, 0, 1)

    # The server is shared by the session's tests: read only these requests' lines.
    warned = [
        line for line in world.server.log().splitlines() if "reported usage over the hold" in line
    ]
    for request_id in over:
        assert len([line for line in warned if f"request {request_id}: upstream " in line]) == 1
    assert not [line for line in warned if honest.headers["x-request-id"] in line]

    admin = admin_client()
    changelist = reverse("admin:usage_trace_changelist")
    page = admin.get(changelist).content.decode()
    assert "Any upstream (3)" in page
    assert "fake-openai (2)" in page and "fake-anthropic (1)" in page
    flagged = admin.get(changelist, {"over_hold": "any"}).content.decode()
    assert all(request_id in flagged for request_id in over)
    assert honest.headers["x-request-id"] not in flagged
    anthropic_id = world.upstreams["fake-anthropic"].pk
    per_upstream = admin.get(changelist, {"over_hold": str(anthropic_id)}).content.decode()
    assert over[2] in per_upstream and over[0] not in per_upstream
    detail = admin.get(reverse("admin:usage_trace_change", args=[trace_for(over[0]).pk]))
    assert detail.status_code == 200
    uncharged = reported.cost_nanos - held.cost_nanos
    assert f"0.{uncharged:09d}".rstrip("0") in detail.content.decode()
    assert_books_clean()


def test_a_charge_clamped_to_the_hold_still_records_what_the_cache_saved(world: World) -> None:
    """The savings come from the reported usage, like the overrun: the upstream did serve
    those reads from its cache, whoever ends up paying for the output past the hold."""
    # Input cheap enough ($0.001 per 1M tokens, cached reads free) that the hold's input
    # slack cannot cover the output past it, yet a long prompt's cached reads save nanos.
    cheap_input = Price(input=1_000_000, output=GPT_PRICE.output, cached=0)
    world.route(
        "gpt-overrun-cached",
        "fake-openai",
        cheap_input,
        upstream_model=upstream_fake.IGNORES_LIMITS,
    )
    issued = world.key()
    prompt = [{"role": "user", "content": "x" * 12_000}]
    body = {"model": "gpt-overrun-cached", "messages": prompt, "max_tokens": 1}

    response = post(world, "/v1/chat/completions", body, issued.secret)

    assert response.status_code == 200
    seen = world.fake.last(upstream_fake.IGNORES_LIMITS)
    assert seen.reported.cached_tokens > 0
    reported = expected_charge(
        cheap_input,
        input_tokens=seen.reported.uncached_tokens,
        cached_tokens=seen.reported.cached_tokens,
        output_tokens=seen.reported.output_tokens,
        ratio=RATIO,
    )
    trace = trace_for(response.headers["x-request-id"])
    assert trace.is_over_hold is True
    assert trace.cost_nanos < reported.cost_nanos  # clamped
    assert (trace.cache_savings_nanos, trace.client_cache_savings_nanos) == (
        reported.cache_savings_nanos,
        reported.client_cache_savings_nanos,
    )
    assert reported.cache_savings_nanos > 0
    # The operator sees both on the trace's page in the admin.
    detail = admin_client().get(reverse("admin:usage_trace_change", args=[trace.pk]))
    page = detail.content.decode()
    assert usd(reported.cache_savings_nanos) in page
    assert usd(reported.client_cache_savings_nanos) in page
    assert_books_clean()
