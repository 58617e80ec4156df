"""Report latency with and without the daily rollup level (measured, not asserted).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<scratch> \\
        .venv/bin/python bench/usage_days_bench.py seed|measure [--runs N]

``seed`` migrates the scratch database, writes one reseller (time zone Asia/Kolkata) with
1,000 wallet keys and ~1,000,000 traces over the last 60 days (COPY; ~16.7 requests per key
per day at uniform random times; each key uses 3-6 of 8 models, weighted 1, 1/2, 1/3 ...,
and mostly its own one of 4 tags), then rolls them all up with ``usage_roll_up``.
``measure`` times ``key_usage`` (30 d, one key), ``tag_usage`` (30 d), ``tenant_usage``
(30 d) and ``earnings_summary`` (366 d), each the median of ``--runs`` runs, and counts
their SQL queries: with the tenant-wide daily levels (as deployed), with the daily rows
alone (the levels left unread, as before them), and on the 15-minute path (the state set
to "not built" for the run, then restored); it prints the row count of each level.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from accounts.models import Tenant  # noqa: E402
from billing.services import reseller_open  # noqa: E402
from keys.models import ClientKey  # noqa: E402
from usage.models import (  # noqa: E402
    DAY_LEVELS,
    Trace,
    UsageDay,
    UsageDayState,
    UsageRollup,
)
from usage.selectors import (  # noqa: E402
    earnings_summary,
    key_usage,
    tag_usage,
    tenant_usage,
)
from usage.services import usage_roll_up  # noqa: E402
from usage.sums import UsageWindow  # noqa: E402

KEYS = 1_000
DAYS = 60
TRACES = 1_000_000
MODELS = [f"model-{i}" for i in range(8)]
TAGS = ["", "prod", "staging", "batch"]
ZONE = "Asia/Kolkata"
EMAIL = "bench-daily@example.com"


def seed() -> None:
    from tests.keys.factories import WalletKeyFactory

    call_command("migrate", verbosity=0)
    tenant, _ = reseller_open(email=EMAIL)
    tenant.timezone = ZONE
    tenant.save(update_fields=["timezone"])
    keys = [WalletKeyFactory.create(tenant=tenant).pk for _ in range(KEYS)]
    rng = random.Random(7)
    habits = []
    for _ in keys:
        models = rng.sample(MODELS, rng.randint(3, 6))
        habits.append((models, [1 / (i + 1) for i in range(len(models))], rng.choice(TAGS)))
    now = datetime.now(tz=UTC)
    start = now - timedelta(days=DAYS)
    span = (now - start).total_seconds()
    columns = (
        "request_id", "tenant_id", "client_key_id", "tag", "endpoint", "model", "status",
        "status_code", "input_tokens", "output_tokens", "cost_nanos", "client_nanos",
        "latency_ms", "ttft_ms", "created_at", "is_stream", "cached_input_tokens",
        "cache_write_tokens", "is_usage_estimated", "upstream_model", "error_class",
        "is_over_hold", "overrun_cost_nanos",
    )  # fmt: skip
    with connection.cursor() as cursor:
        done = 0
        while done < TRACES:
            buffer = io.StringIO()
            for i in range(done, min(done + 100_000, TRACES)):
                k = rng.randrange(KEYS)
                models, weights, tag = habits[k]
                model = rng.choices(models, weights)[0]
                if rng.random() < 0.15:
                    tag = rng.choice(TAGS)
                at = start + timedelta(seconds=rng.random() * span)
                status = "ok" if rng.random() < 0.97 else "upstream_error"
                cost = rng.randint(1_000, 5_000_000)
                row = (
                    f"bench-{i}", tenant.pk, keys[k], tag, "chat.completions", model, status,
                    200 if status == "ok" else 502, rng.randint(10, 4000), rng.randint(1, 2000),
                    cost, cost * 3 // 2, rng.randint(50, 5000), rng.randint(10, 900),
                    at.isoformat(), "f", 0, 0, "f", "", "", "f", 0,
                )  # fmt: skip
                buffer.write("\t".join(str(v) for v in row) + "\n")
            with cursor.cursor.copy(
                f"COPY {Trace._meta.db_table} ({', '.join(columns)}) FROM STDIN"
            ) as copy:
                copy.write(buffer.getvalue())
            done = min(done + 100_000, TRACES)
            print(f"seeded {done} traces", flush=True)
    began = time.perf_counter()
    result = usage_roll_up(batch_size=20_000)
    print(f"rolled up {result.traces} traces in {time.perf_counter() - began:.1f} s")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def timed(work, runs: int) -> float:
    work()  # warm
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        work()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def queries(work) -> int:
    with CaptureQueriesContext(connection) as captured:
        work()
    return len(captured)


def measure(runs: int) -> None:
    tenant = Tenant.objects.get(timezone=ZONE)
    key = ClientKey.objects.filter(tenant=tenant).order_by("pk").first()
    assert key is not None
    levels = ", ".join(f"{level.__name__} {level.objects.count():,}" for level in DAY_LEVELS)
    print(
        f"rows: traces {Trace.objects.count():,}, 15-minute {UsageRollup.objects.count():,}, "
        f"daily {UsageDay.objects.count():,} (zone {UsageDayState.objects.get(tenant=tenant).zone})"
        f", levels: {levels}"
    )
    now = datetime.now(tz=UTC)
    reports = {
        "key_usage 30d": lambda: key_usage(
            tenant=tenant, key_id=key.pk, since=now - timedelta(days=30), until=now
        ),
        "tag_usage 30d": lambda: tag_usage(
            tenant=tenant, since=now - timedelta(days=30), until=now
        ),
        "tenant_usage 30d": lambda: tenant_usage(
            tenant=tenant, since=now - timedelta(days=30), until=now
        ),
        "earnings_summary 366d": lambda: earnings_summary(
            tenant=tenant, since=now - timedelta(days=366), until=now
        ),
    }
    paths: dict[str, dict[str, tuple[float, int]]] = {}
    paths["levels"] = {n: (timed(w, runs), queries(w)) for n, w in reports.items()}
    daily = UsageWindow._daily
    UsageWindow._daily = lambda self, by: UsageDay  # type: ignore[method-assign]
    try:
        paths["daily rows"] = {n: (timed(w, runs), queries(w)) for n, w in reports.items()}
    finally:
        UsageWindow._daily = daily  # type: ignore[method-assign]
    UsageDayState.objects.filter(tenant=tenant).update(zone="")
    try:
        paths["15-minute"] = {n: (timed(w, runs), queries(w)) for n, w in reports.items()}
    finally:
        UsageDayState.objects.filter(tenant=tenant).update(zone=ZONE)
    print(f"{'report':24}" + "".join(f"{p:>26}" for p in paths))
    for name in reports:
        cells = "".join(
            f"{paths[p][name][0]:>14.1f} ms {paths[p][name][1]:>3} q  " for p in paths
        )
        print(f"{name:24}{cells}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["seed", "measure"])
    parser.add_argument("--runs", type=int, default=7)
    options = parser.parse_args()
    seed() if options.action == "seed" else measure(options.runs)
