"""The proxy's request handlers (raw ASGI, async end to end).

Why not Django views or DRF here: measured on this hardware, Django's ASGI handler costs
about 0.7–1 ms of CPU per request in thread hops and signal plumbing, and an ORM call per
step more again; the proxy's budget is ~1.5 ms in all. So ``/v1/*`` model traffic takes a
lean path beside Django (``proxy.asgi``): plain ASGI callables, one shared aiohttp session,
async PostgreSQL and Redis, cached keys and routes. The money rules are still the billing
app's (``billing.metering`` run by ``proxy.db``); this module only orders the steps:

    authenticate → model → rate limit → reserve → dispatch (fallback before the first byte)
    → stream/forward → settle (before the last byte) → release limits → trace (batched)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import aiohttp
import orjson
from django.conf import settings
from django.utils import timezone

from billing.metering import Hold
from billing.money import Usage
from proxy.admission import (
    Admitted,
    KeyInfo,
    ProxyError,
    RouteInfo,
    authenticate,
    reserve,
    routes_for_request,
)
from proxy.endpoints import Endpoint, RequestInvalid, request_object
from proxy.io import (
    SSE_HEADERS,
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    header_dict,
    new_request_id,
    read_body,
    respond,
)
from proxy.models import MODEL_MAX_LENGTH, TAG_MAX_LENGTH
from proxy.runtime import ADAPTERS, Runtime, get_runtime
from proxy.settlement import extend, in_background, release, settle
from proxy.traces import TraceRow, trace_text
from proxy.upstreams.base import UpstreamError, upstream_open
from proxy.wire.base import (
    StreamScanner,
    estimated_input_tokens,
    input_is_unbounded,
    input_token_bound,
)

logger = logging.getLogger(__name__)

TAG_HEADER = "x-tollgate-tag"


@dataclass(slots=True)
class Outcome:
    """How a dispatched request ended, for settlement and the trace."""

    status_code: int = 502
    status: str = "upstream_error"
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

    def charged(self, settled: Any) -> None:
        if settled is not None and settled[1] is not None:
            settlement = settled[1]
            self.cost_nanos = settlement.charged_cost_nanos
            self.client_nanos = settlement.charged_client_nanos
            self.is_over_hold = settlement.is_over_hold
            self.overrun_cost_nanos = settlement.overrun_cost_nanos


async def metered(scope: Scope, receive: Receive, send: Send, endpoint: Endpoint) -> None:
    """Every endpoint that costs money: chat, responses, embeddings, messages."""
    runtime = get_runtime()
    started = time.perf_counter()
    now = timezone.now()
    request_id = new_request_id()
    id_header = (b"x-request-id", request_id.encode())
    headers = header_dict(scope)
    key: KeyInfo | None = None
    model = ""
    limiter_held = False
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
        # Every field the proxy acts on is checked here, before anything is held or sent.
        parsed = endpoint.parse(request_object(body))
        model = parsed.model
        routes = await routes_for_request(runtime.catalog, key, parsed.model, endpoint.kind)
        input_bound = input_token_bound(body)
        reserving = partial(
            reserve,
            runtime.db,
            key=key,
            routes=routes,
            request_id=request_id,
            input_bound=input_bound,
            requested_max_output=parsed.max_output_tokens,
            choices=parsed.choices,
            unbounded_input=input_is_unbounded(body),
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
                request_id=request_id,
                limits=key.limits,
                estimated_tokens=input_bound,
            )
        except asyncio.CancelledError:
            _hand_back_later(runtime, early, now)
            raise
        except Exception:
            await _hand_back(runtime, early, now)
            raise
        limit_headers = decision.headers()
        if not decision.allowed:
            runtime.refusals.note(key.id, decision.retry_after_seconds)
            await _hand_back(runtime, early, now)
            raise ProxyError(
                429,
                f"Rate limit reached ({decision.reason}). Retry after {decision.retry_after_seconds}s.",
                "rate_limit_exceeded",
                headers=limit_headers,
            )
        limiter_held = True
        if early is None:
            admitted = await reserving()
        else:
            try:
                # Shielded: a request cancelled now must not cancel a reservation that may
                # already be committed; it is handed back instead.
                admitted = await asyncio.shield(early)
            except asyncio.CancelledError:
                _hand_back_later(runtime, early, now)
                raise
    except ProxyError as exc:
        if limiter_held and key is not None:
            await runtime.limiter.release(key_id=key.id, request_id=request_id, tokens_used=0)
        param = exc.param if isinstance(exc, RequestInvalid) else None
        await respond(
            send,
            exc.status,
            endpoint.error_body(exc.status, exc.message, exc.code, param),
            headers=[id_header, *exc.headers],
        )
        if key is not None:
            _trace(
                runtime,
                key,
                headers,
                endpoint,
                model,
                request_id,
                started,
                now,
                Outcome(status_code=exc.status, status="refused", error_class=exc.error_class),
                parsed_stream=False,
            )
        return
    except ConnectionResetError:
        return
    except Exception:
        # The database or Redis failed us. Hand the rate-limit slot back (a leaked one locks
        # a key out until it expires) and answer in the endpoint's shape; nothing is held.
        logger.exception("admission failed")
        if limiter_held and key is not None:
            await _shielded(
                runtime.limiter.release(key_id=key.id, request_id=request_id, tokens_used=0)
            )
        message = "The service is temporarily unavailable; please retry."
        await respond(
            send, 503, endpoint.error_body(503, message, "service_unavailable"), headers=[id_header]
        )
        return

    outcome = Outcome()
    try:
        outcome = await dispatch(
            runtime,
            send,
            receive,
            endpoint,
            parsed,
            body,
            routes,
            headers,
            [id_header, *limit_headers],
            admitted.hold,
            key,
            now,
            started,
        )
    finally:
        if outcome.usage is None:
            # Nothing produced (or dispatch never got that far): charge nothing.
            await _shielded(release(runtime.db, hold=admitted.hold, now=now))
        tokens = outcome.usage.total_tokens if outcome.usage else 0
        await _shielded(
            runtime.limiter.release(key_id=key.id, request_id=request_id, tokens_used=tokens)
        )
        _trace(
            runtime,
            key,
            headers,
            endpoint,
            model,
            request_id,
            started,
            now,
            outcome,
            parsed_stream=parsed.is_stream,
        )


async def _hand_back(runtime: Runtime, early: asyncio.Task[Admitted] | None, now: Any) -> None:
    """Release the hold of a reservation made early for a request that is not going ahead
    (nothing to do if the reservation failed)."""
    if early is None:
        return
    try:
        admitted = await asyncio.shield(early)
    except asyncio.CancelledError:
        _hand_back_later(runtime, early, now)
        raise
    except Exception:
        return
    await _shielded(release(runtime.db, hold=admitted.hold, now=now))


def _hand_back_later(runtime: Runtime, early: asyncio.Task[Admitted] | None, now: Any) -> None:
    """:func:`_hand_back`, for a request being cancelled: once the reservation is made."""
    if early is None:
        return

    def done(task: asyncio.Task[Admitted]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        in_background(
            _shielded(release(runtime.db, hold=task.result().hold, now=now)),
            failure="a cancelled request's hold is left to expire",
        )

    early.add_done_callback(done)


async def _shielded(awaitable: Any) -> Any:
    """Finish money work even if the request's task is being cancelled."""
    try:
        return await asyncio.shield(awaitable)
    except Exception:
        logger.exception("settlement step failed")
        return None


async def dispatch(
    runtime: Runtime,
    send: Send,
    receive: Receive,
    endpoint: Endpoint,
    parsed: Any,
    body: bytes,
    routes: list[RouteInfo],
    headers: dict[str, str],
    response_headers: list[tuple[bytes, bytes]],
    hold: Hold,
    key: KeyInfo,
    now: Any,
    started: float,
) -> Outcome:
    last_error: UpstreamError | None = None
    for route in routes:
        # The hold covers this much output on this route (see admission.reserve): never
        # let the upstream produce more, or the overrun would be served uncharged.
        output_bound = route.max_output_tokens
        if parsed.max_output_tokens is not None:
            output_bound = min(parsed.max_output_tokens, output_bound)
        upstream_body = endpoint.prepare(
            parsed, body, route.target, route.target_model, output_bound
        )
        try:
            response = await upstream_open(
                runtime.session,
                ADAPTERS[route.target.kind],
                route.target,
                path=endpoint.upstream_path,
                body=upstream_body,
                client_headers=headers,
            )
        except UpstreamError as exc:
            last_error = exc
            logger.warning("route %s failed before output: %s", route.target.name, exc)
            if exc.retryable:
                continue
            break
        try:
            if response.status != 200:
                return await _pass_through_error(send, endpoint, response, response_headers, route)
            if parsed.is_stream and endpoint.scanner is not None:
                return await _stream(
                    runtime,
                    send,
                    receive,
                    endpoint,
                    parsed,
                    body,
                    response,
                    response_headers,
                    route,
                    hold,
                    key,
                    now,
                )
            return await _complete(
                runtime, send, endpoint, body, response, response_headers, route, hold, key, now
            )
        finally:
            response.release()
    assert last_error is not None  # noqa: S101 - routes is never empty
    if last_error.body is not None:
        content_type = (last_error.content_type or "application/json").encode()
        await respond(
            send,
            last_error.status,
            last_error.body,
            content_type=content_type,
            headers=response_headers,
        )
        return Outcome(
            status_code=last_error.status,
            status="upstream_error",
            error_class=last_error.error_class,
            route=routes[-1],
        )
    return await _upstream_failure(
        send,
        endpoint,
        response_headers,
        routes[-1],
        status=last_error.status,
        message=str(last_error),
        code=last_error.error_class,
        error_class=last_error.error_class,
    )


async def _upstream_failure(
    send: Send,
    endpoint: Endpoint,
    response_headers: list[tuple[bytes, bytes]],
    route: RouteInfo,
    *,
    status: int,
    message: str,
    code: str,
    error_class: str,
) -> Outcome:
    """Answer an upstream failure in the endpoint's own error shape (nothing was produced)."""
    await respond(
        send, status, endpoint.error_body(status, message, code), headers=response_headers
    )
    return Outcome(
        status_code=status, status="upstream_error", error_class=error_class, route=route
    )


# The upstream refused *our* credentials: the client's request is not at fault, and the
# upstream's message may quote part of the operator's API key, so it is never passed on.
UPSTREAM_AUTH_STATUSES = frozenset({401, 403})


async def _pass_through_error(
    send: Send,
    endpoint: Endpoint,
    response: aiohttp.ClientResponse,
    response_headers: list[tuple[bytes, bytes]],
    route: RouteInfo,
) -> Outcome:
    """A 4xx from the upstream is the request's fault: the client gets it as it was, except
    an authentication failure, which is the operator's to fix (502, logged)."""
    payload = await response.read()
    if response.status in UPSTREAM_AUTH_STATUSES:
        logger.error("upstream %s refused our credentials (%d)", route.target.name, response.status)
        return await _upstream_failure(
            send,
            endpoint,
            response_headers,
            route,
            status=502,
            message="The upstream provider refused this gateway's credentials; the operator has been notified.",
            code="upstream_auth_error",
            error_class=f"upstream_http_{response.status}",
        )
    content_type = response.headers.get("content-type", "application/json").encode()
    await respond(
        send, response.status, payload, content_type=content_type, headers=response_headers
    )
    return Outcome(
        status_code=response.status,
        status="upstream_error",
        error_class=f"upstream_http_{response.status}",
        route=route,
    )


async def _complete(
    runtime: Runtime,
    send: Send,
    endpoint: Endpoint,
    request_body: bytes,
    response: aiohttp.ClientResponse,
    response_headers: list[tuple[bytes, bytes]],
    route: RouteInfo,
    hold: Hold,
    key: KeyInfo,
    now: Any,
) -> Outcome:
    try:
        payload = await response.read()
        data = orjson.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return await _upstream_failure(
            send,
            endpoint,
            response_headers,
            route,
            status=502,
            message="The upstream returned an invalid response.",
            code="upstream_invalid_response",
            error_class=f"upstream_invalid_{type(exc).__name__}",
        )
    usage = endpoint.usage_from_body(data)
    estimated = usage is None
    if usage is None:
        usage = Usage(
            input_tokens=estimated_input_tokens(request_body),
            output_tokens=max(1, len(payload) // 4),
        )
    outcome = Outcome(
        status_code=200, status="ok", usage=usage, is_usage_estimated=estimated, route=route
    )
    outcome.charged(await settle(runtime.db, key=key, route=route, hold=hold, usage=usage, now=now))
    await respond(send, 200, payload, headers=response_headers)
    return outcome


async def _watch_disconnect(
    receive: Receive, gone: asyncio.Event, response: aiohttp.ClientResponse
) -> None:
    """When the client goes away, close the upstream response: that stops the upstream
    generating (and billing) more, and ends the stream's read loop."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            response.close()
            return


async def _stream(
    runtime: Runtime,
    send: Send,
    receive: Receive,
    endpoint: Endpoint,
    parsed: Any,
    request_body: bytes,
    response: aiohttp.ClientResponse,
    response_headers: list[tuple[bytes, bytes]],
    route: RouteInfo,
    hold: Hold,
    key: KeyInfo,
    now: Any,
) -> Outcome:
    assert endpoint.scanner is not None  # noqa: S101
    scanner: StreamScanner = endpoint.scanner(parsed)
    outcome = Outcome(status_code=200, status="ok", route=route)
    gone = asyncio.Event()
    watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, gone, response))
    await send(
        {"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *response_headers]}
    )
    # The end of the answer ([DONE], message_stop, ...) waits for the settlement: SDKs stop
    # reading there, and a client holding the whole answer must already have paid for it.
    held_back: list[bytes] = []
    # A stream may outlive RESERVATION_TTL_SECONDS: keep the hold from being swept as a
    # dead worker's by pushing its expiry forward while bytes flow.
    ttl = settings.RESERVATION_TTL_SECONDS
    extend_at = time.monotonic() + ttl / 3
    try:
        async for data in response.content.iter_any():
            out = scanner.feed(data)
            if out:
                if outcome.first_byte_at is None:
                    outcome.first_byte_at = time.perf_counter()
                if held_back or scanner.is_end(out):
                    held_back.append(out)
                else:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            if time.monotonic() >= extend_at:
                extend_at = time.monotonic() + ttl / 3
                await _shielded(
                    extend(
                        runtime.db, hold=hold, expires_at=timezone.now() + timedelta(seconds=ttl)
                    )
                )
        if gone.is_set():
            outcome.status = "client_disconnected"
    except (aiohttp.ClientError, TimeoutError) as exc:
        if gone.is_set():
            outcome.status = "client_disconnected"
        else:
            # The upstream broke off mid-stream: charge what it produced, end the stream.
            outcome.status = "upstream_error"
            outcome.error_class = f"upstream_stream_{type(exc).__name__}"
        response.close()
    except OSError:
        outcome.status = "client_disconnected"
        response.close()
    finally:
        watcher.cancel()
    tail = b"".join(held_back) + (scanner.finish() if outcome.status == "ok" else b"")
    if outcome.status == "upstream_error":
        # A stream that just stops looks like a complete answer: say that it is not.
        tail += endpoint.stream_error(
            "The upstream failed mid-answer; the answer is incomplete.", outcome.error_class
        )
    usage = scanner.state.usage
    if usage is None or outcome.status != "ok":
        outcome.is_usage_estimated = usage is None
        usage = usage or scanner.estimated_usage(request_body)
    outcome.usage = usage
    # Settle before the last byte: once the client has the end of the answer, it is paid for.
    outcome.charged(
        await _shielded(settle(runtime.db, key=key, route=route, hold=hold, usage=usage, now=now))
    )
    if not gone.is_set():
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": tail, "more_body": False})
    return outcome


def _trace(
    runtime: Runtime,
    key: KeyInfo,
    headers: dict[str, str],
    endpoint: Endpoint,
    model: str,
    request_id: str,
    started: float,
    now: Any,
    outcome: Outcome,
    *,
    parsed_stream: bool,
) -> None:
    finished = time.perf_counter()
    usage = outcome.usage or Usage()
    route = outcome.route
    # The model and the tag are the client's own strings: made storable here, or one bad
    # one could cost a whole batch of other tenants' traces (see proxy.traces). The other
    # strings are ours, or the operator's as the database already stored them.
    tag = trace_text(headers.get(TAG_HEADER) or key.default_tag, TAG_MAX_LENGTH)
    runtime.traces.add(
        TraceRow(
            request_id=request_id,
            tenant_id=key.tenant_id,
            client_key_id=key.id,
            tag=tag,
            endpoint=endpoint.name,
            model=trace_text(model, MODEL_MAX_LENGTH),
            upstream_id=route.target.upstream_id if route else None,
            upstream_model=route.target_model if route else "",
            price_id=route.price_id if route else None,
            is_stream=parsed_stream,
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
            created_at=now,
        )
    )
