"""Servers started with non-default settings: a small body limit, a short reservation TTL
for a worker that dies mid-request, the owner the model list shows."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest

from billing.models import ModelPrice, Reservation
from billing.money import Usage
from billing.services import reservations_expire
from keys.services import key_delete, key_update
from tests.metering import reserve
from tests.proxy.conftest import (
    ProxyServer,
    World,
    assert_books_clean,
    assert_nothing_charged,
    build_world,
    key_row,
    now_utc,
    wait_for,
)
from tests.proxy.upstream_fake import SLOW_STREAM, FakeUpstream
from usage.models import Trace

SMALL_BODY_BYTES = 4096
RESERVATION_TTL_SECONDS = 2
PROMPT = [{"role": "user", "content": "Hello there."}]
MODELS_OWNER = "Acme AI"


@pytest.fixture(scope="module")
def proxy_server(start_proxy_server: Callable[..., ProxyServer]) -> Iterator[ProxyServer]:
    """This module's ``world`` talks to a server with a 4 KiB body limit, holds that
    expire after 2 s, keys cached for 10 s (the default) and its own models' owner."""
    server = start_proxy_server(
        PROXY_MAX_BODY_BYTES=str(SMALL_BODY_BYTES),
        RESERVATION_TTL_SECONDS=str(RESERVATION_TTL_SECONDS),
        PROXY_KEY_CACHE_SECONDS="10",
        PROXY_MODELS_OWNED_BY=MODELS_OWNER,
    )
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "gpt-fake", "messages": PROMPT}),
        ("/v1/messages", {"model": "claude-fake", "max_tokens": 10, "messages": PROMPT}),
        ("/v1/messages/count_tokens", {"model": "claude-fake", "messages": PROMPT}),
    ],
    ids=["chat", "messages", "count_tokens"],
)
def test_body_over_the_configured_limit_is_refused_with_413(
    world: World, path: str, body: dict[str, Any]
) -> None:
    issued = world.key()
    headers = {"Authorization": f"Bearer {issued.secret}", "anthropic-version": "2023-06-01"}
    padding = "x" * SMALL_BODY_BYTES

    fits = httpx.post(f"{world.url}{path}", json=body, headers=headers, timeout=20)
    too_big = httpx.post(
        f"{world.url}{path}",
        json={**body, "messages": [{"role": "user", "content": padding}]},
        headers=headers,
    )

    assert fits.status_code == 200, fits.text
    assert too_big.status_code == 413
    error = too_big.json()["error"]
    if path.startswith("/v1/messages"):
        assert too_big.json()["type"] == "error"
        assert error["type"] == "request_too_large"
    else:
        assert error["code"] == "request_too_large"
    assert len(world.fake.records) == 1
    assert_books_clean()


# ---------------------------------------------------------------------------- the model list


def test_the_model_list_shows_the_configured_owner(world: World) -> None:
    issued = world.key()
    client = openai.OpenAI(
        base_url=f"{world.url}/v1", api_key=issued.secret, max_retries=0, timeout=20
    )

    models = client.models.list().data

    assert models and {m.owned_by for m in models} == {MODELS_OWNER}
    assert_books_clean()


# ---------------------------------------------------------------------------- cached keys


@pytest.mark.parametrize("change", ["revoke", "delete"])
def test_key_revoked_or_deleted_while_cached_is_refused_at_once(world: World, change: str) -> None:
    issued = world.key()
    headers = {"Authorization": f"Bearer {issued.secret}"}
    body = {"model": "gpt-fake", "messages": PROMPT}
    assert (
        httpx.post(f"{world.url}/v1/chat/completions", json=body, headers=headers).status_code
        == 200
    )

    if change == "revoke":
        key_update(
            tenant=world.tenant, actor=None, key_id=issued.key.pk, changes={"status": "revoked"}
        )
    else:
        key_delete(tenant=world.tenant, actor=None, key_id=issued.key.pk)
    refused = httpx.post(f"{world.url}/v1/chat/completions", json=body, headers=headers)

    # The server still has the key cached as active (without Redis nobody tells it), but
    # the reservation re-reads the key's status: nothing is served or held.
    assert refused.status_code == 401, refused.text
    assert len(world.fake.records) == 1
    assert Reservation.objects.filter(client_key=issued.key).count() == 1
    assert_books_clean()


# ---------------------------------------------------------------------------- holds that expire


def test_stream_outliving_its_hold_ttl_keeps_its_hold_and_is_charged(world: World) -> None:
    """The stream runs about twice RESERVATION_TTL_SECONDS; its worker extends the hold
    while bytes flow, so the sweep (every 30 s in production) leaves it, and the whole
    answer is charged its reported usage."""
    issued = world.key()
    streaming = threading.Event()
    received: list[bytes] = []

    def slow_stream() -> None:
        body = {"model": SLOW_STREAM, "messages": PROMPT, "stream": True}
        headers = {"Authorization": f"Bearer {issued.secret}"}
        with httpx.stream(
            "POST", f"{world.url}/v1/chat/completions", json=body, headers=headers
        ) as r:
            for chunk in r.iter_raw():
                received.append(chunk)
                streaming.set()

    client = threading.Thread(target=slow_stream)
    client.start()
    assert streaming.wait(10)
    first = Reservation.objects.get(client_key=issued.key)
    # Past the hold's first expiry, mid-stream, the sweep finds nothing to expire.
    wait_for(lambda: first.expires_at < now_utc(), timeout=RESERVATION_TTL_SECONDS + 2)
    assert client.is_alive()
    swept = reservations_expire(now=now_utc())
    client.join(20)

    assert swept == 0
    assert b"[DONE]" in b"".join(received)
    held = Reservation.objects.get(client_key=issued.key)
    assert held.status == Reservation.Status.SETTLED
    assert held.expires_at > first.expires_at
    trace = wait_for(lambda: Trace.objects.filter(client_key=issued.key).first())
    assert trace.status == "ok" and not trace.is_usage_estimated
    assert key_row(issued).client_spent_nanos == trace.client_nanos > 0


# ---------------------------------------------------------------------------- a crashed worker


@pytest.fixture
def doomed_world(
    transactional_db: None,
    fake_upstream: FakeUpstream,
    start_proxy_server: Callable[..., ProxyServer],
    closed_port: int,
) -> Iterator[World]:
    """A world on a server of its own (the test kills it) whose holds expire after 2 s."""
    fake_upstream.clear()
    server = start_proxy_server(RESERVATION_TTL_SECONDS=str(RESERVATION_TTL_SECONDS))
    yield build_world(fake_upstream, server, closed_port)
    server.stop()


def test_reservation_of_a_killed_worker_expires_and_charges_nothing(doomed_world: World) -> None:
    world = doomed_world
    issued = world.key()
    streaming = threading.Event()

    def slow_stream() -> None:
        body = {"model": SLOW_STREAM, "messages": PROMPT, "stream": True}
        headers = {"Authorization": f"Bearer {issued.secret}"}
        try:
            with httpx.stream(
                "POST", f"{world.url}/v1/chat/completions", json=body, headers=headers
            ) as r:
                for _ in r.iter_raw():
                    streaming.set()
        except httpx.HTTPError:
            pass  # the server dies under it

    client = threading.Thread(target=slow_stream)
    client.start()
    assert streaming.wait(10)
    held = Reservation.objects.get(client_key=issued.key)
    assert held.status == Reservation.Status.HELD
    assert key_row(issued).client_reserved_nanos == held.client_nanos > 0

    # The worker dies mid-stream: no settlement, no release.
    os.killpg(world.server.process.pid, signal.SIGKILL)
    world.server.process.wait(10)
    client.join(10)
    assert not client.is_alive()
    world.fake.wait_until(lambda: world.fake.last(SLOW_STREAM).is_cancelled)
    assert Reservation.objects.get(pk=held.pk).status == Reservation.Status.HELD
    assert reservations_expire(now=now_utc()) == 0  # not before its TTL

    # After its TTL the sweep (a Celery beat task in production) reconciles it, once.
    wait_for(lambda: held.expires_at < now_utc(), timeout=RESERVATION_TTL_SECONDS + 2)
    assert reservations_expire(now=now_utc()) == 1
    assert reservations_expire(now=now_utc()) == 0
    assert Reservation.objects.get(pk=held.pk).status == Reservation.Status.EXPIRED
    assert_nothing_charged(issued)
    assert_books_clean()


# ---------------------------------------------------------------------------- no broker


@pytest.fixture
def brokerless_world(
    transactional_db: None,
    fake_upstream: FakeUpstream,
    start_proxy_server: Callable[..., ProxyServer],
    closed_port: int,
) -> Iterator[World]:
    """A server as ``make run`` starts it: no REDIS_URL, so no broker and no Celery beat."""
    fake_upstream.clear()
    server = start_proxy_server(REDIS_URL="", RESERVATION_SWEEP_SECONDS="1")
    yield build_world(fake_upstream, server, closed_port)
    server.stop()


def test_a_server_without_a_broker_runs_the_expiry_sweep_itself(
    brokerless_world: World,
) -> None:
    world = brokerless_world
    issued = world.key()
    price = ModelPrice.objects.filter(route__model="gpt-fake").latest("effective_from")
    long_ago = now_utc() - timedelta(hours=1)
    # A hold its (crashed) worker never settled, long past its expiry.
    reserve(
        key=issued.key,
        price=price,
        request_id="req_orphan",
        worst_case=Usage(input_tokens=1_000, output_tokens=1_000),
        now=long_ago,
    )
    assert key_row(issued).client_reserved_nanos > 0

    # The worker's runtime starts with its first request, and with it the periodic tasks.
    models = httpx.get(
        f"{world.url}/v1/models", headers={"Authorization": f"Bearer {issued.secret}"}
    )
    assert models.status_code == 200

    wait_for(
        lambda: (
            Reservation.objects.get(request_id="req_orphan").status == Reservation.Status.EXPIRED
        ),
        timeout=10,
    )
    assert_nothing_charged(issued)
    assert_books_clean()
