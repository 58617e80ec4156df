"""Money: integer nano-dollars inside, decimal strings and cents at the edges.

Design overview
---------------
* Every amount inside Tollgate is an ``int`` of nano-dollars (1e-9 USD), stored in a
  ``BigIntegerField`` whose name ends in ``_nanos``. A signed 64-bit column holds about
  9.2 billion dollars, far beyond any wallet.
* Prices are posted per 1M tokens, also in nano-dollars (``$2.50 / MTok`` is
  ``2_500_000_000``), so a price is exact to 1e-15 USD per token.
* A key's price ratio (your cost / client price) is kept exact as the two amounts it was
  created from (``PriceRatio(cost_nanos, client_nanos)``), never as a rounded float.
* **The one rounding rule.** A request's cost and client price are computed from the exact
  rational sum ``Σ tokens × price_per_mtok / 1e6`` (times ``client / cost`` for the client
  price), each rounded *once*, half up, to a whole nano-dollar. Funding a prepaid key and
  topping it up convert a client amount to cost with the same rule
  (``ratio.cost_from_client``). Nothing rounds twice and no float is ever involved.
* What prompt caching saved a request (``Charge.cache_savings_nanos``, and at client price
  ``client_cache_savings_nanos``) follows the same rule: cached reads × (input rate −
  cached rate) at the tier the charge used, rounded once; never negative.
* Decimal only at the edges: :func:`parse_usd` reads every amount a person or a client
  sends (the REST API, the operator's commands and admin forms): a plain decimal, exact,
  at most 9 decimal places; :func:`format_usd` writes it ("140.00", "0.000123456").
  Stripe and the sub-account API speak integer cents (:func:`cents_to_nanos`,
  :func:`nanos_to_cents`); an amount sent to Stripe must be whole cents
  (:func:`whole_cents` refuses the rest instead of rounding it).
* A card top-up's optional fee (:func:`top_up_fee_nanos`) is the one amount rounded to
  the cent, not the nano-dollar, by the same half-up rule: the card is charged in cents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, Inexact, InvalidOperation, localcontext

NANOS_PER_USD = 1_000_000_000
NANOS_PER_CENT = 10_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are per 1M tokens
USD_DECIMAL_PLACES = 9
# The largest amount any single API call may move: a guard against typos and overflow.
MAX_AMOUNT_NANOS = 1_000_000 * NANOS_PER_USD
# The largest amount parse_usd reads at all, checked before any arithmetic.
MAX_PARSED_USD = Decimal(10**18 // NANOS_PER_USD)
# An amount as format_usd writes it: ASCII digits, then optionally a point and more digits;
# a minus sign for the operator's adjustments. Nothing else: Decimal() alone would also take
# "1_0", "١٠" (Arabic-Indic digits), " 5", "+5", "5.", ".5", "1e2", "NaN" and "Infinity",
# each a way for a typo or a mangled value to pass for an amount.
USD_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
USD_TEXT_MESSAGE = "not a decimal amount (digits and an optional point, e.g. 12.50)"
# What affordable_output_tokens answers when nothing bounds max_tokens.
UNBOUNDED_OUTPUT_TOKENS = 2**31 - 1


class MoneyError(ValueError):
    """An amount that cannot be represented exactly or is out of range."""


def div_round_half_up(numerator: int, denominator: int) -> int:
    """The documented rounding rule: exact integer division, rounded half up (for n >= 0)."""
    if denominator <= 0:
        raise MoneyError("denominator must be positive")
    if numerator < 0:
        return -div_round_half_up(-numerator, denominator)
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (1 if remainder * 2 >= denominator else 0)


def parse_usd(value: Decimal | str | int) -> int:
    """A USD amount from the edge as nano-dollars, exactly; no rounding.

    Text must be a plain decimal (``USD_TEXT``: ``"12.50"``, ``"-0.25"``, ``"100"``), with
    no spaces around it; an ``int`` is whole dollars. Raises MoneyError for anything else
    (floats and booleans included), NaN/infinity, more than 9 decimal places, or an amount
    beyond 1e9 USD.
    """
    if isinstance(value, bool | float):
        # A float cannot be trusted to carry the amount the user typed; True is not 1 USD.
        raise MoneyError(USD_TEXT_MESSAGE)
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    else:
        if not isinstance(value, str) or not USD_TEXT.fullmatch(value):
            raise MoneyError(USD_TEXT_MESSAGE)
        amount = Decimal(value)
    if not amount.is_finite():
        raise MoneyError("not a finite number")
    # Range first, with an exact comparison: arithmetic on "1E+999990" would build a
    # million-digit int (seconds of CPU per request) and "1E+100000000" would overflow.
    if amount.copy_abs() > MAX_PARSED_USD:
        raise MoneyError("amount out of range")
    # Decimal arithmetic silently rounds to the context precision (28 digits): without the
    # trap, "0.1000000000000000000000000000001" would be read as 0.10. An in-range amount
    # with at most 9 places scales exactly; anything the trap catches has more places.
    with localcontext() as exact:
        exact.traps[Inexact] = True
        try:
            nanos = amount * NANOS_PER_USD
        except Inexact as exc:
            raise MoneyError(f"at most {USD_DECIMAL_PLACES} decimal places") from exc
    if nanos != nanos.to_integral_value():
        raise MoneyError(f"at most {USD_DECIMAL_PLACES} decimal places")
    return int(nanos)


def parse_usd_rounded(value: Decimal | str | int) -> int:
    """A USD amount from an outside price list as nano-dollars, rounded once by the one
    rule (:func:`div_round_half_up`).

    For sources we do not control: ``genai-prices`` posts some rates per 1M tokens with more
    than 9 decimal places. Operator and API input goes through :func:`parse_usd`, which
    refuses what it cannot represent instead of rounding it.
    """
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise MoneyError("not a number") from exc
    if not amount.is_finite():
        raise MoneyError("not a finite number")
    # Bounds before exact arithmetic, so a huge or tiny exponent cannot build a huge int.
    if amount.copy_abs() > MAX_PARSED_USD:
        raise MoneyError("amount out of range")
    if amount.is_zero() or amount.adjusted() < -(USD_DECIMAL_PLACES + 1):
        return 0  # below half a nano-dollar
    numerator, denominator = amount.as_integer_ratio()
    return div_round_half_up(numerator * NANOS_PER_USD, denominator)


def to_decimal(nanos: int) -> Decimal:
    """Exact Decimal of a nano amount (for serializers' DecimalFields)."""
    return Decimal(nanos).scaleb(-USD_DECIMAL_PLACES)


def format_usd(nanos: int) -> str:
    """Nano-dollars as a decimal string: at least 2 places, up to 9, no float.

    >>> format_usd(140 * NANOS_PER_USD), format_usd(123_456)
    ('140.00', '0.000123456')
    """
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), NANOS_PER_USD)
    digits = f"{frac:09d}".rstrip("0")
    if len(digits) < 2:
        digits = digits.ljust(2, "0")
    return f"{sign}{whole}.{digits}"


def cents_to_nanos(cents: int) -> int:
    return int(cents) * NANOS_PER_CENT


def whole_cents(nanos: int) -> int:
    """Nano-dollars as whole cents, exactly (what Stripe charges); MoneyError for an amount
    with a fraction of a cent, which is refused rather than rounded."""
    cents, rest = divmod(nanos, NANOS_PER_CENT)
    if rest:
        raise MoneyError("must be a whole number of cents")
    return cents


# A percentage as an operator writes it: "2.9", "0", "12.5"; no sign, no exponent.
PERCENT_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_percent(text: str) -> Decimal:
    """A percentage from 0 up to (not including) 100, exactly; MoneyError otherwise."""
    if not PERCENT_TEXT.fullmatch(text.strip()):
        raise MoneyError("not a percentage (digits and an optional point, e.g. 2.9)")
    percent = Decimal(text.strip())
    if percent >= 100:
        raise MoneyError("a percentage must be below 100")
    return percent


def top_up_fee_nanos(amount_nanos: int, *, percent: Decimal, fixed_nanos: int) -> int:
    """The fee on a card top-up of ``amount_nanos``: ``percent`` % of it, rounded once,
    half up, to a whole cent (cards are charged in cents), plus ``fixed_nanos`` (whole
    cents). Exact until that one rounding: the percentage is read as the fraction it is.

    >>> top_up_fee_nanos(10 * NANOS_PER_USD, percent=Decimal("2.9"), fixed_nanos=30 * NANOS_PER_CENT)
    590000000
    """
    whole_cents(fixed_nanos)
    numerator, denominator = percent.as_integer_ratio()
    cents = div_round_half_up(amount_nanos * numerator, denominator * 100 * NANOS_PER_CENT)
    return cents * NANOS_PER_CENT + fixed_nanos


def nanos_to_cents(nanos: int) -> int:
    """Nano-dollars to whole cents, by the same half-up rule (for display in cents)."""
    return div_round_half_up(nanos, NANOS_PER_CENT)


@dataclass(frozen=True, slots=True)
class PriceRatio:
    """your cost / client price, exact, as the two amounts a key was created from."""

    cost_nanos: int
    client_nanos: int

    def __post_init__(self) -> None:
        if self.cost_nanos <= 0 or self.client_nanos <= 0:
            raise MoneyError("a price ratio needs two positive amounts")
        if self.cost_nanos > self.client_nanos:
            raise MoneyError("your cost cannot exceed the client price")

    @classmethod
    def one(cls) -> PriceRatio:
        return cls(NANOS_PER_USD, NANOS_PER_USD)

    def cost_from_client(self, client_nanos: int) -> int:
        return div_round_half_up(client_nanos * self.cost_nanos, self.client_nanos)

    def client_from_cost(self, cost_nanos: int) -> int:
        return div_round_half_up(cost_nanos * self.client_nanos, self.cost_nanos)

    def as_decimal(self, places: int = 6) -> Decimal:
        return _fraction_to_decimal(self.cost_nanos, self.client_nanos, places)

    def margin(self, places: int = 6) -> Decimal:
        """(client price - cost) / client price."""
        return _fraction_to_decimal(self.client_nanos - self.cost_nanos, self.client_nanos, places)


def _fraction_to_decimal(numerator: int, denominator: int, places: int) -> Decimal:
    scale = 10**places
    return Decimal(div_round_half_up(numerator * scale, denominator)).scaleb(-places).normalize()


@dataclass(frozen=True, slots=True)
class PriceTier:
    """The rates of a request whose prompt is over ``above_prompt_tokens`` tokens.

    Tiers are a *cliff*, as providers bill long prompts (Anthropic, Google, OpenAI; and
    genai-prices): past the threshold every token of the request, input, cached, cache
    write and output alike, is priced at the tier's rates, not only the tokens above it.
    The prompt is all input tokens, cached reads and cache writes included.
    """

    above_prompt_tokens: int
    input_per_mtok_nanos: int
    output_per_mtok_nanos: int
    cached_input_per_mtok_nanos: int | None = None
    cache_write_per_mtok_nanos: int | None = None
    cache_write_1h_per_mtok_nanos: int | None = None

    def as_json(self) -> dict[str, int | None]:
        return {
            "above_prompt_tokens": self.above_prompt_tokens,
            "input_per_mtok_nanos": self.input_per_mtok_nanos,
            "output_per_mtok_nanos": self.output_per_mtok_nanos,
            "cached_input_per_mtok_nanos": self.cached_input_per_mtok_nanos,
            "cache_write_per_mtok_nanos": self.cache_write_per_mtok_nanos,
            "cache_write_1h_per_mtok_nanos": self.cache_write_1h_per_mtok_nanos,
        }

    @classmethod
    def from_json(cls, value: dict[str, int | None]) -> PriceTier:
        def rate(name: str) -> int | None:
            got = value.get(name)
            return None if got is None else int(got)

        return cls(
            above_prompt_tokens=int(value["above_prompt_tokens"]),  # type: ignore[arg-type]
            input_per_mtok_nanos=int(value["input_per_mtok_nanos"]),  # type: ignore[arg-type]
            output_per_mtok_nanos=int(value["output_per_mtok_nanos"]),  # type: ignore[arg-type]
            cached_input_per_mtok_nanos=rate("cached_input_per_mtok_nanos"),
            cache_write_per_mtok_nanos=rate("cache_write_per_mtok_nanos"),
            cache_write_1h_per_mtok_nanos=rate("cache_write_1h_per_mtok_nanos"),
        )


@dataclass(frozen=True, slots=True)
class Prices:
    """A price version: nano-dollars per 1M tokens. Unset cached / cache-write rates
    are billed at the input rate, an unset one-hour cache-write rate (Anthropic's 2× input)
    at the cache-write rate. ``tiers`` (ascending thresholds) price long prompts."""

    input_per_mtok_nanos: int
    output_per_mtok_nanos: int
    cached_input_per_mtok_nanos: int | None = None
    cache_write_per_mtok_nanos: int | None = None
    cache_write_1h_per_mtok_nanos: int | None = None
    tiers: tuple[PriceTier, ...] = ()

    @property
    def cached_rate(self) -> int:
        if self.cached_input_per_mtok_nanos is None:
            return self.input_per_mtok_nanos
        return self.cached_input_per_mtok_nanos

    @property
    def cache_write_rate(self) -> int:
        if self.cache_write_per_mtok_nanos is None:
            return self.input_per_mtok_nanos
        return self.cache_write_per_mtok_nanos

    @property
    def cache_write_1h_rate(self) -> int:
        if self.cache_write_1h_per_mtok_nanos is None:
            return self.cache_write_rate
        return self.cache_write_1h_per_mtok_nanos

    def at(self, prompt_tokens: int) -> Prices:
        """The flat rates a request with a prompt of ``prompt_tokens`` pays: the highest
        tier whose threshold it is over, else the base rates."""
        for tier in reversed(self.tiers):
            if prompt_tokens > tier.above_prompt_tokens:
                return Prices(
                    input_per_mtok_nanos=tier.input_per_mtok_nanos,
                    output_per_mtok_nanos=tier.output_per_mtok_nanos,
                    cached_input_per_mtok_nanos=tier.cached_input_per_mtok_nanos,
                    cache_write_per_mtok_nanos=tier.cache_write_per_mtok_nanos,
                    cache_write_1h_per_mtok_nanos=tier.cache_write_1h_per_mtok_nanos,
                )
        return replace(self, tiers=()) if self.tiers else self


def tier_parse(text: str) -> PriceTier:
    """A tier as operators write it: ``ABOVE:INPUT:OUTPUT[:CACHED[:CACHE_WRITE[:WRITE_1H]]]``,
    the prompt tokens it starts above, then USD per 1M tokens (an empty or missing cached /
    cache-write rate is billed at the tier's input rate, a one-hour cache-write rate at its
    cache-write rate). Raises MoneyError."""
    parts = text.strip().split(":")
    if not 3 <= len(parts) <= 6:
        raise MoneyError("expected ABOVE:INPUT:OUTPUT[:CACHED[:CACHE_WRITE[:WRITE_1H]]].")
    above = parts[0].strip()
    if not above.isascii() or not above.isdigit() or int(above) < 1:
        raise MoneyError("ABOVE must be a positive number of prompt tokens.")
    rates: list[int | None] = [
        parse_usd(part.strip()) if part.strip() else None for part in parts[1:]
    ]
    rates += [None] * (5 - len(rates))
    input_rate, output_rate, cached_rate, write_rate, write_1h_rate = rates
    if input_rate is None or output_rate is None:
        raise MoneyError("INPUT and OUTPUT are required.")
    if any(rate is not None and rate < 0 for rate in rates):
        raise MoneyError("rates cannot be negative.")
    return PriceTier(
        above_prompt_tokens=int(above),
        input_per_mtok_nanos=input_rate,
        output_per_mtok_nanos=output_rate,
        cached_input_per_mtok_nanos=cached_rate,
        cache_write_per_mtok_nanos=write_rate,
        cache_write_1h_per_mtok_nanos=write_1h_rate,
    )


def tiers_from_json(value: object) -> tuple[PriceTier, ...]:
    """A price's stored tiers (a JSON list, or its text as some database drivers return it)."""
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    if not value:
        return ()
    return tuple(PriceTier.from_json(tier) for tier in value)  # type: ignore[attr-defined]


def tiers_invalid(tiers: Sequence[PriceTier]) -> str | None:
    """Why these tiers cannot be posted, or None: thresholds must be positive and rise
    from one tier to the next."""
    previous_threshold = 0
    for tier in tiers:
        if tier.above_prompt_tokens <= previous_threshold:
            return "Tier thresholds must be positive and rise from one tier to the next."
        previous_threshold = tier.above_prompt_tokens
    return None


def worst_case_prices(prices: Prices, prompt_tokens: int) -> Prices:
    """Flat rates no request with a prompt of at most ``prompt_tokens`` can exceed, to price
    its hold: for the prompt, the dearest input-side rate (plain, cached, cache-write or
    one-hour cache-write input: a cache write costs more than plain input at Anthropic), and
    the dearest output rate, over every tier such a prompt may reach."""
    levels = [prices.at(0)] + [
        prices.at(tier.above_prompt_tokens + 1)
        for tier in prices.tiers
        if prompt_tokens > tier.above_prompt_tokens
    ]
    return Prices(
        input_per_mtok_nanos=max(
            max(
                level.input_per_mtok_nanos,
                level.cached_rate,
                level.cache_write_rate,
                level.cache_write_1h_rate,
            )
            for level in levels
        ),
        output_per_mtok_nanos=max(level.output_per_mtok_nanos for level in levels),
    )


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts normalised across wire formats.

    ``input_tokens`` excludes cached reads and cache writes (OpenAI's ``prompt_tokens``
    includes cached tokens; the adapters subtract them).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    # Of the cache writes, those kept for an hour (Anthropic bills them at their own rate).
    cache_write_1h_tokens: int = 0

    def __post_init__(self) -> None:
        for name in (
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
        ):
            if getattr(self, name) < 0:
                raise MoneyError(f"{name} cannot be negative")
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise MoneyError("cache_write_1h_tokens are part of cache_write_tokens")

    @property
    def prompt_tokens(self) -> int:
        """Every input token, cached reads and cache writes included (what tiers count)."""
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cached_input_tokens
            + self.cache_write_tokens
        )


@dataclass(frozen=True, slots=True)
class Charge:
    """What one request costs (``cost_nanos``, the reseller's) and is charged
    (``client_nanos``), and what its cached reads saved at each of those prices.

    The savings move no money: they are a figure for reports, the proof of what prompt
    caching was worth (see :func:`request_charge`). Holds and releases leave them 0.
    """

    cost_nanos: int
    client_nanos: int
    cache_savings_nanos: int = 0
    client_cache_savings_nanos: int = 0


def _flat_cost_numerator(usage: Usage, prices: Prices) -> int:
    """Σ tokens × price per MTok at flat ``prices`` (the tier already chosen)."""
    return (
        usage.input_tokens * prices.input_per_mtok_nanos
        + usage.cached_input_tokens * prices.cached_rate
        + (usage.cache_write_tokens - usage.cache_write_1h_tokens) * prices.cache_write_rate
        + usage.cache_write_1h_tokens * prices.cache_write_1h_rate
        + usage.output_tokens * prices.output_per_mtok_nanos
    )


def _exact_cost_numerator(usage: Usage, prices: Prices) -> int:
    """Σ tokens × price per MTok (at the tier of the usage's prompt); divide by
    TOKENS_PER_PRICE_UNIT for nano-dollars."""
    return _flat_cost_numerator(usage, prices.at(usage.prompt_tokens))


def _cache_savings_numerator(usage: Usage, prices: Prices) -> int:
    """cached reads × (input rate − cached rate), at flat ``prices``; never negative (a
    cached rate posted above the input rate saved nothing: it is 0, not a negative saving)."""
    saved_per_mtok = prices.input_per_mtok_nanos - prices.cached_rate
    return usage.cached_input_tokens * saved_per_mtok if saved_per_mtok > 0 else 0


def request_charge(usage: Usage, prices: Prices, ratio: PriceRatio) -> Charge:
    """Cost and client price of one request, each rounded once (half up), and what its
    cached reads saved.

    The cache saving is what the cached-read tokens would have cost at the plain input
    rate less what they cost at the cached rate, at the rates of the tier the prompt
    reached (the charge's own), rounded once half up, at cost and at client price (scaled
    by the key's ratio exactly as the client price is). Never negative: with no cached
    rate posted (billed at the input rate) or one above the input rate, it is 0.
    """
    flat = prices.at(usage.prompt_tokens)
    numerator = _flat_cost_numerator(usage, flat)
    cost = div_round_half_up(numerator, TOKENS_PER_PRICE_UNIT)
    client_scale = TOKENS_PER_PRICE_UNIT * ratio.cost_nanos
    client = div_round_half_up(numerator * ratio.client_nanos, client_scale)
    if not usage.cached_input_tokens:
        return Charge(cost, client)
    saved = _cache_savings_numerator(usage, flat)
    # Positional: a class called with keywords packs them into a dict (the hot path).
    return Charge(
        cost,
        client,
        div_round_half_up(saved, TOKENS_PER_PRICE_UNIT),
        div_round_half_up(saved * ratio.client_nanos, client_scale),
    )


def affordable_output_tokens(
    *,
    input_tokens: int,
    prices: Prices,
    ratio: PriceRatio,
    client_available_nanos: int | None,
    cost_available_nanos: int | None,
) -> int:
    """The largest ``max_tokens`` whose worst case fits what is available (0 if none).

    Used for the 402 message; the bound is checked again by the reservation itself.
    Free output is bounded only by whether the input alone fits.
    """
    # Each limit is the largest exact numerator (Σ tokens × price per MTok) that still
    # rounds to an amount within what is available.
    limits: list[int] = []
    if cost_available_nanos is not None:
        # cost = round_half_up(N / 1e6) <= A  <=>  N < (A + 0.5) * 1e6
        limits.append(cost_available_nanos * TOKENS_PER_PRICE_UNIT + TOKENS_PER_PRICE_UNIT // 2 - 1)
    if client_available_nanos is not None:
        denominator = TOKENS_PER_PRICE_UNIT * ratio.cost_nanos
        limit_scaled = client_available_nanos * denominator + (denominator - 1) // 2
        # The numerator times the ratio's client amount must stay within limit_scaled.
        limits.append(limit_scaled // ratio.client_nanos)
    prices = worst_case_prices(prices, input_tokens)  # as the hold is priced
    input_part = input_tokens * prices.input_per_mtok_nanos
    per_token = prices.output_per_mtok_nanos
    best = UNBOUNDED_OUTPUT_TOKENS
    for limit in limits:
        room = limit - input_part
        if room < 0:
            return 0
        if per_token > 0:
            best = min(best, room // per_token)
    return best
