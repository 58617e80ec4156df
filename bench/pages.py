#!/usr/bin/env python3
"""`make bench-pages`: the reseller dashboard's pages on the usage bench's data (1,000 keys,
1,000,000 traces of one reseller plus 100,000 of other tenants, PostgreSQL).

1. Uses the database ``make bench-usage`` left (``BENCH_USAGE_DATABASE_URL``, default
   ``tollgate_bench_usage``) when it holds the bench reseller, else seeds it the same way
   (bench/usage.py's seeding, rollup pass and tail of unrolled traces; ``--seed-anyway``
   reseeds).
2. Signs the reseller in (a session row, as the sign-in form would write) and counts, in
   this process through Django's test client, the SQL queries each page makes.
3. Serves this checkout (``python -m config.serve``, 2 workers) and requests every page in
   ``PAGES`` sequentially with the session cookie: p50/p99 latency and server CPU per request,
   medians over ``--rounds`` rounds.

Results: ``bench/results/pages-latest.json`` and Markdown on stdout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from run import stop, wait_port  # noqa: E402


def _usage_bench() -> Any:
    """bench/usage.py (seeding and server handling), under another name than the ``usage``
    app it would otherwise shadow."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("usage_bench", HERE / "usage.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["usage_bench"] = module
    spec.loader.exec_module(module)
    return module


usage_bench = _usage_bench()

# name, path ({key}: the busiest key; {quiet}: a quiet one; {last_month}: YYYY-MM)
PAGES: tuple[tuple[str, str], ...] = (
    ("overview", "/dashboard/"),
    ("keys list", "/dashboard/keys/"),
    ("keys list, search", "/dashboard/keys/?q=client+12"),
    ("key page, busiest key", "/dashboard/keys/{key}/"),
    ("key page, quiet key", "/dashboard/keys/{quiet}/"),
    ("key usage 30d, busiest key", "/dashboard/keys/{key}/usage/"),
    ("key requests, busiest key", "/dashboard/keys/{key}/requests/"),
    ("statement, last month", "/dashboard/keys/{key}/statements/{last_month}/"),
    ("wallet", "/dashboard/wallet/"),
    ("earnings", "/dashboard/earnings/"),
)
BENCH_EMAIL = "usage-bench@example.com"


def seeded(database_url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM auth_user u JOIN accounts_tenant t ON t.owner_id = u.id "
                "WHERE u.email = %s", [BENCH_EMAIL]).fetchone()
            traces = conn.execute("SELECT count(*) FROM proxy_trace").fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0]) and bool(traces and traces[0])


def seed(args: argparse.Namespace, database_url: str, redis_url: str) -> None:
    """bench/usage.py's world: accounts, the history, a rollup pass, the unrolled tail."""
    import random

    usage_bench.recreate_database(database_url)
    usage_bench.setup_django(database_url, redis_url)
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    world = usage_bench.seed_accounts(args)
    connections.close_all()
    rng = random.Random(args.seed)
    now = time.time()
    usage_bench.copy_traces(database_url, usage_bench.trace_rows(
        world, rng=rng, count=args.traces, other_count=args.other_traces,
        start=now - args.days * 86_400, end=now - 60, prefix="bench-h-"))
    usage_bench.settle_counters(database_url)
    usage_bench.vacuum(database_url)
    usage_bench.roll_up()
    usage_bench.copy_traces(database_url, usage_bench.trace_rows(
        world, rng=rng, count=900, other_count=100, start=now - 60, end=time.time(), prefix="bench-t-"))
    usage_bench.settle_counters(database_url)
    usage_bench.vacuum(database_url)


def key_ids(database_url: str) -> tuple[int, int, int]:
    """The bench reseller's tenant id, busiest key and a quiet key (70th percentile)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        tenant_id = conn.execute(
            "SELECT t.id FROM accounts_tenant t JOIN auth_user u ON u.id = t.owner_id WHERE u.email = %s",
            [BENCH_EMAIL]).fetchone()[0]
        ranked = conn.execute(
            "SELECT k.id FROM keys_clientkey k LEFT JOIN proxy_trace t ON t.client_key_id = k.id "
            "WHERE k.tenant_id = %s GROUP BY k.id ORDER BY count(t.id) DESC, k.id", [tenant_id]).fetchall()
    return tenant_id, ranked[0][0], ranked[int(len(ranked) * 0.7)][0]


def session_cookie() -> str:
    """A signed-in session of the bench reseller, written as django.contrib.auth.login does."""
    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    user = get_user_model().objects.get(email=BENCH_EMAIL)
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "accounts.backends.EmailBackend"  # the sign-in form's
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return f"{settings.SESSION_COOKIE_NAME}={store.session_key}"


def query_counts(paths: dict[str, str], cookie: str) -> dict[str, Any]:
    """Each page's SQL queries and status, through Django's test client in this process."""
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    logging.getLogger("django.request").setLevel(logging.ERROR)  # a page not built yet: n/a
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = cookie.split("=", 1)[1]
    counts: dict[str, Any] = {}
    for name, path in paths.items():
        with CaptureQueriesContext(connection) as queries:
            response = client.get(path)
        counts[name] = {"status": response.status_code, "queries": len(queries)}
    return counts


def measure(port: int, path: str, cookie: str, pids: list[int], args: argparse.Namespace) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Cookie": cookie, "Accept": "text/html"}

    def get() -> int:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status

    for _ in range(args.warmup):
        get()
    cpu0 = usage_bench.cpu_seconds(pids)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + args.max_seconds
    for _ in range(args.requests):
        t0 = time.perf_counter()
        errors += get() != 200
        latencies.append((time.perf_counter() - t0) * 1000)
        if len(latencies) >= 5 and time.monotonic() > deadline:
            break
    cpu = usage_bench.cpu_seconds(pids) - cpu0
    conn.close()
    latencies.sort()
    return {"n": len(latencies), "errors": errors,
            "p50_ms": round(usage_bench.percentile(latencies, 0.5), 2),
            "p99_ms": round(usage_bench.percentile(latencies, 0.99), 2),
            "cpu_ms_per_req": round(cpu * 1000 / len(latencies), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--other-traces", type=int, default=100_000)
    parser.add_argument("--other-tenants", type=int, default=100)
    parser.add_argument("--other-keys", type=int, default=5)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--seed-anyway", action="store_true", help="reseed even if the data is there")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--max-seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", help="measure only pages whose name contains this")
    args = parser.parse_args()

    database_url = os.environ.get("BENCH_USAGE_DATABASE_URL", usage_bench.DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("BENCH_USAGE_REDIS_URL", usage_bench.DEFAULT_REDIS_URL)
    var = ROOT / "var" / "bench"
    var.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    reused = seeded(database_url) and not args.seed_anyway
    if reused:
        log(f"reusing the seeded database {database_url.rsplit('/', 1)[-1]}")
        usage_bench.setup_django(database_url, redis_url)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    else:
        log("seeding (bench/usage.py's data)")
        seed(args, database_url, redis_url)
        log("seeded")
    tenant_id, busy, quiet = key_ids(database_url)
    today = datetime.now(UTC)
    last_month = (today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    pages = {name: path.format(key=busy, quiet=quiet, last_month=last_month)
             for name, path in PAGES if not args.only or args.only in name}
    cookie = session_cookie()
    queries = query_counts(pages, cookie)
    from django.db import connections

    keys = connections["default"].cursor()
    keys.execute("SELECT count(*) FROM keys_clientkey WHERE tenant_id = %s", [tenant_id])
    key_count = keys.fetchone()[0]
    keys.execute("SELECT count(*) FROM proxy_trace WHERE tenant_id = %s", [tenant_id])
    trace_count = keys.fetchone()[0]
    connections.close_all()
    log(f"queries per page: {queries}")

    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "DEBUG": "0",
           "SECRET_KEY": "bench-only-secret", "TOLLGATE_VAR_DIR": str(var), "LOG_LEVEL": "WARNING"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    server = usage_bench.Server("pages", usage_bench.git("rev-parse", "--short", "HEAD"), ROOT,
                                usage_bench.free_port())
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in pages}
    try:
        usage_bench.serve(server, env, var, args.workers)
        wait_port(server.port, timeout=60)
        pids = usage_bench.tree_pids(server.proc.pid)
        for round_no in range(args.rounds):
            for name, path in pages.items():
                if queries[name]["status"] != 200:
                    continue
                res = measure(server.port, path, cookie, pids, args)
                results[name].append(res)
                log(f"round {round_no + 1} {name}: {res}")
    finally:
        if server.proc is not None:
            stop(server.proc)

    table = {}
    for name, rounds in results.items():
        row: dict[str, Any] = {"path": pages[name], **queries[name]}
        if rounds:
            for field in ("p50_ms", "p99_ms", "cpu_ms_per_req"):
                row[field] = round(statistics.median(r[field] for r in rounds), 2)
            row["errors"] = sum(r["errors"] for r in rounds)
        table[name] = row
    out = {"meta": {"date": today.strftime("%Y-%m-%d %H:%M UTC"), "machine": usage_bench.machine(),
                    "code": server.ref, "keys": key_count, "traces": trace_count, "reused": reused,
                    "workers": args.workers, "rounds": args.rounds, "requests": args.requests},
           "pages": table}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "pages-latest.json").write_text(json.dumps(out, indent=1))
    print(markdown(out))


def markdown(out: dict[str, Any]) -> str:
    meta = out["meta"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']}; `{meta['code']}` with {meta['workers']} workers on "
        f"PostgreSQL + Redis; the reseller has {meta['keys']:,} keys and {meta['traces']:,} traces (plus other "
        f"tenants'). Sequential requests with a signed-in session; medians of {meta['rounds']} rounds of up to "
        f"{meta['requests']} requests. Target: p50 ≤ 150 ms.",
        "",
        "| page | p50 / p99 ms | server CPU ms/req | SQL queries |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in out["pages"].items():
        if "p50_ms" in row:
            lines.append(f"| {name} | {row['p50_ms']:g} / {row['p99_ms']:g} | {row['cpu_ms_per_req']:g} "
                         f"| {row['queries']} |")
        else:
            lines.append(f"| {name} | n/a (HTTP {row['status']}) | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
