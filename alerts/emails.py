"""The alert email to the reseller, and the one-line summary of an alert (the email's
subject, also shown in the delivery log), written from the event's ``data``.

The templates (``alerts/templates/alerts/email/``) show money with the ``money`` template
library (``$1,234.56``), the one every page uses; ``data`` holds decimal strings, read
back exactly with ``parse_usd``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from accounts.models import Tenant
from alerts.events import public_url
from alerts.models import AlertEvent
from billing.money import MoneyError, parse_usd
from keys.models import ClientKey

TEMPLATES = "alerts/email"
# The amounts of an event's data (decimal strings), shown as money.
AMOUNT_FIELDS = (
    "limit",
    "used",
    "remaining",
    "cost_spent",
    "threshold",
    "available",
    "balance",
    "reserved",
    "daily_draw",
)
# Each event type's short name in the templates.
KINDS = {
    AlertEvent.Type.KEY_THRESHOLD: "key",
    AlertEvent.Type.WALLET_BALANCE: "balance",
    AlertEvent.Type.WALLET_RUNWAY: "runway",
    AlertEvent.Type.TEST: "test",
}
# A capped key's period, as an email names it ("its spend cap for this month"): the
# reseller's alert emails and the client portal's (``portal.alerts``, a layer above).
CAP_PERIOD_PHRASE: dict[str, str] = {
    ClientKey.BudgetPeriod.DAILY: "for today",
    ClientKey.BudgetPeriod.WEEKLY: "for this week",
    ClientKey.BudgetPeriod.MONTHLY: "for this month",
}


def _amounts(data: dict[str, Any]) -> dict[str, int]:
    amounts = {}
    for name in AMOUNT_FIELDS:
        value = data.get(name)
        if isinstance(value, str):
            try:
                amounts[name] = parse_usd(value)
            except MoneyError:
                continue
    return amounts


def _context(event: AlertEvent) -> dict[str, Any]:
    data = event.data
    return {
        "kind": KINDS.get(AlertEvent.Type(event.type), "test"),
        "data": data,
        "amounts": _amounts(data),
        "is_cap": data.get("limit_kind") == "spend_cap",
        "period_phrase": CAP_PERIOD_PHRASE.get(data.get("budget_period", ""), ""),
        "settings_url": public_url(reverse("dashboard:settings")) + "#alerts",
        "event_id": event.public_id,
    }


def alert_summary(event: AlertEvent) -> str:
    """One line: 'Key “Client A” has used 80 % of its budget', 'Wallet balance under
    $50.00', 'Wallet runway under 3 days'."""
    # A header holds no newline: the template's line breaks are no part of the line.
    return " ".join(render_to_string(f"{TEMPLATES}/subject.txt", _context(event)).split())


def alert_email(*, event: AlertEvent, tenant: Tenant, to: str) -> EmailMultiAlternatives:
    """The email of ``event`` to the reseller at ``to``, from ``DEFAULT_FROM_EMAIL``."""
    context = {**_context(event), "tenant_name": tenant.name}
    message = EmailMultiAlternatives(
        subject=alert_summary(event),
        body=render_to_string(f"{TEMPLATES}/message.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers={"X-Tollgate-Event-Id": event.public_id},
    )
    message.attach_alternative(render_to_string(f"{TEMPLATES}/message.html", context), "text/html")
    return message
