"""Which URLs may receive alerts (alerts.webhooks): https and public addresses only, a
name resolved (faked here: ``resolving``), an IP literal judged without a lookup; all of
it lifted by ALERT_WEBHOOK_ALLOW_PRIVATE for development. And the signature, checked with
the README's recipe."""

from __future__ import annotations

import hashlib
import hmac
import socket
import time
from typing import Any

import pytest

from alerts.exceptions import WebhookHostUnresolved, WebhookUrlRefused
from alerts.webhooks import (
    SECRET_PREFIX,
    secret_generate,
    signature_header,
    webhook_target,
    webhook_url_check,
)
from tests.alerts.conftest import resolving, verify

REFUSED_LITERALS = [
    "http://127.0.0.1/hook",
    "https://127.0.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "https://169.254.169.254/",
    "https://10.0.0.8/hook",
    "https://192.168.1.1/hook",
    "https://172.16.0.1/hook",
    "https://100.64.0.1/hook",  # shared address space (carrier NAT)
    "https://0.0.0.0/hook",
    "https://224.0.0.1/hook",  # multicast
    "https://240.0.0.1/hook",  # reserved
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
    "https://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
    "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
    "https://[fe80::1]/hook",
    "https://[fd00::1]/hook",
]
MALFORMED = [
    "",
    "hooks.example.com",
    "ftp://93.184.216.34/hook",
    "https://",
    "https:///hook",
    "https://user:secret@93.184.216.34/hook",
    "https://93.184.216.34:99999/hook",
    "https://[::1/hook",
    "https://93.184.216.34/a b",
    "https://93.184.216.34/\x00",
    "https://" + "a" * 2000 + ".example/",
]


@pytest.fixture
def no_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an IP literal or a malformed URL was looked up")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.usefixtures("no_lookup")
@pytest.mark.parametrize("url", REFUSED_LITERALS)
def test_private_loopback_link_local_and_reserved_addresses_are_refused_without_a_lookup(url):
    # (plain http is refused first, for its scheme)
    with pytest.raises(WebhookUrlRefused, match="https:// URL|public address"):
        webhook_url_check(url)


@pytest.mark.usefixtures("no_lookup")
@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_urls_are_refused_without_a_lookup(url):
    with pytest.raises(WebhookUrlRefused):
        webhook_url_check(url)


@pytest.mark.usefixtures("no_lookup")
def test_plain_http_is_refused_even_to_a_public_address():
    with pytest.raises(WebhookUrlRefused, match="https"):
        webhook_url_check("http://93.184.216.34/hook")


@pytest.mark.usefixtures("no_lookup")
def test_a_public_ip_literal_is_accepted_without_a_lookup():
    assert webhook_url_check("https://93.184.216.34:8443/hook?x=1") == (
        "https://93.184.216.34:8443/hook?x=1"
    )
    target = webhook_target("https://[2606:2800:220:1:248:1893:25c8:1946]/hook")
    assert target.url == "https://[2606:2800:220:1:248:1893:25c8:1946]:443/hook"
    assert target.sni_hostname is None


def test_a_name_resolving_to_a_private_address_is_refused(monkeypatch):
    looked_up = resolving(monkeypatch, {"intranet.example": "10.1.2.3"})

    with pytest.raises(WebhookUrlRefused, match="intranet.example is 10.1.2.3"):
        webhook_url_check("https://intranet.example/hook")
    assert looked_up == ["intranet.example"]


def test_a_name_with_any_private_address_is_refused(monkeypatch):
    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(WebhookUrlRefused, match="127.0.0.1"):
        webhook_url_check("https://both.example/hook")


def test_localhost_and_numeric_names_resolve_to_loopback_and_are_refused():
    # The system's own resolver, no name server: these never leave the machine.
    for url in ("https://localhost/hook", "https://2130706433/hook", "https://127.1/hook"):
        with pytest.raises(WebhookUrlRefused, match="public address"):
            webhook_url_check(url)


def test_a_name_that_does_not_resolve_is_refused(monkeypatch):
    resolving(monkeypatch, {})

    with pytest.raises(WebhookHostUnresolved, match="could not be resolved"):
        webhook_url_check("https://nowhere.example/hook")


def test_a_public_name_is_accepted_and_connected_to_at_the_address_checked(monkeypatch):
    resolving(monkeypatch, {"hooks.example.com": "93.184.216.34"})

    target = webhook_target("https://Hooks.Example.com/in?a=1")

    assert target.url == "https://93.184.216.34:443/in?a=1"
    assert (target.host_header, target.sni_hostname) == ("hooks.example.com", "hooks.example.com")
    port = webhook_target("https://hooks.example.com:8443/in")
    assert port.host_header == "hooks.example.com:8443"


def test_the_development_setting_lets_private_addresses_and_http_through(settings, monkeypatch):
    settings.ALERT_WEBHOOK_ALLOW_PRIVATE = True
    resolving(monkeypatch, {"intranet.example": "10.1.2.3"})

    for url in (
        "http://127.0.0.1:8000/hook",
        "http://169.254.169.254/latest",
        "https://intranet.example/hook",
    ):
        assert webhook_url_check(url) == url
    with pytest.raises(WebhookUrlRefused):
        webhook_url_check("ftp://127.0.0.1/hook")


# ---------------------------------------------------------------------------- signing


def test_the_signature_verifies_with_the_readme_recipe_and_nothing_else():
    secret = secret_generate()
    body = b'{"id":"evt_1","type":"alert.test"}'
    now = int(time.time())
    header = signature_header(secret=secret, timestamp=now, body=body)

    assert secret.startswith(SECRET_PREFIX) and len(secret) > 40
    assert header.startswith(f"t={now},v1=")
    expected = hmac.new(secret.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={now},v1={expected}"
    assert verify(secret, body, header)
    assert not verify(secret_generate(), body, header)  # another secret
    assert not verify(secret, body + b" ", header)  # another body
    stale = signature_header(secret=secret, timestamp=now - 3600, body=body)
    assert not verify(secret, body, stale)  # a replay an hour later
