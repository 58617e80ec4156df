"""Money on pages: nano-dollars shown in dollars, exactly as the API rounds them."""

from __future__ import annotations

from django import template

from billing.money import NANOS_PER_CENT, format_usd, nanos_to_cents

register = template.Library()


@register.filter
def usd(nanos: int | None) -> str:
    """``$1,234.56``: whole cents, half up (as statements and ``*_cents`` fields round). An
    amount that is not zero but under half a cent is shown exactly (``$0.000975``): a first
    request's charge must not read as nothing."""
    if nanos is None:
        return "—"
    cents = nanos_to_cents(int(nanos))
    if cents == 0 and nanos:
        return usd_exact(nanos)
    sign = "−" if cents < 0 else ""
    dollars, rest = divmod(abs(cents), 100)
    return f"{sign}${dollars:,}.{rest:02d}"


@register.filter
def usd_exact(nanos: int | None) -> str:
    """``$0.000123456``: every nano-dollar (prices per token, tiny charges)."""
    if nanos is None:
        return "—"
    text = format_usd(int(nanos))
    return f"−${text[1:]}" if text.startswith("-") else f"${text}"


@register.filter
def usd_input(nanos: int | None) -> str:
    """An amount as a form input's value (``60.00``, no symbol or separators)."""
    if nanos is None:
        return ""
    if int(nanos) % NANOS_PER_CENT == 0:
        cents = int(nanos) // NANOS_PER_CENT
        return f"{cents // 100}.{cents % 100:02d}"
    return format_usd(int(nanos))
