"""``manage.py set_price MODEL --upstream NAME --input PER_MTOK --output PER_MTOK
[--cached-input PER_MTOK] [--cache-write PER_MTOK] [--cache-write-1h PER_MTOK]
[--tier ABOVE:INPUT:OUTPUT[:CACHED[:CACHE_WRITE[:WRITE_1H]]] ...] [--max-output-tokens N]
[--context-window N] [--json]``."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.exceptions import BillingError
from billing.models import ModelPrice, Upstream
from billing.money import MoneyError, PriceTier, format_usd, parse_usd, tier_parse
from billing.selectors import upstream_get
from billing.services import price_set

PRICE_OPTIONS = {
    "input": "--input",
    "output": "--output",
    "cached_input": "--cached-input",
    "cache_write": "--cache-write",
    "cache_write_1h": "--cache-write-1h",
}


def _usd_or_none(nanos: int | None) -> str | None:
    return None if nanos is None else format_usd(nanos)


def parse_tier(text: str) -> PriceTier:
    try:
        return tier_parse(text)
    except MoneyError as exc:
        raise CommandError(f"Invalid --tier {text!r}: {exc}") from exc


def tier_json(tier: PriceTier) -> dict[str, Any]:
    return {
        "above_prompt_tokens": tier.above_prompt_tokens,
        "input": format_usd(tier.input_per_mtok_nanos),
        "output": format_usd(tier.output_per_mtok_nanos),
        "cached_input": _usd_or_none(tier.cached_input_per_mtok_nanos),
        "cache_write": _usd_or_none(tier.cache_write_per_mtok_nanos),
        "cache_write_1h": _usd_or_none(tier.cache_write_1h_per_mtok_nanos),
    }


class Command(BaseCommand):
    help = (
        "Post a new price version for a model on an upstream (creating its route). "
        "Prices are USD per 1M tokens; earlier versions stay for the requests they charged."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help="The model name clients ask for.")
        parser.add_argument("--upstream", required=True, help="The upstream's name.")
        parser.add_argument("--input", required=True, help="USD per 1M input tokens.")
        parser.add_argument("--output", required=True, help="USD per 1M output tokens.")
        parser.add_argument(
            "--cached-input", help="USD per 1M cached input tokens (default: input)."
        )
        parser.add_argument("--cache-write", help="USD per 1M cache-write tokens (default: input).")
        parser.add_argument(
            "--cache-write-1h",
            help="USD per 1M one-hour cache-write tokens (Anthropic; default: --cache-write).",
        )
        parser.add_argument(
            "--tier",
            action="append",
            default=[],
            metavar="ABOVE:INPUT:OUTPUT[:CACHED[:CACHE_WRITE[:WRITE_1H]]]",
            help=(
                "Rates (USD per 1M tokens) for every token of a request whose prompt is over "
                "ABOVE tokens, as providers bill long prompts; repeat for more tiers."
            ),
        )
        parser.add_argument("--max-output-tokens", type=int, help="The route's output limit.")
        parser.add_argument(
            "--context-window",
            type=int,
            help=(
                "The model's context window in tokens: the input bound of requests that refer "
                "to input their body does not carry (previous responses, files, server tools)."
            ),
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        nanos: dict[str, int | None] = {}
        for dest, flag in PRICE_OPTIONS.items():
            raw = options[dest]
            try:
                nanos[dest] = None if raw is None else parse_usd(raw)
            except MoneyError as exc:
                raise CommandError(f"Invalid {flag} {raw!r}: {exc}.") from exc
        tiers = [parse_tier(text) for text in options["tier"]]
        max_output = options["max_output_tokens"]
        if max_output is not None and max_output < 1:
            raise CommandError("--max-output-tokens must be at least 1.")
        try:
            upstream = upstream_get(name=options["upstream"])
        except Upstream.DoesNotExist as exc:
            raise CommandError(f"No upstream named {options['upstream']!r}.") from exc
        try:
            price = price_set(
                model=options["model"],
                upstream=upstream,
                input_per_mtok_nanos=nanos["input"] or 0,
                output_per_mtok_nanos=nanos["output"] or 0,
                cached_input_per_mtok_nanos=nanos["cached_input"],
                cache_write_per_mtok_nanos=nanos["cache_write"],
                cache_write_1h_per_mtok_nanos=nanos["cache_write_1h"],
                source=ModelPrice.Source.MANUAL,
                max_output_tokens=max_output,
                tiers=tiers,
                context_window_tokens=options["context_window"],
            )
        except BillingError as exc:
            raise CommandError(str(exc)) from exc
        route = price.route
        if options["json"]:
            payload = {
                "id": price.pk,
                "route_id": route.pk,
                "model": route.model,
                "upstream": upstream.name,
                "input": format_usd(price.input_per_mtok_nanos),
                "output": format_usd(price.output_per_mtok_nanos),
                "cached_input": _usd_or_none(price.cached_input_per_mtok_nanos),
                "cache_write": _usd_or_none(price.cache_write_per_mtok_nanos),
                "cache_write_1h": _usd_or_none(price.cache_write_1h_per_mtok_nanos),
                "tiers": [tier_json(tier) for tier in price.as_prices().tiers],
                "max_output_tokens": route.max_output_tokens,
                "context_window": route.context_window_tokens,
                "source": price.source,
                "effective_from": price.effective_from.isoformat(),
            }
            self.stdout.write(json.dumps(payload))
            return
        self.stdout.write(
            f"{route.model} via {upstream.name}: price version {price.pk}, per 1M tokens "
            f"input {format_usd(price.input_per_mtok_nanos)} USD, "
            f"output {format_usd(price.output_per_mtok_nanos)} USD, cached input "
            f"{format_usd(price.as_prices().cached_rate)} USD"
            + "".join(
                f"; over {tier.above_prompt_tokens} prompt tokens input "
                f"{format_usd(tier.input_per_mtok_nanos)}, output "
                f"{format_usd(tier.output_per_mtok_nanos)} USD"
                for tier in price.as_prices().tiers
            )
            + "."
        )
