"""Small helpers for the dashboard's templates."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def startswith(text: str, prefix: str) -> bool:
    return str(text).startswith(prefix)
