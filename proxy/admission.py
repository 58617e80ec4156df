"""Admission: everything decided before a request is dispatched.

Design overview
---------------
In order, each step answering in the endpoint's own error shape:

1. **Authenticate** the client key (``Authorization: Bearer`` or ``x-api-key``): 401 for
   unknown, revoked, deleted or expired keys, and for the keys of a suspended tenant. Keys
   (with their tenant's ``is_active``) are cached per worker for a few seconds and dropped
   at once when a service announces a change (``accounts.events``: one key, or every key of
   a tenant); the cache never decides money: the reservation re-checks the key's status
   and its tenant's in the database.
2. **Model**: 403 when the key may not use it, 404 when no active route of this wire
   format has a price.
3. **Rate limits** (``proxy.ratelimit``): 429 with ``Retry-After`` and ``x-ratelimit-*``.
4. **Reserve** the worst case (``billing.metering.reserve_op``, one transaction): input
   bounded by the request's size, output by ``max_tokens`` (or the route's output limit),
   priced at the dearest candidate route. 402 says how many ``max_tokens`` would fit.
   Asked at the same time as 3 unless the key was refused lately (:class:`LimitRefusals`);
   a hold the limits refuse is released at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from accounts.hashing import secret_matches, secret_prefix
from billing.exceptions import AccountSuspended, KeyInactive, ReservationRefused
from billing.metering import Hold, reserve_op
from billing.money import (
    UNBOUNDED_OUTPUT_TOKENS,
    Charge,
    PriceRatio,
    Prices,
    Usage,
    affordable_output_tokens,
    format_usd,
    request_charge,
    tiers_from_json,
    worst_case_prices,
)
from keys.models import ClientKey
from proxy.db import Database, as_aware, as_list
from proxy.ratelimit import Limits
from proxy.upstreams.base import DEMO_KIND, UpstreamTarget, upstream_secret

# The most a client's retry adds to its body to set the limit the 402 suggests
# (', "max_completion_tokens": 1000000000').
MAX_TOKENS_FIELD_BYTES = 40


class ProxyError(Exception):
    """An answer the proxy gives itself, before or instead of the upstream's."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        error_class: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or []
        self.error_class = error_class or code


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    tenant_id: int
    wallet_id: int
    digest: str
    status: str
    funding: str
    ratio: PriceRatio
    budget_period: str
    limits: Limits
    allowed_models: frozenset[str]
    expires_at: datetime | None
    default_tag: str
    # The tenant's ``is_active`` when the key was read: False while the reseller is suspended.
    tenant_active: bool

    def allows(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


@dataclass(frozen=True, slots=True)
class RouteInfo:
    route_id: int
    model: str
    target_model: str
    max_output_tokens: int
    # The model's context window (None: unknown), the input bound of a request whose body
    # does not bound its input.
    context_window: int | None
    target: UpstreamTarget
    price_id: int
    prices: Prices


@dataclass(slots=True)
class TtlCache:
    ttl_seconds: float
    entries: dict[str, tuple[float, Any]] = field(default_factory=dict)

    def get(self, name: str) -> Any | None:
        hit = self.entries.get(name)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, name: str, value: Any) -> None:
        if len(self.entries) > 50_000:
            self.entries.clear()
        self.entries[name] = (time.monotonic() + self.ttl_seconds, value)

    def drop(self, name: str) -> None:
        self.entries.pop(name, None)

    def drop_where(self, stale: Callable[[Any], bool]) -> None:
        """Drop every entry whose value is ``stale``: a walk over the whole cache (3-30 ms
        for a full one of 50,000 keys on a busy 2-core host), for rare changes that touch
        many entries."""
        # A snapshot: a listener may run in another thread (Django's, in the same process).
        for name, (_, value) in list(self.entries.items()):
            if stale(value):
                self.entries.pop(name, None)

    def clear(self) -> None:
        self.entries.clear()


KEY_SELECT = """
SELECT k.id, k.tenant_id, k.wallet_id, k.digest, k.status, k.funding, k.ratio_cost_nanos,
       k.ratio_client_nanos, k.budget_period, k.requests_per_minute, k.tokens_per_minute,
       k.max_concurrency, k.allowed_models, k.expires_at, k.default_tag, t.is_active
  FROM keys_clientkey k JOIN accounts_tenant t ON t.id = k.tenant_id
 WHERE k.prefix = %(prefix)s
"""

ROUTES_SELECT = """
SELECT r.id, r.model, r.upstream_model, r.max_output_tokens, r.context_window_tokens,
       u.id, u.name, u.kind, u.base_url, u.timeout_seconds, u.api_key_env, u.api_key_encrypted,
       p.id, p.input_per_mtok_nanos, p.output_per_mtok_nanos, p.cached_input_per_mtok_nanos,
       p.cache_write_per_mtok_nanos, p.cache_write_1h_per_mtok_nanos, p.tiers
  FROM billing_modelroute r
  JOIN billing_upstream u ON u.id = r.upstream_id
  JOIN billing_modelprice p ON p.route_id = r.id
 WHERE r.is_active AND u.is_active AND p.effective_from <= %(now)s
 ORDER BY r.model, r.priority, r.id, p.effective_from DESC, p.id DESC
"""


class Catalog:
    """Per-worker caches of keys and routes (the only state a worker keeps)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.keys = TtlCache(settings.PROXY_KEY_CACHE_SECONDS)
        self.routes = TtlCache(settings.PROXY_ROUTE_CACHE_SECONDS)
        # Counts the key invalidations this worker has received (see key_for_secret).
        self.key_generation = 0

    def on_config_changed(self, topic: str) -> None:
        """Drop what ``topic`` (``accounts.events``) says changed: one key, every key of a
        tenant (one message, however many keys it has), or the routes."""
        kind, _, name = topic.partition(":")
        if kind == "key":
            self.key_generation += 1
            self.keys.drop(name)
        elif kind == "tenant":
            self.key_generation += 1
            tenant_id = int(name) if name.isdigit() else None
            self.keys.drop_where(lambda info: info.tenant_id == tenant_id)
        else:
            self.routes.clear()

    def forget_all(self) -> None:
        """Drop every cached key and route (changes may have been announced unheard)."""
        self.key_generation += 1
        self.keys.clear()
        self.routes.clear()

    async def key_for_secret(self, secret: str) -> KeyInfo | None:
        prefix = secret_prefix(secret)
        if not prefix.isprintable():
            # No key's prefix has a control character, and PostgreSQL refuses a NUL in a
            # parameter: such a secret is unknown (401), not a failed query (503).
            return None
        info: KeyInfo | None = self.keys.get(prefix)
        if info is None:
            generation = self.key_generation
            rows = await self.db.fetch(KEY_SELECT, {"prefix": prefix})
            if not rows:
                return None
            info = _key_info(rows[0])
            # An invalidation heard while the row was being read may announce a change the
            # read predates: this request uses the row, but caching it would keep the stale
            # copy for the cache's whole lifetime. (One heard before the read began announced
            # a committed change, which the read sees.)
            if generation == self.key_generation:
                self.keys.put(prefix, info)
        if not secret_matches(secret, info.digest):
            return None
        return info

    async def all_routes(self) -> dict[str, list[RouteInfo]]:
        routes: dict[str, list[RouteInfo]] | None = self.routes.get("all")
        if routes is None:
            from django.utils import timezone

            rows = await self.db.fetch(ROUTES_SELECT, {"now": timezone.now()})
            routes = _routes_by_model(rows)
            self.routes.put("all", routes)
        return routes

    async def routes_for(self, model: str, kind: str) -> list[RouteInfo]:
        # proxy.upstreams.base.speaks, inlined: a demo route serves every wire format.
        return [
            r
            for r in (await self.all_routes()).get(model, [])
            if r.target.kind == kind or r.target.kind == DEMO_KIND
        ]


def _key_info(row: tuple[Any, ...]) -> KeyInfo:
    (
        key_id,
        tenant_id,
        wallet_id,
        digest,
        status,
        funding,
        ratio_cost,
        ratio_client,
        budget_period,
        rpm,
        tpm,
        concurrency,
        allowed,
        expires_at,
        default_tag,
        tenant_active,
    ) = row
    return KeyInfo(
        id=int(key_id),
        tenant_id=int(tenant_id),
        wallet_id=int(wallet_id),
        digest=digest,
        status=status,
        funding=funding,
        ratio=PriceRatio(int(ratio_cost), int(ratio_client)),
        budget_period=budget_period,
        limits=Limits(
            requests_per_minute=int(rpm),
            tokens_per_minute=int(tpm) if tpm is not None else None,
            max_concurrency=int(concurrency),
        ),
        allowed_models=frozenset(as_list(allowed)),
        expires_at=as_aware(expires_at),
        default_tag=default_tag or "",
        tenant_active=bool(tenant_active),
    )


def _routes_by_model(rows: list[tuple[Any, ...]]) -> dict[str, list[RouteInfo]]:
    by_model: dict[str, list[RouteInfo]] = {}
    seen_routes: set[int] = set()
    secrets: dict[int, str] = {}
    for row in rows:
        (
            route_id,
            model,
            upstream_model,
            max_output,
            context_window,
            upstream_id,
            name,
            kind,
            base_url,
            timeout,
            key_env,
            key_encrypted,
            price_id,
            input_price,
            output_price,
            cached_price,
            cache_write_price,
            cache_write_1h_price,
            tiers,
        ) = row
        if route_id in seen_routes:
            continue  # an older price version of a route already taken
        seen_routes.add(route_id)
        if upstream_id not in secrets:
            secrets[upstream_id] = upstream_secret(
                api_key_env=key_env, api_key_encrypted=key_encrypted
            )
        by_model.setdefault(model, []).append(
            RouteInfo(
                route_id=int(route_id),
                model=model,
                target_model=upstream_model or model,
                max_output_tokens=int(max_output),
                context_window=None if context_window is None else int(context_window),
                target=UpstreamTarget(
                    upstream_id=int(upstream_id),
                    name=name,
                    kind=kind,
                    base_url=base_url.rstrip("/"),
                    timeout_seconds=int(timeout),
                    api_key=secrets[upstream_id],
                ),
                price_id=int(price_id),
                prices=Prices(
                    input_per_mtok_nanos=int(input_price),
                    output_per_mtok_nanos=int(output_price),
                    cached_input_per_mtok_nanos=None if cached_price is None else int(cached_price),
                    cache_write_per_mtok_nanos=None
                    if cache_write_price is None
                    else int(cache_write_price),
                    cache_write_1h_per_mtok_nanos=None
                    if cache_write_1h_price is None
                    else int(cache_write_1h_price),
                    tiers=tiers_from_json(tiers),
                ),
            )
        )
    return by_model


def _multiple_keys() -> ProxyError:
    return ProxyError(
        401,
        "More than one API key: send one, as 'Authorization: Bearer <key>' or 'x-api-key'.",
        "multiple_api_keys",
    )


def client_secret(headers: dict[str, str]) -> str | None:
    """The client key a request carries, as ``Authorization: Bearer <key>`` or ``x-api-key``
    (both only if they carry the same key), or None.

    A request that carries two keys is refused rather than served with one of them: which
    key pays must be the client's choice, not an accident of which header the proxy reads
    (the last ``Authorization``, or the bearer over ``x-api-key``). A repeated header
    arrives joined by commas (``proxy.io.header_dict``), and no key contains one.
    """
    authorization = headers.get("authorization")
    api_key = headers.get("x-api-key")
    bearer = None
    if authorization is not None:
        if "," in authorization:
            raise _multiple_keys()
        scheme, _, value = authorization.partition(" ")
        # The SDKs' spelling first: it spares lower-casing a string on every request.
        if scheme == "Bearer" or scheme.lower() == "bearer":
            bearer = value.strip() or None
    if api_key is None:
        return bearer
    if "," in api_key:
        raise _multiple_keys()
    api_key = api_key.strip() or None
    if bearer is None:
        return api_key
    if api_key is not None and api_key != bearer:
        raise _multiple_keys()
    return bearer


async def authenticate(catalog: Catalog, headers: dict[str, str], now: datetime) -> KeyInfo:
    secret = client_secret(headers)
    if secret is None:
        raise ProxyError(
            401,
            "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key'.",
            "missing_api_key",
        )
    key = await catalog.key_for_secret(secret)
    if key is None:
        raise ProxyError(401, "Invalid API key.", "invalid_api_key")
    if key.status != ClientKey.Status.ACTIVE:
        raise ProxyError(401, f"This API key is {key.status}.", f"key_{key.status}")
    if key.expires_at is not None and key.expires_at <= now:
        raise ProxyError(401, "This API key has expired.", "key_expired")
    if not key.tenant_active:
        suspended = AccountSuspended()
        raise ProxyError(401, str(suspended), suspended.code)
    return key


async def routes_for_request(
    catalog: Catalog, key: KeyInfo, model: str, kind: str
) -> list[RouteInfo]:
    if not key.allows(model):
        raise ProxyError(403, f"This key may not use model '{model}'.", "model_not_allowed")
    routes = await catalog.routes_for(model, kind)
    if not routes:
        raise ProxyError(
            404, f"The model '{model}' does not exist or is not available here.", "model_not_found"
        )
    return routes


class LimitRefusals:
    """The keys the rate limiter refused lately, per worker.

    A request normally asks the limiter and reserves its hold at the same time (one wait
    instead of two), handing the hold back if the limits refuse. A key refused lately asks
    the limiter first until its ``Retry-After`` has passed: a client hammering past its
    limits costs one Redis call per request, never a reservation it cannot use.
    """

    def __init__(self) -> None:
        self._until: dict[int, float] = {}

    def recent(self, key_id: int) -> bool:
        until = self._until.get(key_id)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._until[key_id]
            return False
        return True

    def note(self, key_id: int, retry_after_seconds: int) -> None:
        if len(self._until) > 50_000:
            self._until.clear()
        self._until[key_id] = time.monotonic() + max(retry_after_seconds, 1)


@dataclass(frozen=True, slots=True)
class Admitted:
    hold: Hold
    worst_case: Charge
    price_route: RouteInfo


async def reserve(
    db: Database,
    *,
    key: KeyInfo,
    routes: list[RouteInfo],
    request_id: str,
    input_bound: int,
    requested_max_output: int | None,
    now: datetime,
    choices: int = 1,
    unbounded_input: bool = False,
) -> Admitted:
    """Hold the worst case of this request, priced at the dearest route it may take.

    The output limit bounds each of the ``choices`` completions asked for (chat's ``n``),
    so the worst case is that many times it. A request whose body does not bound its input
    (``unbounded_input``) is held for the route's whole context window, when known."""
    worst: tuple[Charge, RouteInfo, Usage] | None = None
    for route in routes:
        output = (
            route.max_output_tokens
            if requested_max_output is None
            else min(requested_max_output, route.max_output_tokens)
        )
        route_input = input_bound
        if unbounded_input and route.context_window is not None:
            route_input = max(input_bound, route.context_window)
        usage = Usage(input_tokens=route_input, output_tokens=output * choices)
        charge = request_charge(usage, worst_case_prices(route.prices, route_input), key.ratio)
        if worst is None or charge.cost_nanos > worst[0].cost_nanos:
            worst = (charge, route, usage)
    assert worst is not None  # noqa: S101 - routes is never empty here
    charge, route, usage = worst
    try:
        hold = await db.run(
            reserve_op(
                request_id=request_id,
                key_id=key.id,
                funding=key.funding,
                wallet_id=key.wallet_id,
                price_id=route.price_id,
                worst_case=charge,
                now=now,
                expires_at=now + timedelta(seconds=settings.RESERVATION_TTL_SECONDS),
            )
        )
    except KeyInactive as exc:
        raise ProxyError(401, str(exc), exc.code) from exc
    except ReservationRefused as exc:
        affordable = affordable_output_tokens(
            # The retry carries the max_tokens field this hint asks for, and every byte of the
            # body counts toward the input bound: leave room for it, or the hint would not fit.
            input_tokens=usage.input_tokens + MAX_TOKENS_FIELD_BYTES,
            prices=route.prices,
            ratio=key.ratio,
            client_available_nanos=exc.client_available_nanos,
            cost_available_nanos=exc.cost_available_nanos,
        )
        if affordable != UNBOUNDED_OUTPUT_TOKENS:
            affordable //= choices  # max_tokens bounds each completion
        hint = (
            f" Set max_tokens to at most {affordable} to fit."
            if affordable > 0
            else " Even the input alone does not fit: top up the key."
        )
        raise ProxyError(
            402,
            f"{exc} (worst case: {usage.input_tokens} input + {usage.output_tokens} output tokens"
            f"{f' over {choices} completions' if choices > 1 else ''}, "
            f"{format_usd(charge.client_nanos)}).{hint}",
            "insufficient_budget",
        ) from exc
    return Admitted(hold=hold, worst_case=charge, price_route=route)
