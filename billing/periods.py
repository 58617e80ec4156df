"""Budget periods as integers, so a reset is a comparison the database can do atomically.

A wallet-funded key's spend cap may reset every UTC day, week (starting Monday) or month.
``period_index`` numbers those periods; the reservation statement zeroes the period's
spend when the stored index is older than the current one.

The kinds of period are defined here, beside their arithmetic, and are the choices of
``keys.ClientKey.budget_period`` (``ClientKey.BudgetPeriod``): billing never imports keys.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from django.db import models


class BudgetPeriod(models.TextChoices):
    NONE = "none", "Never resets"
    DAILY = "daily", "Resets every UTC day"
    WEEKLY = "weekly", "Resets every UTC week (Monday)"
    MONTHLY = "monthly", "Resets every UTC month"


_EPOCH = date(1970, 1, 1)  # a Thursday
_DAYS_FROM_MONDAY_TO_EPOCH = 3


def period_index(budget_period: str, now: datetime) -> int:
    today = now.astimezone(UTC).date()
    if budget_period == BudgetPeriod.DAILY:
        return (today - _EPOCH).days
    if budget_period == BudgetPeriod.WEEKLY:
        return ((today - _EPOCH).days + _DAYS_FROM_MONDAY_TO_EPOCH) // 7
    if budget_period == BudgetPeriod.MONTHLY:
        return today.year * 12 + today.month - 1
    return 0


def period_indexes(now: datetime) -> dict[str, int]:
    """The index at ``now`` of every kind of resetting period, by name.

    Metering passes all of them so its statements pick the one of the key's stored
    ``budget_period`` (see ``billing.metering``).
    """
    resetting = (BudgetPeriod.DAILY, BudgetPeriod.WEEKLY, BudgetPeriod.MONTHLY)
    return {kind.value: period_index(kind, now) for kind in resetting}


def period_start(budget_period: str, now: datetime) -> datetime | None:
    """The UTC start of the current period (None when the cap never resets)."""
    today = now.astimezone(UTC).date()
    if budget_period == BudgetPeriod.DAILY:
        start = today
    elif budget_period == BudgetPeriod.WEEKLY:
        start = today - timedelta(days=today.weekday())
    elif budget_period == BudgetPeriod.MONTHLY:
        start = today.replace(day=1)
    else:
        return None
    return datetime(start.year, start.month, start.day, tzinfo=UTC)
