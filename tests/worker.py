"""What every real-worker test shares: a ``celery worker`` subprocess on the *test* database
and a Redis database of its own, a queue unique to the run, this process publishing to it,
and the worker's log read for its tasks' runs (its mail is read with ``tests/mailbox.py``).

These tests run only with PostgreSQL and Redis (``DATABASE_URL`` and ``REDIS_URL``). The
queue's name is unique to the run, so a concurrent run of the suite (another worker on the
same Redis database, pointed at another test database) cannot take its messages.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import redis
from celery import Task
from django.conf import settings
from django.db import connection

from config.celery import app
from tests.mailbox import file_email_env

# A Redis database for tests, away from development workers on the default one.
TEST_BROKER_DB = 15
WORKER_WAIT_SECONDS = 30
WORKER_STOP_SECONDS = 15


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
def run_queue(broker_url: str) -> Iterator[str]:
    """A queue of this run's own; deleted from the broker afterwards (also on a failure)."""
    queue = f"tollgate-test-{uuid.uuid4().hex}"
    try:
        yield queue
    finally:
        broker = redis.Redis.from_url(broker_url)
        broker.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        broker.close()


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


def _drop_connections() -> None:
    """Forget the app's broker connections, so the next task is published on the broker
    configured now. ``app.close()`` leaves the producer pool, which an eager task (or an
    earlier publish) may have made on another broker: dropped as well."""
    app.close()
    app.amqp._producer_pool = None


@contextmanager
def publishing_to(broker_url: str, queue: str) -> Iterator[None]:
    """Send this process's tasks to ``queue`` on ``broker_url`` (dropping pooled connections,
    on the way in and out)."""
    saved = app.conf.broker_url, app.conf.task_default_queue
    _drop_connections()
    app.conf.broker_url, app.conf.task_default_queue = broker_url, queue
    try:
        yield
    finally:
        _drop_connections()
        app.conf.broker_url, app.conf.task_default_queue = saved


@dataclass(frozen=True)
class Worker:
    """A running worker: the broker and queue it reads, the log it writes, the folder its
    email goes to as files (read with ``tests.mailbox.inbox``)."""

    broker_url: str
    queue: str
    log_path: Path
    mailbox: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @contextmanager
    def publishing(self) -> Iterator[None]:
        """This process's tasks go to the worker's queue."""
        with publishing_to(self.broker_url, self.queue):
            yield

    def runs(self, task: Task, what: str) -> int:
        """How many times the log says ``task`` was ``what`` (received, succeeded)."""
        return len(re.findall(rf"{re.escape(task.name)}\[[0-9a-f-]+\] {what}", self.log()))

    def results(self, task: Task) -> list[str]:
        """What each run of ``task`` returned, as the log shows it, oldest first."""
        pattern = rf"{re.escape(task.name)}\[[0-9a-f-]+\] succeeded in [0-9.e-]+s: (.*)"
        return re.findall(pattern, self.log())

    def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait for ``condition`` (up to ``WORKER_WAIT_SECONDS``); failing, show the log."""
        deadline = time.monotonic() + WORKER_WAIT_SECONDS
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.2)
        raise AssertionError(self.log())


@contextmanager
def worker_running(
    tmp_path: Path, *, extra_args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None
) -> Iterator[Worker]:
    """A real worker on this test's database and a queue of the run's own, to which it also
    sends the tasks it enqueues itself (a check's deliveries, the beat's runs); its log and
    its mailbox in ``tmp_path``. The queue is deleted after."""
    broker_url = worker_broker_url()
    mailbox = tmp_path / "mailbox"
    with (
        run_queue(broker_url) as queue,
        celery_worker(
            database_url=worker_database_url(),
            broker_url=broker_url,
            queue=queue,
            log_path=tmp_path / "worker.log",
            extra_args=extra_args,
            extra_env={
                "CELERY_TASK_DEFAULT_QUEUE": queue,
                **file_email_env(mailbox),
                **(extra_env or {}),
            },
        ) as log_path,
    ):
        yield Worker(broker_url=broker_url, queue=queue, log_path=log_path, mailbox=mailbox)
