"""What the real server (``python -m config.serve``) believes of a reverse proxy's headers,
and what Django makes of it: HSTS on HTTPS, the address a failed sign-in is counted
against, and a request that carries two Authorization headers.

uvicorn rewrites the scheme and the client's address from ``X-Forwarded-Proto`` /
``X-Forwarded-For`` only for a peer in ``FORWARDED_ALLOW_IPS`` (127.0.0.1 by default, so
the tests' own connections are "the proxy" unless a server is told otherwise)."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from django.contrib.auth import get_user_model

from accounts.lockout import LOCKED_OUT
from billing.services import reseller_open
from tests.proxy.conftest import ProxyServer, start_proxy_server

__all__ = ["start_proxy_server"]  # the fixture, used here as in tests/proxy

UNTRUSTING = {"FORWARDED_ALLOW_IPS": "192.0.2.1"}  # a proxy that is not us
LIMIT = 3
OPERATOR = "op@example.com"
PASSWORD = "correct-horse-battery-9"
YEAR = 365 * 24 * 3600


@pytest.fixture(scope="module")
def trusting(start_proxy_server: Callable[..., ProxyServer]) -> ProxyServer:
    return start_proxy_server(
        LOGIN_FAILURE_LIMIT=str(LIMIT),
        SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
    )


@pytest.fixture(scope="module")
def untrusting(start_proxy_server: Callable[..., ProxyServer]) -> ProxyServer:
    return start_proxy_server(LOGIN_FAILURE_LIMIT=str(LIMIT), **UNTRUSTING)


def login_page(server: ProxyServer, **headers: str) -> httpx.Response:
    return httpx.get(f"{server.url}/admin/login/", headers=headers, timeout=20)


def test_a_trusted_proxy_saying_https_gets_hsts(transactional_db: None, trusting: ProxyServer):
    secure = login_page(trusting, **{"X-Forwarded-Proto": "https"})
    assert secure.status_code == 200
    assert secure.headers["Strict-Transport-Security"] == f"max-age={YEAR}; includeSubDomains"
    # The same page over plain HTTP: no HSTS, and every other header all the same.
    plain = login_page(trusting)
    assert "Strict-Transport-Security" not in plain.headers
    for response in (secure, plain):
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"


def test_an_untrusted_peer_saying_https_is_not_believed(
    transactional_db: None, untrusting: ProxyServer
):
    response = login_page(untrusting, **{"X-Forwarded-Proto": "https"})
    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response.headers


# ---------------------------------------------------------------------------- sign-in


def sign_in(server: ProxyServer, username: str, password: str, **headers: str) -> httpx.Response:
    """The admin's login as a browser does it: the form (its CSRF token), then the POST."""
    page = login_page(server, **headers)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None, page.text[:500]
    # The cookie is Secure outside DEBUG, so it is sent back by hand over plain HTTP.
    cookie = page.cookies["csrftoken"]
    return httpx.post(
        f"{server.url}/admin/login/",
        data={
            "csrfmiddlewaretoken": token.group(1),
            "username": username,
            "password": password,
            "next": "/admin/",
        },
        headers={**headers, "Cookie": f"csrftoken={cookie}"},
        timeout=20,
    )


def signed_in(response: httpx.Response) -> bool:
    return response.status_code == 302 and response.headers["Location"] == "/admin/"


def spray(server: ProxyServer, **headers: str) -> None:
    """LIMIT wrong passwords, one at each of LIMIT other accounts; the last one locks."""
    for index in range(LIMIT):
        response = sign_in(server, f"victim{index}@example.com", "Winter2026!", **headers)
        assert response.status_code == (429 if index == LIMIT - 1 else 200)


@pytest.fixture
def operator(transactional_db: None) -> None:
    get_user_model().objects.create_superuser(username=OPERATOR, email=OPERATOR, password=PASSWORD)


def test_behind_a_trusted_proxy_each_forwarded_client_is_counted_apart(
    operator: None, trusting: ProxyServer
):
    spray(trusting, **{"X-Forwarded-For": "203.0.113.66"})

    locked = sign_in(trusting, OPERATOR, PASSWORD, **{"X-Forwarded-For": "203.0.113.66"})
    assert locked.status_code == 429
    assert locked.text == LOCKED_OUT and locked.headers["Retry-After"] == "900"
    # Another client of the same proxy is not locked out by that one's failures.
    assert signed_in(sign_in(trusting, OPERATOR, PASSWORD, **{"X-Forwarded-For": "198.51.100.7"}))


def test_an_untrusted_peer_cannot_dodge_the_lock_with_forwarded_for(
    operator: None, untrusting: ProxyServer
):
    for index in range(LIMIT):
        forged = {"X-Forwarded-For": f"10.9.8.{index}"}
        response = sign_in(untrusting, f"v{index}@example.com", "x", **forged)
        assert response.status_code == (429 if index == LIMIT - 1 else 200)

    forged = {"X-Forwarded-For": "10.9.8.200"}
    assert sign_in(untrusting, OPERATOR, PASSWORD, **forged).status_code == 429


# ---------------------------------------------------------------------------- two credentials


@pytest.mark.parametrize("path", ["/api/v1/wallet", "/v1/sub-accounts"])
def test_two_authorization_headers_are_refused(
    transactional_db: None, trusting: ProxyServer, path: str
):
    """Which of two credentials a request means is ambiguous: neither is used, even when
    both are the reseller's own token."""
    _, token = reseller_open(email="twice@example.com")
    _, other = reseller_open(email="other@example.com")
    url = f"{trusting.url}{path}"
    good = f"Bearer {token.secret}"
    assert httpx.get(url, headers={"Authorization": good}, timeout=20).status_code == 200

    for first, second in (
        (good, good),
        (good, "Bearer tgr-not-a-token"),
        ("Bearer tgr-not-a-token", good),
        (good, f"Bearer {other.secret}"),
        (good, "Basic b3BAZXhhbXBsZS5jb206eA=="),
    ):
        headers = [("Authorization", first), ("Authorization", second)]
        response = httpx.get(url, headers=headers, timeout=20)
        assert response.status_code == 401, (first[:12], second[:12], response.text)
        assert "detail" in response.json()
