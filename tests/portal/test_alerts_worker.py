"""Client alerts on a real Celery worker: the beat's task published to Redis, the worker
claiming on the test database and sending through its own email backend, to files read
here as a client reads their inbox.

Runs only with PostgreSQL and Redis (``DATABASE_URL`` and ``REDIS_URL``), on the harness of
``tests/keys/test_tasks.py``: a ``celery worker`` subprocess on the test database and a
queue unique to the run, which the worker also sends its own tasks to (the check enqueues
each email as a task of its own).
"""

from __future__ import annotations

import email
import re
import time
import uuid
from collections.abc import Callable
from email import policy
from pathlib import Path

import pytest
import redis
from django.conf import settings

from portal.models import PortalBinding, PortalClient
from portal.tasks import client_alerts_task
from tests.keys.test_tasks import (
    WORKER_WAIT_SECONDS,
    celery_worker,
    publishing_to,
    worker_broker_url,
    worker_database_url,
)
from tests.portal.conftest import bound
from tests.portal.test_alerts import acme_reseller, prepaid_key, spend, top_up

PUBLIC_URL = "https://portal.example"
# Django's file email backend ends each message with a line of 79 dashes.
MESSAGE_END = "\n" + "-" * 79 + "\n"


def inbox(mailbox: Path) -> list[email.message.EmailMessage]:
    """Every message the worker's file backend wrote, oldest file first.

    By the time each file was written: the backend names a file by the second it opened it
    and a number of its own, so two files of the same second would sort by chance.
    """
    messages = []
    for path in sorted(
        mailbox.glob("*.log"), key=lambda path: (path.stat().st_mtime_ns, path.name)
    ):
        for raw in path.read_text().split(MESSAGE_END):
            if raw.strip():
                messages.append(email.message_from_string(raw, policy=policy.default))
    return messages  # type: ignore[return-value]


def plain_text(message: email.message.EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def runs(log_path: Path, task: str, what: str) -> int:
    """How many times the worker's log says ``task`` was ``what`` (received, succeeded)."""
    return len(re.findall(rf"portal\.tasks\.{task}\[[0-9a-f-]+\] {what}", log_path.read_text()))


def wait_until(condition: Callable[[], bool], log_path: Path) -> None:
    deadline = time.monotonic() + WORKER_WAIT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(log_path.read_text(errors="replace"))


@pytest.mark.postgres
@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (set REDIS_URL)")
@pytest.mark.usefixtures("books_balance")
def test_a_real_worker_sends_one_email_per_crossing_and_a_top_up_rearms_it(
    transactional_db, make_reseller, price, tmp_path
):
    acme = acme_reseller(make_reseller)
    key = prepaid_key(acme, budget="100", cost="60")
    client = PortalClient.objects.create(email="client@example.com")
    binding = bound(client, key, alert_percent=80)
    spend(key, price, "85")  # 85 % of the budget; cost $51
    mailbox = tmp_path / "mailbox"
    broker_url = worker_broker_url()
    queue = f"tollgate-test-{uuid.uuid4().hex}"

    with (
        celery_worker(
            database_url=worker_database_url(),
            broker_url=broker_url,
            queue=queue,
            log_path=tmp_path / "worker.log",
            extra_env={
                "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                "EMAIL_FILE_PATH": str(mailbox),
                "PUBLIC_URL": PUBLIC_URL,
                # The emails the check enqueues go to this run's queue too.
                "CELERY_TASK_DEFAULT_QUEUE": queue,
            },
        ) as log_path,
        publishing_to(broker_url, queue),
    ):

        def check_runs(count: int) -> None:
            """Publish the beat's task and wait for the worker to have run it ``count``
            times, and every email task it enqueued."""
            client_alerts_task.delay()
            wait_until(
                lambda: (
                    runs(log_path, "client_alerts_task", "succeeded") == count
                    and runs(log_path, "client_alert_send_task", "received")
                    == runs(log_path, "client_alert_send_task", "succeeded")
                ),
                log_path,
            )

        # Crossing 80 %: one email.
        check_runs(1)
        assert len(inbox(mailbox)) == 1
        assert PortalBinding.objects.get(pk=binding.pk).percent_alerted_at is not None

        # The same crossing seen again: no email, no email task.
        check_runs(2)
        assert len(inbox(mailbox)) == 1
        assert runs(log_path, "client_alert_send_task", "received") == 1

        # A top-up brings the key back below 80 % ($85 of $200): re-armed, no email.
        top_up(key, "100")
        check_runs(3)
        assert PortalBinding.objects.get(pk=binding.pk).percent_alerted_at is None
        assert len(inbox(mailbox)) == 1

        # The next crossing ($165 of $200): one more.
        spend(key, price, "80")
        check_runs(4)
        messages = inbox(mailbox)
        assert len(messages) == 2
        check_runs(5)
        assert len(inbox(mailbox)) == 2

    broker = redis.Redis.from_url(broker_url)
    broker.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    broker.close()

    first, second = messages
    for message in messages:
        # (the header is folded after "Subject:", which leaves a space in front)
        assert (
            message["Subject"].strip() == "Acme AI: your key “Client A” has used 80 % of its budget"
        )
        assert message["From"] == "Acme AI <noreply@localhost>"
        assert message["To"] == "client@example.com"
        assert message["Reply-To"] == "help@acme.example"
        body = plain_text(message)
        assert f"{PUBLIC_URL}/portal/keys/{key.pk}/" in body
        assert "$60.00" not in body and "$51.00" not in body
    assert "Budget: $100.00\nSpent: $85.00\nRemaining: $15.00" in plain_text(first)
    assert "Budget: $200.00\nSpent: $165.00\nRemaining: $35.00" in plain_text(second)
