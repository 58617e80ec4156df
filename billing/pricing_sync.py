"""Seed posted prices from the ``genai-prices`` database.

Design overview
---------------
* **Offline.** Only the data bundled with the installed package is read
  (``genai_prices.data.providers``); its network auto-update is never started, so a sync
  is reproducible from the lock file and works without network access.
* **Which provider.** An upstream is matched to a genai-prices provider the way that
  package does it: the first provider whose ``api_pattern`` matches the start of the
  upstream's base URL (``https://api.openai.com/v1`` → ``openai``). ``provider_id`` forces
  one for a single upstream (an OpenAI-compatible gateway that resells a known provider).
* **Which price.** For each model that is not deprecated: the price in force now (the
  latest active ``ConditionalPrice``), without request-specific variants (batch, flex and
  priority tiers are not what a plain request pays). Tiered prices (long prompts cost
  more: Claude, Gemini, GPT past 200K or 272K input tokens) become the price's
  ``tiers``, one per threshold of any of its rates, each carrying every rate in force past
  that threshold; such models are listed in ``tiered``.
  A model needs an input price per 1M tokens; a missing output, cache-read or cache-write
  price means what genai-prices means by it (output not billed; cached tokens billed at the
  input rate), which is also how ``billing.money.Prices`` reads an unset rate.
* **Money.** Decimal USD per 1M tokens become nano-dollars per 1M tokens with
  ``parse_usd_rounded`` (half up, once): the database carries some rates with more than 9
  decimal places.
* **Versions.** A new ``ModelPrice`` (source ``genai-prices``) is posted only when it
  differs from the version in force, so a second sync posts nothing. A version the
  operator set by hand (source ``manual``) is never replaced unless ``override_manual``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone
from genai_prices import data as genai_data
from genai_prices.types import ModelInfo, Provider, TieredPrices, calc_unit_price

from billing.exceptions import PriceInvalid
from billing.models import ModelPrice, ModelRoute, Upstream
from billing.money import Prices, PriceTier, parse_usd_rounded
from billing.selectors import price_current, upstream_get
from billing.services import price_set, route_context_window_set

SOURCE = ModelPrice.Source.GENAI_PRICES


@dataclass(frozen=True, slots=True)
class CatalogPrice:
    """One model's token prices as genai-prices posts them, in nano-dollars per 1M tokens."""

    model: str
    prices: Prices


@dataclass
class UpstreamSync:
    """What a sync did (or, in a dry run, would do) for one upstream."""

    upstream: str
    provider: str | None
    # A route and its first price were created.
    created: list[str] = field(default_factory=list)
    # An existing route got a new price version.
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # The version in force was set by the operator, and override_manual was not given.
    skipped_manual: list[str] = field(default_factory=list)
    # In the database but without an input price per 1M tokens (audio, images, ...).
    skipped_unpriced: list[str] = field(default_factory=list)
    # Posted with long-prompt tiers.
    tiered: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class PricesSyncSummary:
    dry_run: bool
    upstreams: list[UpstreamSync]

    @property
    def created_count(self) -> int:
        return sum(len(u.created) for u in self.upstreams)

    @property
    def updated_count(self) -> int:
        return sum(len(u.updated) for u in self.upstreams)


def providers() -> list[Provider]:
    """The providers bundled with the installed genai-prices (never fetched)."""
    return list(genai_data.providers)


def provider_for_base_url(base_url: str) -> Provider | None:
    """The first provider whose ``api_pattern`` matches the base URL, as genai-prices picks it."""
    return next((p for p in providers() if re.match(p.api_pattern, base_url)), None)


def provider_get(provider_id: str) -> Provider:
    found = next((p for p in providers() if p.id == provider_id.strip().lower()), None)
    if found is None:
        raise PriceInvalid(f"genai-prices has no provider {provider_id!r}.")
    return found


def _nanos(value: object, prompt_tokens: int) -> int | None:
    """One genai-prices rate, in nano-dollars per 1M tokens, for a request whose prompt has
    ``prompt_tokens`` tokens: the rate genai-prices itself would apply (``calc_unit_price``
    of one token, whose tier rule is ours too: a tier applies past its ``start``)."""
    if value is None:
        return None
    return parse_usd_rounded(calc_unit_price(value, 1, prompt_tokens, 1))  # type: ignore[arg-type]


def catalog_price(model: ModelInfo, *, at: datetime) -> CatalogPrice | None:
    """The token prices of a model at ``at``, tiers included, or None if it has no input
    token price."""
    posted = model.get_prices(at)
    rates = (
        posted.input_mtok,
        posted.output_mtok,
        posted.cache_read_mtok,
        posted.cache_write_mtok,
        getattr(posted, "cache_write_1h_mtok", None),
    )

    def level(prompt_tokens: int) -> tuple[int | None, ...]:
        return tuple(_nanos(rate, prompt_tokens) for rate in rates)

    input_nanos, output_nanos, cached_nanos, write_nanos, write_1h_nanos = level(0)
    if input_nanos is None:
        return None
    thresholds = sorted(
        {tier.start for rate in rates if isinstance(rate, TieredPrices) for tier in rate.tiers}
    )
    tiers = []
    for threshold in thresholds:
        tier_input, tier_output, tier_cached, tier_write, tier_write_1h = level(threshold + 1)
        tiers.append(
            PriceTier(
                above_prompt_tokens=threshold,
                input_per_mtok_nanos=tier_input or 0,
                output_per_mtok_nanos=tier_output or 0,
                cached_input_per_mtok_nanos=tier_cached,
                cache_write_per_mtok_nanos=tier_write,
                cache_write_1h_per_mtok_nanos=tier_write_1h,
            )
        )
    return CatalogPrice(
        model=model.id,
        prices=Prices(
            input_per_mtok_nanos=input_nanos,
            output_per_mtok_nanos=output_nanos or 0,
            cached_input_per_mtok_nanos=cached_nanos,
            cache_write_per_mtok_nanos=write_nanos,
            cache_write_1h_per_mtok_nanos=write_1h_nanos,
            tiers=tuple(tiers),
        ),
    )


def _is_listed_model(provider: Provider, model: ModelInfo) -> bool:
    """A model we can route by its id: not deprecated, and its id resolves to itself
    (some ids are only patterns, e.g. ``ft:gpt-4o`` matches ``ft:gpt-4o-2024-…``)."""
    return not model.deprecated and provider.find_model(model.id) is model


def prices_sync(
    *,
    upstream_name: str | None = None,
    provider_id: str | None = None,
    only_existing: bool = False,
    override_manual: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PricesSyncSummary:
    """Post genai-prices' current prices for every active upstream (or just ``upstream_name``).

    Creates missing routes (unless ``only_existing``) and a new price version only where the
    price differs from the version in force; manual versions stay unless ``override_manual``.
    With ``dry_run`` nothing is written and the summary says what would change. Each price
    is posted in its own transaction (``price_set``), so an interrupted sync is simply run
    again. Raises Upstream.DoesNotExist for an unknown ``upstream_name`` and PriceInvalid
    for an unknown ``provider_id`` or one given without an upstream.
    """
    if provider_id and not upstream_name:
        raise PriceInvalid("A provider can only be forced for a single upstream.")
    now = now or timezone.now()
    if upstream_name:
        upstreams = [upstream_get(name=upstream_name)]
    else:
        # Not the built-in demo: genai-prices knows no such model; its price is the seeding's.
        upstreams = list(
            Upstream.objects.filter(is_active=True)
            .exclude(kind=Upstream.Kind.DEMO)
            .order_by("name")
        )
    forced = provider_get(provider_id) if provider_id else None
    results = [
        _upstream_sync(
            upstream,
            provider=forced or provider_for_base_url(upstream.base_url),
            only_existing=only_existing,
            override_manual=override_manual,
            dry_run=dry_run,
            now=now,
        )
        for upstream in upstreams
    ]
    return PricesSyncSummary(dry_run=dry_run, upstreams=results)


def _upstream_sync(
    upstream: Upstream,
    *,
    provider: Provider | None,
    only_existing: bool,
    override_manual: bool,
    dry_run: bool,
    now: datetime,
) -> UpstreamSync:
    if provider is None:
        return UpstreamSync(
            upstream=upstream.name,
            provider=None,
            note=f"no genai-prices provider matches {upstream.base_url}; skipped",
        )
    result = UpstreamSync(upstream=upstream.name, provider=provider.id)
    routes = {route.model: route for route in ModelRoute.objects.filter(upstream=upstream)}
    for model in provider.models:
        if not _is_listed_model(provider, model):
            continue
        route = routes.get(model.id)
        if route is None and only_existing:
            continue
        posted = catalog_price(model, at=now)
        if posted is None:
            result.skipped_unpriced.append(model.id)
            continue
        if route is not None and route.context_window_tokens is None and model.context_window:
            # A route attribute, not a price: filled in when unknown, never overwritten.
            if not dry_run:
                route_context_window_set(route=route, tokens=model.context_window)
        current = price_current(route=route, at=now) if route is not None else None
        is_manual = current is not None and current.source == ModelPrice.Source.MANUAL
        if current is not None and current.as_prices() == posted.prices:
            outcome = result.unchanged
        elif is_manual and not override_manual:
            result.skipped_manual.append(model.id)
            continue
        else:
            outcome = result.created if route is None else result.updated
        outcome.append(model.id)
        if posted.prices.tiers:
            result.tiered.append(model.id)
        if outcome is not result.unchanged and not dry_run:
            price_set(
                model=model.id,
                upstream=upstream,
                input_per_mtok_nanos=posted.prices.input_per_mtok_nanos,
                output_per_mtok_nanos=posted.prices.output_per_mtok_nanos,
                cached_input_per_mtok_nanos=posted.prices.cached_input_per_mtok_nanos,
                cache_write_per_mtok_nanos=posted.prices.cache_write_per_mtok_nanos,
                cache_write_1h_per_mtok_nanos=posted.prices.cache_write_1h_per_mtok_nanos,
                tiers=posted.prices.tiers,
                context_window_tokens=model.context_window if route is None else None,
                source=SOURCE,
                effective_from=now,
            )
    return result
