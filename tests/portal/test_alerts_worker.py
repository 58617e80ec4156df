"""Client alerts on a real Celery worker: the beat's task published to Redis, the worker
claiming on the test database and sending through its own email backend, to files read
here as a client reads their inbox.

Runs only with PostgreSQL and Redis (``DATABASE_URL`` and ``REDIS_URL``), on the harness of
``tests/worker.py``: a ``celery worker`` subprocess on the test database and a queue unique
to the run, which the worker also sends its own tasks to (the check enqueues
each email as a task of its own).
"""

from __future__ import annotations

import pytest
from django.conf import settings

from portal.models import PortalBinding, PortalClient
from portal.tasks import client_alert_send_task, client_alerts_task
from tests.mailbox import inbox, plain_text
from tests.portal.conftest import bound
from tests.portal.test_alerts import acme_reseller, prepaid_key, spend, top_up
from tests.worker import worker_running

PUBLIC_URL = "https://portal.example"


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

    # The emails the check enqueues go to the run's queue too.
    with (
        worker_running(
            tmp_path,
            extra_env={
                "PUBLIC_URL": PUBLIC_URL,
            },
        ) as worker,
        worker.publishing(),
    ):

        def check_runs(count: int) -> None:
            """Publish the beat's task and wait for the worker to have run it ``count``
            times, and every email task it enqueued: as many as its runs returned (the
            worker takes an email task from the queue only after the check's run ends)."""
            client_alerts_task.delay()
            worker.wait_until(
                lambda: (
                    worker.runs(client_alerts_task, "succeeded") == count
                    and worker.runs(client_alert_send_task, "succeeded")
                    == sum(int(n) for n in worker.results(client_alerts_task))
                )
            )

        # Crossing 80 %: one email.
        check_runs(1)
        assert len(inbox(worker.mailbox)) == 1
        assert PortalBinding.objects.get(pk=binding.pk).percent_alerted_at is not None

        # The same crossing seen again: no email, no email task.
        check_runs(2)
        assert len(inbox(worker.mailbox)) == 1
        assert worker.runs(client_alert_send_task, "received") == 1

        # A top-up brings the key back below 80 % ($85 of $200): re-armed, no email.
        top_up(key, "100")
        check_runs(3)
        assert PortalBinding.objects.get(pk=binding.pk).percent_alerted_at is None
        assert len(inbox(worker.mailbox)) == 1

        # The next crossing ($165 of $200): one more.
        spend(key, price, "80")
        check_runs(4)
        messages = inbox(worker.mailbox)
        assert len(messages) == 2
        check_runs(5)
        assert len(inbox(worker.mailbox)) == 2

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
