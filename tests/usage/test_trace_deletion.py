"""Deleting a key's traces on request (``DELETE /api/v1/keys/{id}/requests``,
``usage.services.key_traces_delete``): the traces go, rolled up first, and every report
keeps its figures; the rollup audit still passes."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from tests.keys.factories import WalletKeyFactory
from tests.usage.conftest import BY_TAG, EARNINGS, KEYS, requests_url, trace, usage_url
from tests.usage.factories import TraceFactory
from usage import services
from usage.models import Trace, TraceDeletion, UsageRollup, bucket_floor
from usage.selectors import key_usage, rollups_audit
from usage.services import key_traces_delete, usage_roll_up

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")

USD = 10**9


def reports(api: Any, key_id: int) -> dict[str, Any]:
    """Every report that counts the key, without the window's own (moving) edges."""
    month = f"{timezone.now():%Y-%m}"
    shown = {
        "usage": api.get(usage_url(key_id)).json(),
        "usage-90d": api.get(usage_url(key_id), {"window": "90d"}).json(),
        "by-tag": api.get(BY_TAG).json(),
        "earnings": api.get(EARNINGS).json(),
        "statement": api.get(f"{KEYS}/{key_id}/statements/{month}").json(),
    }
    for report in shown.values():
        for edge in ("since", "until"):
            report.pop(edge, None)
    return shown


def test_deleting_a_keys_requests_keeps_every_report(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant, default_tag="prod")
    other = WalletKeyFactory.create(tenant=tenant)
    now = timezone.now()
    # In quarter-hours that have ended and that no window edge cuts (see key_traces_delete).
    for hours, model in ((1, "mock-gpt"), (2, "mock-claude"), (50, "mock-gpt"), (24 * 40, "x")):
        trace(key, now - timedelta(hours=hours, minutes=7), model=model, client_nanos=USD)
    trace(key, now - timedelta(hours=3), cost_nanos=USD, client_nanos=3 * USD, tag="")
    trace(key, now - timedelta(hours=4), is_rolled=False)  # the last pass has not run yet
    kept = trace(other, now - timedelta(hours=1), request_id="other-key")
    usage_roll_up()
    trace(key, now - timedelta(hours=5), client_nanos=USD)  # written since: unrolled
    before = reports(api, key.pk)

    response = api.delete(requests_url(key.pk))

    assert (response.status_code, response.json()) == (200, {"deleted": 7})
    assert not Trace.objects.filter(client_key=key).exists()
    assert api.get(requests_url(key.pk)).json()["count"] == 0
    assert list(Trace.objects.values_list("request_id", flat=True)) == [kept.request_id]
    assert reports(api, key.pk) == before
    assert before["usage"]["summary"]["requests"] == 6
    assert rollups_audit() == []
    call_command("rollup_usage", "--check")
    deletion = TraceDeletion.objects.get()
    assert (deletion.client_key, deletion.deleted_count) == (key, 7)
    assert deletion.actor == tenant.owner
    assert deletion.finished_at is not None
    assert deletion.traces_before == bucket_floor(deletion.requested_at) + timedelta(minutes=15)


def test_a_whole_quarter_hour_window_is_unchanged_even_for_the_current_quarter(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    now = timezone.now()
    trace(key, now - timedelta(seconds=1), client_nanos=USD)
    since = bucket_floor(now) - timedelta(hours=1)
    until = bucket_floor(now) + timedelta(minutes=15)
    before = key_usage(tenant=tenant, key_id=key.pk, since=since, until=until)

    key_traces_delete(tenant=tenant, key_id=key.pk, actor=None)

    assert key_usage(tenant=tenant, key_id=key.pk, since=since, until=until) == before
    assert before.summary.client_nanos == USD


def test_a_trace_written_during_the_deletion_is_not_deleted_unrolled(tenant, outsider, monkeypatch):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(key, timezone.now() - timedelta(hours=1), client_nanos=USD)
    late: list[Trace] = []

    def roll_up_then_a_trace_arrives(**options: Any) -> Any:
        result = usage_roll_up(**options)
        late.append(trace(key, timezone.now() - timedelta(minutes=20), client_nanos=2 * USD))
        return result

    monkeypatch.setattr(services, "usage_roll_up", roll_up_then_a_trace_arrives)

    deletion = key_traces_delete(tenant=tenant, key_id=key.pk, actor=None)

    assert deletion.deleted_count == 1
    assert list(Trace.objects.all()) == late
    assert not late[0].is_rolled
    usage_roll_up()
    assert rollups_audit() == []
    total = UsageRollup.objects.filter(client_key=key).values_list("client_nanos", flat=True)
    assert sum(total) == 3 * USD


def test_another_tenants_key_is_404_and_nothing_is_deleted(api, outsider_api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(key)

    response = outsider_api.delete(requests_url(key.pk))

    assert response.status_code == 404
    assert Trace.objects.count() == 1
    assert not TraceDeletion.objects.exists()
    assert api.delete(requests_url(999_999)).status_code == 404


def test_a_deleted_keys_requests_can_be_deleted(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(key)
    key.status = key.Status.DELETED
    key.save()

    assert api.delete(requests_url(key.pk)).json() == {"deleted": 1}
    assert api.delete(requests_url(key.pk)).json() == {"deleted": 0}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_deletion_beside_rollup_passes_and_new_traces_loses_no_request(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    start = timezone.now() - timedelta(minutes=30)
    TraceFactory.create_batch(300, client_key=key, created_at=start, client_nanos=USD)
    written = 300
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_writing() -> None:
        nonlocal written
        try:
            while not stop.is_set():
                TraceFactory.create(client_key=key, created_at=timezone.now(), client_nanos=USD)
                written += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    def keep_rolling() -> None:
        try:
            while not stop.is_set():
                usage_roll_up(batch_size=7)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=keep_writing), threading.Thread(target=keep_rolling)]
    for thread in threads:
        thread.start()
    try:
        deleted = sum(
            key_traces_delete(tenant=tenant, key_id=key.pk, actor=None, batch_size=50).deleted_count
            for _ in range(3)
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert errors == []
    usage_roll_up()
    counted = sum(
        UsageRollup.objects.filter(client_key=key).values_list("request_count", flat=True)
    )
    assert counted == written
    assert deleted + Trace.objects.filter(client_key=key).count() == written
    assert deleted >= 300
    assert rollups_audit() == []
