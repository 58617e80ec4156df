"""Budget periods as integers, so a reset is a comparison the database can do atomically.

A wallet-funded key's spend cap may reset every UTC day, week (starting Monday) or month.
``period_index`` numbers those periods; the reservation statement zeroes the period's
spend when the stored index is older than the current one.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

_EPOCH = date(1970, 1, 1)  # a Thursday
_DAYS_FROM_MONDAY_TO_EPOCH = 3


def period_index(budget_period: str, now: datetime) -> int:
    today = now.astimezone(UTC).date()
    if budget_period == "daily":
        return (today - _EPOCH).days
    if budget_period == "weekly":
        return ((today - _EPOCH).days + _DAYS_FROM_MONDAY_TO_EPOCH) // 7
    if budget_period == "monthly":
        return today.year * 12 + today.month - 1
    return 0


def period_indexes(now: datetime) -> dict[str, int]:
    """The index at ``now`` of every kind of resetting period, by name.

    Metering passes all of them so its statements pick the one of the key's stored
    ``budget_period`` (see ``billing.metering``).
    """
    return {kind: period_index(kind, now) for kind in ("daily", "weekly", "monthly")}


def period_start(budget_period: str, now: datetime) -> datetime | None:
    """The UTC start of the current period (None when the cap never resets)."""
    from datetime import timedelta

    today = now.astimezone(UTC).date()
    if budget_period == "daily":
        start = today
    elif budget_period == "weekly":
        start = today - timedelta(days=today.weekday())
    elif budget_period == "monthly":
        start = today.replace(day=1)
    else:
        return None
    return datetime(start.year, start.month, start.day, tzinfo=UTC)
