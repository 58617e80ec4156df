"""Forwarding: a request sent to its routes in order, and the answer passed back.

:func:`dispatch` tries each candidate route until one answers; a route that fails before
its first byte with a retryable error (``UpstreamError.retryable``) hands over to the next,
so fallback never shows the client half an answer. The answer is then forwarded whole
(:func:`_complete`) or as a stream (:func:`_stream`), settled before its last byte, and
described by an :class:`Outcome` for the release of the limits and for the trace.

An upstream's error answer reaches the client as it was (a retryable status, 429 or 5xx,
only once the last route has given it), except a refusal of the operator's credentials,
which becomes a 502 (logged). A failure with no answer to pass on (unreachable, timed out,
an invalid body) is answered in the endpoint's own error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

import aiohttp
import orjson
from django.conf import settings
from django.utils import timezone

from billing.money import Usage
from proxy.admission import RouteInfo
from proxy.exchange import Exchange, Outcome
from proxy.io import SSE_HEADERS, Receive, respond
from proxy.runtime import ADAPTERS
from proxy.settlement import extend, settle, shielded
from proxy.traces import TraceStatus
from proxy.upstreams.base import UpstreamError, UpstreamResponse
from proxy.wire.base import StreamScanner, estimated_input_tokens

logger = logging.getLogger(__name__)


async def dispatch(exchange: Exchange) -> Outcome:
    """Answer the request from the first of its routes that takes it, and say how it ended."""
    endpoint = exchange.endpoint
    parsed = exchange.parsed
    routes = exchange.routes
    last_error: UpstreamError | None = None
    for route in routes:
        # The hold covers this much output on this route (see admission.reserve): never
        # let the upstream produce more, or the overrun would be served uncharged.
        output_bound = route.max_output_tokens
        if parsed.max_output_tokens is not None:
            output_bound = min(parsed.max_output_tokens, output_bound)
        upstream_body = endpoint.prepare(
            parsed, exchange.body, route.target, route.target_model, output_bound
        )
        try:
            response = await ADAPTERS[route.target.kind].open(
                exchange.runtime.session,
                route.target,
                path=endpoint.upstream_path,
                body=upstream_body,
                client_headers=exchange.headers,
            )
        except UpstreamError as exc:
            last_error = exc
            logger.warning("route %s failed before output: %s", route.target.name, exc)
            if exc.retryable:
                continue
            break
        try:
            if response.status != 200:
                return await _pass_through_error(exchange, response, route)
            if parsed.is_stream and endpoint.scanner is not None:
                return await _stream(exchange, response, route)
            return await _complete(exchange, response, route)
        finally:
            response.release()
    assert last_error is not None  # noqa: S101 - routes is never empty
    if last_error.body is not None:
        content_type = (last_error.content_type or "application/json").encode()
        await respond(
            exchange.send,
            last_error.status,
            last_error.body,
            content_type=content_type,
            headers=exchange.response_headers,
        )
        return Outcome(
            status_code=last_error.status,
            status=TraceStatus.UPSTREAM_ERROR,
            error_class=last_error.error_class,
            route=routes[-1],
        )
    return await _upstream_failure(
        exchange,
        routes[-1],
        status=last_error.status,
        message=str(last_error),
        code=last_error.error_class,
        error_class=last_error.error_class,
    )


async def _upstream_failure(
    exchange: Exchange,
    route: RouteInfo,
    *,
    status: int,
    message: str,
    code: str,
    error_class: str,
) -> Outcome:
    """Answer an upstream failure in the endpoint's own error shape (nothing was produced)."""
    await respond(
        exchange.send,
        status,
        exchange.endpoint.error_body(status, message, code),
        headers=exchange.response_headers,
    )
    return Outcome(
        status_code=status, status=TraceStatus.UPSTREAM_ERROR, error_class=error_class, route=route
    )


# The upstream refused *our* credentials: the client's request is not at fault, and the
# upstream's message may quote part of the operator's API key, so it is never passed on.
UPSTREAM_AUTH_STATUSES = frozenset({401, 403})


async def _pass_through_error(
    exchange: Exchange, response: UpstreamResponse, route: RouteInfo
) -> Outcome:
    """A 4xx from the upstream is the request's fault: the client gets it as it was, except
    an authentication failure, which is the operator's to fix (502, logged)."""
    payload = await response.read()
    if response.status in UPSTREAM_AUTH_STATUSES:
        logger.error("upstream %s refused our credentials (%d)", route.target.name, response.status)
        return await _upstream_failure(
            exchange,
            route,
            status=502,
            message="The upstream provider refused this gateway's credentials; the operator has been notified.",
            code="upstream_auth_error",
            error_class=f"upstream_http_{response.status}",
        )
    content_type = response.headers.get("content-type", "application/json").encode()
    await respond(
        exchange.send,
        response.status,
        payload,
        content_type=content_type,
        headers=exchange.response_headers,
    )
    return Outcome(
        status_code=response.status,
        status=TraceStatus.UPSTREAM_ERROR,
        error_class=f"upstream_http_{response.status}",
        route=route,
    )


async def _complete(exchange: Exchange, response: UpstreamResponse, route: RouteInfo) -> Outcome:
    try:
        payload = await response.read()
        data = orjson.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return await _upstream_failure(
            exchange,
            route,
            status=502,
            message="The upstream returned an invalid response.",
            code="upstream_invalid_response",
            error_class=f"upstream_invalid_{type(exc).__name__}",
        )
    usage = exchange.endpoint.usage_from_body(data)
    estimated = usage is None
    if usage is None:
        usage = Usage(
            input_tokens=estimated_input_tokens(exchange.body),
            output_tokens=max(1, len(payload) // 4),
        )
    outcome = Outcome(
        status_code=200,
        status=TraceStatus.OK,
        usage=usage,
        is_usage_estimated=estimated,
        route=route,
    )
    outcome.charged(
        await settle(
            exchange.runtime.db,
            key=exchange.key,
            route=route,
            hold=exchange.hold,
            usage=usage,
            now=exchange.now,
        )
    )
    await respond(exchange.send, 200, payload, headers=exchange.response_headers)
    return outcome


async def _watch_disconnect(
    receive: Receive, gone: asyncio.Event, response: UpstreamResponse
) -> None:
    """When the client goes away, close the upstream response: that stops the upstream
    generating (and billing) more, and ends the stream's read loop."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            response.close()
            return


async def _stream(exchange: Exchange, response: UpstreamResponse, route: RouteInfo) -> Outcome:
    endpoint = exchange.endpoint
    send = exchange.send
    db = exchange.runtime.db
    assert endpoint.scanner is not None  # noqa: S101
    scanner: StreamScanner = endpoint.scanner(exchange.parsed)
    outcome = Outcome(status_code=200, status=TraceStatus.OK, route=route)
    gone = asyncio.Event()
    watcher = asyncio.get_running_loop().create_task(
        _watch_disconnect(exchange.receive, gone, response)
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*SSE_HEADERS, *exchange.response_headers],
        }
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
                await shielded(
                    extend(
                        db, hold=exchange.hold, expires_at=timezone.now() + timedelta(seconds=ttl)
                    )
                )
        if gone.is_set():
            outcome.status = TraceStatus.CLIENT_DISCONNECTED
    except (aiohttp.ClientError, TimeoutError) as exc:
        if gone.is_set():
            outcome.status = TraceStatus.CLIENT_DISCONNECTED
        else:
            # The upstream broke off mid-stream: charge what it produced, end the stream.
            outcome.status = TraceStatus.UPSTREAM_ERROR
            outcome.error_class = f"upstream_stream_{type(exc).__name__}"
        response.close()
    except OSError:
        outcome.status = TraceStatus.CLIENT_DISCONNECTED
        response.close()
    finally:
        watcher.cancel()
    tail = b"".join(held_back) + (scanner.finish() if outcome.status == TraceStatus.OK else b"")
    if outcome.status == TraceStatus.UPSTREAM_ERROR:
        # A stream that just stops looks like a complete answer: say that it is not.
        tail += endpoint.stream_error(
            "The upstream failed mid-answer; the answer is incomplete.", outcome.error_class
        )
    usage = scanner.state.usage
    if usage is None or outcome.status != TraceStatus.OK:
        outcome.is_usage_estimated = usage is None
        usage = usage or scanner.estimated_usage(exchange.body)
    outcome.usage = usage
    # Settle before the last byte: once the client has the end of the answer, it is paid for.
    outcome.charged(
        await shielded(
            settle(
                db,
                key=exchange.key,
                route=route,
                hold=exchange.hold,
                usage=usage,
                now=exchange.now,
            )
        )
    )
    if not gone.is_set():
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": tail, "more_body": False})
    return outcome
