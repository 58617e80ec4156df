"""``config.capacity.DjangoGate``: at most ``limit`` requests in Django at once per worker.

Driven with a stand-in for Django that holds each request until the test lets it go, so
the order of admissions is seen directly (the real server under a burst: test_capacity)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from config.capacity import BUSY_CODE, GATE_BUSY, RETRY_AFTER_SECONDS, DjangoGate


class HeldApp:
    """An ASGI app that answers 200 once the test releases the request it is serving."""

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0
        self.entered: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        self.entered.append(scope["path"])
        try:
            await self.release.wait()
            if scope["path"].endswith("/boom"):
                raise RuntimeError("the view failed")
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            self.inside -= 1


async def call(app: Any, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app({"type": "http", "path": path, "method": "GET"}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_the_gate_admits_its_limit_and_queues_the_rest_in_order() -> None:
    inner = HeldApp()
    gate = DjangoGate(inner, limit=2, wait_seconds=5)
    calls = [asyncio.create_task(call(gate, f"/api/v1/wallet/{i}")) for i in range(6)]
    await settle()
    assert inner.inside == 2  # four wait without a thread or a connection
    inner.release.set()
    answers = await asyncio.gather(*calls)
    assert [status for status, _, _ in answers] == [200] * 6
    assert inner.most_inside == 2
    assert inner.entered == [f"/api/v1/wallet/{i}" for i in range(6)]


@pytest.mark.asyncio
async def test_a_request_that_waits_too_long_gets_503_with_retry_after() -> None:
    inner = HeldApp()
    gate = DjangoGate(inner, limit=1, wait_seconds=0.05)
    held = asyncio.create_task(call(gate, "/api/v1/keys"))
    await settle()

    status, headers, body = await call(gate, "/v1/sub-accounts")
    assert status == 503
    assert headers[b"retry-after"] == str(RETRY_AFTER_SECONDS).encode()
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body) == {"detail": GATE_BUSY, "code": BUSY_CODE}

    status, headers, body = await call(gate, "/admin/")
    assert (status, headers[b"content-type"]) == (503, b"text/plain; charset=utf-8")
    assert body.decode() == GATE_BUSY

    inner.release.set()
    assert (await held)[0] == 200
    assert inner.entered == ["/api/v1/keys"]  # the refused ones never reached Django


@pytest.mark.asyncio
async def test_a_failing_request_gives_its_slot_back() -> None:
    inner = HeldApp()
    inner.release.set()
    gate = DjangoGate(inner, limit=1, wait_seconds=0.05)
    with pytest.raises(RuntimeError):
        await call(gate, "/api/v1/boom")
    assert (await call(gate, "/api/v1/wallet"))[0] == 200


@pytest.mark.asyncio
async def test_a_limit_of_zero_lets_everything_through() -> None:
    inner = HeldApp()
    gate = DjangoGate(inner, limit=0, wait_seconds=0.05)
    calls = [asyncio.create_task(call(gate, "/admin/")) for _ in range(5)]
    await settle()
    assert inner.inside == 5
    inner.release.set()
    assert [status for status, _, _ in await asyncio.gather(*calls)] == [200] * 5
