"""How the key pages show a key's margin and status."""

from __future__ import annotations

from decimal import Decimal

from django import template

from keys.models import EXPIRED, ClientKey

register = template.Library()

STATUS_BADGES = {
    ClientKey.Status.ACTIVE: "badge-good",
    ClientKey.Status.REVOKED: "badge-warn",
    EXPIRED: "badge-warn",
    ClientKey.Status.DELETED: "badge-bad",
}


@register.filter
def percent(value: Decimal | None) -> str:
    """A percentage without trailing zeros: ``40.00`` → ``40``, ``12.50`` → ``12.5``."""
    if value is None:
        return "—"
    return f"{value.normalize():f}"


@register.filter
def status_badge(status: str) -> str:
    """The badge class of a key status (stored or ``expired``)."""
    return STATUS_BADGES.get(status, "")
