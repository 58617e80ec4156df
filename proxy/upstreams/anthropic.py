from __future__ import annotations

from proxy.upstreams.base import UpstreamAdapter, UpstreamTarget

DEFAULT_ANTHROPIC_VERSION = "2023-06-01"


class AnthropicAdapter(UpstreamAdapter):
    """Anthropic: the base URL is the host; paths start with ``/v1``."""

    kind = "anthropic"

    def url(self, target: UpstreamTarget, path: str) -> str:
        return target.base_url + path

    def headers(self, target: UpstreamTarget, client_headers: dict[str, str]) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "user-agent": "tollgate",
            "anthropic-version": client_headers.get("anthropic-version")
            or DEFAULT_ANTHROPIC_VERSION,
        }
        beta = client_headers.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
        secret = target.api_key
        if secret:
            headers["x-api-key"] = secret
        return headers
