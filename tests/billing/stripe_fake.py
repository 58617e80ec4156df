"""A small fake of Stripe's API, served over real HTTP, and webhook events signed exactly as
Stripe signs them: what the top-up tests talk to instead of the network.

The server (a threaded ``http.server`` on a free loopback port) answers what Tollgate calls,
with Stripe's documented JSON:

* ``POST /v1/checkout/sessions`` (form-encoded, as the SDK sends it): a ``checkout.session``
  (``cs_test_…``) with ``url``, ``amount_total`` (the line items' sum), ``currency``,
  ``payment_status`` ``unpaid``, ``client_reference_id``, ``metadata``. Like Stripe, a repeat
  of an ``Idempotency-Key`` answers the first call's session (and a 400
  ``idempotency_error`` if its parameters differ). Every call is recorded, headers included.
* ``GET /v1/checkout/sessions/{id}``: the session as it is now (404 ``resource_missing``
  for an unknown id).
* ``GET /c/pay/{id}``: a stand-in for Stripe's checkout page, whose "Pay" button marks the
  session paid and sends the browser to its ``success_url`` (303).

The tests drive what Stripe would do on its side: :meth:`StripeFake.complete` (the payer
paid, or completed with a delayed method), tampering with ``sessions[...]``, or failing the
next call. :func:`signed` makes a webhook delivery's body and ``Stripe-Signature`` header
(``t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``), written here from
Stripe's documentation rather than with the SDK, so the SDK's check is tested against an
independent signer.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

SECRET_KEY = "sk_test_tollgate_fake"
WEBHOOK_SECRET = "whsec_tollgate_fake"
API_VERSION = "2025-11-17.clover"
WEBHOOK_PATH = "/billing/stripe/webhook/"


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (``line_items[0][price_data][currency]=usd``) back to JSON
    shapes: bracketed keys nest, all-digit keys make lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def listify(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        items = {k: listify(v) for k, v in node.items()}
        if items and all(k.isdigit() for k in items):
            return [items[k] for k in sorted(items, key=int)]
        return items

    return listify(root)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    params: dict[str, Any]


@dataclass
class StripeFake:
    url: str = ""
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    # Idempotency-Key → (the parameters it was first sent with, the session it opened).
    idempotency: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    # The next calls' failures: (status, Stripe error type, message), first in first out.
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.sessions.clear()
            self.requests.clear()
            self.idempotency.clear()
            self.failures.clear()

    def fail_next(self, status: int = 500, kind: str = "api_error", message: str = "") -> None:
        """The next API call answers this error (without retry: ``Stripe-Should-Retry``)."""
        self.failures.append((status, kind, message or f"Fake Stripe failure ({status})."))

    def session(self, session_id: str | None) -> dict[str, Any]:
        """The session as the fake holds it (changing it changes what Stripe reports)."""
        assert session_id is not None, "the top-up has no session"
        return self.sessions[session_id]

    def creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    def complete(self, session_id: str | None, *, paid: bool = True) -> dict[str, Any]:
        """The payer finished checkout: paid by card, or (``paid=False``) completed with a
        delayed method whose payment is still processing."""
        assert session_id is not None, "the top-up has no session"
        with self.lock:
            session = self.sessions[session_id]
            session["status"] = "complete"
            session["payment_status"] = "paid" if paid else "unpaid"
            session["payment_intent"] = session["payment_intent"] or f"pi_test_{_token()}"
            return dict(session)

    def pay_later(self, session_id: str | None) -> dict[str, Any]:
        """The delayed payment of a completed session succeeded."""
        assert session_id is not None, "the top-up has no session"
        with self.lock:
            self.sessions[session_id]["payment_status"] = "paid"
            return dict(self.sessions[session_id])

    # ------------------------------------------------------------------------ the API

    def session_create(self, params: dict[str, Any], key: str | None) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if key is not None and key in self.idempotency:
                first, session_id = self.idempotency[key]
                if first != params:
                    return 400, _error(
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                    )
                return 200, dict(self.sessions[session_id])
            items = params.get("line_items", [])
            total = sum(
                int(item["price_data"]["unit_amount"]) * int(item.get("quantity", 1))
                for item in items
            )
            currencies = {item["price_data"]["currency"] for item in items}
            session_id = f"cs_test_{_token(24)}"
            now = int(time.time())
            session = {
                "id": session_id,
                "object": "checkout.session",
                "amount_subtotal": total,
                "amount_total": total,
                "cancel_url": params.get("cancel_url"),
                "client_reference_id": params.get("client_reference_id"),
                "created": now,
                "currency": currencies.pop() if len(currencies) == 1 else None,
                "customer": None,
                "expires_at": now + 24 * 3600,
                "livemode": False,
                "metadata": params.get("metadata", {}),
                "mode": params.get("mode"),
                "payment_intent": None,
                "payment_status": "unpaid",
                "status": "open",
                "success_url": params.get("success_url"),
                "url": f"{self.url}/c/pay/{session_id}",
            }
            self.sessions[session_id] = session
            if key is not None:
                self.idempotency[key] = (params, session_id)
            return 200, dict(session)

    def session_retrieve(self, session_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            session = self.sessions.get(session_id)
        if session is None:
            return 404, _error(
                "invalid_request_error",
                f"No such checkout.session: '{session_id}'",
                code="resource_missing",
            )
        return 200, dict(session)


def _token(length: int = 14) -> str:
    return secrets.token_hex(length)[:length]


def _error(kind: str, message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: StripeFake

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's
        return

    def _answer(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Request-Id", f"req_{_token()}")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any], **headers: str) -> None:
        self._answer(status, json.dumps(payload).encode(), "application/json", **headers)

    def _record(self, params: dict[str, Any]) -> None:
        with self.fake.lock:
            self.fake.requests.append(
                Recorded(self.command, self.path, dict(self.headers.items()), params)
            )

    def _api_refusal(self) -> bool:
        """Stripe's answers before any work: a wrong key, or a failure the test asked for."""
        if self.headers.get("Authorization") != f"Bearer {SECRET_KEY}":
            self._json(401, _error("invalid_request_error", "Invalid API Key provided."))
            return True
        with self.fake.lock:
            failure = self.fake.failures.pop(0) if self.fake.failures else None
        if failure is not None:
            status, kind, message = failure
            self._json(status, _error(kind, message), Stripe_Should_Retry="false")
            return True
        return False

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        path = urlsplit(self.path).path
        if path.startswith("/c/pay/"):
            return self._pay(path.removeprefix("/c/pay/"))
        params = unflatten(parse_qsl(body, keep_blank_values=True))
        self._record(params)
        if path != "/v1/checkout/sessions":
            return self._json(
                404, _error("invalid_request_error", f"Unrecognized request URL (POST: {path}).")
            )
        if self._api_refusal():
            return None
        status, payload = self.fake.session_create(params, self.headers.get("Idempotency-Key"))
        return self._json(status, payload)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/c/pay/"):
            return self._checkout_page(path.removeprefix("/c/pay/"))
        self._record({})
        prefix = "/v1/checkout/sessions/"
        if not path.startswith(prefix):
            return self._json(
                404, _error("invalid_request_error", f"Unrecognized request URL (GET: {path}).")
            )
        if self._api_refusal():
            return None
        status, payload = self.fake.session_retrieve(path.removeprefix(prefix))
        return self._json(status, payload)

    # ------------------------------------------------------------ the checkout page

    def _checkout_page(self, session_id: str) -> None:
        session = self.fake.sessions.get(session_id)
        if session is None:
            return self._answer(404, b"No such checkout", "text/plain")
        amount = f"${session['amount_total'] // 100}.{session['amount_total'] % 100:02d}"
        page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>Fake Stripe Checkout</title></head>
<body><h1>Fake Stripe Checkout</h1><p id="amount">Pay {html.escape(amount)}</p>
<form method="post" action="/c/pay/{html.escape(session_id)}"><button type="submit">Pay</button></form>
<p><a href="{html.escape(session["cancel_url"] or "")}">Cancel</a></p></body></html>"""
        return self._answer(200, page.encode(), "text/html; charset=utf-8")

    def _pay(self, session_id: str) -> None:
        if session_id not in self.fake.sessions:
            return self._answer(404, b"No such checkout", "text/plain")
        session = self.fake.complete(session_id)
        self.send_response(303)
        self.send_header("Location", session["success_url"])
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None


def start_stripe_fake() -> tuple[StripeFake, ThreadingHTTPServer]:
    fake = StripeFake()
    handler = type("Handler", (_Handler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, name="stripe-fake", daemon=True).start()
    return fake, server


@pytest.fixture(scope="session")
def stripe_fake_server() -> Iterator[StripeFake]:
    fake, server = start_stripe_fake()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def stripe_fake(stripe_fake_server: StripeFake, settings: Any) -> StripeFake:
    """The fake, emptied, with Tollgate's settings pointing at it (key, base URL, webhook
    secret, checkout origin)."""
    stripe_fake_server.reset()
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_API_BASE = stripe_fake_server.url
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_CHECKOUT_ORIGIN = stripe_fake_server.url
    return stripe_fake_server


# ------------------------------------------------------------------------------- events


def event(kind: str, data_object: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """A Stripe event (a snapshot event, as webhooks deliver them)."""
    return {
        "id": event_id or f"evt_test_{_token(24)}",
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()),
        "data": {"object": data_object},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": kind,
    }


def charge(session: dict[str, Any], *, amount_refunded: int = 0) -> dict[str, Any]:
    """The charge that paid ``session``, refunded ``amount_refunded`` cents in all so far."""
    return {
        "id": f"ch_test_{_token(24)}",
        "object": "charge",
        "amount": session["amount_total"],
        "amount_captured": session["amount_total"],
        "amount_refunded": amount_refunded,
        "currency": session["currency"],
        "paid": True,
        "payment_intent": session["payment_intent"],
        "refunded": amount_refunded == session["amount_total"],
        "status": "succeeded",
    }


def dispute(
    session: dict[str, Any],
    *,
    amount: int | None = None,
    status: str = "needs_response",
    dispute_id: str | None = None,
) -> dict[str, Any]:
    """The cardholder disputed the charge that paid ``session`` (all of it by default);
    ``status`` ``won`` or ``lost`` once Stripe closed it."""
    return {
        "id": dispute_id or f"dp_test_{_token(24)}",
        "object": "dispute",
        "amount": session["amount_total"] if amount is None else amount,
        "charge": f"ch_test_{_token(24)}",
        "currency": session["currency"],
        "payment_intent": session["payment_intent"],
        "reason": "fraudulent",
        "status": status,
    }


def signature(body: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """``Stripe-Signature`` for ``body``, as Stripe computes it."""
    stamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def signed(payload: dict[str, Any], **options: Any) -> tuple[bytes, str]:
    """A delivery of ``payload``: its body and ``Stripe-Signature`` header."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return body, signature(body, **options)


def deliver(client: Any, payload: dict[str, Any], **options: Any) -> Any:
    """Post ``payload`` to the webhook with the Django test client, signed."""
    body, header = signed(payload, **options)
    return client.post(
        WEBHOOK_PATH, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )
