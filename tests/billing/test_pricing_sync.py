"""billing.pricing_sync: which genai-prices price becomes which posted price, offline.

The rules are tested on a small made-up provider (so they do not drift with the
database); the real bundled data is used by the command tests.
"""

from __future__ import annotations

import socket
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from genai_prices.types import (
    ClauseEquals,
    ClauseStartsWith,
    ConditionalPrice,
    ModelInfo,
    Provider,
    StartDateConstraint,
    Tier,
    TieredPrices,
)
from genai_prices.types import ModelPrice as GenaiPrice

from billing import pricing_sync
from billing.exceptions import PriceInvalid
from billing.models import ModelPrice, ModelRoute
from billing.money import MoneyError, PriceTier, parse_usd, parse_usd_rounded
from billing.pricing_sync import prices_sync, provider_for_base_url
from billing.selectors import price_current
from billing.services import price_set, upstream_demo_ensure, upstream_save


def model(model_id: str, prices: GenaiPrice | list[ConditionalPrice], **extra: Any) -> ModelInfo:
    return ModelInfo(id=model_id, match=ClauseEquals(equals=model_id), prices=prices, **extra)


ACME = Provider(
    id="acme",
    name="Acme",
    api_pattern=r"https://api\.acme\.test",
    models=[
        model(
            "plain",
            GenaiPrice(
                input_mtok=Decimal("0.0000000015"),  # 1.5 nano-dollars per 1M tokens
                output_mtok=Decimal("2"),
                cache_read_mtok=Decimal("0.25"),
                cache_write_mtok=Decimal("3.75"),
                cache_write_1h_mtok=Decimal("6"),
            ),
            context_window=128_000,
        ),
        model(
            "tiered",
            GenaiPrice(
                input_mtok=TieredPrices(base=Decimal("3"), tiers=[Tier(200_000, Decimal("6"))]),
                output_mtok=TieredPrices(
                    base=Decimal("15"), tiers=[Tier(200_000, Decimal("22.5"))]
                ),
                cache_read_mtok=Decimal("0.3"),
            ),
        ),
        model(
            "two-tiers",
            GenaiPrice(
                input_mtok=TieredPrices(
                    base=Decimal("1"),
                    tiers=[Tier(256_000, Decimal("4")), Tier(128_000, Decimal("2"))],
                ),
                output_mtok=TieredPrices(base=Decimal("5"), tiers=[Tier(128_000, Decimal("10"))]),
            ),
        ),
        model(
            "cheaper-when-long",
            GenaiPrice(
                input_mtok=TieredPrices(base=Decimal("3"), tiers=[Tier(100_000, Decimal("1"))]),
                output_mtok=Decimal("5"),
            ),
        ),
        model(
            "dated",
            [
                ConditionalPrice(prices=GenaiPrice(input_mtok=Decimal(1), output_mtok=Decimal(1))),
                ConditionalPrice(
                    constraint=StartDateConstraint(start_date=date(2020, 1, 1)),
                    prices=GenaiPrice(input_mtok=Decimal(2), output_mtok=Decimal(4)),
                ),
                ConditionalPrice(
                    constraint=StartDateConstraint(start_date=date(2999, 1, 1)),
                    prices=GenaiPrice(input_mtok=Decimal(9), output_mtok=Decimal(9)),
                ),
            ],
        ),
        model("embedding", GenaiPrice(input_mtok=Decimal("0.02"))),
        model("speech", GenaiPrice(output_audio_mtok=Decimal("12"))),
        model(
            "retired", GenaiPrice(input_mtok=Decimal(1), output_mtok=Decimal(1)), deprecated=True
        ),
        ModelInfo(
            id="ft:acme",
            match=ClauseStartsWith(starts_with="ft:acme-2024-"),
            prices=GenaiPrice(input_mtok=Decimal(1), output_mtok=Decimal(1)),
        ),
    ],
)


@pytest.fixture
def acme(monkeypatch, db):
    monkeypatch.setattr(pricing_sync, "providers", lambda: [ACME])
    return upstream_save(name="acme", kind="openai", base_url="https://api.acme.test/v1")


def posted(model_id: str) -> ModelPrice:
    price = price_current(route=ModelRoute.objects.get(model=model_id))
    assert price is not None
    return price


@pytest.mark.parametrize(
    ("usd", "nanos"),
    [
        ("2.5", 2_500_000_000),
        ("0.0000000015", 2),  # half a nano rounds up
        ("0.00000000149", 1),
        ("0.0000000005", 1),
        ("0.00000000049999999", 0),
        ("-0.0000000015", -2),  # symmetric, like div_round_half_up
        ("1E-999999", 0),  # a tiny exponent builds no huge number
        ("0", 0),
    ],
)
def test_parse_usd_rounded_rounds_half_up_once(usd, nanos):
    assert parse_usd_rounded(Decimal(usd)) == nanos


@pytest.mark.parametrize("bad", ["x", "NaN", "Infinity", "1E+999999", "1000000001"])
def test_parse_usd_rounded_refuses_what_is_not_an_amount(bad):
    with pytest.raises(MoneyError):
        parse_usd_rounded(bad)


def test_plain_price_with_cache_rates_is_posted_exactly(acme):
    summary = prices_sync()

    (result,) = summary.upstreams
    assert result.provider == "acme"
    assert sorted(result.created) == [
        "cheaper-when-long",
        "dated",
        "embedding",
        "plain",
        "tiered",
        "two-tiers",
    ]
    price = posted("plain")
    assert price.source == ModelPrice.Source.GENAI_PRICES
    assert price.input_per_mtok_nanos == 2
    assert price.output_per_mtok_nanos == parse_usd("2")
    assert price.cached_input_per_mtok_nanos == parse_usd("0.25")
    assert price.cache_write_per_mtok_nanos == parse_usd("3.75")
    assert price.cache_write_1h_per_mtok_nanos == parse_usd("6")


def test_tiered_price_posts_its_tiers_and_says_so(acme):
    result = prices_sync().upstreams[0]
    assert result.tiered == ["tiered", "two-tiers", "cheaper-when-long"]
    prices = posted("tiered").as_prices()
    assert (prices.input_per_mtok_nanos, prices.output_per_mtok_nanos) == (
        parse_usd("3"),
        parse_usd("15"),
    )
    # A cache-read rate without tiers is the same past the threshold.
    assert prices.tiers == (
        PriceTier(
            above_prompt_tokens=200_000,
            input_per_mtok_nanos=parse_usd("6"),
            output_per_mtok_nanos=parse_usd("22.5"),
            cached_input_per_mtok_nanos=parse_usd("0.3"),
        ),
    )
    # A second sync finds the tiered version in force and posts nothing.
    assert "tiered" in prices_sync().upstreams[0].unchanged


def test_rates_tiered_at_different_thresholds_merge_into_one_tier_per_threshold(acme):
    prices_sync()
    tiers = posted("two-tiers").as_prices().tiers
    assert [
        (t.above_prompt_tokens, t.input_per_mtok_nanos, t.output_per_mtok_nanos) for t in tiers
    ] == [
        (128_000, parse_usd("2"), parse_usd("10")),
        (256_000, parse_usd("4"), parse_usd("10")),
    ]


def test_tiers_that_lower_a_rate_are_posted_as_they_are(acme):
    """Holds are priced at the dearest rate a prompt may reach, so any tiers are safe."""
    prices_sync()
    (tier,) = posted("cheaper-when-long").as_prices().tiers
    assert (tier.above_prompt_tokens, tier.input_per_mtok_nanos) == (100_000, parse_usd("1"))


def test_conditional_prices_post_the_one_in_force(acme):
    prices_sync()
    price = posted("dated")
    assert (price.input_per_mtok_nanos, price.output_per_mtok_nanos) == (parse_usd(2), parse_usd(4))


def test_missing_output_price_is_free_and_missing_cache_rates_bill_as_input(acme):
    prices_sync()
    price = posted("embedding")
    assert price.output_per_mtok_nanos == 0
    assert price.cached_input_per_mtok_nanos is None and price.cache_write_per_mtok_nanos is None


def test_unpriced_deprecated_and_pattern_models_get_no_route(acme):
    result = prices_sync().upstreams[0]
    assert result.skipped_unpriced == ["speech"]
    assert not ModelRoute.objects.filter(model__in=["speech", "retired", "ft:acme"]).exists()


def test_a_changed_price_posts_a_new_version_and_keeps_the_old(acme):
    price_set(
        model="plain",
        upstream=acme,
        input_per_mtok_nanos=1,
        output_per_mtok_nanos=1,
        source=ModelPrice.Source.GENAI_PRICES,
    )
    result = prices_sync().upstreams[0]
    assert "plain" in result.updated
    assert ModelRoute.objects.get(model="plain").prices.count() == 2
    assert posted("plain").input_per_mtok_nanos == 2


def test_a_manual_price_equal_to_the_database_counts_as_unchanged(acme):
    price_set(
        model="embedding",
        upstream=acme,
        input_per_mtok_nanos=parse_usd("0.02"),
        output_per_mtok_nanos=0,
    )
    result = prices_sync().upstreams[0]
    assert "embedding" in result.unchanged and "embedding" not in result.skipped_manual


def test_sync_never_opens_a_network_connection(acme, monkeypatch):
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access during a price sync")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert prices_sync().upstreams[0].created


def test_real_database_matches_the_official_base_urls():
    openai = provider_for_base_url("https://api.openai.com/v1")
    anthropic = provider_for_base_url("https://api.anthropic.com")
    assert openai is not None
    assert openai.id == "openai"
    assert anthropic is not None
    assert anthropic.id == "anthropic"
    assert provider_for_base_url("http://127.0.0.1:9/v1") is None


def test_forcing_a_provider_needs_one_upstream(acme):
    with pytest.raises(PriceInvalid):
        prices_sync(provider_id="acme")


def test_a_routes_context_window_comes_from_genai_prices_and_is_never_overwritten(acme):
    prices_sync()
    route = ModelRoute.objects.get(model="plain")
    assert route.context_window_tokens == 128_000
    assert ModelRoute.objects.get(model="tiered").context_window_tokens is None

    # Unknown on a route (an older sync, or set by hand): filled in by the next sync.
    ModelRoute.objects.filter(pk=route.pk).update(context_window_tokens=None)
    prices_sync()
    assert ModelRoute.objects.get(pk=route.pk).context_window_tokens == 128_000
    # The operator's own figure stays.
    ModelRoute.objects.filter(pk=route.pk).update(context_window_tokens=64_000)
    prices_sync()
    assert ModelRoute.objects.get(pk=route.pk).context_window_tokens == 64_000


def test_a_sync_of_every_upstream_leaves_the_built_in_demo_alone(acme):
    demo, _ = upstream_demo_ensure(name="tollgate-demo")
    summary = prices_sync()
    assert [result.upstream for result in summary.upstreams] == ["acme"]
    assert not ModelRoute.objects.filter(upstream=demo).exists()
