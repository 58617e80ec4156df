"""usage.services.traces_purge and its task: retention is enforced in bounded batches.

The worker test runs only with PostgreSQL and Redis (``DATABASE_URL`` and ``REDIS_URL``): it
runs on the real-worker harness of ``tests/worker.py`` (a ``celery worker``
subprocess on the test database, a queue unique to the run).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from keys.models import ClientKey
from tests.keys.factories import WalletKeyFactory
from tests.usage.factories import TraceFactory
from tests.worker import worker_running
from usage.models import Trace
from usage.services import traces_purge
from usage.tasks import traces_purge_task

RETENTION_DAYS = 30


@pytest.fixture(autouse=True)
def retention(settings):
    settings.TRACE_RETENTION_DAYS = RETENTION_DAYS


def traces_aged(key: ClientKey, *ages: timedelta) -> list[Trace]:
    now = timezone.now()
    return [TraceFactory.create(client_key=key, created_at=now - age) for age in ages]


def remaining_ids() -> set[int]:
    return set(Trace.objects.values_list("id", flat=True))


def test_purge_deletes_only_traces_past_retention(tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    theirs = WalletKeyFactory.create(tenant=outsider[0])
    keep = traces_aged(key, timedelta(days=RETENTION_DAYS - 1), timedelta(minutes=1))
    keep += traces_aged(theirs, timedelta(days=RETENTION_DAYS, minutes=-1))
    traces_aged(key, timedelta(days=RETENTION_DAYS, minutes=1), timedelta(days=400))
    traces_aged(theirs, timedelta(days=RETENTION_DAYS + 1))

    assert traces_purge() == 3

    assert remaining_ids() == {t.pk for t in keep}
    assert ClientKey.objects.filter(pk__in=[key.pk, theirs.pk]).count() == 2


def test_purge_follows_the_retention_setting_and_the_given_now(tenant, settings):
    key = WalletKeyFactory.create(tenant=tenant)
    _, day_old = traces_aged(key, timedelta(days=7, hours=1), timedelta(days=1, hours=1))
    settings.TRACE_RETENTION_DAYS = 7

    assert traces_purge() == 1
    assert remaining_ids() == {day_old.pk}
    assert traces_purge(now=timezone.now() + timedelta(days=6)) == 1
    assert remaining_ids() == set()


def test_purge_works_in_bounded_batches_until_none_is_left(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    old = timedelta(days=RETENTION_DAYS + 1)
    traces_aged(key, *[old] * 7)
    recent = traces_aged(key, timedelta(days=1))

    with CaptureQueriesContext(connection) as queries:
        assert traces_purge(batch_size=3) == 7

    deletes = [q["sql"] for q in queries if q["sql"].startswith('DELETE FROM "proxy_trace"')]
    assert len(deletes) == 3  # 3 + 3 + 1
    assert remaining_ids() == {recent[0].pk}


def test_purge_is_idempotent(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    traces_aged(key, timedelta(days=RETENTION_DAYS + 2))

    assert traces_purge() == 1
    assert traces_purge() == 0
    assert remaining_ids() == set()


def test_the_task_purges_and_is_safe_to_rerun(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    traces_aged(key, timedelta(days=RETENTION_DAYS + 1), timedelta(days=RETENTION_DAYS + 5))
    kept = traces_aged(key, timedelta(hours=1))

    assert traces_purge_task.apply().get() == 2
    assert traces_purge_task() == 0
    assert remaining_ids() == {kept[0].pk}


def test_the_beat_schedule_names_the_task():
    assert settings.CELERY_BEAT_SCHEDULE["purge-traces"]["task"] == traces_purge_task.name


@pytest.mark.postgres
@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (set REDIS_URL)")
def test_a_real_worker_runs_the_purge_task(transactional_db, tenant, tmp_path, monkeypatch):
    key = WalletKeyFactory.create(tenant=tenant)
    traces_aged(key, timedelta(days=RETENTION_DAYS + 1), timedelta(days=RETENTION_DAYS + 3))
    kept = traces_aged(key, timedelta(hours=1))

    # The worker reads TRACE_RETENTION_DAYS from the environment it inherits.
    monkeypatch.setenv("TRACE_RETENTION_DAYS", str(RETENTION_DAYS))
    with worker_running(tmp_path) as worker:
        with worker.publishing():
            traces_purge_task.delay()
        # Until the task has run to its end (it deletes before it returns).
        worker.wait_until(lambda: worker.runs(traces_purge_task, "succeeded") == 1)

    log = worker.log()
    assert remaining_ids() == {kept[0].pk}, log
    assert "traces_purge_task[" in log and "] succeeded in" in log, log
