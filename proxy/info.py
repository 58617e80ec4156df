"""Proxy endpoints that cost nothing: models, the calling key, Anthropic token counting."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.utils import timezone

from billing.money import format_usd
from keys.models import ClientKey
from keys.selectors import key_figures
from proxy.admission import ProxyError, authenticate, routes_for_request
from proxy.db import as_aware
from proxy.endpoints import parse_count_tokens, request_object
from proxy.io import BodyTooLarge, header_dict, new_request_id, read_body, respond
from proxy.runtime import ADAPTERS, get_runtime
from proxy.upstreams.base import UpstreamError, speaks
from proxy.wire import anthropic, openai

# The columns keys.selectors.key_figures reads (it computes from an unsaved ClientKey).
KEY_FIGURE_FIELDS = (
    "label",
    "funding",
    "status",
    "ratio_cost_nanos",
    "ratio_client_nanos",
    "client_budget_nanos",
    "client_spent_nanos",
    "client_reserved_nanos",
    "cost_funded_nanos",
    "cost_spent_nanos",
    "cost_refunded_nanos",
    "spend_cap_nanos",
    "budget_period",
    "period_index",
    "period_client_spent_nanos",
    "expires_at",
)
KEY_FIGURES = f"SELECT {', '.join(KEY_FIGURE_FIELDS)} FROM keys_clientkey WHERE id = %(key_id)s"  # noqa: S608 - column names are ours


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
            if any(speaks(r.target, "anthropic") for r in routes[m])
        ]
        body = {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    else:
        # Only what this client can call in the OpenAI format (not Anthropic-only models).
        # The owner shown is the operator's choice: an upstream's name would tell clients
        # where their traffic goes.
        owned_by = settings.PROXY_MODELS_OWNED_BY
        body = {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": owned_by}
                for m in names
                if any(speaks(r.target, "openai") for r in routes[m])
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
    columns = dict(zip(KEY_FIGURE_FIELDS, rows[0], strict=True))
    columns["expires_at"] = as_aware(columns["expires_at"])
    figures = key_figures(key=ClientKey(id=key.id, **columns), now=now)
    prepaid = figures.key.is_prepaid
    limit = figures.client_budget_nanos if prepaid else figures.spend_cap_nanos
    used = figures.client_spent_nanos if prepaid else figures.period_spent_nanos
    body = {
        "label": figures.key.label,
        "status": figures.status,
        "funding": figures.key.funding,
        "budget": None if limit is None else format_usd(limit),
        "spent": format_usd(used),
        "reserved": format_usd(figures.client_reserved_nanos),
        "remaining": None
        if figures.client_remaining_nanos is None
        else format_usd(max(figures.client_remaining_nanos, 0)),
        "total_spent": format_usd(figures.client_spent_nanos),
        "budget_period": figures.key.budget_period,
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
    runtime = get_runtime()
    headers = header_dict(scope)
    id_header = (b"x-request-id", new_request_id().encode())
    try:
        try:
            body = await read_body(receive, settings.PROXY_MAX_BODY_BYTES)
        except BodyTooLarge:
            raise ProxyError(413, "Request body too large.", "request_too_large") from None
        key = await authenticate(runtime.catalog, headers, timezone.now())
        payload = request_object(body)
        model = parse_count_tokens(payload)
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
            response = await ADAPTERS[route.target.kind].open(
                runtime.session,
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
