from __future__ import annotations

from proxy.upstreams.base import UpstreamAdapter, UpstreamTarget


class OpenAIAdapter(UpstreamAdapter):
    """OpenAI-compatible: the base URL includes the version (``https://api.openai.com/v1``)."""

    kind = "openai"

    def url(self, target: UpstreamTarget, path: str) -> str:
        return target.base_url + path

    def headers(self, target: UpstreamTarget, client_headers: dict[str, str]) -> dict[str, str]:
        headers = {"content-type": "application/json", "user-agent": "tollgate"}
        secret = target.api_key
        if secret:
            headers["authorization"] = f"Bearer {secret}"
        return headers
