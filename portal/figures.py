"""A bound key as its client sees it: the figures of ``keys.selectors.key_figures`` and
``usage.selectors.key_runways`` in client prices only, under its reseller's name.

Every page of the portal reads a key's money through :func:`client_key_figures`, so the
reseller's cost, price ratio, margin and profit are never in a portal template's context.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from keys.models import ClientKey
from keys.selectors import key_figures
from pages.templatetags.numbers import RUNWAY_SHOWN_DAYS, days_left
from usage.selectors import RUNWAY_WINDOW_DAYS, key_runways

# The share of a budget drawn on the bars: whole percents, never past 100.
FULL = 100


@dataclass(frozen=True, slots=True)
class ClientKeyFigures:
    """Money in nano-dollars at the client's prices.

    ``budget_nanos`` is what bounds the key: a prepaid key's budget, a wallet-funded key's
    spend cap for the current period (``budget_period``), or None (no cap: only the
    reseller's wallet bounds it). ``spent_nanos`` counts against it (all of a prepaid key's
    spend; a capped key's spend this period); ``total_spent_nanos`` is all the key ever
    spent. ``reserved_nanos`` is held for requests in flight. ``runway_days``: whole days
    ``remaining_nanos`` lasts at the last ``RUNWAY_WINDOW_DAYS`` days' pace
    (``window_spent_nanos``); None when idle, inactive or unbounded.
    """

    key: ClientKey
    status: str
    reseller_name: str
    support_email: str
    budget_nanos: int | None
    spent_nanos: int
    total_spent_nanos: int
    reserved_nanos: int
    remaining_nanos: int | None
    used_percent: int | None
    window_spent_nanos: int
    runway_days: int | None

    @property
    def is_prepaid(self) -> bool:
        return self.key.is_prepaid

    @property
    def runway_window_days(self) -> int:
        return RUNWAY_WINDOW_DAYS

    @property
    def runway_text(self) -> str | None:
        """``runway_days`` as a person says it: "About 13 days", "Less than a day", "More
        than a year"; None without a runway."""
        days = self.runway_days
        if days is None:
            return None
        text = days_left(days)
        return f"About {text}" if 0 < days <= RUNWAY_SHOWN_DAYS else text


def _used_percent(spent: int, budget: int | None) -> int | None:
    if budget is None:
        return None
    if budget <= 0:
        return FULL
    return min(FULL, spent * FULL // budget)


def client_key_figures(
    *, keys: Sequence[ClientKey], now: datetime | None = None
) -> list[ClientKeyFigures]:
    """The figures of ``keys`` (with their tenants loaded: ``select_related("tenant")``),
    in their order; one spend read per reseller for the runways."""
    now = now or timezone.now()
    figures = [key_figures(key=key, now=now) for key in keys]
    by_tenant = defaultdict(list)
    for f in figures:
        by_tenant[f.key.tenant_id].append(f)
    runways = {}
    for group in by_tenant.values():
        runways.update(key_runways(tenant=group[0].key.tenant, figures=group, now=now))
    shown = []
    for f in figures:
        key = f.key
        prepaid = key.is_prepaid
        budget = f.client_budget_nanos if prepaid else f.spend_cap_nanos
        spent = f.client_spent_nanos if prepaid else f.period_spent_nanos
        remaining = None if f.client_remaining_nanos is None else max(f.client_remaining_nanos, 0)
        runway = runways[key.pk]
        shown.append(
            ClientKeyFigures(
                key=key,
                status=f.status,
                reseller_name=key.tenant.name,
                support_email=key.tenant.support_email,
                budget_nanos=budget,
                spent_nanos=spent,
                total_spent_nanos=f.client_spent_nanos,
                reserved_nanos=f.client_reserved_nanos,
                remaining_nanos=remaining,
                used_percent=_used_percent(spent, budget),
                window_spent_nanos=runway.window_client_nanos,
                runway_days=runway.days_left,
            )
        )
    return shown
