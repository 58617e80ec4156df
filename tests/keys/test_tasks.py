"""keys.tasks: the expiry sweep as a task, in-process and on a real Celery worker.

The worker test runs only with PostgreSQL and Redis (``DATABASE_URL`` and ``REDIS_URL``): it
starts ``celery worker`` in a subprocess against the *test* database and a Redis database
of its own, publishes the task with ``.delay()`` and waits for the holds to be released.
The queue's name is unique to the run, so a concurrent run of this suite (another worker
on the same Redis database, pointed at another test database) cannot take the message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from billing.models import Reservation
from billing.money import Usage, parse_usd
from billing.selectors import ledger_mismatches, wallet_for_tenant
from billing.services import wallet_credit
from config.celery import app
from keys.models import ClientKey
from keys.services import key_create
from keys.tasks import reservations_expire_task
from tests.metering import reserve

# A Redis database for tests, away from development workers on the default one.
TEST_BROKER_DB = 15
WORKER_WAIT_SECONDS = 30
WORKER_STOP_SECONDS = 15
WORST = Usage(input_tokens=1_000, output_tokens=4_000)  # $0.009 at the conftest price


def hold_expired_reservations(tenant, price) -> tuple[ClientKey, ClientKey]:
    """One prepaid and one wallet-funded key, each with a hold that expired an hour ago."""
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("100"), reason="test funds")
    prepaid = key_create(
        tenant=tenant,
        actor=None,
        label="prepaid",
        client_budget_nanos=parse_usd("10"),
        your_cost_nanos=parse_usd("6"),
    ).key
    wallet = key_create(tenant=tenant, actor=None, label="wallet", funding="wallet").key
    long_ago = timezone.now() - timedelta(seconds=settings.RESERVATION_TTL_SECONDS, hours=1)
    for key in (prepaid, wallet):
        reserve(key=key, price=price, request_id=f"req-{key.pk}", worst_case=WORST, now=long_ago)
    return prepaid, wallet


def assert_all_released(tenant, keys: tuple[ClientKey, ...]) -> None:
    assert set(Reservation.objects.values_list("status", flat=True)) == {"expired"}
    for key in keys:
        key.refresh_from_db()
        assert (key.client_reserved_nanos, key.cost_reserved_nanos) == (0, 0)
        assert (key.client_spent_nanos, key.cost_spent_nanos) == (0, 0)
    wallet = wallet_for_tenant(tenant=tenant)
    assert (wallet.balance_nanos, wallet.reserved_nanos) == (parse_usd("94"), 0)


def test_the_beat_schedule_names_the_task():
    assert settings.CELERY_BEAT_SCHEDULE["expire-reservations"]["task"] == (
        reservations_expire_task.name
    )


@pytest.mark.usefixtures("books_balance")
def test_the_task_releases_expired_holds_and_is_safe_to_rerun(tenant, price):
    keys = hold_expired_reservations(tenant, price)

    assert reservations_expire_task() == 2
    assert reservations_expire_task() == 0

    assert_all_released(tenant, keys)


# ----------------------------------------------------------------------------- real worker


def worker_database_url() -> str:
    """A DATABASE_URL for the test database this process is using."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db.get("HOST") or "localhost"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{quote(db['NAME'], safe='')}"


def worker_broker_url() -> str:
    return urlsplit(settings.REDIS_URL)._replace(path=f"/{TEST_BROKER_DB}").geturl()


@contextmanager
def celery_worker(
    *,
    database_url: str,
    broker_url: str,
    queue: str,
    log_path: Path,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[Path]:
    """A real ``celery worker`` subprocess; stopped (warm shutdown) on exit."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": broker_url,
        "SECRET_KEY": settings.SECRET_KEY,
        **(extra_env or {}),
    }
    command = [
        str(Path(sys.executable).with_name("celery")),
        "-A",
        "config",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        queue,
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
        *extra_args,
    ]
    with log_path.open("wb") as log:
        worker = subprocess.Popen(  # noqa: S603 - our own fixed command line
            command, cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield log_path
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=WORKER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


@contextmanager
def publishing_to(broker_url: str, queue: str) -> Iterator[None]:
    """Send this process's tasks to ``queue`` on ``broker_url`` (dropping pooled connections)."""
    saved = app.conf.broker_url, app.conf.task_default_queue
    app.close()
    app.conf.broker_url, app.conf.task_default_queue = broker_url, queue
    try:
        yield
    finally:
        app.close()
        app.conf.broker_url, app.conf.task_default_queue = saved


@pytest.mark.postgres
@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (set REDIS_URL)")
def test_a_real_worker_runs_the_expiry_task(transactional_db, tenant, price, tmp_path):
    keys = hold_expired_reservations(tenant, price)
    broker_url = worker_broker_url()
    queue = f"tollgate-test-{uuid.uuid4().hex}"

    with celery_worker(
        database_url=worker_database_url(),
        broker_url=broker_url,
        queue=queue,
        log_path=tmp_path / "worker.log",
    ) as log_path:
        with publishing_to(broker_url, queue):
            reservations_expire_task.delay()
        deadline = time.monotonic() + WORKER_WAIT_SECONDS
        while time.monotonic() < deadline:
            if not Reservation.objects.filter(status=Reservation.Status.HELD).exists():
                break
            time.sleep(0.2)

    broker = redis.Redis.from_url(broker_url)
    broker.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    broker.close()
    log = log_path.read_text(errors="replace")
    assert not Reservation.objects.filter(status=Reservation.Status.HELD).exists(), log
    assert "reservations_expire_task[" in log and "] succeeded in" in log, log
    assert_all_released(tenant, keys)
    assert ledger_mismatches() == []
    call_command("check_ledger")
