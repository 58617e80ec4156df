"""Calling an upstream: one shared aiohttp session per worker, typed errors.

An :class:`UpstreamError` says whether the next route may be tried (``retryable``):
connection failures, timeouts before the response, 429 and 5xx are retryable, but only
before the first byte reaches the client; 4xx answers are the caller's fault and are passed
through as they are.

Each kind of upstream has an :class:`UpstreamAdapter` (``proxy.runtime.ADAPTERS``) whose
``open`` sends the request and returns an :class:`UpstreamResponse`: a provider's aiohttp
response, or the built-in demo's, made in this process (``proxy.upstreams.demo``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from billing import crypto

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
CONNECT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Everything needed to call one upstream (cached per worker)."""

    upstream_id: int
    name: str
    kind: str
    base_url: str
    timeout_seconds: int
    # Resolved once when the route is loaded; kept in memory only, never logged.
    api_key: str = ""

    def __repr__(self) -> str:
        return f"UpstreamTarget({self.name!r}, {self.kind!r}, {self.base_url!r})"


def upstream_secret(*, api_key_env: str, api_key_encrypted: str) -> str:
    """The upstream's API key: stored (encrypted) wins over the environment variable."""
    if api_key_encrypted:
        return crypto.decrypt(api_key_encrypted)
    if api_key_env:
        return os.environ.get(api_key_env, "")
    return ""


class UpstreamError(Exception):
    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        error_class: str,
        status: int = 502,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.error_class = error_class
        self.status = status
        self.body = body
        self.content_type = content_type


class UpstreamBody(Protocol):
    def iter_any(self) -> AsyncIterator[bytes]: ...


class UpstreamResponse(Protocol):
    """What forwarding reads of an upstream's answer (the part of ``aiohttp.ClientResponse``
    it uses): the status, the content type, the whole body or its chunks as they come."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> UpstreamBody: ...

    async def read(self) -> bytes: ...

    def release(self) -> Any: ...

    def close(self) -> None: ...


# The upstream kind answered in this process (``proxy.upstreams.demo``). It speaks every
# wire format: its routes serve the OpenAI endpoints and Anthropic's alike.
DEMO_KIND = "demo"


def speaks(target: UpstreamTarget, wire_kind: str) -> bool:
    """Whether ``target`` answers requests in the ``wire_kind`` format (openai, anthropic)."""
    return target.kind == wire_kind or target.kind == DEMO_KIND


class UpstreamAdapter:
    """How one kind of upstream is addressed, authenticated and called (over HTTP, unless
    a kind answers in this process and overrides :meth:`open`)."""

    kind = ""

    def url(self, target: UpstreamTarget, path: str) -> str:
        raise NotImplementedError

    def headers(self, target: UpstreamTarget, client_headers: dict[str, str]) -> dict[str, str]:
        raise NotImplementedError

    async def open(
        self,
        session: aiohttp.ClientSession,
        target: UpstreamTarget,
        *,
        path: str,
        body: bytes,
        client_headers: dict[str, str],
    ) -> UpstreamResponse:
        """POST to the upstream and return the response once its status line arrived.

        A retryable failure raises UpstreamError(retryable=True) with the connection
        already released; a non-retryable HTTP error is returned as a response for the
        caller to pass on.
        """
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=target.timeout_seconds
        )
        try:
            response = await session.post(
                self.url(target, path),
                data=body,
                headers=self.headers(target, client_headers),
                timeout=timeout,
            )
        except TimeoutError as exc:
            raise UpstreamError(
                f"Upstream {target.name} timed out.",
                retryable=True,
                error_class="upstream_timeout",
                status=504,
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(
                f"Upstream {target.name} is unreachable.",
                retryable=True,
                error_class="upstream_connect_error",
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"Upstream {target.name} failed: {type(exc).__name__}.",
                retryable=True,
                error_class="upstream_protocol_error",
            ) from exc
        if response.status in RETRYABLE_STATUSES:
            try:
                payload = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                payload = b""
            finally:
                response.release()
            raise UpstreamError(
                f"Upstream {target.name} answered {response.status}.",
                retryable=True,
                error_class=f"upstream_http_{response.status}",
                status=response.status,
                body=payload,
                content_type=response.headers.get("content-type"),
            )
        return response
