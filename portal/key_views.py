"""A bound key's page in the portal, and removing the key from the client's list.

The page is what a client opens on a phone to learn what a key has left: its budget (or
spend cap), what it spent and what remains, in the client's prices
(``portal.figures.client_key_figures``), its limits, its last 30 days (the usage fragment
of ``portal.key_reports``, rendered in place), its latest requests and its statements,
under the name and support address of the reseller who provides it. The key is reached
only through the client's binding: any other key id answers 404, whatever the method.

Unbinding deletes this client's binding only: the key keeps working, other addresses that
bound it keep seeing it, and pasting its secret binds it again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponseBase, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from billing.periods import period_start
from keys.models import EXPIRED, ClientKey
from pages.charts import next_month
from pages.reports import month_text
from pages.templatetags.money import usd
from portal.access import page_client
from portal.figures import ClientKeyFigures, client_key_figures
from portal.key_reports import bound_key_page, shown_requests, usage_context
from portal.key_selectors import client_requests, requests_page
from portal.models import PortalBinding
from portal.services import key_unbind as key_unbind_service
from usage.windows import months_since

# The latest requests the key's page lists (the requests page has them all).
RECENT_REQUESTS = 10
# A budget bar turns amber, then red, as the key nears its end (the dashboard's colours).
BAR_WARN_PERCENT = 80
BAR_BAD_PERCENT = 95

# A wallet-funded key's spend cap, in the client's words: how often it is granted, what
# "now" its spend counts over, and when it starts again (UTC periods: billing.periods).
CAP_PERIODS: dict[str, dict[str, str]] = {
    ClientKey.BudgetPeriod.NONE: {"per": "", "now": "in all", "resets": "Never"},
    ClientKey.BudgetPeriod.DAILY: {
        "per": "per day",
        "now": "today",
        "resets": "Every day at midnight UTC",
    },
    ClientKey.BudgetPeriod.WEEKLY: {
        "per": "per week",
        "now": "this week",
        "resets": "Every Monday at midnight UTC",
    },
    ClientKey.BudgetPeriod.MONTHLY: {
        "per": "per month",
        "now": "this month",
        "resets": "On the 1st of each month, midnight UTC",
    },
}

STATUS_BADGES = {
    ClientKey.Status.ACTIVE: "badge-good",
    ClientKey.Status.REVOKED: "badge-bad",
    ClientKey.Status.DELETED: "badge-bad",
    EXPIRED: "badge-warn",
}


def _bar_class(percent: int | None) -> str:
    if (percent or 0) >= BAR_BAD_PERCENT:
        return "bar-bad"
    if (percent or 0) >= BAR_WARN_PERCENT:
        return "bar-warn"
    return ""


def _cap_resets_at(key: ClientKey, now: datetime) -> datetime | None:
    """When a wallet-funded key's spend cap starts again (None: it never resets)."""
    start = period_start(key.budget_period, now)
    if start is None:
        return None
    if key.budget_period == ClientKey.BudgetPeriod.DAILY:
        return start + timedelta(days=1)
    if key.budget_period == ClientKey.BudgetPeriod.WEEKLY:
        return start + timedelta(days=7)
    return datetime.combine(next_month(start.date()), start.timetz())


def runway_note(figures: ClientKeyFigures, now: datetime) -> str:
    """How long what is left lasts at the last days' pace, in a sentence (empty for a key
    that no longer works: its pace means nothing)."""
    f = figures
    window = f.runway_window_days
    pace = f"at the last {window} days' pace ({usd(f.window_spent_nanos)} spent)"
    if f.status != ClientKey.Status.ACTIVE:
        return ""
    if f.budget_nanos is not None and f.remaining_nanos == 0:
        if f.is_prepaid:
            return f"Nothing left: requests are refused until {f.reseller_name} tops the key up."
        return "Nothing left: requests are refused until the cap starts again or is raised."
    if f.runway_days is not None:
        resets_at = None if f.is_prepaid else _cap_resets_at(f.key, now)
        if resets_at is not None and now + timedelta(days=f.runway_days) >= resets_at:
            return f"At the last {window} days' pace ({usd(f.window_spent_nanos)} spent), the cap lasts until it starts again."
        return f"{f.runway_text} left {pace}."
    if f.window_spent_nanos:
        return f"{usd(f.window_spent_nanos)} spent in the last {window} days."
    return f"No spend in the last {window} days."


def _statement_months(key: ClientKey) -> dict[str, Any]:
    """This month's and last month's statements (in the reseller's zone), and every month
    since the key was made, for the picker."""
    zone = key.tenant.zone
    this_month = timezone.now().astimezone(zone).date().replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    return {
        "this_month": month_text(this_month),
        "last_month": month_text(last_month),
        "statement_months": [(month_text(m), m) for m in months_since(key.created_at, zone=zone)],
    }


@bound_key_page("GET")
def key_page(request: HttpRequest, binding: PortalBinding) -> HttpResponseBase:
    """``/portal/keys/<id>/``: the key's figures, limits, last 30 days and latest requests."""
    key = binding.key
    now = timezone.now()
    figures: ClientKeyFigures = client_key_figures(keys=[key], now=now)[0]
    recent = requests_page(client_requests(key=key), before=None, after=None, size=RECENT_REQUESTS)
    last_30_days = usage_context(key, QueryDict())  # the usage page's default window
    context: dict[str, Any] = {
        **{name: last_30_days[name] for name in ("zone", "usage_url", "report", "charts")},
        **_statement_months(key),
        "binding": binding,
        "key": key,
        "figures": figures,
        "status_badge": STATUS_BADGES.get(figures.status, ""),
        "bar_class": _bar_class(figures.used_percent),
        "runway_note": runway_note(figures, now),
        "cap_period": CAP_PERIODS.get(key.budget_period, CAP_PERIODS[ClientKey.BudgetPeriod.NONE]),
        "recent_requests": shown_requests(recent.rows),
        "more_requests": recent.older is not None,
    }
    return render(request, "portal/keys/detail.html", context)


@bound_key_page("GET", "POST")
def key_unbind(request: HttpRequest, binding: PortalBinding) -> HttpResponseBase:
    """GET: the confirmation; POST: this client's binding of the key is removed."""
    key = binding.key
    if request.method == "GET":
        return render(request, "portal/keys/unbind.html", {"binding": binding, "key": key})
    # This client's binding only: the key, and every other address's binding of it, stay.
    key_unbind_service(client=page_client(request), key_id=key.pk)
    messages.success(
        request,
        f"Removed {key.label} from your keys. It still works; paste it again to add it back.",
    )
    return redirect(reverse("portal:home"))
