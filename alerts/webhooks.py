"""The alert webhook's wire: which URLs may receive alerts, the signing secret, how a body
is signed, and the one POST of a try.

Which URLs (``webhook_target``): ``https`` only, no user name or password in it, and a host
whose every address is public: none private, loopback, link-local, shared (CGNAT),
reserved, multicast or unspecified, IPv4 inside IPv6 (mapped, 6to4, NAT64) judged as the
IPv4 address. An IP literal is judged as written, without a lookup; a name is resolved
(``socket.getaddrinfo``), and a name that does not resolve is refused too. The check runs
when the URL is saved *and* at every try, and the try connects to the very address it
checked (the URL's host stays in ``Host`` and in TLS's SNI and certificate check): a name
that resolved to a public address when saved and to a private one later (DNS rebinding)
reaches nothing. ``ALERT_WEBHOOK_ALLOW_PRIVATE`` (development, tests) lifts the address
rule and lets ``http`` through.

Signing, as Stripe signs its webhooks: ``Tollgate-Signature: t=<unix seconds>,v1=<hex
HMAC-SHA256(secret, "<t>.<raw body>")>``. The receiver recomputes it over the raw body and
refuses a timestamp too far from its clock, so a captured delivery cannot be replayed
later; ``Tollgate-Event-Id`` (also the body's ``id``) is the same on every try of one
alert, for the receiver to drop repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import httpx
from django.conf import settings

from alerts.exceptions import WebhookHostUnresolved, WebhookUrlRefused
from alerts.models import WEBHOOK_URL_MAX_LENGTH

SIGNATURE_HEADER = "Tollgate-Signature"
EVENT_ID_HEADER = "Tollgate-Event-Id"
USER_AGENT = "Tollgate-Alerts/1"
# The signing secret: a prefix that says what it is, then 32 random bytes (base64url).
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32
DEFAULT_PORTS = {"https": 443, "http": 80}

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# NAT64's well-known prefix: the last 32 bits are the IPv4 address reached.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def secret_generate() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The ``v1`` signature: hex HMAC-SHA256 with ``secret`` over ``"<timestamp>.<body>"``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(*, secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret=secret, timestamp=timestamp, body=body)}"


# ------------------------------------------------------------------------ which URLs


def _embedded_ipv4(address: IpAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped ``::ffff:a.b.c.d``, 6to4, NAT64)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_is_public(address: IpAddress) -> bool:
    """Whether an alert may be sent to ``address``: a global unicast address."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return address_is_public(embedded)
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where one try connects: ``url`` with its host replaced by ``address`` (checked),
    and what the request still says of the URL's own host."""

    url: str
    address: str
    host_header: str
    sni_hostname: str | None


def _split(url: str, *, allow_private: bool) -> tuple[SplitResult, str, int]:
    """The URL's parts, its host (ASCII, lower case, no brackets) and port; refused if
    it breaks a rule that needs no lookup."""
    if len(url) > WEBHOOK_URL_MAX_LENGTH:
        raise WebhookUrlRefused(f"Use at most {WEBHOOK_URL_MAX_LENGTH} characters.")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise WebhookUrlRefused("A URL has no spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookUrlRefused("Enter a full URL, such as https://example.com/hooks.") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme.lower() not in schemes or not parts.netloc:
        raise WebhookUrlRefused("Use an https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlRefused(
            "Leave the user name and password out of the URL: check the signature instead."
        )
    host = parts.hostname or ""
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise WebhookUrlRefused("The host is not a valid name.") from None
    if not host:
        raise WebhookUrlRefused("Enter a full URL, such as https://example.com/hooks.")
    return parts, host, port or DEFAULT_PORTS[parts.scheme.lower()]


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _addresses(host: str, port: int) -> list[IpAddress]:
    """The host's addresses: an IP literal as it is (no lookup), a name resolved."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        raise WebhookHostUnresolved(f"The host {host} could not be resolved.") from None
    addresses = []
    for _family, _type, _proto, _name, sockaddr in found:
        text = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 scope is not part of the address
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            continue
    if not addresses:
        raise WebhookHostUnresolved(f"The host {host} could not be resolved.")
    return addresses


def webhook_target(url: str) -> WebhookTarget:
    """Where a try of the webhook ``url`` connects, or WebhookUrlRefused (the rules in
    the module's doc; WebhookHostUnresolved when its name does not resolve). A name is
    resolved here: every address it has must be public, and the first is the one used."""
    allow_private = settings.ALERT_WEBHOOK_ALLOW_PRIVATE
    parts, host, port = _split(url, allow_private=allow_private)
    addresses = _addresses(host, port)
    if not allow_private:
        for address in addresses:
            if not address_is_public(address):
                raise WebhookUrlRefused(
                    "The URL must reach a public address: "
                    f"{host} is {address}, a private, loopback or reserved one."
                )
    chosen = addresses[0]
    netloc_host = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    default_port = DEFAULT_PORTS[parts.scheme.lower()]
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header += f":{port}"
    return WebhookTarget(
        url=parts._replace(netloc=f"{netloc_host}:{port}").geturl(),
        address=str(chosen),
        host_header=host_header,
        sni_hostname=None if _literal(host) is not None else host,
    )


def webhook_url_check(url: str) -> str:
    """``url`` as it is saved, or WebhookUrlRefused: the rules of ``webhook_target``."""
    webhook_target(url)
    return url


# --------------------------------------------------------------------------- one try


def webhook_post(*, url: str, secret: str, body: bytes, event_id: str, timestamp: int) -> int:
    """POST ``body`` to ``url``, signed with ``secret`` at ``timestamp``; the answer's
    status. Redirects are not followed (a 3xx is an answer, and not a success), no proxy
    from the environment is used, and the connection goes to the address
    ``webhook_target`` checked just now. Raises WebhookUrlRefused, or httpx's errors
    (``httpx.HTTPError``) when no answer came within ``ALERT_WEBHOOK_TIMEOUT_SECONDS``."""
    target = webhook_target(url)
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature_header(secret=secret, timestamp=timestamp, body=body),
        EVENT_ID_HEADER: event_id,
    }
    extensions = {} if target.sni_hostname is None else {"sni_hostname": target.sni_hostname}
    with httpx.Client(
        timeout=settings.ALERT_WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
    ) as client:
        response = client.post(target.url, content=body, headers=headers, extensions=extensions)
    return response.status_code
