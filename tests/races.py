"""Two (or more) runs of one flow at once on PostgreSQL, made to truly race: this thread
holds the contested row locked until every run waits for it, then lets them go together."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import connection, transaction

RACE_TIMEOUT_SECONDS = 30


def waiting_on_locks(count: int, timeout: float = RACE_TIMEOUT_SECONDS) -> None:
    """Wait until ``count`` other sessions of this database wait for a row lock."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            # Inside a transaction the activity view is read once and kept: read it anew.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= count:
                return
            time.sleep(0.05)
    raise AssertionError(f"{count} sessions never waited for the lock")


def race_on_locked_row[T](
    lock: Callable[[], object], run: Callable[[], T], *, count: int = 2
) -> list[T]:
    """``run`` in ``count`` threads at once (each on a connection of its own, closed after),
    while ``lock`` (a ``select_for_update()`` of the row they contest) holds them all
    waiting; their results, in the order they were started."""

    def one() -> T:
        try:
            return run()
        finally:
            connection.close()

    pool = ThreadPoolExecutor(max_workers=count)
    try:
        with transaction.atomic():
            lock()
            outcomes = [pool.submit(one) for _ in range(count)]
            waiting_on_locks(count)
        return [outcome.result(timeout=RACE_TIMEOUT_SECONDS) for outcome in outcomes]
    finally:
        pool.shutdown()
