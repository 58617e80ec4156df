"""Proxy endpoints that cost nothing: models, the calling key, Anthropic token counting."""

from __future__ import annotations

from typing import Any

import orjson
from django.utils import timezone

from billing.money import format_usd
from keys.periods import period_index
from proxy.admission import ProxyError, authenticate, routes_for_request
from proxy.runtime import ADAPTERS, get_runtime
from proxy.upstreams.base import UpstreamError, upstream_open
from proxy.views import BodyTooLarge, header_dict, new_request_id, read_body, respond
from proxy.wire import anthropic, openai

KEY_FIGURES = """
SELECT label, funding, status, client_budget_nanos, client_spent_nanos, client_reserved_nanos,
       spend_cap_nanos, budget_period, period_index, period_client_spent_nanos, expires_at
  FROM keys_clientkey WHERE id = %(key_id)s
"""


def _is_anthropic(headers: dict[str, str]) -> bool:
    return "anthropic-version" in headers


async def models_list(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``GET /v1/models``: the models this key may use, in the caller's SDK's shape."""
    runtime = get_runtime()
    headers = header_dict(scope)
    wire = anthropic if _is_anthropic(headers) else openai
    try:
        key = await authenticate(runtime.catalog, headers, timezone.now())
    except ProxyError as exc:
        await respond(send, exc.status, wire.error_body(exc.status, exc.message, exc.code))
        return
    routes = await runtime.catalog.all_routes()
    names = sorted(m for m in routes if key.allows(m))
    if wire is anthropic:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2024-01-01T00:00:00Z"}
            for m in names
            if any(r.target.kind == "anthropic" for r in routes[m])
        ]
        body = {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    else:
        # Only what this client can call in the OpenAI format (not Anthropic-only models).
        openai_routes = {m: [r for r in routes[m] if r.target.kind == "openai"] for m in names}
        body = {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": found[0].target.name}
                for m, found in openai_routes.items()
                if found
            ],
        }
    await respond(send, 200, orjson.dumps(body))


async def key_info(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``GET /v1/key``: the calling key's client-facing budget, spend and limits (no cost)."""
    runtime = get_runtime()
    now = timezone.now()
    try:
        key = await authenticate(runtime.catalog, header_dict(scope), now)
    except ProxyError as exc:
        await respond(send, exc.status, openai.error_body(exc.status, exc.message, exc.code))
        return
    rows = await runtime.db.fetch(KEY_FIGURES, {"key_id": key.id})
    (
        label,
        funding,
        status,
        budget,
        spent,
        reserved,
        cap,
        budget_period,
        stored_period,
        period_spent,
        expires_at,
    ) = rows[0]
    if stored_period < period_index(budget_period, now):
        period_spent = 0
    if funding == "prepaid":
        limit: int | None = int(budget)
        used = int(spent)
    else:
        limit = None if cap is None else int(cap)
        used = int(period_spent)
    body = {
        "label": label,
        "status": status,
        "funding": funding,
        "budget": None if limit is None else format_usd(limit),
        "spent": format_usd(used),
        "reserved": format_usd(int(reserved)),
        "remaining": None if limit is None else format_usd(max(limit - used, 0)),
        "total_spent": format_usd(int(spent)),
        "budget_period": budget_period,
        "currency": "USD",
        "limits": {
            "rpm": key.limits.requests_per_minute,
            "tpm": key.limits.tokens_per_minute,
            "max_concurrency": key.limits.max_concurrency,
            "models": sorted(key.allowed_models),
            "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        },
    }
    await respond(send, 200, orjson.dumps(body))


async def count_tokens(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``POST /v1/messages/count_tokens``: free; forwarded to the model's Anthropic route."""
    from django.conf import settings

    runtime = get_runtime()
    headers = header_dict(scope)
    id_header = (b"x-request-id", new_request_id().encode())
    try:
        try:
            body = await read_body(receive, settings.PROXY_MAX_BODY_BYTES)
        except BodyTooLarge:
            raise ProxyError(413, "Request body too large.", "request_too_large") from None
        key = await authenticate(runtime.catalog, headers, timezone.now())
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ProxyError(400, "The request body is not valid JSON.", "invalid_json") from None
        model = payload.get("model") if isinstance(payload, dict) else None
        if not isinstance(model, str) or not model:
            raise ProxyError(400, "model: Field required", "invalid_request")
        routes = await routes_for_request(runtime.catalog, key, model, "anthropic")
    except ProxyError as exc:
        await respond(
            send,
            exc.status,
            anthropic.error_body(exc.status, exc.message, exc.code),
            headers=[id_header],
        )
        return
    except ConnectionResetError:
        return
    last: UpstreamError | None = None
    for route in routes:
        upstream_body = orjson.dumps({**payload, "model": route.target_model})
        try:
            response = await upstream_open(
                runtime.session,
                ADAPTERS["anthropic"],
                route.target,
                path="/v1/messages/count_tokens",
                body=upstream_body,
                client_headers=headers,
            )
        except UpstreamError as exc:
            last = exc
            if exc.retryable:
                continue
            break
        try:
            answer = await response.read()
            await respond(
                send,
                response.status,
                answer,
                content_type=response.headers.get("content-type", "application/json").encode(),
                headers=[id_header],
            )
        finally:
            response.release()
        return
    assert last is not None  # noqa: S101
    await respond(
        send,
        last.status,
        anthropic.error_body(last.status, str(last), last.error_class),
        headers=[id_header],
    )
