"""Fixtures that run the real proxy: Tollgate's server (``python -m config.serve``, uvicorn
workers) serving ``config.asgi:application`` in a subprocess, against a fake provider
(``upstream_fake``) on loopback.

The server reads the *test* database (``transactional_db``: rows a test commits are what
the server sees, and vice versa) and, when ``REDIS_URL`` is set, a Redis database of its
own. Keys and routes are not cached by the server (each test makes its own).

Money helpers compute expectations independently of ``billing.money``: exact fractions,
one half-up rounding per amount.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from accounts.models import Tenant
from billing.models import ModelPrice, ModelRoute, Reservation, Upstream
from billing.money import NANOS_PER_USD
from billing.services import price_set, reseller_open, upstream_save, wallet_credit
from keys.models import ClientKey
from keys.services import IssuedKey, key_create
from tests.proxy import upstream_fake
from tests.proxy.upstream_fake import FakeUpstream, Record
from usage.models import Trace

REPO = Path(__file__).resolve().parents[2]
# The proxy servers' own Redis database (rate-limit state); another number lets two test
# runs share one Redis server.
SERVER_REDIS_DB = int(os.environ.get("TEST_SERVER_REDIS_DB", "12"))
UPSTREAM_SECRET = "sk-fake-upstream-secret"
READY_TIMEOUT_SECONDS = 40
LOG_TAIL_CHARS = 6000
TRACE_FLUSH_SECONDS = 0.12  # two of the server's 50 ms trace batches, and some


# ---------------------------------------------------------------------------- the fake provider


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    return free_port()


# ---------------------------------------------------------------------------- the real server


@dataclass
class ProxyServer:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server's whole process group (the supervisor and its workers)."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


_RUNNING: list[ProxyServer] = []


def server_database_url() -> str:
    """The test database (as pytest-django set it up), as a DATABASE_URL for the server."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return "sqlite:///" + str(Path(db["NAME"]).resolve())
    user = quote(db.get("USER") or "", safe="")
    password = db.get("PASSWORD") or ""
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(db['NAME'], safe='')}"


def server_redis_url() -> str | None:
    if not settings.REDIS_URL:
        return None
    parts = urlsplit(settings.REDIS_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{SERVER_REDIS_DB}", parts.query, ""))


def _wait_ready(server: ProxyServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the proxy server exited at start:\n{server.log()[-LOG_TAIL_CHARS:]}"
            )
        try:
            # The proxy's own path (not Django's): a 401 means it is up and has its runtime.
            response = httpx.get(f"{server.url}/v1/models", timeout=2)
            if response.status_code == 401:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"the proxy server never became ready:\n{server.log()[-LOG_TAIL_CHARS:]}")


@pytest.fixture(scope="session")
def start_proxy_server(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ProxyServer]]:
    """``start_proxy_server(workers=1, **env)``: a ``config.serve`` process serving the app on a
    free loopback port, stopped at the end of the session (or by ``server.stop()``)."""
    redis_url = server_redis_url()
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        client.flushdb()  # rate-limit windows of an earlier session's keys with the same ids
        client.close()
    started: list[ProxyServer] = []

    def start(*, workers: int = 1, **overrides: str) -> ProxyServer:
        port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": server_database_url(),
            "SECRET_KEY": settings.SECRET_KEY,
            "TOKEN_HASH_KEY": settings.TOKEN_HASH_KEY,
            "FIELD_ENCRYPTION_KEY": settings.FIELD_ENCRYPTION_KEY,
            "PROXY_KEY_CACHE_SECONDS": "0",
            # A locked SQLite file fails a request well within the test client's timeout.
            "SQLITE_BUSY_TIMEOUT_SECONDS": "5",
            # Without Redis the server runs the expiry sweep itself; tests that expire holds
            # do it themselves, so the server's sweep must not race them.
            "RESERVATION_SWEEP_SECONDS": "3600",
            "PROXY_ROUTE_CACHE_SECONDS": "0",
            "DEBUG": "0",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("REDIS_URL", None)
        if redis_url:
            env["REDIS_URL"] = redis_url
        env.update(overrides)
        log_path = tmp_path_factory.mktemp("proxy-server") / "server.log"
        command = [
            sys.executable, "-m", "config.serve",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--workers", str(workers),
        ]  # fmt: skip
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 - our own command line
                command,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = ProxyServer(
            url=f"http://127.0.0.1:{port}", log_path=log_path, process=process, env=env
        )
        _RUNNING.append(server)
        started.append(server)
        _wait_ready(server)
        return server

    yield start
    for server in started:
        server.stop()
        if server in _RUNNING:
            _RUNNING.remove(server)


@pytest.fixture(scope="session")
def proxy_server(start_proxy_server: Callable[..., ProxyServer]) -> ProxyServer:
    """The shared server: one worker, default limits."""
    return start_proxy_server()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, attach the tail of each running server's log to the report."""
    report = yield
    if report.failed:
        for server in _RUNNING:
            report.sections.append(
                (f"proxy server log ({server.url})", server.log()[-LOG_TAIL_CHARS:])
            )
    return report


# ---------------------------------------------------------------------------- money, by hand


def half_up(amount: Fraction) -> int:
    """Round a non-negative exact amount to a whole nano-dollar, half up."""
    return int(amount + Fraction(1, 2))  # int() truncates; amount >= 0


@dataclass(frozen=True)
class Price:
    """A posted price, nano-dollars per 1M tokens."""

    input: int
    output: int
    cached: int | None = None


@dataclass(frozen=True)
class Expected:
    cost_nanos: int
    client_nanos: int
    # What the cached reads saved: at cost, and at client price.
    cache_savings_nanos: int = 0
    client_cache_savings_nanos: int = 0


def expected_charge(
    price: Price,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    ratio: tuple[int, int] = (1, 1),
) -> Expected:
    """``input_tokens`` excludes cached reads; ``ratio`` is (your cost, client price)."""
    cached_rate = price.input if price.cached is None else price.cached
    exact = Fraction(
        input_tokens * price.input + cached_tokens * cached_rate + output_tokens * price.output,
        1_000_000,
    )
    # Cached reads at the input rate less at the cached rate; a cached rate above the
    # input rate saves nothing.
    saved = Fraction(cached_tokens * max(price.input - cached_rate, 0), 1_000_000)
    cost, client = ratio
    return Expected(
        cost_nanos=half_up(exact),
        client_nanos=half_up(exact * client / cost),
        cache_savings_nanos=half_up(saved),
        client_cache_savings_nanos=half_up(saved * client / cost),
    )


def usd(nanos: int) -> str:
    """Nano-dollars as the API writes them ("10.00", "0.000123456"), worked out here."""
    whole, frac = divmod(nanos, NANOS_PER_USD)
    return f"{whole}.{f'{frac:09d}'.rstrip('0').ljust(2, '0')}"


# ---------------------------------------------------------------------------- the catalogue

USD = NANOS_PER_USD
# Odd prices, so that rounding shows: $2.500000333 in, $10.000000777 out, $1.250000167 cached.
GPT_PRICE = Price(input=2_500_000_333, output=10_000_000_777, cached=1_250_000_167)
BACKUP_PRICE = Price(input=3_000_000_001, output=12_000_000_003, cached=1_500_000_001)
EMBED_PRICE = Price(input=20_000_003, output=0)
CLAUDE_PRICE = Price(input=3_000_000_111, output=15_000_000_555, cached=300_000_011)
FAULT_PRICE = Price(input=1_000_000_000, output=2_000_000_000, cached=500_000_000)
# A key of ratio 0.6: a client budget of $10 costs the reseller $6.
RATIO = (6 * USD, 10 * USD)


def post(world: World, path: str, body: Any, secret: str | None, **headers: str) -> httpx.Response:
    """POST ``body`` (JSON, or bytes sent exactly as given) to the proxy with a client key."""
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    if isinstance(body, bytes):
        headers.setdefault("content-type", "application/json")
        return httpx.post(f"{world.url}{path}", content=body, headers=headers, timeout=20)
    return httpx.post(f"{world.url}{path}", json=body, headers=headers, timeout=20)


def charge_seen(seen: Record, price: Price, *, ratio: tuple[int, int] = RATIO) -> Expected:
    """What a request should be charged for the usage the fake reported for it."""
    return expected_charge(
        price,
        input_tokens=seen.reported.uncached_tokens,
        cached_tokens=seen.reported.cached_tokens,
        output_tokens=seen.reported.output_tokens,
        ratio=ratio,
    )


@dataclass
class World:
    """One reseller with a funded wallet, upstreams on the fake, priced routes; mints keys."""

    tenant: Tenant
    fake: FakeUpstream
    server: ProxyServer
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    prices: dict[str, ModelPrice] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def key(self, **options: Any) -> IssuedKey:
        """A client key; prepaid $10 for $6 (ratio 0.6) unless told otherwise."""
        options.setdefault("label", "test key")
        options.setdefault("funding", ClientKey.Funding.PREPAID)
        if options["funding"] == ClientKey.Funding.PREPAID:
            options.setdefault("client_budget_nanos", 10 * USD)
            options.setdefault("your_cost_nanos", 6 * USD)
        return key_create(tenant=options.pop("tenant", self.tenant), actor=None, **options)

    def route(self, model: str, upstream: str, price: Price, **options: Any) -> ModelPrice:
        """Post ``price`` for ``model`` on ``upstream``; ``priority`` / ``upstream_model``
        are set on the route as an operator would in the admin."""
        route_fields = {k: options.pop(k) for k in ("priority", "upstream_model") if k in options}
        posted = price_set(
            model=model,
            upstream=self.upstreams[upstream],
            input_per_mtok_nanos=price.input,
            output_per_mtok_nanos=price.output,
            cached_input_per_mtok_nanos=price.cached,
            **options,
        )
        if route_fields:
            ModelRoute.objects.filter(pk=posted.route_id).update(**route_fields)
        self.prices[f"{model}@{upstream}"] = posted
        return posted


def build_world(fake: FakeUpstream, server: ProxyServer, dead_port: int) -> World:
    tenant, _ = reseller_open(email="reseller@example.com")
    wallet_credit(tenant=tenant, amount_nanos=100 * USD, reason="test funds")
    world = World(tenant=tenant, fake=fake, server=server)
    for name, kind, base_url, timeout in (
        ("fake-openai", "openai", fake.openai_base_url, 30),
        ("fake-openai-backup", "openai", fake.openai_base_url, 30),
        ("fake-openai-impatient", "openai", fake.openai_base_url, 1),
        ("fake-anthropic", "anthropic", fake.anthropic_base_url, 30),
        ("dead-openai", "openai", f"http://127.0.0.1:{dead_port}/v1", 30),
        ("dead-anthropic", "anthropic", f"http://127.0.0.1:{dead_port}", 30),
    ):
        world.upstreams[name] = upstream_save(
            name=name,
            kind=kind,
            base_url=base_url,
            timeout_seconds=timeout,
            api_key=UPSTREAM_SECRET,
        )
    world.route("gpt-fake", "fake-openai", GPT_PRICE)
    world.route("embed-fake", "fake-openai", EMBED_PRICE)
    world.route("claude-fake", "fake-anthropic", CLAUDE_PRICE)
    world.route("slow-stream", "fake-openai", FAULT_PRICE)
    world.route(
        "claude-slow", "fake-anthropic", FAULT_PRICE, upstream_model=upstream_fake.SLOW_STREAM
    )
    for model in (
        upstream_fake.FAULT_500,
        upstream_fake.FAULT_400,
        upstream_fake.FAULT_401,
        upstream_fake.FAULT_BADJSON,
        upstream_fake.FAULT_MIDSTREAM,
        upstream_fake.NO_USAGE,
    ):
        world.route(model, "fake-openai", FAULT_PRICE)
    world.route(upstream_fake.FAULT_TIMEOUT, "fake-openai-impatient", FAULT_PRICE)
    world.route(
        "claude-midstream",
        "fake-anthropic",
        CLAUDE_PRICE,
        upstream_model=upstream_fake.FAULT_MIDSTREAM,
    )
    world.route(
        "claude-500", "fake-anthropic", CLAUDE_PRICE, upstream_model=upstream_fake.FAULT_500
    )
    world.route(
        "claude-400", "fake-anthropic", CLAUDE_PRICE, upstream_model=upstream_fake.FAULT_400
    )
    # Unreachable, alone and with a fallback; a 500 and a timeout with a fallback. The
    # fallback is another upstream serving a healthy model under another name.
    world.route("gpt-unreachable", "dead-openai", GPT_PRICE)
    world.route("claude-unreachable", "dead-anthropic", CLAUDE_PRICE)
    for model, first, first_model in (
        ("gpt-unreachable-fallback", "dead-openai", ""),
        ("gpt-500-fallback", "fake-openai", upstream_fake.FAULT_500),
        ("gpt-timeout-fallback", "fake-openai-impatient", upstream_fake.FAULT_TIMEOUT),
    ):
        world.route(model, first, FAULT_PRICE, priority=10, upstream_model=first_model)
        world.route(
            model, "fake-openai-backup", BACKUP_PRICE, priority=20, upstream_model="gpt-fake"
        )
    world.route("claude-unreachable-fallback", "dead-anthropic", CLAUDE_PRICE, priority=10)
    world.route(
        "claude-unreachable-fallback",
        "fake-anthropic",
        CLAUDE_PRICE,
        priority=20,
        upstream_model="claude-fake",
    )
    return world


@pytest.fixture
def world(
    transactional_db: None, fake_upstream: FakeUpstream, proxy_server: ProxyServer, closed_port: int
) -> Iterator[World]:
    fake_upstream.clear()
    world = build_world(fake_upstream, proxy_server, closed_port)
    yield world
    # Nothing may still be in flight when the tables are emptied for the next test, and the
    # last batch of traces (flushed every 50 ms) should land before its keys are gone.
    wait_for(
        lambda: not Reservation.objects.filter(status=Reservation.Status.HELD).exists(), timeout=10
    )
    time.sleep(TRACE_FLUSH_SECONDS)


# ---------------------------------------------------------------------------- assertions


def wait_for(predicate: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll until ``predicate()`` is truthy and return it (the server works asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def trace_for(request_id: str, *, timeout: float = 5.0) -> Trace:
    """The trace row of one request (rows are written in batches every 50 ms)."""
    return wait_for(lambda: Trace.objects.filter(request_id=request_id).first(), timeout=timeout)


def traces_of(key: ClientKey, count: int, *, timeout: float = 5.0) -> list[Trace]:
    def enough() -> list[Trace] | None:
        rows = list(Trace.objects.filter(client_key=key).order_by("id"))
        return rows if len(rows) >= count else None

    rows = wait_for(enough, timeout=timeout)
    assert len(rows) == count, [(t.request_id, t.status_code, t.status) for t in rows]
    return rows


def assert_books_clean(*, timeout: float = 5.0) -> None:
    """No hold left behind, and every wallet, entry and key counter adds up."""
    wait_for(
        lambda: not Reservation.objects.filter(status=Reservation.Status.HELD).exists(),
        timeout=timeout,
    )
    call_command("check_ledger", stdout=io.StringIO())  # raises CommandError on a mismatch


def key_row(issued: IssuedKey) -> ClientKey:
    return ClientKey.objects.get(pk=issued.key.pk)


def assert_nothing_charged(issued: IssuedKey) -> None:
    key = key_row(issued)
    assert (key.client_spent_nanos, key.cost_spent_nanos) == (0, 0)
    assert (key.client_reserved_nanos, key.cost_reserved_nanos) == (0, 0)


def assert_charged(
    issued: IssuedKey, request_id: str, expected: Expected, *, endpoint: str, is_stream: bool
) -> Trace:
    """The request was settled at exactly ``expected``: key counters, hold, trace, books."""
    key = key_row(issued)
    spent = (key.cost_spent_nanos, key.client_spent_nanos)
    assert spent == (expected.cost_nanos, expected.client_nanos)
    assert (key.cost_reserved_nanos, key.client_reserved_nanos) == (0, 0)
    held = reservation_of(request_id)
    assert held.status == Reservation.Status.SETTLED
    charged = (held.charged_cost_nanos, held.charged_client_nanos)
    assert charged == (expected.cost_nanos, expected.client_nanos)
    trace = trace_for(request_id)
    assert (trace.endpoint, trace.is_stream) == (endpoint, is_stream)
    assert (trace.status, trace.status_code, trace.is_usage_estimated) == ("ok", 200, False)
    assert (trace.cost_nanos, trace.client_nanos) == (expected.cost_nanos, expected.client_nanos)
    assert (trace.cache_savings_nanos, trace.client_cache_savings_nanos) == (
        expected.cache_savings_nanos,
        expected.client_cache_savings_nanos,
    )
    assert trace.client_key_id == issued.key.pk
    assert_books_clean()
    return trace


def reservation_of(request_id: str) -> Reservation:
    return Reservation.objects.get(request_id=request_id)


def now_utc() -> datetime:
    return timezone.now()
