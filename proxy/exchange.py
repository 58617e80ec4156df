"""One metered request as the pipeline carries it, from admission to its trace.

An :class:`Exchange` is made once per request, as soon as its key is known, and handed to
every step (``proxy.pipeline`` admits, hands back and traces; ``proxy.forwarding``
dispatches, answers and settles): a step takes it, plus only what varies within it (a
route, an upstream response). How the request ended is its :class:`Outcome`, and its
trace row is built in one place, :meth:`Exchange.trace_row`, refused or answered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from billing.metering import Hold
from billing.money import Usage
from keys.models import TAG_MAX_LENGTH
from proxy.admission import KeyInfo, RouteInfo
from proxy.endpoints import Endpoint
from proxy.io import Receive, Send
from proxy.runtime import Runtime
from proxy.traces import TraceRow, TraceStatus, trace_text
from proxy.wire.base import ParsedRequest
from usage.models import MODEL_MAX_LENGTH

TAG_HEADER = "x-tollgate-tag"


@dataclass(slots=True)
class Outcome:
    """How a dispatched request ended, for settlement and the trace."""

    status_code: int = 502
    status: str = TraceStatus.UPSTREAM_ERROR
    error_class: str = ""
    usage: Usage | None = None
    is_usage_estimated: bool = False
    route: RouteInfo | None = None
    first_byte_at: float | None = None
    # What settlement actually charged (clamped to the hold), and what it could not.
    cost_nanos: int = 0
    client_nanos: int = 0
    is_over_hold: bool = False
    overrun_cost_nanos: int = 0
    # What the cached reads saved (``billing.money.request_charge``), at cost and at client
    # price: only for a request that was settled; refused, failed or released ones save 0.
    cache_savings_nanos: int = 0
    client_cache_savings_nanos: int = 0

    def charged(self, settled: Any) -> None:
        if settled is not None and settled[1] is not None:
            actual, settlement = settled
            self.cost_nanos = settlement.charged_cost_nanos
            self.client_nanos = settlement.charged_client_nanos
            self.is_over_hold = settlement.is_over_hold
            self.overrun_cost_nanos = settlement.overrun_cost_nanos
            # From the reported usage, even when the charge was clamped to the hold: the
            # upstream did serve those tokens from its cache, whoever paid for them.
            self.cache_savings_nanos = actual.cache_savings_nanos
            self.client_cache_savings_nanos = actual.client_cache_savings_nanos


# No repr: the headers carry the client's key and the body its prompt; neither may reach a
# log or a traceback.
# No eq: two requests are never the same one.
@dataclass(slots=True, repr=False, eq=False)
class Exchange:
    """A metered request whose key is known (one refused before that leaves no trace)."""

    runtime: Runtime
    send: Send
    receive: Receive
    endpoint: Endpoint
    headers: dict[str, str]
    request_id: str
    # time.perf_counter() on arrival: the trace's latency and time to first byte.
    started: float
    # The request's time for money (holds, settlement) and the trace's created_at.
    now: datetime
    key: KeyInfo
    body: bytes
    # Known once the body is parsed: a request refused before is traced without a model.
    model: str = ""
    # True once admitted, if the client asked for a stream: a refused request never streamed.
    is_stream: bool = False
    # The limiter counted this request: its slot is handed back however the request ends.
    has_limit_slot: bool = False
    # Set by admission, before dispatch; ``outcome`` once the request is refused or answered.
    parsed: ParsedRequest = field(init=False)
    routes: list[RouteInfo] = field(init=False)
    hold: Hold = field(init=False)
    response_headers: list[tuple[bytes, bytes]] = field(init=False)
    outcome: Outcome = field(init=False)

    def trace_row(self) -> TraceRow:
        """This request's trace, as it ended (``outcome``), timed until now."""
        finished = time.perf_counter()
        outcome = self.outcome
        usage = outcome.usage or Usage()
        route = outcome.route
        key = self.key
        started = self.started
        # The model and the tag are the client's own strings: made storable here, or one
        # bad one could cost a whole batch of other tenants' traces (see proxy.traces). The
        # other strings are ours, or the operator's as the database already stored them.
        tag = trace_text(self.headers.get(TAG_HEADER) or key.default_tag, TAG_MAX_LENGTH)
        return TraceRow(
            request_id=self.request_id,
            tenant_id=key.tenant_id,
            client_key_id=key.id,
            tag=tag,
            endpoint=self.endpoint.name,
            model=trace_text(self.model, MODEL_MAX_LENGTH),
            upstream_id=route.target.upstream_id if route else None,
            upstream_model=route.target_model if route else "",
            price_id=route.price_id if route else None,
            is_stream=self.is_stream,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            is_usage_estimated=outcome.is_usage_estimated,
            cost_nanos=outcome.cost_nanos,
            client_nanos=outcome.client_nanos,
            status_code=outcome.status_code,
            status=outcome.status,
            error_class=outcome.error_class[:64],
            latency_ms=int((finished - started) * 1000),
            ttft_ms=int((outcome.first_byte_at - started) * 1000)
            if outcome.first_byte_at
            else None,
            is_over_hold=outcome.is_over_hold,
            overrun_cost_nanos=outcome.overrun_cost_nanos,
            cache_savings_nanos=outcome.cache_savings_nanos,
            client_cache_savings_nanos=outcome.client_cache_savings_nanos,
            created_at=self.now,
        )
