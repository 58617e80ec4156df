"""Template context every page gets: the portal client a portal page acts for (None elsewhere)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def portal_client(request: HttpRequest) -> dict[str, Any]:
    return {"portal_client": getattr(request, "portal_client", None)}
