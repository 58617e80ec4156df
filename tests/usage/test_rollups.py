"""usage.services.usage_roll_up, ``manage.py rollup_usage`` (and ``--check``), the rollup
task, and retention with rollups: every trace is counted into its 15-minute bucket exactly
once, whatever the order, lateness or concurrency of the passes."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import F

from keys.models import ClientKey
from proxy.traces import COLUMNS, TABLE
from tests.keys.factories import WalletKeyFactory
from tests.keys.test_concurrency import run_together, successes
from tests.usage.factories import TraceFactory
from tests.worker import worker_running
from usage.models import (
    ROLLUP_SUMS,
    Trace,
    UsageDay,
    UsageKeyDay,
    UsageKeyMonth,
    UsageModelDay,
    UsageRollup,
    UsageTagDay,
    bucket_ceiling,
    bucket_floor,
)
from usage.services import traces_purge, usage_roll_up
from usage.tasks import traces_purge_task, usage_rollup_task

BUCKET_AT = datetime(2026, 11, 2, 10, 15, tzinfo=UTC)


def rollup_of(key: ClientKey, start: datetime, **natural: str) -> dict[str, int]:
    row = UsageRollup.objects.filter(client_key=key, bucket_start=start, **natural).values(
        *ROLLUP_SUMS
    )
    return dict(row.get())


def test_buckets_are_15_utc_minutes():
    at = datetime(2026, 11, 2, 10, 29, 59, 999_999, tzinfo=UTC)
    assert bucket_floor(at) == BUCKET_AT
    assert bucket_ceiling(at) == BUCKET_AT + timedelta(minutes=15)
    assert bucket_floor(BUCKET_AT) == bucket_ceiling(BUCKET_AT) == BUCKET_AT


def test_a_pass_sums_each_bucket_of_each_key_model_and_tag(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    at = BUCKET_AT + timedelta(minutes=3)
    TraceFactory.create(
        client_key=key, created_at=at, input_tokens=10, output_tokens=20, cost_nanos=7,
        client_nanos=11, cached_input_tokens=3, cache_write_tokens=4, latency_ms=100, ttft_ms=30,
        cache_savings_nanos=5, client_cache_savings_nanos=8,
    )  # fmt: skip
    TraceFactory.create(
        client_key=key, created_at=at + timedelta(minutes=11, seconds=59), input_tokens=1,
        cost_nanos=1_000_000_001, client_nanos=2_000_000_003, latency_ms=5, ttft_ms=None,
        status=Trace.Status.UPSTREAM_ERROR, status_code=502,
        cache_savings_nanos=3_000_000_000, client_cache_savings_nanos=5_000_000_001,
    )  # fmt: skip
    TraceFactory.create(
        client_key=key, created_at=at, status=Trace.Status.CLIENT_DISCONNECTED, status_code=499
    )
    TraceFactory.create(client_key=key, created_at=at, tag="other")
    TraceFactory.create(client_key=key, created_at=at, model="other-model")
    TraceFactory.create(client_key=key, created_at=BUCKET_AT + timedelta(minutes=15))

    assert usage_roll_up().traces == 6

    assert rollup_of(key, BUCKET_AT, model="mock-gpt", tag="") == {
        "request_count": 3,
        "error_count": 1,  # a client that hung up is not an error of the service
        "input_tokens": 11,
        "output_tokens": 20,
        "cached_input_tokens": 3,
        "cache_write_tokens": 4,
        "cost_nanos": 1_000_000_008,
        "client_nanos": 2_000_000_014,
        "latency_ms_sum": 100 + 5 + 120,
        "ttft_ms_sum": 30 + 40,
        "ttft_count": 2,
        "cache_savings_nanos": 3_000_000_005,
        "client_cache_savings_nanos": 5_000_000_009,
    }
    assert UsageRollup.objects.count() == 4
    assert rollup_of(key, BUCKET_AT + timedelta(minutes=15))["request_count"] == 1
    assert not Trace.objects.filter(is_rolled=False).exists()


def test_rerunning_changes_nothing_and_a_late_trace_is_counted_once(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    TraceFactory.create(client_key=key, created_at=BUCKET_AT, client_nanos=5)
    usage_roll_up()
    assert usage_roll_up().traces == 0
    assert rollup_of(key, BUCKET_AT)["client_nanos"] == 5

    # Written after its bucket was rolled (a proxy worker flushing late).
    TraceFactory.create(
        client_key=key, created_at=BUCKET_AT + timedelta(minutes=14), client_nanos=7
    )
    assert usage_roll_up().traces == 1
    assert usage_roll_up().traces == 0
    assert rollup_of(key, BUCKET_AT)["client_nanos"] == 12
    assert rollup_of(key, BUCKET_AT)["request_count"] == 2


def test_a_pass_works_in_batches_until_none_is_left(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    for minute in range(7):
        TraceFactory.create(client_key=key, created_at=BUCKET_AT + timedelta(minutes=minute * 5))

    assert usage_roll_up(batch_size=3, max_batches=1).traces == 3
    assert Trace.objects.filter(is_rolled=False).count() == 4
    assert usage_roll_up(batch_size=3).traces == 4
    assert sum(UsageRollup.objects.values_list("request_count", flat=True)) == 7


def test_a_trace_written_as_the_proxy_writes_it_starts_unrolled(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    written = TraceFactory.create(client_key=key)
    values = [getattr(written, column) for column in COLUMNS]
    written.delete()
    # The proxy's writer names its columns (COPY on PostgreSQL) and is_rolled is not one.
    assert "is_rolled" not in COLUMNS
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} ({', '.join(quote(c) for c in COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join(['%s'] * len(COLUMNS))})",
            values,
        )
    assert Trace.objects.get().is_rolled is False
    assert usage_roll_up().traces == 1


def test_a_trace_from_a_worker_without_the_savings_columns_lands_with_none_saved(tenant):
    """During a rolling deploy a worker running the previous code names the columns it
    knows; the database fills the cache savings with 0 and the pass sums them."""
    key = WalletKeyFactory.create(tenant=tenant)
    written = TraceFactory.create(client_key=key, cached_input_tokens=40)
    older = [c for c in COLUMNS if c not in ("cache_savings_nanos", "client_cache_savings_nanos")]
    values = [getattr(written, column) for column in older]
    written.delete()
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} ({', '.join(quote(c) for c in older)}) "  # noqa: S608
            f"VALUES ({', '.join(['%s'] * len(older))})",
            values,
        )
    landed = Trace.objects.get()
    assert (landed.cache_savings_nanos, landed.client_cache_savings_nanos) == (0, 0)
    assert usage_roll_up().traces == 1
    assert UsageRollup.objects.get().cache_savings_nanos == 0


@pytest.mark.postgres
def test_passes_racing_count_every_trace_once(transactional_db, tenant):
    keys = [WalletKeyFactory.create(tenant=tenant) for _ in range(3)]
    traces = [
        TraceFactory.build(
            client_key=keys[i % 3], created_at=BUCKET_AT + timedelta(seconds=i * 7), client_nanos=i
        )
        for i in range(600)
    ]
    Trace.objects.bulk_create(traces)

    outcomes = run_together(4, lambda _: usage_roll_up(batch_size=25).traces)

    assert sorted(s for s, _ in outcomes) == ["ok"] * 4, outcomes
    assert sum(successes(outcomes)) == 600
    assert sum(UsageRollup.objects.values_list("request_count", flat=True)) == 600
    assert sum(UsageRollup.objects.values_list("client_nanos", flat=True)) == sum(range(600))
    assert not Trace.objects.filter(is_rolled=False).exists()
    call_command("rollup_usage", "--check")


# ----------------------------------------------------------------------------- command


def test_the_command_rolls_up_and_prints_what_it_did(tenant, capsys):
    key = WalletKeyFactory.create(tenant=tenant)
    TraceFactory.create(client_key=key, created_at=BUCKET_AT)
    TraceFactory.create(client_key=key, created_at=BUCKET_AT + timedelta(hours=1))

    call_command("rollup_usage", "--json")
    assert json.loads(capsys.readouterr().out) == {"traces": 2, "buckets": 2}
    call_command("rollup_usage")
    assert capsys.readouterr().out.strip() == "rolled up 0 trace(s) into 0 bucket row(s)"


def test_check_passes_on_honest_rollups_and_fails_on_a_tampered_one(tenant, capsys):
    key = WalletKeyFactory.create(tenant=tenant)
    now = datetime.now(tz=UTC)
    TraceFactory.create(client_key=key, created_at=now - timedelta(hours=2), client_nanos=9)
    TraceFactory.create(client_key=key, created_at=now - timedelta(hours=1), client_nanos=4)
    usage_roll_up()
    TraceFactory.create(client_key=key, created_at=now - timedelta(hours=2))  # not rolled yet
    # A bucket whose traces are past retention (purged) is not checked (its day is).
    gone = bucket_floor(now - timedelta(days=settings.TRACE_RETENTION_DAYS, hours=1))
    UsageRollup.objects.create(
        bucket_start=gone, tenant=tenant, client_key=key, model="gone", request_count=1
    )
    UsageDay.objects.create(
        day=gone.date(), zone="UTC", tenant=tenant, client_key=key, model="gone", request_count=1
    )
    # And the tenant-wide levels that regroup it, as the pass writes them.
    UsageKeyDay.objects.create(
        day=gone.date(), zone="UTC", tenant=tenant, client_key=key, request_count=1
    )
    UsageModelDay.objects.create(
        day=gone.date(), zone="UTC", tenant=tenant, model="gone", request_count=1
    )
    UsageTagDay.objects.create(day=gone.date(), zone="UTC", tenant=tenant, tag="", request_count=1)
    # And the key's month (the pass's rows of this month already have one, or not).
    month, _ = UsageKeyMonth.objects.get_or_create(
        month=gone.date().replace(day=1), tenant=tenant, client_key=key, defaults={"zone": "UTC"}
    )
    UsageKeyMonth.objects.filter(pk=month.pk).update(request_count=F("request_count") + 1)

    call_command("rollup_usage", "--check")
    assert capsys.readouterr().out.strip() == "rollups ok"

    UsageRollup.objects.filter(bucket_start=bucket_floor(now - timedelta(hours=1))).update(
        client_nanos=F("client_nanos") + 1
    )
    # The bucket disagrees with its traces, and its day's row with its 15-minute rows.
    with pytest.raises(CommandError, match="2 bucket"):
        call_command("rollup_usage", "--check", "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    [problem, day] = report["problems"]
    assert (problem["expected"]["client_nanos"], problem["actual"]["client_nanos"]) == (4, 5)
    assert "client_nanos 5 (traces say 4)" in problem["message"]
    assert (day["day"], day["zone"]) == ((now - timedelta(hours=1)).date().isoformat(), "UTC")
    assert day["expected"]["client_nanos"] == day["actual"]["client_nanos"] + 1


@pytest.mark.parametrize("column", ["cache_savings_nanos", "client_cache_savings_nanos"])
def test_check_catches_a_tampered_cache_saving(tenant, capsys, column):
    key = WalletKeyFactory.create(tenant=tenant)
    at = datetime.now(tz=UTC) - timedelta(hours=1)
    TraceFactory.create(
        client_key=key, created_at=at, cache_savings_nanos=1_500, client_cache_savings_nanos=2_500
    )
    usage_roll_up()
    call_command("rollup_usage", "--check")
    assert capsys.readouterr().out.strip() == "rollups ok"
    honest = rollup_of(key, bucket_floor(at))[column]

    UsageRollup.objects.filter(client_key=key).update(**{column: F(column) - 1})

    # The bucket disagrees with its traces, and its day's row with it.
    with pytest.raises(CommandError, match="2 bucket"):
        call_command("rollup_usage", "--check", "--json")
    problems = json.loads(capsys.readouterr().out)["problems"]
    [problem] = [p for p in problems if "bucket_start" in p]
    assert (problem["expected"][column], problem["actual"][column]) == (honest, honest - 1)
    assert f"{column} {honest - 1} (traces say {honest})" in problem["message"]


def test_check_finds_a_rolled_trace_missing_from_its_rollup(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    TraceFactory.create(client_key=key, created_at=datetime.now(tz=UTC), is_rolled=True)
    with pytest.raises(CommandError):
        call_command("rollup_usage", "--check")


# --------------------------------------------------------------------- task, retention


def test_the_task_rolls_up_and_the_beat_schedule_names_it(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    TraceFactory.create(client_key=key)

    assert usage_rollup_task.apply().get() == 1
    assert usage_rollup_task() == 0
    entry = settings.CELERY_BEAT_SCHEDULE["roll-up-usage"]
    assert entry["task"] == usage_rollup_task.name
    assert entry["schedule"] == 60.0


def test_the_purge_rolls_up_first_and_reports_keep_the_figures(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    old = datetime.now(tz=UTC) - timedelta(days=settings.TRACE_RETENTION_DAYS + 1)
    TraceFactory.create(client_key=key, created_at=old, client_nanos=3)

    assert traces_purge() == 1  # rolled up, then deleted
    assert not Trace.objects.exists()
    assert rollup_of(key, bucket_floor(old))["client_nanos"] == 3


@pytest.mark.postgres
def test_the_purge_never_deletes_a_trace_the_pass_could_not_roll(transactional_db, tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    old = datetime.now(tz=UTC) - timedelta(days=settings.TRACE_RETENTION_DAYS + 1)
    held, rolled = (TraceFactory.create(client_key=key, created_at=old) for _ in range(2))
    locked, release = threading.Event(), threading.Event()

    def hold_a_row_lock() -> None:
        # Another transaction holds the trace (as a concurrent pass would): the pass skips it.
        try:
            with transaction.atomic():
                list(Trace.objects.select_for_update().filter(pk=held.pk))
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_a_row_lock)
    holder.start()
    try:
        assert locked.wait(timeout=30)
        assert traces_purge() == 1
    finally:
        release.set()
        holder.join()

    assert list(Trace.objects.values_list("pk", "is_rolled")) == [(held.pk, False)]
    assert rolled.pk not in Trace.objects.values_list("pk", flat=True)
    assert traces_purge() == 1  # the next purge rolls it up, then deletes it
    assert sum(UsageRollup.objects.values_list("request_count", flat=True)) == 2


def test_rollups_stay_unless_their_own_retention_is_set(tenant, settings):
    key = WalletKeyFactory.create(tenant=tenant)
    long_ago = datetime.now(tz=UTC) - timedelta(days=400)
    TraceFactory.create(client_key=key, created_at=long_ago)

    assert traces_purge_task() == 1
    assert UsageRollup.objects.count() == 1
    settings.USAGE_ROLLUP_RETENTION_DAYS = 365
    traces_purge_task()
    assert UsageRollup.objects.count() == 0


# ------------------------------------------------------------------------- real worker


@pytest.mark.postgres
@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (set REDIS_URL)")
def test_the_beat_and_a_real_worker_roll_up_new_traces(transactional_db, tenant, tmp_path):
    key = WalletKeyFactory.create(tenant=tenant)
    for minute in range(5):
        TraceFactory.create(
            client_key=key, created_at=BUCKET_AT + timedelta(minutes=minute), client_nanos=minute
        )

    def all_rolled() -> bool:
        return not Trace.objects.filter(is_rolled=False).exists()

    # The worker embeds the beat (-B), which sends the schedule's tasks to the run's queue.
    with worker_running(
        tmp_path,
        extra_args=("--beat", f"--schedule={tmp_path / 'beat-schedule'}"),
        extra_env={"USAGE_ROLLUP_SECONDS": "1"},
    ) as worker:
        worker.wait_until(all_rolled)
        # One trace more, written after a pass: the next beat's run counts it.
        TraceFactory.create(client_key=key, created_at=BUCKET_AT, client_nanos=100)
        worker.wait_until(all_rolled)

    log = worker.log()
    assert not Trace.objects.filter(is_rolled=False).exists(), log
    assert "usage_rollup_task[" in log and "] succeeded in" in log, log
    rollup = rollup_of(key, BUCKET_AT)
    assert (rollup["request_count"], rollup["client_nanos"]) == (6, 0 + 1 + 2 + 3 + 4 + 100)
    call_command("rollup_usage", "--check")
