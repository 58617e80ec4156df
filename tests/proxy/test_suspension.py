"""A suspended reseller's client keys, through the real server.

With Redis, two workers that have the tenant's keys cached (for 10 s, the default) refuse
them within a second of ``tenant_suspend`` on every endpoint, in each wire format's error
shape, charge nothing, and serve them again within a second of ``tenant_reinstate``. Each
worker is reached on a keep-alive connection of its own, found through ``/proc``, so a
worker that missed the announcement cannot hide behind the other.

Without Redis (``make run``), a suspension made in another process reaches a worker's
cache only when the cached key expires; its reservations are refused at once all the same,
so nothing is spent meanwhile. A suspension made through the admin of the server's own
process is heard at once. Either way, a stream admitted before the suspension runs to its
end and is charged.
"""

from __future__ import annotations

import http.client
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from accounts.models import Tenant
from accounts.services import tenant_reinstate, tenant_suspend
from billing.models import LedgerEntry, Reservation
from keys.models import ClientKey
from keys.services import IssuedKey, key_update
from tests.proxy.conftest import (
    TRACE_FLUSH_SECONDS,
    ProxyServer,
    World,
    assert_books_clean,
    build_world,
    key_row,
    wait_for,
)
from tests.proxy.upstream_fake import SLOW_STREAM, FakeUpstream
from usage.models import Trace

pytestmark = pytest.mark.usefixtures("books_balance")

KEY_CACHE_SECONDS = 10
# How soon every worker must have heard of a suspension or a reinstatement.
PROMPTLY_SECONDS = 1.0
PROMPT = [{"role": "user", "content": "Hello there."}]
ANTHROPIC = {"anthropic-version": "2023-06-01"}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: dict[str, Any] | None = None
    anthropic_shape: bool = False


CALLS = {
    "chat": Call("POST", "/v1/chat/completions", {"model": "gpt-fake", "messages": PROMPT}),
    "messages": Call(
        "POST",
        "/v1/messages",
        {"model": "claude-fake", "max_tokens": 10, "messages": PROMPT},
        anthropic_shape=True,
    ),
    "key": Call("GET", "/v1/key"),
    "models": Call("GET", "/v1/models"),
    "models-anthropic": Call("GET", "/v1/models", anthropic_shape=True),
}
# What only the cache decides (no reservation re-checks the tenant behind it).
CACHE_ONLY = ("key", "models", "models-anthropic")


def send(conn: http.client.HTTPConnection, call: Call, secret: str) -> tuple[int, Any]:
    """One call on ``conn``: the key as Anthropic's SDK sends it on Anthropic-shaped calls,
    as OpenAI's does on the others."""
    if call.anthropic_shape:
        headers = {"x-api-key": secret, **ANTHROPIC}
    else:
        headers = {"Authorization": f"Bearer {secret}"}
    payload = None
    if call.body is not None:
        payload = orjson.dumps(call.body)
        headers["content-type"] = "application/json"
    conn.request(call.method, call.path, body=payload, headers=headers)
    response = conn.getresponse()
    return response.status, orjson.loads(response.read())


def assert_refused(name: str, status: int, body: Any, code: str) -> None:
    assert status == 401, (name, body)
    if CALLS[name].anthropic_shape:
        assert body["type"] == "error", (name, body)
        assert body["error"]["type"] == "authentication_error", (name, body)
        assert body["error"]["message"], (name, body)
    else:
        assert body["error"]["type"] == "authentication_error", (name, body)
        assert body["error"]["code"] == code, (name, body)
        assert body["error"]["message"], (name, body)


# ---------------------------------------------------------------------------- each worker


def worker_pids(server: ProxyServer) -> set[int]:
    supervisor = server.process.pid
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return {int(pid) for pid in children} or {supervisor}


def _owner(server_port: int, client_port: int, pids: set[int]) -> int | None:
    """The worker holding the server end of the connection from ``client_port``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)) == (
                server_port,
                client_port,
            ):
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                continue
    return None


def connection_to_each_worker(server: ProxyServer) -> dict[int, http.client.HTTPConnection]:
    """A keep-alive connection to every worker (the kernel spreads new connections over
    the workers' sockets; open some until each worker has one)."""
    host, port = server.url.removeprefix("http://").split(":")
    pids = worker_pids(server)
    found: dict[int, http.client.HTTPConnection] = {}
    for _ in range(60):
        conn = http.client.HTTPConnection(host, int(port), timeout=20)
        conn.request("GET", "/v1/models")  # accepted by now: a worker holds the socket
        conn.getresponse().read()
        owner = _owner(int(port), conn.sock.getsockname()[1], pids)
        if owner is None or owner in found:
            conn.close()
            continue
        found[owner] = conn
        if set(found) == pids:
            return found
    raise AssertionError(f"could not reach every worker {pids}: reached {set(found)}")


def until_every_worker(
    conns: dict[int, http.client.HTTPConnection], secret: str, done: Callable[[int], bool]
) -> tuple[float, dict[tuple[int, str], tuple[int, Any]]]:
    """Call every endpoint on every worker until each answers a status ``done`` accepts, or
    PROMPTLY_SECONDS have passed; how long it took and the last answers."""
    started = time.monotonic()
    last: dict[tuple[int, str], tuple[int, Any]] = {}
    pending = {(pid, name) for pid in conns for name in CALLS}
    while pending:
        for pid, name in sorted(pending):
            last[(pid, name)] = send(conns[pid], CALLS[name], secret)
            if done(last[(pid, name)][0]):
                pending.discard((pid, name))
        if time.monotonic() - started > PROMPTLY_SECONDS:
            break
    return time.monotonic() - started, last


# ---------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def redis_server(start_proxy_server: Callable[..., ProxyServer]) -> Iterator[ProxyServer]:
    """Two workers, keys cached 10 s, changes announced over Redis."""
    server = start_proxy_server(workers=2, PROXY_KEY_CACHE_SECONDS=str(KEY_CACHE_SECONDS))
    yield server
    server.stop()


@pytest.fixture
def world_on(
    transactional_db: None, fake_upstream: FakeUpstream, closed_port: int
) -> Iterator[Callable[[ProxyServer], World]]:
    """``world_on(server)``: the usual reseller and catalogue, served by ``server``."""

    def make(server: ProxyServer) -> World:
        fake_upstream.clear()
        return build_world(fake_upstream, server, closed_port)

    yield make
    wait_for(
        lambda: not Reservation.objects.filter(status=Reservation.Status.HELD).exists(), timeout=10
    )
    time.sleep(TRACE_FLUSH_SECONDS)


def money_state(world: World, issued: IssuedKey) -> tuple[object, ...]:
    key = key_row(issued)
    return (
        key.client_spent_nanos,
        key.cost_spent_nanos,
        key.client_reserved_nanos,
        key.cost_reserved_nanos,
        Reservation.objects.count(),
        LedgerEntry.objects.count(),
        len(world.fake.records),
    )


# ---------------------------------------------------------------------------- with Redis


@pytest.mark.postgres
@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (set REDIS_URL)")
def test_every_worker_refuses_a_suspended_tenants_keys_within_a_second_and_serves_them_after(
    redis_server: ProxyServer, world_on: Callable[[ProxyServer], World]
) -> None:
    world = world_on(redis_server)
    issued = world.key()
    revoked = world.key(label="revoked before")
    key_update(
        tenant=world.tenant, actor=None, key_id=revoked.key.pk, changes={"status": "revoked"}
    )
    conns = connection_to_each_worker(redis_server)
    assert len(conns) == 2
    # Every worker serves the key, and so has it cached for the next 10 s.
    for conn in conns.values():
        for name, call in CALLS.items():
            status, body = send(conn, call, issued.secret)
            assert status == 200, (name, body)
            if name == "key":
                assert body["status"] == "active"
    before = money_state(world, issued)

    tenant_suspend(tenant=world.tenant, actor=None)
    took, answers = until_every_worker(conns, issued.secret, lambda status: status == 401)

    for (_, name), (status, body) in answers.items():
        assert_refused(name, status, body, "account_suspended")
    assert took <= PROMPTLY_SECONDS
    # The official SDKs see an authentication error.
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{world.url}/v1", api_key=issued.secret, max_retries=0
        ).chat.completions.create(model="gpt-fake", messages=PROMPT)  # type: ignore[arg-type]
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(
            base_url=world.url, api_key=issued.secret, max_retries=0
        ).messages.create(model="claude-fake", max_tokens=10, messages=PROMPT)  # type: ignore[arg-type]
    # Nothing reached the upstream, nothing was held or charged, the key is still active.
    assert money_state(world, issued) == before
    assert key_row(issued).status == ClientKey.Status.ACTIVE
    assert_books_clean()

    tenant_reinstate(tenant=world.tenant, actor=None)
    took, answers = until_every_worker(conns, issued.secret, lambda status: status == 200)

    assert {status for status, _ in answers.values()} == {200}, answers
    assert took <= PROMPTLY_SECONDS
    assert answers[(next(iter(conns)), "key")][1]["status"] == "active"
    for conn in conns.values():
        status, body = send(conn, CALLS["chat"], revoked.secret)
        assert_refused("chat", status, body, "key_revoked")
    assert key_row(revoked).status == ClientKey.Status.REVOKED
    assert_books_clean()
    for conn in conns.values():
        conn.close()


# ---------------------------------------------------------------------------- without Redis


@pytest.fixture(scope="module")
def no_redis_server(start_proxy_server: Callable[..., ProxyServer]) -> Iterator[ProxyServer]:
    """One worker, no Redis: the admin and the proxy share its process, and nothing tells
    it of changes made elsewhere. Plain HTTP, as ``make run`` serves it: the admin's session
    and CSRF cookies are not marked secure."""
    server = start_proxy_server(
        REDIS_URL="",
        PROXY_KEY_CACHE_SECONDS=str(KEY_CACHE_SECONDS),
        SESSION_COOKIE_SECURE="0",
    )
    yield server
    server.stop()


def test_without_redis_a_suspension_elsewhere_stops_spending_at_once_and_the_rest_with_the_cache(
    no_redis_server: ProxyServer, world_on: Callable[[ProxyServer], World]
) -> None:
    world = world_on(no_redis_server)
    issued = world.key()
    conn = connection_to_each_worker(no_redis_server).popitem()[1]
    for call in CALLS.values():
        assert send(conn, call, issued.secret)[0] == 200
    cached_at = time.monotonic()
    before = money_state(world, issued)

    tenant_suspend(tenant=world.tenant, actor=None)  # this process: the server hears nothing
    answers = {name: send(conn, call, issued.secret) for name, call in CALLS.items()}
    answered_at = time.monotonic()

    # The metered calls reach the reservation, whose SQL refuses the suspended tenant.
    for name in ("chat", "messages"):
        assert_refused(name, *answers[name], "account_suspended")
    assert money_state(world, issued) == before
    # The free ones are decided by the cached key until it expires (10 s at most).
    if answered_at - cached_at < KEY_CACHE_SECONDS:
        assert {answers[name][0] for name in CACHE_ONLY} == {200}
    wait_for(
        lambda: send(conn, CALLS["key"], issued.secret)[0] == 401,
        timeout=KEY_CACHE_SECONDS + 2,
        interval=0.25,
    )
    for name in CACHE_ONLY:
        assert_refused(name, *send(conn, CALLS[name], issued.secret), "account_suspended")
    assert money_state(world, issued) == before
    conn.close()
    assert_books_clean()


def test_a_stream_admitted_before_the_suspension_runs_to_the_end_and_is_charged(
    no_redis_server: ProxyServer, world_on: Callable[[ProxyServer], World]
) -> None:
    """The upstream serves it whole, so the reseller pays for it whole; only new requests
    are refused."""
    world = world_on(no_redis_server)
    issued = world.key()
    streaming = threading.Event()
    received: list[bytes] = []

    def slow_stream() -> None:
        body = {"model": SLOW_STREAM, "messages": PROMPT, "stream": True}
        headers = {"Authorization": f"Bearer {issued.secret}"}
        with httpx.stream(
            "POST", f"{world.url}/v1/chat/completions", json=body, headers=headers, timeout=30
        ) as response:
            for chunk in response.iter_raw():
                received.append(chunk)
                streaming.set()

    client = threading.Thread(target=slow_stream)
    client.start()
    assert streaming.wait(10)
    tenant_suspend(tenant=world.tenant, actor=None)
    refused = httpx.post(
        f"{world.url}/v1/chat/completions",
        json=CALLS["chat"].body,
        headers={"Authorization": f"Bearer {issued.secret}"},
        timeout=20,
    )
    assert client.is_alive()  # still streaming
    client.join(30)

    assert_refused("chat", refused.status_code, refused.json(), "account_suspended")
    assert b"[DONE]" in b"".join(received)
    held = Reservation.objects.get(client_key=issued.key)
    assert held.status == Reservation.Status.SETTLED
    trace = wait_for(lambda: Trace.objects.filter(request_id=held.request_id).first())
    assert trace.status == "ok" and not trace.is_usage_estimated
    key = key_row(issued)
    assert key.client_spent_nanos == trace.client_nanos == held.charged_client_nanos > 0
    assert key.status == ClientKey.Status.ACTIVE
    assert_books_clean()


def admin_post(client: httpx.Client, url: str, data: dict[str, Any]) -> httpx.Response:
    """POST a Django admin form as a browser would: with the page's CSRF token."""
    page = client.get(url)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None, page.text[:500]
    return client.post(url, data={"csrfmiddlewaretoken": token.group(1), **data})


@pytest.mark.parametrize("how", ["action", "change form"])
def test_without_redis_the_servers_own_admin_suspends_at_once(
    no_redis_server: ProxyServer, world_on: Callable[[ProxyServer], World], how: str
) -> None:
    """``make run``: one process serves the admin and the proxy, so the announcement of a
    suspension made in its admin reaches its key cache directly."""
    world = world_on(no_redis_server)
    issued = world.key()
    get_user_model().objects.create_superuser(
        username="operator", email="operator@example.com", password="operator-pass"
    )
    conn = connection_to_each_worker(no_redis_server).popitem()[1]
    assert send(conn, CALLS["key"], issued.secret)[0] == 200  # cached for 10 s
    tenant = world.tenant
    with httpx.Client(base_url=world.url, timeout=20, follow_redirects=True) as browser:
        login = admin_post(
            browser,
            "/admin/login/?next=/admin/",
            {"username": "operator", "password": "operator-pass", "next": "/admin/"},
        )
        assert login.status_code == 200 and "Log out" in login.text
        if how == "action":
            done = admin_post(
                browser,
                "/admin/accounts/tenant/",
                {"action": "suspend", "_selected_action": [str(tenant.pk)]},
            )
        else:
            done = admin_post(
                browser, f"/admin/accounts/tenant/{tenant.pk}/change/", {"name": tenant.name}
            )
        assert done.status_code == 200
        assert Tenant.objects.get(pk=tenant.pk).is_active is False

        for name in CALLS:
            assert_refused(name, *send(conn, CALLS[name], issued.secret), "account_suspended")

        admin_post(
            browser,
            "/admin/accounts/tenant/",
            {"action": "reinstate", "_selected_action": [str(tenant.pk)]},
        )
    assert Tenant.objects.get(pk=tenant.pk).is_active is True
    assert send(conn, CALLS["key"], issued.secret)[0] == 200
    conn.close()
    assert_books_clean()
