"""What the pages' charts draw, built from the selectors' reports: every day or month of a
range (those without traffic as zeros, which the reports leave out) and the data a
``<canvas data-chart=…>`` reads (app.js): labels and datasets of dollar amounts as decimal
strings, exactly as ``billing.money.format_usd`` writes them. The same figures are in each
page's table, for readers that do not see the chart."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Any

from billing.money import format_usd
from billing.selectors import DayBalance
from usage.selectors import NO_USAGE, DayUsage, MonthUsage
from usage.windows import Span

# One colour per series, the same on every page (Pico's primary blue for what clients
# spent, the pages' green for profit, their muted grey for cost).
SPEND = "#0172ad"
PROFIT = "#1e7b4c"
COST = "#5f6b7a"


def every_day(by_day: Iterable[DayUsage], first: date, last: date) -> list[DayUsage]:
    """One ``DayUsage`` per date from ``first`` to ``last``: the report's, or zeros."""
    known = {d.date: d for d in by_day}
    days = []
    day = first
    while day <= last:
        days.append(known.get(day) or DayUsage(date=day, **NO_USAGE))
        day += timedelta(days=1)
    return days


def span_days(by_day: Iterable[DayUsage], span: Span) -> list[DayUsage]:
    """One ``DayUsage`` per local date ``span`` touches, oldest first (a usage report's
    chart days): the report's, or zeros."""
    first = span.since.astimezone(span.zone).date()
    last = (span.until - timedelta(microseconds=1)).astimezone(span.zone).date()
    return every_day(by_day, first, last)


def next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def every_month(by_month: Iterable[MonthUsage], first: date, last: date) -> list[MonthUsage]:
    """One ``MonthUsage`` per month from ``first``'s to ``last``'s (first days): the
    report's, or zeros."""
    known = {m.month: m for m in by_month}
    months = []
    month = first.replace(day=1)
    while month <= last:
        months.append(known.get(month) or MonthUsage(month=month, **NO_USAGE))
        month = next_month(month)
    return months


def _dataset(label: str, nanos: Sequence[int], colour: str) -> dict[str, Any]:
    return {
        "label": label,
        "data": [format_usd(n) for n in nanos],
        "borderColor": colour,
        "backgroundColor": colour,
    }


def daily_spend_chart(days: Sequence[DayUsage]) -> dict[str, Any]:
    """Clients' spend (client prices) and profit per day."""
    return {
        "labels": [f"{d.date:%b} {d.date.day}" for d in days],
        "datasets": [
            {**_dataset("Clients' spend", [d.client_nanos for d in days], SPEND), "pointRadius": 2},
            {**_dataset("Profit", [d.profit_nanos for d in days], PROFIT), "pointRadius": 2},
        ],
    }


def monthly_earnings_chart(months: Sequence[MonthUsage]) -> dict[str, Any]:
    """Revenue, cost and profit per month."""
    return {
        "labels": [f"{m.month:%b %Y}" for m in months],
        "datasets": [
            _dataset("Revenue", [m.client_nanos for m in months], SPEND),
            _dataset("Cost", [m.cost_nanos for m in months], COST),
            _dataset("Profit", [m.profit_nanos for m in months], PROFIT),
        ],
    }


def balance_chart(balances: Sequence[DayBalance]) -> dict[str, Any]:
    """The wallet's end-of-day balance: a step a day, no dot on each."""
    line = _dataset("Balance", [b.balance_nanos for b in balances], SPEND)
    return {
        "labels": [f"{b.day:%b} {b.day.day}" for b in balances],
        "datasets": [{**line, "stepped": True, "pointRadius": 0}],
    }
