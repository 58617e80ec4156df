"""Usage's Celery tasks: thin, re-runnable entry points to ``usage.services``."""

from __future__ import annotations

from config.celery import database_task
from usage.services import rollups_purge, traces_purge, usage_roll_up

# Batches per rollup task run: a large backlog is worked off over several runs, each well
# inside the task time limit (the next run carries on where this one stopped).
ROLLUP_TASK_MAX_BATCHES = 20


@database_task()
def usage_rollup_task() -> int:
    """Add the traces not rolled up yet into their rollup buckets (beat: every
    ``USAGE_ROLLUP_SECONDS``). Returns how many traces were rolled.

    Safe to re-run and to run twice at once: each trace is marked rolled in the same
    transaction as its sums are added, and two runs claim disjoint traces.
    """
    return usage_roll_up(max_batches=ROLLUP_TASK_MAX_BATCHES).traces


@database_task()
def traces_purge_task() -> int:
    """Roll up, then delete rolled traces past the retention period, and rollups past
    theirs (beat: hourly). Returns how many traces were deleted.

    Safe to re-run, and to run twice at once: it deletes by age, so a second run finds
    nothing left, and each batch commits on its own, so a run cut short by the time limit
    keeps what it deleted and the next run carries on.
    """
    deleted = traces_purge()
    rollups_purge()
    return deleted
