"""The OpenAI wire format through the real server, with the official ``openai`` SDK as client."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import timedelta

import httpx
import openai
import orjson
import pytest
from django.utils import timezone
from openai import Omit
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionStreamOptionsParam,
)
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)

from billing.models import LedgerEntry
from billing.money import PriceTier, Usage, request_charge
from billing.selectors import wallet_for_tenant
from proxy.wire.base import input_token_bound
from tests.proxy import upstream_fake
from tests.proxy.conftest import (
    BACKUP_PRICE,
    EMBED_PRICE,
    GPT_PRICE,
    RATIO,
    UPSTREAM_SECRET,
    USD,
    Expected,
    Price,
    World,
    assert_books_clean,
    assert_charged,
    charge_seen,
    expected_charge,
    key_row,
    post,
    reservation_of,
    trace_for,
    usd,
)
from tests.proxy.upstream_fake import Record
from usage.models import UsageRollup
from usage.selectors import key_usage
from usage.services import usage_roll_up

PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France? Answer in one word."}
]


def chunks_of(stream: Iterable[object]) -> list[ChatCompletionChunk]:
    items = list(stream)
    chunks = [c for c in items if isinstance(c, ChatCompletionChunk)]
    assert len(chunks) == len(items)
    return chunks


def sdk(world: World, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{world.url}/v1", api_key=secret, max_retries=0, timeout=20)


def test_cost_of_one_request_matches_a_hand_computed_figure() -> None:
    """The oracle the other tests use, checked once against arithmetic done by hand.

    7 prompt tokens of which 2 cached, 5 output, at $2.500000333 / $1.250000167 / $10.000000777
    per 1M tokens: 5 × 2,500,000,333 + 2 × 1,250,000,167 + 5 × 10,000,000,777
    = 65,000,005,884 nano-dollars per 1M tokens → 65,000.005884 → 65,000 nano-dollars.
    Client price at ratio 6/10: 65,000.005884 / 0.6 = 108,333.34314 → 108,333.
    """
    charge = expected_charge(
        GPT_PRICE, input_tokens=5, cached_tokens=2, output_tokens=5, ratio=RATIO
    )
    assert (charge.cost_nanos, charge.client_nanos) == (65_000, 108_333)
    assert (charge.cache_savings_nanos, charge.client_cache_savings_nanos) == (2_500, 4_167)
    # And billing.money agrees, rounding included.
    from billing.money import Charge, PriceRatio, Prices, Usage, request_charge

    posted = Prices(GPT_PRICE.input, GPT_PRICE.output, GPT_PRICE.cached)
    # The 2 cached tokens saved 2 × (2,500,000,333 − 1,250,000,167) / 1M = 2,500.000332 → 2,500
    # nano-dollars at cost, and 2,500.000332 / 0.6 = 4,166.667… → 4,167 at client price.
    assert request_charge(Usage(5, 5, 2), posted, PriceRatio(*RATIO)) == Charge(
        65_000, 108_333, 2_500, 4_167
    )


def test_chat_completion_is_charged_usage_times_posted_price(world: World) -> None:
    issued = world.key()
    client = sdk(world, issued.secret)

    raw = client.chat.completions.with_raw_response.create(model="gpt-fake", messages=PROMPT)
    completion = raw.parse()

    assert completion.choices[0].message.content == "Hello from the fake upstream"
    request_id = raw.headers["x-request-id"]
    seen = world.fake.last("gpt-fake")
    assert seen.reported.cached_tokens > 0
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == seen.reported.prompt_tokens
    # The upstream got the operator's secret, never the client's key.
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert issued.secret not in str(seen.headers)
    expected = charge_seen(seen, GPT_PRICE)
    key = key_row(issued)
    assert (key.cost_spent_nanos, key.client_spent_nanos) == (
        expected.cost_nanos,
        expected.client_nanos,
    )
    assert (key.cost_reserved_nanos, key.client_reserved_nanos) == (0, 0)
    held = reservation_of(request_id)
    assert held.status == "settled"
    assert (held.charged_cost_nanos, held.charged_client_nanos) == (
        expected.cost_nanos,
        expected.client_nanos,
    )
    # A prepaid key was paid for when it was funded: usage does not touch the wallet.
    wallet = wallet_for_tenant(tenant=world.tenant)
    assert wallet.balance_nanos == 100 * USD - 6 * USD
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE).exists()

    trace = trace_for(request_id)
    assert trace.client_key_id == issued.key.pk
    assert trace.endpoint == "chat.completions"
    assert (trace.model, trace.upstream_model) == ("gpt-fake", "gpt-fake")
    assert trace.upstream_id == world.upstreams["fake-openai"].pk
    assert trace.price_id == world.prices["gpt-fake@fake-openai"].pk
    assert (trace.input_tokens, trace.cached_input_tokens, trace.output_tokens) == (
        seen.reported.uncached_tokens,
        seen.reported.cached_tokens,
        seen.reported.output_tokens,
    )
    assert (trace.cost_nanos, trace.client_nanos) == (expected.cost_nanos, expected.client_nanos)
    # What the cached reads saved, at the posted rates: recorded, never charged.
    assert expected.cache_savings_nanos > 0
    assert (trace.cache_savings_nanos, trace.client_cache_savings_nanos) == (
        expected.cache_savings_nanos,
        expected.client_cache_savings_nanos,
    )
    assert (trace.status, trace.status_code, trace.is_stream, trace.is_usage_estimated) == (
        "ok",
        200,
        False,
        False,
    )
    # The reports show the savings, before the rollup pass and after it.
    since, until = trace.created_at - timedelta(hours=1), timezone.now()
    for _ in range(2):
        report = key_usage(tenant=world.tenant, key_id=issued.key.pk, since=since, until=until)
        summary = report.summary
        assert (summary.cache_savings_nanos, summary.client_cache_savings_nanos) == (
            expected.cache_savings_nanos,
            expected.client_cache_savings_nanos,
        )
        usage_roll_up()
    assert UsageRollup.objects.get(client_key=issued.key.pk).cache_savings_nanos == (
        expected.cache_savings_nanos
    )
    assert_books_clean()


def gpt_charge(world: World, model: str = "gpt-fake") -> tuple[Record, Expected]:
    seen = world.fake.last(model)
    return seen, charge_seen(seen, GPT_PRICE)


@pytest.mark.parametrize("asks_for_usage", [False, True], ids=["usage-hidden", "usage-asked"])
def test_streamed_chat_is_charged_and_shows_the_usage_chunk_only_when_asked(
    world: World, asks_for_usage: bool
) -> None:
    issued = world.key()
    client = sdk(world, issued.secret)
    asked: ChatCompletionStreamOptionsParam | Omit = (
        {"include_usage": True} if asks_for_usage else openai.omit
    )

    with client.chat.completions.with_streaming_response.create(
        model="gpt-fake", messages=PROMPT, stream=True, stream_options=asked
    ) as response:
        request_id = response.headers["x-request-id"]
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = chunks_of(response.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream"
    usage_chunks = [c for c in chunks if not c.choices]
    seen, expected = gpt_charge(world)
    # The proxy always asks the upstream for usage (it needs it to settle)...
    assert seen.body["stream_options"] == {"include_usage": True}
    if asks_for_usage:
        assert len(usage_chunks) == 1
        assert usage_chunks[0].usage is not None
        assert usage_chunks[0].usage.prompt_tokens == seen.reported.prompt_tokens
    else:
        # ... and hides the usage-only chunk from a client that did not.
        assert usage_chunks == []
        assert all(getattr(c, "usage", None) is None for c in chunks)
    assert_charged(issued, request_id, expected, endpoint="chat.completions", is_stream=True)
    trace = trace_for(request_id)
    assert trace.output_tokens == seen.reported.output_tokens
    assert trace.ttft_ms is not None


def test_response_is_charged_with_cached_input_at_the_cached_rate(world: World) -> None:
    issued = world.key()
    client = sdk(world, issued.secret)

    raw = client.responses.with_raw_response.create(
        model="gpt-fake", input="Summarise the plot of Hamlet in a sentence, please."
    )
    answer = raw.parse()

    assert answer.output_text == "Hello from the fake upstream"
    seen, expected = gpt_charge(world)
    assert seen.path == "/v1/responses"
    assert seen.reported.cached_tokens > 0
    assert answer.usage is not None and answer.usage.input_tokens == seen.reported.prompt_tokens
    assert_charged(
        issued, raw.headers["x-request-id"], expected, endpoint="responses", is_stream=False
    )
    trace = trace_for(raw.headers["x-request-id"])
    assert (trace.input_tokens, trace.cached_input_tokens) == (
        seen.reported.uncached_tokens,
        seen.reported.cached_tokens,
    )


def test_streamed_response_is_charged_from_response_completed(world: World) -> None:
    issued = world.key()
    client = sdk(world, issued.secret)

    with client.responses.with_streaming_response.create(
        model="gpt-fake", input="Summarise the plot of Hamlet in a sentence, please.", stream=True
    ) as response:
        request_id = response.headers["x-request-id"]
        events: list[ResponseStreamEvent] = list(response.parse())

    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert (
        "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))
        == "Hello from the fake upstream"
    )
    seen, expected = gpt_charge(world)
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent) and completed.response.usage is not None
    assert completed.response.usage.output_tokens == seen.reported.output_tokens
    assert_charged(issued, request_id, expected, endpoint="responses", is_stream=True)


def test_embeddings_are_charged_for_input_tokens(world: World) -> None:
    issued = world.key()
    client = sdk(world, issued.secret)
    texts = ["The quick brown fox jumps over the lazy dog.", "Lorem ipsum dolor sit amet."]

    raw = client.embeddings.with_raw_response.create(model="embed-fake", input=texts)
    result = raw.parse()

    assert len(result.data) == 2
    assert result.data[0].embedding[:3] == [0.125, 0.25, 0.375]
    seen = world.fake.last("embed-fake")
    expected = expected_charge(
        EMBED_PRICE, input_tokens=seen.reported.prompt_tokens, output_tokens=0, ratio=RATIO
    )
    assert expected.cost_nanos > 0
    request_id = raw.headers["x-request-id"]
    assert_charged(issued, request_id, expected, endpoint="embeddings", is_stream=False)
    trace = trace_for(request_id)
    assert (trace.input_tokens, trace.output_tokens) == (seen.reported.prompt_tokens, 0)


def test_wallet_key_draws_each_charge_from_the_wallet_with_a_ledger_entry(world: World) -> None:
    issued = world.key(funding="wallet")
    before = wallet_for_tenant(tenant=world.tenant).balance_nanos
    client = sdk(world, issued.secret)

    raw = client.chat.completions.with_raw_response.create(model="gpt-fake", messages=PROMPT)

    request_id = raw.headers["x-request-id"]
    seen = world.fake.last("gpt-fake")
    expected = charge_seen(seen, GPT_PRICE, ratio=(1, 1))
    wallet = wallet_for_tenant(tenant=world.tenant)
    assert wallet.balance_nanos == before - expected.cost_nanos
    assert wallet.reserved_nanos == 0
    entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.USAGE)
    assert (entry.amount_nanos, entry.reference, entry.client_key_id) == (
        -expected.cost_nanos,
        request_id,
        issued.key.pk,
    )
    key = key_row(issued)
    assert key.client_spent_nanos == key.cost_spent_nanos == expected.cost_nanos  # ratio 1:1
    assert key.period_client_spent_nanos == expected.client_nanos
    assert trace_for(request_id).cost_nanos == expected.cost_nanos
    assert_books_clean()


def test_fallback_route_is_charged_at_its_own_price(world: World) -> None:
    issued = world.key()
    client = sdk(world, issued.secret)

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-500-fallback", messages=PROMPT
    )

    assert raw.parse().choices[0].message.content == "Hello from the fake upstream"
    # The first route (priority 10) answered 500; the backup upstream served the model it
    # knows as gpt-fake, and its price applies.
    assert [r.model for r in world.fake.records] == ["fault-500", "gpt-fake"]
    seen = world.fake.last("gpt-fake")
    expected = charge_seen(seen, BACKUP_PRICE)
    request_id = raw.headers["x-request-id"]
    assert_charged(issued, request_id, expected, endpoint="chat.completions", is_stream=False)
    trace = trace_for(request_id)
    assert trace.upstream_id == world.upstreams["fake-openai-backup"].pk
    assert (trace.model, trace.upstream_model) == ("gpt-500-fallback", "gpt-fake")
    assert trace.price_id == world.prices["gpt-500-fallback@fake-openai-backup"].pk


def test_models_list_shows_only_the_models_the_key_may_use(world: World) -> None:
    limited = world.key(models=["gpt-fake", "embed-fake", "claude-fake"])
    everything = world.key()

    listed = [m.id for m in sdk(world, limited.secret).models.list()]
    # OpenAI clients see the key's models they can call in the OpenAI format.
    assert listed == ["embed-fake", "gpt-fake"]
    all_models = {m.id for m in sdk(world, everything.secret).models.list()}
    assert {"gpt-fake", "embed-fake", "gpt-500-fallback", "slow-stream"} <= all_models
    assert "claude-fake" not in all_models
    assert_books_clean()


def test_models_list_names_the_platform_as_owner_never_an_upstream(world: World) -> None:
    """Where a model's traffic goes is the operator's business: the owner shown is the
    PROXY_MODELS_OWNED_BY setting ("tollgate" unless set), never the upstream's name."""
    issued = world.key()

    models = sdk(world, issued.secret).models.list().data

    assert models and {m.owned_by for m in models} == {"tollgate"}
    listed = httpx.get(
        f"{world.url}/v1/models", headers={"Authorization": f"Bearer {issued.secret}"}
    )
    for upstream in world.upstreams.values():
        assert upstream.name not in listed.text
        assert upstream.base_url.split("//")[1].split("/")[0] not in listed.text
    assert_books_clean()


def test_key_endpoint_shows_client_figures_without_cost(world: World) -> None:
    issued = world.key(models=["gpt-fake"], rpm=30, max_concurrency=3)
    sdk(world, issued.secret).chat.completions.create(model="gpt-fake", messages=PROMPT)
    _, expected = gpt_charge(world)

    response = httpx.get(
        f"{world.url}/v1/key", headers={"Authorization": f"Bearer {issued.secret}"}
    )

    assert response.status_code == 200
    body = response.json()
    spent = expected.client_nanos
    assert body["budget"] == "10.00"
    assert body["spent"] == usd(spent)
    assert body["remaining"] == usd(10 * USD - spent)
    assert body["funding"] == "prepaid" and body["status"] == "active"
    assert body["limits"] == {
        "rpm": 30,
        "tpm": None,
        "max_concurrency": 3,
        "models": ["gpt-fake"],
        "expires_at": None,
    }
    assert not any("cost" in name or "ratio" in name or "margin" in name for name in body)
    assert_books_clean()


def test_embeddings_are_returned_as_sent(world: World) -> None:
    """The SDK asks for base64 by default; the bytes pass through untouched."""
    issued = world.key()
    raw = httpx.post(
        f"{world.url}/v1/embeddings",
        headers={"Authorization": f"Bearer {issued.secret}"},
        json={"model": "embed-fake", "input": "hello world", "encoding_format": "base64"},
    )
    assert raw.status_code == 200
    vector = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert len(vector) == 8 * 4
    trace_for(raw.headers["x-request-id"])
    assert_books_clean()


@pytest.mark.parametrize("asked", [None, 5], ids=["no-limit", "over-the-route-limit"])
def test_upstream_is_never_allowed_more_output_than_the_hold_covers(
    world: World, asked: int | None
) -> None:
    """The hold covers the route's output limit (3 here), so that is what the upstream may
    produce: otherwise the overrun is served and never charged (settlement clamps the
    charge to the hold). Output-only pricing leaves no input slack to hide it."""
    output_only = Price(input=0, output=GPT_PRICE.output, cached=0)
    world.route(
        "gpt-capped", "fake-openai", output_only, max_output_tokens=3, upstream_model="gpt-fake"
    )
    issued = world.key()

    raw = sdk(world, issued.secret).chat.completions.with_raw_response.create(
        model="gpt-capped", messages=PROMPT, max_tokens=openai.omit if asked is None else asked
    )

    seen = world.fake.last("gpt-fake")
    # A request that set no limit gets the one an OpenAI-compatible server other than
    # OpenAI's own API understands (see proxy.upstreams.openai).
    assert seen.body["max_tokens"] == 3
    assert "max_completion_tokens" not in seen.body
    assert seen.reported.output_tokens == 3
    expected = expected_charge(output_only, input_tokens=0, output_tokens=3, ratio=RATIO)
    request_id = raw.headers["x-request-id"]
    assert_charged(issued, request_id, expected, endpoint="chat.completions", is_stream=False)
    assert trace_for(request_id).output_tokens == 3


def test_unbounded_stream_and_response_get_the_routes_output_limit(world: World) -> None:
    """A stream, and a Responses request (whose limit is ``max_output_tokens``), that set
    no limit are bounded upstream by what their hold covers, and charged for exactly that."""
    output_only = Price(input=0, output=GPT_PRICE.output, cached=0)
    world.route(
        "gpt-capped", "fake-openai", output_only, max_output_tokens=4, upstream_model="gpt-fake"
    )
    expected = expected_charge(output_only, input_tokens=0, output_tokens=4, ratio=RATIO)
    issued = world.key()
    with sdk(world, issued.secret).chat.completions.with_streaming_response.create(
        model="gpt-capped", messages=PROMPT, stream=True
    ) as streamed:
        request_id = streamed.headers["x-request-id"]
        chunks = chunks_of(streamed.parse())
    seen = world.fake.last("gpt-fake")
    assert seen.body["max_tokens"] == 4
    assert seen.body["stream_options"] == {"include_usage": True}
    assert seen.reported.output_tokens == 4
    assert all(chunk.usage is None for chunk in chunks)  # the client did not ask for usage
    assert_charged(issued, request_id, expected, endpoint="chat.completions", is_stream=True)

    issued = world.key()
    raw = sdk(world, issued.secret).responses.with_raw_response.create(
        model="gpt-capped", input="Say hello."
    )
    seen = world.fake.last("gpt-fake")
    assert seen.body["max_output_tokens"] == 4
    assert seen.reported.output_tokens == 4
    assert_charged(
        issued, raw.headers["x-request-id"], expected, endpoint="responses", is_stream=False
    )
    assert_books_clean()


def test_a_long_prompt_is_charged_at_its_tier_and_every_hold_that_may_cross_it_is_held_there(
    world: World,
) -> None:
    """Past 50 prompt tokens every token costs the tier's rates (a cliff, as providers bill
    long prompts). A request's hold is its worst case: its prompt bound (the body's size)
    is past the threshold even when its real prompt is not, so it is held at the tier."""
    tier_price = Price(input=5_000_000_667, output=20_000_001_553, cached=2_500_000_333)
    tier = PriceTier(
        above_prompt_tokens=50,
        input_per_mtok_nanos=tier_price.input,
        output_per_mtok_nanos=tier_price.output,
        cached_input_per_mtok_nanos=tier_price.cached,
    )
    posted = world.route(
        "gpt-tiered", "fake-openai", GPT_PRICE, upstream_model="gpt-fake", tiers=[tier]
    )

    for content, price in (("A short question, please.", GPT_PRICE), ("x" * 400, tier_price)):
        issued = world.key()
        body = orjson.dumps(
            {
                "model": "gpt-tiered",
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 10,
            }
        )
        response = post(world, "/v1/chat/completions", body, issued.secret)

        assert response.status_code == 200, response.text
        seen = world.fake.last("gpt-fake")
        assert (seen.reported.prompt_tokens > 50) == (price is tier_price)
        expected = charge_seen(seen, price)
        request_id = response.headers["x-request-id"]
        assert_charged(issued, request_id, expected, endpoint="chat.completions", is_stream=False)
        worst = request_charge(
            Usage(input_tokens=input_token_bound(body), output_tokens=10),
            posted.as_prices(),
            issued.key.ratio,
        )
        held = reservation_of(request_id)
        assert (held.cost_nanos, held.client_nanos) == (worst.cost_nanos, worst.client_nanos)
        assert worst == request_charge(
            Usage(input_tokens=input_token_bound(body), output_tokens=10),
            posted.as_prices().at(51),
            issued.key.ratio,
        )


def test_a_request_referring_to_input_it_does_not_carry_is_held_for_the_context_window(
    world: World,
) -> None:
    """A previous response's conversation comes back as input the body does not show; the
    most it can be is the model's context window, and that is what the hold covers."""
    posted = world.route(
        "gpt-windowed", "fake-openai", GPT_PRICE, upstream_model="gpt-fake",
        context_window_tokens=50_000,
    )  # fmt: skip
    held = {}
    for extra in ({}, {"previous_response_id": "resp_123"}):
        issued = world.key()
        body = orjson.dumps(
            {"model": "gpt-windowed", "input": "Go on.", "max_output_tokens": 8, **extra}
        )
        response = post(world, "/v1/responses", body, issued.secret)
        assert response.status_code == 200, response.text
        input_bound = 50_000 if extra else input_token_bound(body)
        worst = request_charge(
            Usage(input_tokens=input_bound, output_tokens=8), posted.as_prices(), issued.key.ratio
        )
        reservation = reservation_of(response.headers["x-request-id"])
        assert (reservation.cost_nanos, reservation.client_nanos) == (
            worst.cost_nanos,
            worst.client_nanos,
        )
        held[bool(extra)] = reservation.client_nanos
        # The charge is still what the upstream reported.
        assert_charged(
            issued,
            response.headers["x-request-id"],
            charge_seen(world.fake.last("gpt-fake"), GPT_PRICE),
            endpoint="responses",
            is_stream=False,
        )
    assert held[True] > 10 * held[False]

    # A key whose budget covers the body's bound but not the window is refused up front.
    poor = world.key(client_budget_nanos=50_000_000, your_cost_nanos=30_000_000)
    refused = post(
        world,
        "/v1/responses",
        {
            "model": "gpt-windowed",
            "input": "Go on.",
            "max_output_tokens": 8,
            "previous_response_id": "resp_123",
        },
        poor.secret,
    )
    assert refused.status_code == 402, refused.text
    assert "50000 input" in refused.json()["error"]["message"]
    assert_books_clean()


def test_trace_carries_the_keys_default_tag_or_the_requests_own(world: World) -> None:
    issued = world.key(default_tag="acme-prod")
    client = sdk(world, issued.secret)

    plain = client.chat.completions.with_raw_response.create(model="gpt-fake", messages=PROMPT)
    tagged = client.chat.completions.with_raw_response.create(
        model="gpt-fake", messages=PROMPT, extra_headers={"x-tollgate-tag": "batch-7"}
    )

    assert trace_for(plain.headers["x-request-id"]).tag == "acme-prod"
    assert trace_for(tagged.headers["x-request-id"]).tag == "batch-7"
    # The tag is ours: the upstream never sees it.
    assert all("x-tollgate-tag" not in r.headers for r in world.fake.records)
    assert_books_clean()


@pytest.mark.parametrize("asks_for_usage", [False, True], ids=["usage-hidden", "usage-asked"])
def test_stream_from_an_upstream_writing_spaced_json_is_charged_its_reported_usage(
    world: World, asks_for_usage: bool
) -> None:
    """Python servers (json.dumps) write ``"usage": {``: the usage is read all the same."""
    world.route("gpt-spaced", "fake-openai", GPT_PRICE, upstream_model=upstream_fake.SPACED_JSON)
    issued = world.key()
    asked: ChatCompletionStreamOptionsParam | Omit = (
        {"include_usage": True} if asks_for_usage else openai.omit
    )

    with sdk(world, issued.secret).chat.completions.with_streaming_response.create(
        model="gpt-spaced", messages=PROMPT, stream=True, stream_options=asked
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = chunks_of(response.parse())

    usage_chunks = [c for c in chunks if not c.choices]
    assert len(usage_chunks) == (1 if asks_for_usage else 0)
    seen, expected = gpt_charge(world, upstream_fake.SPACED_JSON)
    assert_charged(issued, request_id, expected, endpoint="chat.completions", is_stream=True)
