"""Counts as the pages show them."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def startswith(text: str, prefix: str) -> bool:
    return str(text).startswith(prefix)


@register.filter
def thousands(number: int | None) -> str:
    """``12,345``: a count (requests, tokens) with thousands separators."""
    if number is None:
        return "—"
    return f"{int(number):,}"
