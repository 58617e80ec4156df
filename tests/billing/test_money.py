"""billing.money: exact amounts at the edges, the one rounding rule, and the 402 arithmetic.

Pure functions: no database. Exact references are computed with ``fractions.Fraction``.
"""

from __future__ import annotations

import json
import random
import time
from decimal import Decimal
from fractions import Fraction
from math import floor
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.money import (
    NANOS_PER_USD,
    UNBOUNDED_OUTPUT_TOKENS,
    Charge,
    MoneyError,
    PriceRatio,
    Prices,
    PriceTier,
    Usage,
    affordable_output_tokens,
    cents_to_nanos,
    div_round_half_up,
    format_usd,
    nanos_to_cents,
    parse_usd,
    request_charge,
    tier_parse,
    tiers_from_json,
    tiers_invalid,
    worst_case_prices,
)


def half_up(value: Fraction) -> int:
    """The documented rule, from its definition: round half away from zero."""
    if value < 0:
        return -half_up(-value)
    return floor(value + Fraction(1, 2))


# ----------------------------------------------------------------------------- parse_usd


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("100", 100 * NANOS_PER_USD),
        ("100.00", 100 * NANOS_PER_USD),
        ("34.20", 34_200_000_000),
        ("0.000123456", 123_456),
        ("0.000000001", 1),
        ("123.123456789", 123_123_456_789),
        ("1.0000000000", NANOS_PER_USD),  # ten places, but the value has nine
        ("-5.5", -5_500_000_000),
        ("-0.000000001", -1),
        ("0", 0),
        ("-0", 0),
        ("007.50", 7_500_000_000),
        ("1000000000", 10**18),
        (Decimal("0.000123456"), 123_456),
        (Decimal("12.340000000000000000000000000000000000"), 12_340_000_000),
        (Decimal("1E-9"), 1),
        (3, 3 * NANOS_PER_USD),
    ],
)
def test_parse_usd_reads_exact_amounts(text, nanos):
    assert parse_usd(text) == nanos


@pytest.mark.parametrize(
    "text",
    [
        "0.0000000001",  # ten places
        "1.1234567891",
        "-0.0000000001",
        "0.1000000000000000000000000000001",  # beyond Decimal's 28 digits: must not round
        Decimal("0.1000000000000000000000000000001"),
        "1e-999999999",
        "1000000000.000000001",  # out of range
        "1000000001",
        "-1000000001",
        "1E+999990",
        "1E+100000000",
        "nan",
        "NaN",
        "sNaN",
        "inf",
        "-Infinity",
        Decimal("NaN"),
        Decimal("-Infinity"),
        float("nan"),
        float("inf"),
        "",
        "   ",
        "abc",
        "1,000",
        "1_000",
        "$5",
        "0x10",
        "5 USD",
        "1.2.3",
        "١٢٣",  # non-ASCII digits, which Decimal() would accept
        "１０",  # full-width digits, likewise
        "1٠",
        "1_0",
        # Not a plain decimal, though Decimal() reads each of them.
        " 7 ",
        " 5",
        "5 ",
        "5\n",
        "+1",
        "+5",
        ".5",
        "5.",
        "-.5",
        "1e2",
        "1E2",
        "1e-9",
        "2.5E+2",
        "1e-10",
        "1e400",
        "--5",
        "5-",
        "0.5.",
        # Not text: a float cannot be trusted to hold the amount typed; a bool is no amount.
        0.1,
        10.0,
        True,
        False,
        None,
        [],
    ],
)
def test_parse_usd_refuses_what_it_cannot_read_exactly(text):
    with pytest.raises(MoneyError):
        parse_usd(text)


def test_parse_usd_refuses_huge_exponents_without_building_huge_numbers():
    started = time.monotonic()
    for text in ("1E+999990", "-9E+999999", "1E+100000000"):
        with pytest.raises(MoneyError, match="decimal amount"):
            parse_usd(text)
        with pytest.raises(MoneyError, match="out of range"):
            parse_usd(Decimal(text))
    with pytest.raises(MoneyError, match="out of range"):
        parse_usd("9" * 100_000)
    assert time.monotonic() - started < 1.0


def test_money_error_is_a_value_error():
    assert issubclass(MoneyError, ValueError)


# ----------------------------------------------------------------------------- format_usd


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (0, "0.00"),
        (140 * NANOS_PER_USD, "140.00"),
        (123_456, "0.000123456"),
        (1, "0.000000001"),
        (1_230_000_000, "1.23"),
        (1_234_500_000, "1.2345"),
        (1_500_000_000, "1.50"),
        (-1_500_000_000, "-1.50"),
        (-1, "-0.000000001"),
        (10**18, "1000000000.00"),
    ],
)
def test_format_usd_writes_two_to_nine_places(nanos, text):
    assert format_usd(nanos) == text


def test_format_and_parse_round_trip():
    rng = random.Random(20240601)
    for _ in range(500):
        nanos = rng.randint(-(10**15), 10**15)
        assert parse_usd(format_usd(nanos)) == nanos


def test_cents_convert_by_the_same_rule():
    assert cents_to_nanos(150) == 1_500_000_000
    assert nanos_to_cents(1_500_000_000) == 150
    assert nanos_to_cents(4_999_999) == 0
    assert nanos_to_cents(5_000_000) == 1  # half a cent rounds up
    assert nanos_to_cents(-5_000_000) == -1


# ----------------------------------------------------------------------------- rounding


@pytest.mark.parametrize(
    ("numerator", "denominator", "result"),
    [
        (0, 7, 0),
        (4, 2, 2),
        (5, 2, 3),
        (7, 2, 4),
        (1, 3, 0),
        (2, 3, 1),
        (499_999, 1_000_000, 0),
        (500_000, 1_000_000, 1),
        (-5, 2, -3),
        (-4, 3, -1),
    ],
)
def test_div_round_half_up(numerator, denominator, result):
    assert div_round_half_up(numerator, denominator) == result


def test_div_round_half_up_matches_its_definition():
    rng = random.Random(7)
    for _ in range(2000):
        numerator, denominator = rng.randint(-(10**12), 10**12), rng.randint(1, 10**6)
        assert div_round_half_up(numerator, denominator) == half_up(
            Fraction(numerator, denominator)
        )


@pytest.mark.parametrize("denominator", [0, -1])
def test_div_round_half_up_needs_a_positive_denominator(denominator):
    with pytest.raises(MoneyError):
        div_round_half_up(1, denominator)


# ----------------------------------------------------------------------------- PriceRatio


def test_price_ratio_of_the_worked_example():
    ratio = PriceRatio(cost_nanos=parse_usd("60"), client_nanos=parse_usd("100"))
    assert ratio.cost_from_client(parse_usd("100")) == parse_usd("60")
    assert ratio.cost_from_client(parse_usd("50")) == parse_usd("30")
    assert ratio.client_from_cost(parse_usd("20.52")) == parse_usd("34.20")
    assert ratio.as_decimal() == Decimal("0.6")
    assert ratio.margin() == Decimal("0.4")


def test_price_ratio_stays_exact_where_a_float_would_not():
    third = PriceRatio(cost_nanos=1, client_nanos=3)
    assert third.as_decimal() == Decimal("0.333333")
    assert third.cost_from_client(3 * 10**18) == 10**18
    assert [third.cost_from_client(n) for n in (1, 2, 3)] == [0, 1, 1]
    two_thirds = PriceRatio(cost_nanos=2, client_nanos=3)
    assert two_thirds.client_from_cost(1) == 2  # 1.5 rounds half up


def test_price_ratio_conversions_round_once_half_up():
    rng = random.Random(99)
    for _ in range(1000):
        client = rng.randint(1, 10**12)
        cost = rng.randint(1, client)
        ratio = PriceRatio(cost_nanos=cost, client_nanos=client)
        amount = rng.randint(0, 10**12)
        assert ratio.cost_from_client(amount) == half_up(Fraction(amount * cost, client))
        assert ratio.client_from_cost(amount) == half_up(Fraction(amount * client, cost))


def test_no_markup_is_ratio_one():
    assert PriceRatio.one() == PriceRatio(NANOS_PER_USD, NANOS_PER_USD)
    assert PriceRatio.one().margin() == Decimal("0")
    assert PriceRatio.one().cost_from_client(12_345) == 12_345


@pytest.mark.parametrize(
    ("cost", "client"),
    [(0, 100), (100, 0), (-1, 100), (100, -1), (101, 100)],
)
def test_price_ratio_refuses_invalid_amounts(cost, client):
    with pytest.raises(MoneyError):
        PriceRatio(cost_nanos=cost, client_nanos=client)


# ----------------------------------------------------------------------------- request_charge

ONE_TO_ONE = PriceRatio.one()
# $1 input, $2 output, $0.50 cached input per 1M tokens.
PRICES = Prices(
    input_per_mtok_nanos=NANOS_PER_USD,
    output_per_mtok_nanos=2 * NANOS_PER_USD,
    cached_input_per_mtok_nanos=NANOS_PER_USD // 2,
)


def test_request_charge_prices_each_kind_of_token():
    assert request_charge(Usage(input_tokens=1_000_000), PRICES, ONE_TO_ONE) == Charge(
        NANOS_PER_USD, NANOS_PER_USD
    )
    assert (
        request_charge(Usage(output_tokens=1_000_000), PRICES, ONE_TO_ONE).cost_nanos
        == 2 * NANOS_PER_USD
    )
    assert request_charge(Usage(cached_input_tokens=1_000_000), PRICES, ONE_TO_ONE).cost_nanos == (
        NANOS_PER_USD // 2
    )
    assert request_charge(Usage(), PRICES, ONE_TO_ONE) == Charge(0, 0)


def test_unset_cached_and_cache_write_rates_are_the_input_rate():
    prices = Prices(input_per_mtok_nanos=3_000_000_000, output_per_mtok_nanos=15_000_000_000)
    cached = request_charge(Usage(cached_input_tokens=1_000_000), prices, ONE_TO_ONE)
    written = request_charge(Usage(cache_write_tokens=1_000_000), prices, ONE_TO_ONE)
    assert cached.cost_nanos == written.cost_nanos == 3_000_000_000
    priced = Prices(
        input_per_mtok_nanos=3_000_000_000,
        output_per_mtok_nanos=15_000_000_000,
        cache_write_per_mtok_nanos=3_750_000_000,
    )
    assert (
        request_charge(Usage(cache_write_tokens=1_000_000), priced, ONE_TO_ONE).cost_nanos
        == 3_750_000_000
    )


def test_request_charge_rounds_once_per_amount_not_per_token_kind():
    # 1 nano per 1M tokens: each half a million tokens is exactly half a nano-dollar.
    prices = Prices(input_per_mtok_nanos=1, output_per_mtok_nanos=1, cached_input_per_mtok_nanos=1)
    usage = Usage(input_tokens=400_000, cached_input_tokens=400_000)
    # 0.4 + 0.4 = 0.8 -> 1, where rounding each part would give 0 + 0.
    assert request_charge(usage, prices, ONE_TO_ONE).cost_nanos == 1
    usage = Usage(input_tokens=500_000, output_tokens=500_000)
    # 0.5 + 0.5 = 1.0 -> 1, where rounding each part would give 1 + 1.
    assert request_charge(usage, prices, ONE_TO_ONE).cost_nanos == 1


def test_client_price_comes_from_the_exact_cost_not_the_rounded_one():
    prices = Prices(input_per_mtok_nanos=1, output_per_mtok_nanos=1)
    ratio = PriceRatio(cost_nanos=1, client_nanos=3)
    charge = request_charge(Usage(input_tokens=500_000), prices, ratio)
    # exact cost 0.5 -> 1; exact client price 1.5 -> 2 (not 3 × the rounded cost).
    assert charge == Charge(cost_nanos=1, client_nanos=2)
    assert ratio.client_from_cost(charge.cost_nanos) == 3


def test_request_charge_matches_its_definition():
    rng = random.Random(4242)
    for _ in range(1000):
        prices = Prices(
            input_per_mtok_nanos=rng.randint(0, 20 * NANOS_PER_USD),
            output_per_mtok_nanos=rng.randint(0, 80 * NANOS_PER_USD),
            cached_input_per_mtok_nanos=rng.choice([None, rng.randint(0, 5 * NANOS_PER_USD)]),
            cache_write_per_mtok_nanos=rng.choice([None, rng.randint(0, 25 * NANOS_PER_USD)]),
        )
        client = rng.randint(1, 10**10)
        ratio = PriceRatio(cost_nanos=rng.randint(1, client), client_nanos=client)
        usage = Usage(*(rng.randint(0, 300_000) for _ in range(4)))
        cached_rate = prices.cached_input_per_mtok_nanos
        write_rate = prices.cache_write_per_mtok_nanos
        exact = Fraction(
            usage.input_tokens * prices.input_per_mtok_nanos
            + usage.output_tokens * prices.output_per_mtok_nanos
            + usage.cached_input_tokens
            * (prices.input_per_mtok_nanos if cached_rate is None else cached_rate)
            + usage.cache_write_tokens
            * (prices.input_per_mtok_nanos if write_rate is None else write_rate),
            1_000_000,
        )
        charge = request_charge(usage, prices, ratio)
        assert charge.cost_nanos == half_up(exact)
        assert charge.client_nanos == half_up(exact * ratio.client_nanos / ratio.cost_nanos)
        assert charge.client_nanos >= charge.cost_nanos


# ----------------------------------------------------------------------------- cache savings


def test_cache_savings_are_the_cached_reads_at_the_input_rate_less_the_cached_rate():
    # 1M cached tokens at $1 input and $0.50 cached: $0.50 saved; client price 5/3 of cost.
    ratio = PriceRatio(cost_nanos=3, client_nanos=5)
    charge = request_charge(Usage(input_tokens=1_000, cached_input_tokens=1_000_000), PRICES, ratio)
    assert charge.cache_savings_nanos == NANOS_PER_USD // 2
    assert charge.client_cache_savings_nanos == 833_333_333  # 0.8333…, rounded once
    # The charge itself is unchanged by them.
    assert (charge.cost_nanos, charge.client_nanos) == (501_000_000, 835_000_000)


def test_no_cached_reads_or_no_cached_rate_save_nothing():
    no_cached_rate = Prices(input_per_mtok_nanos=3 * NANOS_PER_USD, output_per_mtok_nanos=1)
    assert request_charge(Usage(input_tokens=10**6), PRICES, ONE_TO_ONE) == Charge(
        NANOS_PER_USD, NANOS_PER_USD, 0, 0
    )
    saved = request_charge(Usage(cached_input_tokens=10**6), no_cached_rate, ONE_TO_ONE)
    assert (saved.cache_savings_nanos, saved.client_cache_savings_nanos) == (0, 0)


def test_a_cached_rate_above_the_input_rate_saves_nothing_rather_than_a_negative_amount():
    dearer = Prices(
        input_per_mtok_nanos=NANOS_PER_USD,
        output_per_mtok_nanos=NANOS_PER_USD,
        cached_input_per_mtok_nanos=2 * NANOS_PER_USD,
    )
    charge = request_charge(Usage(cached_input_tokens=10**6), dearer, PriceRatio(1, 2))
    assert charge.cost_nanos == 2 * NANOS_PER_USD  # still charged at the posted cached rate
    assert (charge.cache_savings_nanos, charge.client_cache_savings_nanos) == (0, 0)


def test_cache_savings_are_rounded_once_half_up():
    # 500,000 cached tokens saving 1 nano per MTok: exactly half a nano-dollar -> 1.
    prices = Prices(input_per_mtok_nanos=2, output_per_mtok_nanos=1, cached_input_per_mtok_nanos=1)
    assert request_charge(Usage(cached_input_tokens=500_000), prices, ONE_TO_ONE) == Charge(
        1, 1, 1, 1
    )
    # 0.4999… rounds down, at client price too (exact 0.4 × 1.25 = 0.5 -> 1).
    charge = request_charge(Usage(cached_input_tokens=400_000), prices, PriceRatio(4, 5))
    assert (charge.cache_savings_nanos, charge.client_cache_savings_nanos) == (0, 1)


def test_cache_savings_use_the_rates_of_the_tier_the_prompt_reached():
    # Sonnet: $3 input / $0.30 cached below 200K prompt tokens, $6 / $0.60 past it.
    below = Usage(input_tokens=1_000, cached_input_tokens=150_000)
    past = Usage(input_tokens=1_000, cached_input_tokens=150_000, cache_write_tokens=50_000)
    assert request_charge(below, SONNET, ONE_TO_ONE).cache_savings_nanos == 150_000 * 2_700
    charge = request_charge(past, SONNET, PriceRatio(2, 3))
    assert charge.cache_savings_nanos == 150_000 * 5_400  # 810_000_000
    assert charge.client_cache_savings_nanos == 1_215_000_000


prices_strategy = st.builds(
    Prices,
    input_per_mtok_nanos=st.integers(0, 20 * NANOS_PER_USD),
    output_per_mtok_nanos=st.integers(0, 80 * NANOS_PER_USD),
    cached_input_per_mtok_nanos=st.none() | st.integers(0, 25 * NANOS_PER_USD),
    cache_write_per_mtok_nanos=st.none() | st.integers(0, 25 * NANOS_PER_USD),
    tiers=st.lists(
        st.builds(
            PriceTier,
            above_prompt_tokens=st.integers(1, 400_000),
            input_per_mtok_nanos=st.integers(0, 40 * NANOS_PER_USD),
            output_per_mtok_nanos=st.integers(0, 80 * NANOS_PER_USD),
            cached_input_per_mtok_nanos=st.none() | st.integers(0, 50 * NANOS_PER_USD),
        ),
        max_size=2,
        unique_by=lambda tier: tier.above_prompt_tokens,
    ).map(lambda tiers: tuple(sorted(tiers, key=lambda tier: tier.above_prompt_tokens))),
)
ratios = st.integers(1, 10**10).flatmap(
    lambda client: st.builds(PriceRatio, st.integers(1, client), st.just(client))
)
usages = st.builds(
    Usage,
    input_tokens=st.integers(0, 300_000),
    output_tokens=st.integers(0, 300_000),
    cached_input_tokens=st.integers(0, 300_000),
    cache_write_tokens=st.integers(0, 300_000),
)


@given(prices=prices_strategy, ratio=ratios, usage=usages)
def test_cache_savings_are_what_the_cached_reads_would_have_cost_more_at_the_input_rate(
    prices, ratio, usage
):
    charge = request_charge(usage, prices, ratio)
    # The same request with its cached reads billed as plain input, at the same tier.
    plain = Usage(
        input_tokens=usage.input_tokens + usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )
    assert plain.prompt_tokens == usage.prompt_tokens
    flat = prices.at(usage.prompt_tokens)
    exact = max(
        Fraction(
            usage.cached_input_tokens * (flat.input_per_mtok_nanos - flat.cached_rate), 1_000_000
        ),
        Fraction(0),
    )
    assert charge.cache_savings_nanos == half_up(exact)
    assert charge.client_cache_savings_nanos == half_up(
        exact * ratio.client_nanos / ratio.cost_nanos
    )
    assert 0 <= charge.cache_savings_nanos <= charge.client_cache_savings_nanos
    if flat.cached_rate <= flat.input_per_mtok_nanos:
        # Exactly the difference of the two exact charges, rounded once.
        would_have = Fraction(_numerator(plain, flat), 1_000_000)
        assert would_have - Fraction(_numerator(usage, flat), 1_000_000) == exact
    # The charge is still its own definition, whatever the savings.
    assert charge.cost_nanos == half_up(Fraction(_numerator(usage, flat), 1_000_000))


def _numerator(usage: Usage, flat: Prices) -> int:
    return (
        usage.input_tokens * flat.input_per_mtok_nanos
        + usage.cached_input_tokens * flat.cached_rate
        + usage.cache_write_tokens * flat.cache_write_rate
        + usage.output_tokens * flat.output_per_mtok_nanos
    )


def test_usage_refuses_negative_tokens():
    with pytest.raises(MoneyError):
        Usage(output_tokens=-1)


# ----------------------------------------------------------------------------- affordable_output_tokens


def _fits(
    *,
    input_tokens: int,
    output_tokens: int,
    prices: Prices,
    ratio: PriceRatio,
    client: int | None,
    cost: int | None,
) -> bool:
    charge = request_charge(
        Usage(input_tokens=input_tokens, output_tokens=output_tokens), prices, ratio
    )
    return (cost is None or charge.cost_nanos <= cost) and (
        client is None or charge.client_nanos <= client
    )


def _assert_largest_that_fits(*, input_tokens, prices, ratio, client, cost) -> int:
    tokens = affordable_output_tokens(
        input_tokens=input_tokens,
        prices=prices,
        ratio=ratio,
        client_available_nanos=client,
        cost_available_nanos=cost,
    )
    case = {
        "input_tokens": input_tokens,
        "prices": prices,
        "ratio": ratio,
        "client": client,
        "cost": cost,
    }
    if tokens > 0 or _fits(output_tokens=0, **case):
        assert _fits(output_tokens=tokens, **case), case
    assert not _fits(output_tokens=tokens + 1, **case), case
    return tokens


def test_affordable_output_tokens_under_a_client_budget():
    # $1 input / $2 output, ratio 0.6: 1,000 input tokens cost $0.001, $0.001666… client.
    ratio = PriceRatio(cost_nanos=60, client_nanos=100)
    tokens = _assert_largest_that_fits(
        input_tokens=1_000, prices=PRICES, ratio=ratio, client=parse_usd("0.01"), cost=None
    )
    assert tokens == 2_500


def test_affordable_output_tokens_under_a_wallet_balance():
    tokens = _assert_largest_that_fits(
        input_tokens=1_000, prices=PRICES, ratio=ONE_TO_ONE, client=None, cost=parse_usd("0.003")
    )
    assert tokens == 1_000


def test_affordable_output_tokens_takes_the_tighter_of_both_bounds():
    ratio = PriceRatio(cost_nanos=1, client_nanos=2)
    tokens = _assert_largest_that_fits(
        input_tokens=0,
        prices=PRICES,
        ratio=ratio,
        client=parse_usd("0.004"),
        cost=parse_usd("0.003"),
    )
    assert tokens == 1_000  # the client bound ($0.004 = $0.002 of cost) is the tighter


def test_affordable_output_tokens_is_zero_when_the_input_alone_does_not_fit():
    assert (
        affordable_output_tokens(
            input_tokens=10_000,
            prices=PRICES,
            ratio=ONE_TO_ONE,
            client_available_nanos=1_000,
            cost_available_nanos=None,
        )
        == 0
    )


def test_free_output_is_bounded_only_by_the_input():
    free = Prices(input_per_mtok_nanos=NANOS_PER_USD, output_per_mtok_nanos=0)
    kwargs: dict[str, Any] = {"prices": free, "ratio": ONE_TO_ONE, "client_available_nanos": None}
    assert affordable_output_tokens(
        input_tokens=1_000, cost_available_nanos=parse_usd("0.001"), **kwargs
    ) == (UNBOUNDED_OUTPUT_TOKENS)
    assert (
        affordable_output_tokens(
            input_tokens=1_001, cost_available_nanos=parse_usd("0.001"), **kwargs
        )
        == 0
    )


def test_affordable_output_tokens_is_the_largest_that_fits_brute_force():
    rng = random.Random(31337)
    for _ in range(400):
        prices = Prices(
            input_per_mtok_nanos=rng.randint(0, 3_000_000),
            output_per_mtok_nanos=rng.randint(200_000, 3_000_000),
        )
        client_price = rng.randint(1, 1000)
        ratio = PriceRatio(cost_nanos=rng.randint(1, client_price), client_nanos=client_price)
        client = rng.choice([None, rng.randint(0, 200)])
        cost = rng.randint(0, 200) if client is None else rng.choice([None, rng.randint(0, 200)])
        input_tokens = rng.randint(0, 100)
        tokens = _assert_largest_that_fits(
            input_tokens=input_tokens, prices=prices, ratio=ratio, client=client, cost=cost
        )
        # And by brute force: no smaller count is refused, so nothing larger was missed.
        case: dict[str, Any] = {
            "input_tokens": input_tokens,
            "prices": prices,
            "ratio": ratio,
            "client": client,
            "cost": cost,
        }
        largest = -1
        while _fits(output_tokens=largest + 1, **case):
            largest += 1
        assert tokens == max(largest, 0), case


# ----------------------------------------------------------------------------- long-prompt tiers

# Claude Sonnet 4.5's posted rates: $3 / $15 per 1M tokens, $6 / $22.50 past 200K prompt tokens.
SONNET = Prices(
    input_per_mtok_nanos=3 * NANOS_PER_USD,
    output_per_mtok_nanos=15 * NANOS_PER_USD,
    cached_input_per_mtok_nanos=300_000_000,
    tiers=(
        PriceTier(
            above_prompt_tokens=200_000,
            input_per_mtok_nanos=6 * NANOS_PER_USD,
            output_per_mtok_nanos=22_500_000_000,
            cached_input_per_mtok_nanos=600_000_000,
        ),
    ),
)


def test_a_prompt_past_the_threshold_prices_every_token_at_the_tier():
    at_threshold = Usage(input_tokens=200_000, output_tokens=1_000_000)
    past_it = Usage(input_tokens=200_001, output_tokens=1_000_000)
    assert request_charge(at_threshold, SONNET, ONE_TO_ONE).cost_nanos == (
        600_000_000 + 15 * NANOS_PER_USD
    )
    # A cliff: all 200,001 input tokens and all the output at the tier's rates.
    assert request_charge(past_it, SONNET, ONE_TO_ONE).cost_nanos == (
        1_200_006_000 + 22_500_000_000
    )


def test_cached_reads_and_cache_writes_count_toward_the_threshold():
    usage = Usage(input_tokens=1_000, cached_input_tokens=150_000, cache_write_tokens=50_000)
    assert usage.prompt_tokens == 201_000
    charged = request_charge(usage, SONNET, ONE_TO_ONE).cost_nanos
    # Tier rates: input $6, cached $0.60, cache write at the tier's input rate ($6).
    assert charged == 6_000_000 + 90_000_000 + 300_000_000


def test_the_highest_tier_passed_applies_and_the_base_has_no_tiers_left():
    prices = Prices(
        input_per_mtok_nanos=1,
        output_per_mtok_nanos=1,
        tiers=(
            PriceTier(above_prompt_tokens=10, input_per_mtok_nanos=2, output_per_mtok_nanos=2),
            PriceTier(above_prompt_tokens=20, input_per_mtok_nanos=3, output_per_mtok_nanos=3),
        ),
    )
    assert [prices.at(n).input_per_mtok_nanos for n in (0, 10, 11, 20, 21, 10**9)] == [
        1,
        1,
        2,
        2,
        3,
        3,
    ]
    assert prices.at(0).tiers == ()


def test_affordable_output_tokens_prices_the_output_at_the_prompts_tier():
    # $30 of budget, a 250K-token prompt: $1.50 of input at the tier, output at $22.50 / 1M.
    affordable = affordable_output_tokens(
        input_tokens=250_000,
        prices=SONNET,
        ratio=ONE_TO_ONE,
        client_available_nanos=30 * NANOS_PER_USD,
        cost_available_nanos=None,
    )
    assert affordable == (30 * NANOS_PER_USD - 1_500_000_000) * 1_000_000 // 22_500_000_000


@pytest.mark.parametrize(
    ("thresholds", "valid"),
    [((), True), ((200_000,), True), ((100_000, 200_000), True), ((0,), False),
     ((200_000, 100_000), False), ((200_000, 200_000), False)],
)  # fmt: skip
def test_tier_thresholds_must_be_positive_and_rise(thresholds: Any, valid: bool):
    prices = Prices(
        input_per_mtok_nanos=3,
        output_per_mtok_nanos=15,
        tiers=tuple(
            PriceTier(above_prompt_tokens=a, input_per_mtok_nanos=6, output_per_mtok_nanos=22)
            for a in thresholds
        ),
    )
    assert (tiers_invalid(prices.tiers) is None) == valid


def test_a_hold_is_priced_at_the_dearest_rates_any_prompt_within_its_bound_may_pay():
    # Long prompts cheaper on input, dearer on output; cache writes dearer than input.
    prices = Prices(
        input_per_mtok_nanos=3,
        output_per_mtok_nanos=15,
        cache_write_per_mtok_nanos=4,
        tiers=(
            PriceTier(
                above_prompt_tokens=1_000,
                input_per_mtok_nanos=2,
                output_per_mtok_nanos=20,
                cache_write_per_mtok_nanos=9,
            ),
        ),
    )
    short = worst_case_prices(prices, 1_000)
    assert (short.input_per_mtok_nanos, short.output_per_mtok_nanos, short.tiers) == (4, 15, ())
    long = worst_case_prices(prices, 1_001)
    assert (long.input_per_mtok_nanos, long.output_per_mtok_nanos) == (9, 20)


def test_no_usage_within_a_bound_costs_more_than_its_hold_brute_force():
    rng = random.Random(7)

    def rate() -> int:
        return rng.randrange(10) * NANOS_PER_USD  # up to $9 per 1M tokens

    for _ in range(300):
        tiers = []
        threshold = 0
        for _ in range(rng.randrange(3)):
            threshold += rng.randrange(1, 50)
            tiers.append(
                PriceTier(
                    above_prompt_tokens=threshold,
                    input_per_mtok_nanos=rate(),
                    output_per_mtok_nanos=rate(),
                    cached_input_per_mtok_nanos=rng.choice([None, rate()]),
                    cache_write_per_mtok_nanos=rng.choice([None, rate()]),
                    cache_write_1h_per_mtok_nanos=rng.choice([None, rate()]),
                )
            )
        prices = Prices(
            input_per_mtok_nanos=rate(),
            output_per_mtok_nanos=rate(),
            cached_input_per_mtok_nanos=rng.choice([None, rate()]),
            cache_write_per_mtok_nanos=rng.choice([None, rate()]),
            cache_write_1h_per_mtok_nanos=rng.choice([None, rate()]),
            tiers=tuple(tiers),
        )
        prompt_bound, output_bound = rng.randrange(1, 150), rng.randrange(150)
        hold = request_charge(
            Usage(input_tokens=prompt_bound, output_tokens=output_bound),
            worst_case_prices(prices, prompt_bound),
            ONE_TO_ONE,
        )
        for _ in range(20):
            cached = rng.randrange(prompt_bound + 1)
            written = rng.randrange(prompt_bound - cached + 1)
            used = Usage(
                input_tokens=rng.randrange(prompt_bound - cached - written + 1),
                cached_input_tokens=cached,
                cache_write_tokens=written,
                cache_write_1h_tokens=rng.randrange(written + 1),
                output_tokens=rng.randrange(output_bound + 1),
            )
            assert request_charge(used, prices, ONE_TO_ONE).cost_nanos <= hold.cost_nanos


def test_tier_parse_reads_what_operators_write():
    assert tier_parse("200000:6:22.5:0.6:7.5") == PriceTier(
        above_prompt_tokens=200_000,
        input_per_mtok_nanos=6 * NANOS_PER_USD,
        output_per_mtok_nanos=22_500_000_000,
        cached_input_per_mtok_nanos=600_000_000,
        cache_write_per_mtok_nanos=7_500_000_000,
    )
    assert tier_parse(" 128000:2:10 ").cached_input_per_mtok_nanos is None
    assert tier_parse("128000:2:10::3").cache_write_per_mtok_nanos == 3 * NANOS_PER_USD


@pytest.mark.parametrize(
    "text",
    ["", "200000:6", "x:6:22", "0:6:22", "-5:6:22", "200000:6:", "200000:-1:2", "1:2:3:4:5:6:7"],
)
def test_tier_parse_refuses_what_is_not_a_tier(text: str):
    with pytest.raises(MoneyError):
        tier_parse(text)


def test_tiers_round_trip_through_their_stored_json():
    stored = [tier.as_json() for tier in SONNET.tiers]
    assert tiers_from_json(stored) == SONNET.tiers
    assert tiers_from_json(json.dumps(stored)) == SONNET.tiers
    assert tiers_from_json([]) == tiers_from_json(None) == ()


def test_one_hour_cache_writes_are_billed_at_their_own_rate():
    # Claude Sonnet: $3 input, $3.75 five-minute writes, $6 one-hour writes per 1M tokens.
    prices = Prices(
        input_per_mtok_nanos=3 * NANOS_PER_USD,
        output_per_mtok_nanos=15 * NANOS_PER_USD,
        cache_write_per_mtok_nanos=3_750_000_000,
        cache_write_1h_per_mtok_nanos=6 * NANOS_PER_USD,
    )
    usage = Usage(cache_write_tokens=1_000_000, cache_write_1h_tokens=400_000)
    assert request_charge(usage, prices, ONE_TO_ONE).cost_nanos == (
        600_000 * 3_750 + 400_000 * 6_000
    )
    # Unset, a one-hour write costs what any cache write does.
    plain = Prices(
        input_per_mtok_nanos=3 * NANOS_PER_USD,
        output_per_mtok_nanos=15 * NANOS_PER_USD,
        cache_write_per_mtok_nanos=3_750_000_000,
    )
    assert request_charge(usage, plain, ONE_TO_ONE).cost_nanos == 1_000_000 * 3_750
    # The hold prices a prompt at the dearest of them.
    assert worst_case_prices(prices, 10).input_per_mtok_nanos == 6 * NANOS_PER_USD


def test_one_hour_cache_writes_are_part_of_the_cache_writes():
    with pytest.raises(MoneyError):
        Usage(cache_write_tokens=10, cache_write_1h_tokens=11)
    with pytest.raises(MoneyError):
        Usage(cache_write_1h_tokens=-1)


def test_a_tier_may_carry_a_one_hour_cache_write_rate():
    tier = tier_parse("200000:6:22.5:0.6:7.5:12")
    assert tier.cache_write_1h_per_mtok_nanos == 12 * NANOS_PER_USD
    assert tiers_from_json([tier.as_json()]) == (tier,)
    prices = Prices(input_per_mtok_nanos=3, output_per_mtok_nanos=15, tiers=(tier,))
    assert prices.at(200_001).cache_write_1h_rate == 12 * NANOS_PER_USD
