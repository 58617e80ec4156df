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


# Past this a runway reads "more than a year": a count of years at one week's pace means
# nothing (a key that spent a tenth of a cent lasts for millennia).
RUNWAY_SHOWN_DAYS = 365


@register.filter
def days_left(days: int | None) -> str:
    """A runway in whole days as the pages say it: "13 days", "Less than a day", "More
    than a year"; "—" without one."""
    if days is None:
        return "—"
    if days == 0:
        return "Less than a day"
    if days > RUNWAY_SHOWN_DAYS:
        return "More than a year"
    return f"{days:,} day{'' if days == 1 else 's'}"
