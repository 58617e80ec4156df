"""A key's traffic for the dashboard's report tests, made as the proxy makes it: the money
through the real reserve/settle operations (``tests.metering``), which move the key's
counters and the ledger, and the trace row the proxy then writes for the request, with the
settled amounts and what caching saved at the same prices (``billing.money.request_charge``)."""

from __future__ import annotations

from datetime import datetime

from billing.models import ModelPrice
from billing.money import Usage, request_charge
from keys.models import ClientKey
from tests.metering import charge, release, reserve
from tests.usage.factories import TraceFactory
from usage.models import Trace


def served(
    key: ClientKey,
    price: ModelPrice,
    *,
    request_id: str,
    at: datetime,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cached_input_tokens: int = 0,
    tag: str | None = None,
    latency_ms: int = 120,
    ttft_ms: int | None = 40,
) -> Trace:
    """A request served and settled: charged at ``price`` and traced at ``at``."""
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached_input_tokens,
    )
    settled = charge(key=key, price=price, request_id=request_id, usage=usage)
    priced = request_charge(usage, price.as_prices(), key.ratio)
    assert (settled.charged_cost_nanos, settled.charged_client_nanos) == (
        priced.cost_nanos,
        priced.client_nanos,
    )
    return TraceFactory.create(
        client_key=key,
        created_at=at,
        request_id=request_id,
        model=price.route.model,
        upstream=price.route.upstream,
        price=price,
        tag=key.default_tag if tag is None else tag,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached_input_tokens,
        cost_nanos=settled.charged_cost_nanos,
        client_nanos=settled.charged_client_nanos,
        cache_savings_nanos=priced.cache_savings_nanos,
        client_cache_savings_nanos=priced.client_cache_savings_nanos,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
    )


def failed(
    key: ClientKey, price: ModelPrice, *, request_id: str, at: datetime, tag: str | None = None
) -> Trace:
    """A request the upstream failed before any output: held, released, charged nothing."""
    hold = reserve(key=key, price=price, request_id=request_id, worst_case=Usage(input_tokens=1000))
    release(hold=hold)
    return TraceFactory.create(
        client_key=key,
        created_at=at,
        request_id=request_id,
        model=price.route.model,
        upstream=price.route.upstream,
        price=price,
        tag=key.default_tag if tag is None else tag,
        status=Trace.Status.UPSTREAM_ERROR,
        status_code=502,
        error_class="upstream_5xx",
        ttft_ms=None,
    )


def refused(key: ClientKey, *, request_id: str, at: datetime, model: str) -> Trace:
    """A request refused before dispatch (over a limit): nothing held, nothing charged."""
    return TraceFactory.create(
        client_key=key,
        created_at=at,
        request_id=request_id,
        model=model,
        status=Trace.Status.REFUSED,
        status_code=429,
        error_class="rate_limited",
        latency_ms=2,
        ttft_ms=None,
    )
