"""The reseller's alerts on a real Celery worker: the beat's check published to Redis, the
worker claiming on the test database, sending email through its own file backend (read
here as a reseller reads their inbox) and POSTing the signed webhook to a receiver this
test runs on 127.0.0.1 (allowed by ALERT_WEBHOOK_ALLOW_PRIVATE=1 in the worker's
environment), retrying with the backoff its row records.

Runs only with PostgreSQL and Redis (``DATABASE_URL`` and ``REDIS_URL``), on the harness of
``tests/worker.py``: a ``celery worker`` subprocess on the test database and a queue unique
to the run, which the worker also sends its own tasks to (the check enqueues
each delivery as a task of its own, and a delivery its retries).
"""

from __future__ import annotations

import json
import re

import pytest
from django.conf import settings

from alerts.models import AlertDelivery, AlertKind, AlertState
from alerts.services import alert_settings_update
from alerts.tasks import alert_delivery_task, alerts_check_task
from alerts.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER
from tests.alerts.conftest import (
    OWNER_EMAIL,
    Receiver,
    acme_reseller,
    prepaid_key,
    spend,
    top_up,
    verify,
)
from tests.mailbox import inbox, plain_text
from tests.worker import worker_running

PUBLIC_URL = "https://tollgate.example"
# Small waits for the test: 1 s × 2^(n−1), at most 2 s, drawn between half and all of it.
MAX_RETRIES = 2
BACKOFF_SECONDS = 1
BACKOFF_MAX_SECONDS = 2


def open_deliveries() -> int:
    return AlertDelivery.objects.filter(status__in=["pending", "retrying"]).count()


@pytest.mark.postgres
@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (set REDIS_URL)")
@pytest.mark.usefixtures("books_balance")
def test_a_real_worker_sends_one_email_and_one_signed_webhook_per_crossing_and_retries_a_failing_one(
    transactional_db, make_reseller, price, tmp_path, receiver: Receiver, settings
):
    settings.ALERT_WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on 127.0.0.1
    acme = acme_reseller(make_reseller)
    secret = alert_settings_update(
        tenant=acme, actor=None, changes={"webhook_url": receiver.url}
    ).new_secret
    assert secret is not None
    key = prepaid_key(acme)  # $100 budget for $60
    spend(key, price, "85")

    # The deliveries the check enqueues (and their retries) go to the run's queue too.
    with (
        worker_running(
            tmp_path,
            extra_env={
                "PUBLIC_URL": PUBLIC_URL,
                "FIELD_ENCRYPTION_KEY": settings.FIELD_ENCRYPTION_KEY,
                "ALERT_WEBHOOK_ALLOW_PRIVATE": "1",
                "ALERT_DELIVERY_MAX_RETRIES": str(MAX_RETRIES),
                "ALERT_DELIVERY_BACKOFF_SECONDS": str(BACKOFF_SECONDS),
                "ALERT_DELIVERY_BACKOFF_MAX_SECONDS": str(BACKOFF_MAX_SECONDS),
            },
        ) as worker,
        worker.publishing(),
    ):

        def check_runs(count: int) -> None:
            """Publish the beat's task, wait for the worker to have run it ``count`` times
            and for every delivery to have settled (sent or failed)."""
            alerts_check_task.delay()
            worker.wait_until(
                lambda: (
                    worker.runs(alerts_check_task, "succeeded") == count and open_deliveries() == 0
                )
            )

        # Crossing 80 %: one email, one signed webhook.
        check_runs(1)
        messages = inbox(worker.mailbox)
        assert len(messages) == 1
        assert len(receiver.requests) == 1
        (request,) = receiver.requests
        assert verify(secret, request["body"], request["headers"][SIGNATURE_HEADER])
        body = json.loads(request["body"])
        assert request["headers"][EVENT_ID_HEADER] == body["id"]
        assert (body["type"], body["tenant"]) == ("key.threshold_reached", acme.pk)
        assert (body["data"]["threshold_percent"], body["data"]["used"]) == (80, "85.00")
        assert set(AlertDelivery.objects.values_list("status", flat=True)) == {"sent"}

        # The same crossing seen again: nothing, not even a delivery task.
        check_runs(2)
        assert len(inbox(worker.mailbox)) == 1 and len(receiver.requests) == 1
        assert worker.runs(alert_delivery_task, "received") == 2

        # A top-up brings the key back under 80 % ($85 of $200): re-armed, nothing sent.
        top_up(key, "100")
        check_runs(3)
        state = AlertState.objects.get(key=key, kind=AlertKind.KEY_USAGE, threshold=80)
        assert state.crossed_at is None
        assert len(inbox(worker.mailbox)) == 1 and len(receiver.requests) == 1

        # The next crossing ($165 of $200), the endpoint failing: the email goes, the
        # webhook is tried 1 + MAX_RETRIES times with growing waits, then failed.
        receiver.status = 500
        spend(key, price, "80")
        check_runs(4)
        assert len(inbox(worker.mailbox)) == 2
        assert len(receiver.requests) == 1 + 1 + MAX_RETRIES
        failed = AlertDelivery.objects.get(channel="webhook", status="failed")
        assert (failed.attempts, failed.http_status) == (1 + MAX_RETRIES, 500)
        assert failed.last_error == "The webhook answered HTTP 500."
        tries = [r["at"] for r in receiver.requests[1:]]
        waits = [later - earlier for earlier, later in zip(tries, tries[1:], strict=False)]
        # Jittered: at least half of 1 s, then of 2 s (the cap).
        assert waits[0] >= BACKOFF_SECONDS / 2 and waits[1] >= BACKOFF_MAX_SECONDS / 2, waits
        assert (
            len(re.findall(r"alert_delivery_task\[[0-9a-f-]+\] retry: Retry in", worker.log()))
            == MAX_RETRIES
        )
        # Each try of the one alert carried the same event id.
        assert len({r["headers"][EVENT_ID_HEADER] for r in receiver.requests[1:]}) == 1

        # Crossing seen again: the failed delivery is not tried again.
        check_runs(5)
        assert len(receiver.requests) == 1 + 1 + MAX_RETRIES
        assert len(inbox(worker.mailbox)) == 2

    first, second = inbox(worker.mailbox)
    for message in (first, second):
        assert message["Subject"].strip() == "Key “Client A” has used 80 % of its budget"
        assert message["To"] == OWNER_EMAIL
        assert f"{PUBLIC_URL}/dashboard/keys/{key.pk}/" in plain_text(message)
    assert "Client budget: $100.00\nSpent: $85.00\nRemaining: $15.00" in plain_text(first)
    assert "Client budget: $200.00\nSpent: $165.00\nRemaining: $35.00" in plain_text(second)
