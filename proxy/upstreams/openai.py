from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from proxy.upstreams.base import UpstreamAdapter, UpstreamTarget

# OpenAI's own API (and Azure OpenAI) refuses ``max_tokens`` for its reasoning models and
# takes ``max_completion_tokens`` for every chat model; other OpenAI-compatible servers
# (vLLM, Ollama, OpenRouter, Together, DeepSeek, Mistral, llama.cpp...) know ``max_tokens``.
OPENAI_HOSTS = ("api.openai.com",)
OPENAI_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com")


def chat_output_limit_field(target: UpstreamTarget) -> str:
    """The chat-completions output limit this upstream understands, for a request that
    set none (the proxy always bounds the output by what the request's hold covers)."""
    return _chat_limit_field(target.base_url)


@lru_cache(maxsize=256)
def _chat_limit_field(base_url: str) -> str:
    host = (urlsplit(base_url).hostname or "").lower()
    if host in OPENAI_HOSTS or host.endswith(OPENAI_HOST_SUFFIXES):
        return "max_completion_tokens"
    return "max_tokens"


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
