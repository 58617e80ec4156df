"""Wire formats: how each API shape bounds a request, reports usage, and words an error.

Each endpoint is an :class:`~proxy.wire.base.Endpoint`; the proxy's pipeline is the same
for all of them and asks the endpoint only format questions.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType

from proxy.wire import anthropic, openai

ANTHROPIC_PATH = "/v1/messages"
ANTHROPIC_HEADER = "anthropic-version"


def error_wire(path: str, headers: Mapping[str, str]) -> ModuleType:
    """The wire format whose error shape an answer takes when no endpoint decides it (a
    wrong method, an unknown path, a crash): Anthropic's under ``/v1/messages`` or for a
    caller that sends ``anthropic-version`` (as ``GET /v1/models`` tells its callers
    apart), OpenAI's otherwise. ``headers``: lower-case names, or a case-insensitive
    mapping."""
    if path == ANTHROPIC_PATH or path.startswith(ANTHROPIC_PATH + "/"):
        return anthropic
    return anthropic if ANTHROPIC_HEADER in headers else openai
