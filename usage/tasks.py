"""Usage's Celery tasks: thin, re-runnable entry points to ``usage.services``."""

from __future__ import annotations

from config.celery import database_task
from usage.services import traces_purge


@database_task()
def traces_purge_task() -> int:
    """Delete traces past the retention period (beat: hourly). Returns how many.

    Safe to re-run, and to run twice at once: it deletes by age, so a second run finds
    nothing left, and each batch commits on its own, so a run cut short by the time limit
    keeps what it deleted and the next run carries on.
    """
    return traces_purge()
