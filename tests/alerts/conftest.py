"""Shared pieces of the reseller alerts' tests: a reseller named Acme AI, keys that spend
through ``tests.metering`` as the proxy does (the books stay right), the check run as the
beat runs it, and a local HTTP receiver standing in for a reseller's webhook endpoint."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from accounts.models import Tenant
from accounts.services import IssuedToken
from alerts.models import AlertEvent, AlertKind, AlertState
from alerts.services import alerts_check
from keys.models import ClientKey

# The portal's helpers: a prepaid or capped key, a request that spends an exact client
# amount, a top-up; and tasks run in this process (development's mode).
from tests.portal.test_alerts import (  # noqa: F401 - tasks_in_process is a fixture
    capped_key,
    prepaid_key,
    spend,
    tasks_in_process,
    top_up,
)

__all__ = ["capped_key", "prepaid_key", "spend", "top_up"]

PUBLIC_URL = "https://tollgate.example"
OWNER_EMAIL = "owner@acme.example"


@pytest.fixture(autouse=True)
def public_url(settings) -> None:
    settings.PUBLIC_URL = PUBLIC_URL


def acme_reseller(
    make_reseller: Callable[..., tuple[Tenant, IssuedToken]], balance: str = "500"
) -> Tenant:
    tenant, _ = make_reseller(email=OWNER_EMAIL, balance=balance)
    tenant.name = "Acme AI"
    tenant.save()
    return tenant


@pytest.fixture
def acme(make_reseller: Callable[..., tuple[Tenant, IssuedToken]]) -> Tenant:
    return acme_reseller(make_reseller)


def check(capture: Any, **kwargs: Any) -> list[AlertEvent]:
    """Run the check as the beat does: its deliveries enqueued (and, tasks in process,
    tried) once its claims commit."""
    with capture(execute=True):
        return alerts_check(**kwargs)


def key_states(key: ClientKey) -> dict[int, bool]:
    """The key's alert states: threshold → claimed (True) or armed (False)."""
    return {
        s.threshold: s.crossed_at is not None
        for s in AlertState.objects.filter(key=key, kind=AlertKind.KEY_USAGE)
    }


def verify(secret: str, body: bytes, header: str, tolerance: int = 300) -> bool:
    """The README's recipe, word for word: check a Tollgate-Signature header."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp = int(fields["t"])
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), fields["v1"]) and (
        abs(time.time() - timestamp) <= tolerance
    )


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1: records each POST, answers ``status``."""

    url: str
    port: int
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="", port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(
                {
                    "path": self.path,
                    "headers": dict(self.headers.items()),
                    "body": body,
                    "at": time.monotonic(),
                }
            )
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    state.url = f"http://127.0.0.1:{state.port}/hooks/tollgate"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def resolving(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> list[str]:
    """``socket.getaddrinfo`` answering ``names`` (host → address) and failing for any
    other name, as a name server would (IP literals as the real one does: a connection
    to one asks too). Returns the names looked up."""
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int | None, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return real(host, port, *args, **kwargs)
        looked_up.append(host)
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        address = names[host]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr: tuple[Any, ...] = (
            (address, port or 0, 0, 0) if ":" in address else (address, port or 0)
        )
        return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up
