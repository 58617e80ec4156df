"""keys.tasks: the expiry sweep as a task, in-process and on a real Celery worker.

The worker test runs only with PostgreSQL and Redis (``DATABASE_URL`` and ``REDIS_URL``), on
the harness of ``tests/worker.py``: it publishes the task with ``.delay()`` and waits for the
worker to have run it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from billing.models import Reservation
from billing.money import Usage, parse_usd
from billing.selectors import ledger_mismatches, wallet_for_tenant
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.services import key_create
from keys.tasks import reservations_expire_task
from tests.metering import reserve
from tests.worker import worker_running

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


@pytest.mark.postgres
@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (set REDIS_URL)")
def test_a_real_worker_runs_the_expiry_task(transactional_db, tenant, price, tmp_path):
    keys = hold_expired_reservations(tenant, price)

    with worker_running(tmp_path) as worker:
        with worker.publishing():
            reservations_expire_task.delay()
        # Until the task has run to its end (the holds are released inside it, before it
        # returns and its success is logged).
        worker.wait_until(lambda: worker.runs(reservations_expire_task, "succeeded") == 1)

    log = worker.log()
    assert not Reservation.objects.filter(status=Reservation.Status.HELD).exists(), log
    assert "reservations_expire_task[" in log and "] succeeded in" in log, log
    assert_all_released(tenant, keys)
    assert ledger_mismatches() == []
    call_command("check_ledger")
