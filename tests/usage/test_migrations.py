"""Trace moved from the proxy app to the usage app without moving a row: a database that
holds traces written under the proxy app's model migrates forward and finds every one of
them, field for field, through ``usage.models.Trace``, in the same table with the same
indexes; and the data steps build new rollup levels from the rows already there. Runs on
the configured database, SQLite or PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime
from io import StringIO
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import Tenant
from billing.models import ModelPrice, Upstream
from tests.keys.factories import WalletKeyFactory
from usage.models import Trace, UsageKeyDay, UsageKeyMonth

# The proxy app's last migration before the move.
BEFORE_THE_MOVE = ("proxy", "0002_trace_over_hold")
# The apps' state there, content types included (the proxy app does not depend on them).
STATE_BEFORE = [BEFORE_THE_MOVE, ("contenttypes", "0002_remove_content_type_name")]
# Rolling back to it also unapplies the usage app (its 0001 is where the model arrives).
ROLL_BACK = [BEFORE_THE_MOVE, ("usage", None)]

# The trace indexes at the end of the migrations: the move kept the names the proxy app
# gave them; the lists' two were replaced since (``0005_trace_list_indexes``).
INDEX_NAMES = {
    "usage_trace_key_newest",
    "usage_trace_tenant_newest",
    "proxy_trace_created_489c52_idx",
    "proxy_trace_over_hold",
}
REPLACED_INDEX_NAMES = {"proxy_trace_client__b74298_idx", "proxy_trace_tenant__b232c4_idx"}


def migrate(targets: list[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection)  # its loader sees what is applied now


def migrate_to_the_end() -> None:
    executor = MigrationExecutor(connection)
    migrate(executor.loader.graph.leaf_nodes())


@pytest.fixture
def before_the_move(transactional_db: None) -> Iterator[Any]:
    """The database rolled back to just before the move; the apps' state there. The test
    migrates forward itself; a test that fails before it does is migrated forward here."""
    executor = migrate(ROLL_BACK)
    yield executor.loader.project_state(STATE_BEFORE).apps
    migrate_to_the_end()


# Columns added after the move (the rows written before it have none of them to compare).
ADDED_AFTER_THE_MOVE = {"is_rolled", "cache_savings_nanos", "client_cache_savings_nanos"}


def trace_fields(trace: Any) -> dict[str, Any]:
    return {
        field.attname: getattr(trace, field.attname)
        for field in Trace._meta.concrete_fields
        if field.attname not in ADDED_AFTER_THE_MOVE
    }


def test_traces_written_under_the_proxy_app_are_found_through_usage(
    tenant: Tenant, upstream: Upstream, price: ModelPrice, before_the_move: Any
) -> None:
    old_apps = before_the_move
    with pytest.raises(LookupError):
        old_apps.get_model("usage", "Trace")
    OldTrace = old_apps.get_model("proxy", "Trace")
    assert OldTrace._meta.db_table == "proxy_trace"
    key = WalletKeyFactory.create(tenant=tenant, default_tag="batch")
    written = [
        OldTrace.objects.create(
            request_id="req-over-hold",
            tenant_id=tenant.pk,
            client_key_id=key.pk,
            tag="batch",
            endpoint="chat.completions",
            model="mock-gpt",
            upstream_id=upstream.pk,
            upstream_model="gpt-4o-mini",
            price_id=price.pk,
            is_stream=True,
            input_tokens=1_200,
            output_tokens=4_096,
            cached_input_tokens=300,
            cache_write_tokens=20,
            cost_nanos=9_000_123,
            client_nanos=15_000_205,
            is_over_hold=True,
            overrun_cost_nanos=1_234_567,
            status_code=200,
            status="ok",
            latency_ms=2_345,
            ttft_ms=180,
            created_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        ),
        OldTrace.objects.create(
            request_id="req-refused",
            tenant_id=tenant.pk,
            client_key_id=key.pk,
            endpoint="messages",
            model="claude-x",
            is_usage_estimated=True,
            status_code=402,
            status="refused",
            error_class="insufficient_funds",
            created_at=datetime(2026, 12, 1, 8, 30, tzinfo=UTC),
        ),
    ]
    old_content_type = old_apps.get_model("contenttypes", "ContentType").objects.get(
        app_label="proxy", model="trace"
    )

    migrate_to_the_end()

    found = list(Trace.objects.all())
    assert [t.request_id for t in found] == ["req-refused", "req-over-hold"]  # newest first
    assert [trace_fields(t) for t in reversed(found)] == [trace_fields(t) for t in written]
    assert found[1].client_key == key and found[1].upstream == upstream
    assert list(key.traces.order_by("id").values_list("request_id", flat=True)) == [
        "req-over-hold",
        "req-refused",
    ]
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "proxy_trace")
    assert INDEX_NAMES <= set(constraints)
    assert not REPLACED_INDEX_NAMES & set(constraints)
    ContentType.objects.clear_cache()
    # The same content type: permissions on traces and the admin's history still apply.
    assert ContentType.objects.get_for_model(Trace).pk == old_content_type.pk
    assert not ContentType.objects.filter(app_label="proxy", model="trace").exists()


def test_the_models_and_the_migrations_agree(db: None) -> None:
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_the_keys_months_are_built_from_the_daily_level_already_there(
    transactional_db: None, tenant: Tenant
) -> None:
    migrate([("usage", "0008_trace_failures_index")])
    try:
        keys = [WalletKeyFactory.create(tenant=tenant) for _ in range(2)]
        days = [date(2026, 1, 30), date(2026, 1, 31), date(2026, 2, 1), date(2026, 3, 15)]
        for i, (day, key) in enumerate(itertools.product(days, keys)):
            UsageKeyDay.objects.create(
                tenant=tenant,
                day=day,
                zone="Asia/Kolkata",
                client_key=key,
                request_count=i + 1,
                client_nanos=10**12 + i,
                ttft_count=i,
            )
    finally:
        migrate_to_the_end()

    rows = UsageKeyMonth.objects.order_by("month", "client_key_id").values_list(
        "month", "zone", "client_key_id", "request_count", "client_nanos", "ttft_count"
    )
    assert list(rows) == [
        (date(2026, 1, 1), "Asia/Kolkata", keys[0].pk, 1 + 3, 2 * 10**12 + 0 + 2, 0 + 2),
        (date(2026, 1, 1), "Asia/Kolkata", keys[1].pk, 2 + 4, 2 * 10**12 + 1 + 3, 1 + 3),
        (date(2026, 2, 1), "Asia/Kolkata", keys[0].pk, 5, 10**12 + 4, 4),
        (date(2026, 2, 1), "Asia/Kolkata", keys[1].pk, 6, 10**12 + 5, 5),
        (date(2026, 3, 1), "Asia/Kolkata", keys[0].pk, 7, 10**12 + 6, 6),
        (date(2026, 3, 1), "Asia/Kolkata", keys[1].pk, 8, 10**12 + 7, 7),
    ]
