"""The metered pipeline: every proxy endpoint that costs money (raw ASGI, async end to end).

Why not Django views or DRF here: measured on this hardware, Django's ASGI handler costs
about 0.7–1 ms of CPU per request in thread hops and signal plumbing, and an ORM call per
step more again; the proxy's budget is ~1.5 ms in all. So ``/v1/*`` model traffic takes a
lean path beside Django (``proxy.asgi``): plain ASGI callables, one shared aiohttp session,
async PostgreSQL and Redis, cached keys and routes. The money rules are still the billing
app's (``billing.metering`` run by ``proxy.db``); this module only orders the steps:

    authenticate → model → rate limit → reserve → dispatch (fallback before the first byte)
    → stream/forward → settle (before the last byte) → release limits → trace (batched)

Admission (here) runs up to the hold; forwarding (``proxy.forwarding``) dispatches,
answers and settles; what is left of the hold and the rate-limit slot are handed back
here, and the trace is written, however the request ended. One :class:`Exchange` carries
the request through every step (``proxy.exchange``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from django.conf import settings
from django.utils import timezone

from proxy.admission import Admitted, ProxyError, authenticate, reserve, routes_for_request
from proxy.endpoints import Endpoint, RequestInvalid, request_object
from proxy.exchange import Exchange, Outcome
from proxy.forwarding import dispatch
from proxy.io import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    header_dict,
    new_request_id,
    read_body,
    respond,
)
from proxy.runtime import get_runtime
from proxy.settlement import in_background, release, shielded
from proxy.traces import TraceStatus
from proxy.wire.base import input_is_unbounded, input_token_bound

logger = logging.getLogger(__name__)


async def metered(scope: Scope, receive: Receive, send: Send, endpoint: Endpoint) -> None:
    """Every endpoint that costs money: chat, responses, embeddings, messages."""
    runtime = get_runtime()
    started = time.perf_counter()
    now = timezone.now()
    request_id = new_request_id()
    id_header = (b"x-request-id", request_id.encode())
    headers = header_dict(scope)
    exchange: Exchange | None = None
    try:
        try:
            body = await read_body(receive, settings.PROXY_MAX_BODY_BYTES)
        except BodyTooLarge:
            raise ProxyError(
                413,
                f"Request body over {settings.PROXY_MAX_BODY_BYTES} bytes.",
                "request_too_large",
            ) from None
        key = await authenticate(runtime.catalog, headers, now)
        # Positional: a class called with keywords packs them into a dict and out again.
        exchange = Exchange(
            runtime, send, receive, endpoint, headers, request_id, started, now, key, body
        )
        limit_headers = await _admit(exchange)
    except ProxyError as exc:
        await _refuse(exchange, send, endpoint, id_header, exc)
        return
    except ConnectionResetError:
        return
    except Exception:
        # The database or Redis failed us: answer in the endpoint's shape; nothing is held.
        logger.exception("admission failed")
        await _unavailable(exchange, send, endpoint, id_header)
        return

    exchange.response_headers = [id_header, *limit_headers]
    exchange.outcome = Outcome()
    try:
        exchange.outcome = await dispatch(exchange)
    finally:
        outcome = exchange.outcome
        if outcome.usage is None:
            # Nothing produced (or dispatch never got that far): charge nothing.
            await shielded(release(runtime.db, hold=exchange.hold, now=now))
        tokens = outcome.usage.total_tokens if outcome.usage else 0
        await shielded(
            runtime.limiter.release(key_id=key.id, request_id=request_id, tokens_used=tokens)
        )
        runtime.traces.add(exchange.trace_row())


async def _admit(exchange: Exchange) -> list[tuple[bytes, bytes]]:
    """Parse the request, find its routes, ask the limiter and hold its worst case; return
    its rate-limit headers. A refusal raises :class:`ProxyError` with nothing left held
    but the limiter's slot (``exchange.has_limit_slot``), which the caller hands back."""
    runtime = exchange.runtime
    key = exchange.key
    body = exchange.body
    now = exchange.now
    # Every field the proxy acts on is checked here, before anything is held or sent.
    parsed = exchange.parsed = exchange.endpoint.parse(request_object(body))
    exchange.model = parsed.model
    routes = exchange.routes = await routes_for_request(
        runtime.catalog, key, parsed.model, exchange.endpoint.kind
    )
    input_bound = input_token_bound(body)
    unbounded_input = input_is_unbounded(body)

    # A closure, not functools.partial: a partial with keywords packs them into a dict.
    def reserving() -> Coroutine[Any, Any, Admitted]:
        return reserve(
            runtime.db,
            key=key,
            routes=routes,
            request_id=exchange.request_id,
            input_bound=input_bound,
            requested_max_output=parsed.max_output_tokens,
            choices=parsed.choices,
            unbounded_input=unbounded_input,
            now=now,
        )

    # Ask the limiter and reserve at once, unless the limiter refused this key lately
    # (proxy.admission.LimitRefusals); a hold the limits refuse is handed back.
    early: asyncio.Task[Admitted] | None = None
    if not runtime.refusals.recent(key.id):
        early = asyncio.get_running_loop().create_task(reserving())
    try:
        decision = await runtime.limiter.acquire(
            key_id=key.id,
            request_id=exchange.request_id,
            limits=key.limits,
            estimated_tokens=input_bound,
        )
    except asyncio.CancelledError:
        _hand_back_later(exchange, early)
        raise
    except Exception:
        await _hand_back(exchange, early)
        raise
    limit_headers = decision.headers()
    if not decision.allowed:
        runtime.refusals.note(key.id, decision.retry_after_seconds)
        await _hand_back(exchange, early)
        raise ProxyError(
            429,
            f"Rate limit reached ({decision.reason}). Retry after {decision.retry_after_seconds}s.",
            "rate_limit_exceeded",
            headers=limit_headers,
        )
    exchange.has_limit_slot = True
    if early is None:
        admitted = await reserving()
    else:
        try:
            # Shielded: a request cancelled now must not cancel a reservation that may
            # already be committed; it is handed back instead.
            admitted = await asyncio.shield(early)
        except asyncio.CancelledError:
            _hand_back_later(exchange, early)
            raise
    exchange.hold = admitted.hold
    exchange.is_stream = parsed.is_stream
    return limit_headers


async def _hand_back(exchange: Exchange, early: asyncio.Task[Admitted] | None) -> None:
    """Release the hold of a reservation made early for a request that is not going ahead
    (nothing to do if the reservation failed)."""
    if early is None:
        return
    try:
        admitted = await asyncio.shield(early)
    except asyncio.CancelledError:
        _hand_back_later(exchange, early)
        raise
    except Exception:
        return
    await shielded(release(exchange.runtime.db, hold=admitted.hold, now=exchange.now))


def _hand_back_later(exchange: Exchange, early: asyncio.Task[Admitted] | None) -> None:
    """:func:`_hand_back`, for a request being cancelled: once the reservation is made."""
    if early is None:
        return
    db = exchange.runtime.db
    now = exchange.now

    def done(task: asyncio.Task[Admitted]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        in_background(
            shielded(release(db, hold=task.result().hold, now=now)),
            failure="a cancelled request's hold is left to expire",
        )

    early.add_done_callback(done)


async def _refuse(
    exchange: Exchange | None,
    send: Send,
    endpoint: Endpoint,
    id_header: tuple[bytes, bytes],
    exc: ProxyError,
) -> None:
    """Answer a refusal in the endpoint's shape, handing back the rate-limit slot if one was
    taken; a request whose key is known (``exchange``) is traced as refused."""
    if exchange is not None and exchange.has_limit_slot:
        await exchange.runtime.limiter.release(
            key_id=exchange.key.id, request_id=exchange.request_id, tokens_used=0
        )
    param = exc.param if isinstance(exc, RequestInvalid) else None
    await respond(
        send,
        exc.status,
        endpoint.error_body(exc.status, exc.message, exc.code, param),
        headers=[id_header, *exc.headers],
    )
    if exchange is not None:
        exchange.outcome = Outcome(
            status_code=exc.status, status=TraceStatus.REFUSED, error_class=exc.error_class
        )
        exchange.runtime.traces.add(exchange.trace_row())


async def _unavailable(
    exchange: Exchange | None, send: Send, endpoint: Endpoint, id_header: tuple[bytes, bytes]
) -> None:
    """Admission failed (not refused): hand the rate-limit slot back, since a leaked one
    locks a key out until it expires, and answer 503."""
    if exchange is not None and exchange.has_limit_slot:
        await shielded(
            exchange.runtime.limiter.release(
                key_id=exchange.key.id, request_id=exchange.request_id, tokens_used=0
            )
        )
    message = "The service is temporarily unavailable; please retry."
    await respond(
        send, 503, endpoint.error_body(503, message, "service_unavailable"), headers=[id_header]
    )
