#!/usr/bin/env python3
"""`make bench-usage`: the usage reports, the rollup pass and the CSV export at a million
traces, against the same reports on raw traces (the code before rollups), in one run.

1. Recreates a scratch PostgreSQL database (``BENCH_USAGE_DATABASE_URL``, default
   ``tollgate_bench_usage``), migrates it and seeds, with a seeded RNG and ``COPY``: one
   reseller with ``--keys`` client keys and ``--traces`` traces over the last ``--days``
   days (a few busy keys, most quiet; five models at different prices; a handful of tags and
   untagged requests; some errors and refusals; streams with a time to first token; cached
   tokens on some), plus ``--other-tenants`` tenants with ``--other-traces`` traces between
   them. The keys' settled counters are the sums of their traces (the ledger is left alone).
2. Times ``usage.services.usage_roll_up`` over the whole backlog (traces/s), then a
   steady-state pass: ``--steady`` new traces spread over the last minutes, and the pass that
   rolls them. ``--tail`` traces of the last minute stay unrolled (what the beat has not rolled
   yet), so the reports read both sources, as in production.
3. Serves this checkout and, from a detached worktree of ``--baseline-ref`` (the last commit
   whose reports summed raw traces), the baseline (``python -m config.serve``, 2 workers each,
   same venv, same database) and measures every report in ``ENDPOINTS`` sequentially on each,
   alternating the two servers round by round (A, B, A, B): p50/p99 latency and server CPU per
   request; medians over the rounds. An endpoint tries its variants in order and uses the first
   that answers 200; one that answers none on a server is "n/a" there.
4. Streams the CSV export (tenant-wide, else the busiest key's) and records the server
   workers' RSS growth (VmRSS every ~50 ms), rows, bytes and time.

Results: ``bench/results/usage-latest.json`` and Markdown on stdout. Add an endpoint by adding
an ``Endpoint`` to ``ENDPOINTS`` (placeholders: {key}, {model}, {since_12m}, {last_month}).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
sys.path.insert(0, str(HERE))

from run import start, stop, wait_port  # noqa: E402  (bench/run.py: the same server handling)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tollgate_bench_usage"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
MTOK = 1_000_000
USD = 1_000_000_000  # nano-dollars


# ------------------------------------------------------------------------------ endpoints


@dataclass(frozen=True)
class Variant:
    """A spelling of a report. ``expect``: text the answer (its JSON without spaces) must
    contain for the variant to count as supported: a view that ignores an unknown parameter
    answers 200 too, for another window or zone than asked."""

    path: str
    expect: tuple[str, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """A report to measure. ``variants`` are tried in order on each server; the first that
    answers 200 (with what it ``expect``s) is measured, so a newer spelling, e.g. ``?since=``,
    comes first and the code under test falls back to what it supports. ``keys`` names the
    pool of key ids ``{key}`` rotates over: ``busy`` (the 3 busiest keys), ``quiet`` or
    ``sub`` (the 3 busiest sub-accounts)."""

    name: str
    variants: tuple[Variant, ...]
    keys: str | None = None


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("key usage 30d, busy key", (Variant("/api/v1/keys/{key}/usage?window=30d"),), keys="busy"),
    Endpoint("key usage 30d, quiet key", (Variant("/api/v1/keys/{key}/usage?window=30d"),), keys="quiet"),
    Endpoint("key usage 30d, busy key, ?tz=America/New_York",
             (Variant("/api/v1/keys/{key}/usage?window=30d&tz=America/New_York", expect=("America/New_York",)),),
             keys="busy"),
    Endpoint("usage by tag 30d", (Variant("/api/v1/usage/by-tag?window=30d"),)),
    Endpoint("tenant usage 30d", (Variant("/api/v1/usage?window=30d"),)),
    Endpoint("earnings 12 months", (
        Variant("/api/v1/earnings?since={since_12m}", expect=('"since":"{since_12m_date}',)),
        Variant("/api/v1/earnings?window=366d"),
    )),
    Endpoint("requests, busy key, first page", (Variant("/api/v1/keys/{key}/requests"),), keys="busy"),
    Endpoint("requests, busy key, model + status",
             (Variant("/api/v1/keys/{key}/requests?model={model}&status=upstream_error"),), keys="busy"),
    Endpoint("sub-account usage 30d", (Variant("/v1/sub-accounts/{key}/usage?window=30d"),), keys="sub"),
    Endpoint("statement, last month", (Variant("/api/v1/keys/{key}/statements/{last_month}"),), keys="busy"),
)

# The CSV export: tenant-wide first, else the busiest key's (said so in the results).
CSV_VARIANTS: tuple[tuple[str, str], ...] = (
    ("/api/v1/requests?format=csv", "tenant-wide"),
    ("/api/v1/keys/{key}/requests?format=csv", "busiest key only (no tenant-wide export)"),
)


# --------------------------------------------------------------------------------- seeding

# model: (weight, upstream, endpoint, input, output, cached input; dollars per million tokens)
MODELS: dict[str, tuple[int, str, str, str, str, str]] = {
    "gpt-4o-mini": (40, "bench-openai", "/v1/chat/completions", "0.15", "0.60", "0.075"),
    "gpt-4o": (25, "bench-openai", "/v1/chat/completions", "2.50", "10.00", "1.25"),
    "claude-sonnet-4": (20, "bench-anthropic", "/v1/messages", "3.00", "15.00", "0.30"),
    "claude-3-5-haiku": (10, "bench-anthropic", "/v1/messages", "0.80", "4.00", "0.08"),
    "o3-mini": (5, "bench-openai", "/v1/chat/completions", "1.10", "4.40", "0.55"),
}
TAGS = {"": 35, "prod": 30, "staging": 10, "batch": 12, "eval": 8, "support-bot": 5}
# (status, weight, status_code, error_class)
STATUSES = (
    ("ok", 955, 200, ""),
    ("upstream_error", 20, 502, "UpstreamError"),
    ("refused", 15, 429, "RateLimited"),
    ("client_disconnected", 10, 499, ""),
)
# Price ratios (your cost, client price) of marked-up keys; sub-accounts are 1:1.
RATIOS = ((400 * USD, 500 * USD), (200 * USD, 300 * USD), (100 * USD, 200 * USD))
TRACE_COLUMNS = (
    "request_id", "tenant_id", "client_key_id", "tag", "endpoint", "model", "upstream_id",
    "upstream_model", "price_id", "is_stream", "input_tokens", "output_tokens",
    "cached_input_tokens", "cache_write_tokens", "is_usage_estimated", "cost_nanos",
    "client_nanos", "status_code", "status", "error_class", "latency_ms", "ttft_ms", "created_at",
)


@dataclass
class KeyInfo:
    id: int
    tenant_id: int
    ratio_cost: int
    ratio_client: int


@dataclass
class World:
    """What the seed made: the reseller's token and key pools, for the measurements."""

    token: str
    tenant_id: int
    keys: list[KeyInfo]
    other_keys: list[KeyInfo]
    # model -> (upstream id, price id, input, output, cached input nanos per Mtok)
    prices: dict[str, tuple[int, int, int, int, int]]
    pools: dict[str, list[int]] = field(default_factory=dict)
    busiest_model: str = "gpt-4o-mini"


def setup_django(database_url: str, redis_url: str) -> None:
    os.environ.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "DEBUG": "0",
                       "SECRET_KEY": "bench-only-secret", "DJANGO_SETTINGS_MODULE": "config.settings",
                       "LOG_LEVEL": "WARNING"})
    # This script's own directory first would make ``usage`` this file, not the app.
    sys.path[:] = [str(ROOT), *(p for p in sys.path if p and Path(p).resolve() != HERE)]
    import django

    django.setup()


def recreate_database(database_url: str) -> None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(make_conninfo(database_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def nanos(dollars: str) -> int:
    from billing.money import parse_usd

    return parse_usd(dollars)


def seed_accounts(args: argparse.Namespace) -> World:
    """The reseller, its keys, the other tenants and theirs, the upstreams and prices (ORM)."""
    from billing.services import price_set, reseller_open, upstream_save, wallet_get_or_create
    from keys.models import ClientKey

    upstreams = {
        "bench-openai": upstream_save(name="bench-openai", kind="openai", base_url="https://api.openai.com/v1"),
        "bench-anthropic": upstream_save(name="bench-anthropic", kind="anthropic", base_url="https://api.anthropic.com"),
    }
    prices: dict[str, tuple[int, int, int, int, int]] = {}
    for model, (_, upstream, _, pin, pout, pcached) in MODELS.items():
        price = price_set(model=model, upstream=upstreams[upstream], input_per_mtok_nanos=nanos(pin),
                          output_per_mtok_nanos=nanos(pout), cached_input_per_mtok_nanos=nanos(pcached))
        prices[model] = (upstreams[upstream].pk, price.pk, nanos(pin), nanos(pout), nanos(pcached))

    def keys_for(tenant: Any, count: int, label: str) -> list[KeyInfo]:
        wallet = wallet_get_or_create(tenant=tenant)
        now = datetime.now(UTC) - timedelta(days=args.days + 1)
        rows = []
        for i in range(count):
            if i % 10 == 3:  # a sub-account: wallet-funded at 1:1
                funding, (cost, client) = ClientKey.Funding.WALLET, (USD, USD)
            else:
                funding = ClientKey.Funding.WALLET if i % 3 == 0 else ClientKey.Funding.PREPAID
                cost, client = RATIOS[i % len(RATIOS)]
            rows.append(ClientKey(
                tenant=tenant, wallet=wallet, label=f"{label} {i}", prefix=f"tgb{tenant.pk:05d}{i:06d}",
                digest="0" * 64, last4="0000", funding=funding, ratio_cost_nanos=cost,
                ratio_client_nanos=client, requests_per_minute=600, max_concurrency=20,
                created_at=now, updated_at=now,
            ))
        made = ClientKey.objects.bulk_create(rows)
        return [KeyInfo(k.pk, tenant.pk, k.ratio_cost_nanos, k.ratio_client_nanos) for k in made]

    tenant, token = reseller_open(email="usage-bench@example.com", name="Usage bench reseller")
    keys = keys_for(tenant, args.keys, "client")
    other_keys: list[KeyInfo] = []
    for t in range(args.other_tenants):
        other, _ = reseller_open(email=f"other-{t}@example.com", name=f"Other reseller {t}")
        other_keys += keys_for(other, args.other_keys, "other")
    return World(token=token.secret, tenant_id=tenant.pk, keys=keys, other_keys=other_keys, prices=prices)


def trace_rows(world: World, *, rng: random.Random, count: int, other_count: int, start: float, end: float,
               prefix: str) -> Iterator[str]:
    """COPY text lines of ``count`` traces of the reseller and ``other_count`` of the other
    tenants, interleaved, ``created_at`` increasing from ``start`` to ``end`` (epoch seconds).
    The reseller's keys are Zipf-skewed (weight 1/rank^1.1: a few busy keys, most quiet)."""
    total = count + other_count
    if total == 0:
        return
    k = len(world.keys)
    key_weights = [1 / (rank + 1) ** 1.1 for rank in range(k)]
    main_keys = rng.choices(world.keys, weights=key_weights, k=count)
    others = rng.choices(world.other_keys, k=other_count) if world.other_keys else []
    is_main = [True] * count + [False] * len(others)
    rng.shuffle(is_main)
    models = list(MODELS)
    model_picks = rng.choices(models, weights=[MODELS[m][0] for m in models], k=total)
    tags = list(TAGS)
    tag_picks = rng.choices(tags, weights=[TAGS[t] for t in tags], k=total)
    status_picks = rng.choices(STATUSES, weights=[s[1] for s in STATUSES], k=total)
    step = (end - start) / total
    mi = oi = 0
    r = rng.random
    for i in range(total):
        if is_main[i]:
            key = main_keys[mi]
            mi += 1
        else:
            key = others[oi]
            oi += 1
        model = model_picks[i]
        upstream_id, price_id, pin, pout, pcached = world.prices[model]
        status, _, code, error_class = status_picks[i]
        stream = r() < 0.4
        estimated = False
        if status in ("upstream_error", "refused"):
            tin = tout = cached = 0
            latency = int(r() * 800) + (5 if status == "refused" else 200)
        else:
            tin = int(rng.lognormvariate(6.5, 1.0)) + 1
            tout = int(rng.lognormvariate(5.0, 1.0)) + 1
            cached = int(tin * r()) if r() < 0.3 else 0
            if status == "client_disconnected":
                stream, estimated, tout = True, True, tout // 2
            latency = 300 + int(tout * 15 * (0.5 + r()))
        ttft = str(80 + int(r() * 900)) if stream and tin else "\\N"
        cost = ((tin - cached) * pin + cached * pcached + tout * pout) // MTOK
        client = -(-cost * key.ratio_client // key.ratio_cost)  # rounded up: client >= cost
        at = datetime.fromtimestamp(start + (i + r()) * step, UTC).isoformat()
        yield (f"{prefix}{i:09d}\t{key.tenant_id}\t{key.id}\t{tag_picks[i]}\t{MODELS[model][2]}\t{model}\t"
               f"{upstream_id}\t{model}\t{price_id}\t{'t' if stream else 'f'}\t{tin}\t{tout}\t{cached}\t0\t"
               f"{'t' if estimated else 'f'}\t{cost}\t{client}\t{code}\t{status}\t{error_class}\t{latency}\t"
               f"{ttft}\t{at}\n")


def copy_traces(database_url: str, lines: Iterator[str]) -> int:
    import psycopg

    n = 0
    chunk: list[str] = []
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY proxy_trace ({', '.join(TRACE_COLUMNS)}) FROM STDIN") as copy:
            for line in lines:
                chunk.append(line)
                if len(chunk) == 20_000:
                    copy.write("".join(chunk))
                    n += len(chunk)
                    chunk = []
            if chunk:
                copy.write("".join(chunk))
                n += len(chunk)
    return n


def settle_counters(database_url: str) -> None:
    """The keys' settled counters are their traces' sums (what earnings' all-time reads);
    a prepaid key's budget and funding cover them with room to spare."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        conn.execute(
            """
            UPDATE keys_clientkey k SET
              client_spent_nanos = s.client, cost_spent_nanos = s.cost,
              client_budget_nanos = CASE WHEN k.funding = 'prepaid' THEN s.client + 100000000000 ELSE 0 END,
              cost_funded_nanos = CASE WHEN k.funding = 'prepaid'
                THEN ceil((s.client + 100000000000)::numeric * k.ratio_cost_nanos / k.ratio_client_nanos)::bigint
                ELSE 0 END
            FROM (SELECT client_key_id, sum(client_nanos) AS client, sum(cost_nanos) AS cost
                  FROM proxy_trace GROUP BY client_key_id) s
            WHERE k.id = s.client_key_id
            """
        )


def vacuum(database_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def key_pools(database_url: str, world: World) -> None:
    """Busy keys (the 3 busiest), quiet keys (around the 60th-80th percentile of traffic, with
    some) and the 3 busiest sub-accounts; the busiest key's most used model."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        ranked = conn.execute(
            "SELECT k.id, count(t.id), k.funding = 'wallet' AND k.ratio_cost_nanos = k.ratio_client_nanos "
            "FROM keys_clientkey k LEFT JOIN proxy_trace t ON t.client_key_id = k.id "
            "WHERE k.tenant_id = %s GROUP BY k.id ORDER BY 2 DESC, 1", [world.tenant_id]).fetchall()
        busy = [row[0] for row in ranked[:3]]
        n = len(ranked)
        quiet = [ranked[i][0] for i in (int(n * 0.6), int(n * 0.7), int(n * 0.8)) if i < n and ranked[i][1] > 0]
        sub = [row[0] for row in ranked if row[2]][:3]
        model = conn.execute("SELECT model FROM proxy_trace WHERE client_key_id = %s GROUP BY model "
                             "ORDER BY count(*) DESC LIMIT 1", [busy[0]]).fetchone()
        world.pools = {"busy": busy, "quiet": quiet or busy[-1:], "sub": sub}
        world.busiest_model = model[0] if model else "gpt-4o-mini"
        world.pools["counts"] = [ranked[0][1], ranked[int(n * 0.7)][1]]


# ---------------------------------------------------------------------------------- rollup


def roll_up() -> dict[str, Any]:
    from django.db import connections

    from usage.services import usage_roll_up

    cpu, wall = time.process_time(), time.perf_counter()
    result = usage_roll_up()
    seconds = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    connections.close_all()
    return {"traces": result.traces, "buckets": result.buckets, "seconds": round(seconds, 2),
            "traces_per_s": round(result.traces / seconds) if seconds else None,
            "python_cpu_s": round(cpu, 2)}


# ------------------------------------------------------------------------ the two servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(entry))
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, []))
    return pids


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Server:
    label: str
    ref: str
    cwd: Path
    port: int
    proc: Any = None
    imports: str = ""

    def conn(self, timeout: float = 120.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)


def get(conn: http.client.HTTPConnection, path: str, token: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}", "Accept": "*/*"})
    response = conn.getresponse()
    return response.status, response.read()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def fill(template: str, world: World, key: int | None, ctx: dict[str, str]) -> str:
    return template.format(key=key, model=world.busiest_model, **ctx)


def probe(server: Server, endpoint: Endpoint, world: World, ctx: dict[str, str]) -> tuple[str | None, str]:
    """The first variant this server supports, or None and what the last one answered."""
    conn = server.conn()
    said = ""
    key = world.pools[endpoint.keys][0] if endpoint.keys else None
    for variant in endpoint.variants:
        status, body = get(conn, fill(variant.path, world, key, ctx), world.token)
        text = body.decode(errors="replace")
        compact = "".join(text.split())
        missing = [e for e in variant.expect if fill(e, world, key, ctx) not in compact]
        if status == 200 and not missing:
            conn.close()
            return variant.path, ""
        said = f"{status} {text[:100]}" if status != 200 else f"200 without {missing[0]!r}: parameter ignored"
    conn.close()
    return None, said


def measure(server: Server, endpoint: Endpoint, variant: str, world: World, ctx: dict[str, str],
            args: argparse.Namespace) -> dict[str, Any]:
    keys = world.pools[endpoint.keys] if endpoint.keys else [None]
    conn = server.conn()
    for i in range(args.warmup):
        get(conn, fill(variant, world, keys[i % len(keys)], ctx), world.token)
    pids = tree_pids(server.proc.pid)
    cpu0 = cpu_seconds(pids)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + args.max_seconds
    for i in range(args.requests):
        path = fill(variant, world, keys[i % len(keys)], ctx)
        t0 = time.perf_counter()
        status, _ = get(conn, path, world.token)
        latencies.append((time.perf_counter() - t0) * 1000)
        errors += status != 200
        if len(latencies) >= 5 and time.monotonic() > deadline:
            break
    cpu = cpu_seconds(pids) - cpu0
    conn.close()
    latencies.sort()
    return {"n": len(latencies), "errors": errors, "p50_ms": round(percentile(latencies, 0.5), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "cpu_ms_per_req": round(cpu * 1000 / len(latencies), 2)}


def csv_export(server: Server, world: World, ctx: dict[str, str]) -> dict[str, Any]:
    """Stream the export; sample every server process's VmRSS every ~50 ms meanwhile."""
    pids = tree_pids(server.proc.pid)
    for variant, scope in CSV_VARIANTS:
        path = fill(variant, world, world.pools["busy"][0], ctx)
        baseline = {pid: rss_kb(pid) or 0 for pid in pids}
        peak = dict(baseline)
        stop_sampling = threading.Event()

        def sample(peak: dict[int, int] = peak, done: threading.Event = stop_sampling) -> None:
            while not done.is_set():
                for pid in pids:
                    peak[pid] = max(peak[pid], rss_kb(pid) or 0)
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        conn = server.conn(timeout=600)
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {world.token}", "Accept": "text/csv, */*"})
        response = conn.getresponse()
        received = lines = 0
        ttfb = None
        while chunk := response.read(65536):
            if ttfb is None:
                ttfb = time.perf_counter() - t0
            received += len(chunk)
            lines += chunk.count(b"\n")
        seconds = time.perf_counter() - t0
        stop_sampling.set()
        sampler.join()
        conn.close()
        if response.status != 200:
            continue
        growth = {pid: (peak[pid] - baseline[pid]) / 1024 for pid in pids}
        worker = max(growth, key=lambda p: growth[p])
        return {"path": path, "scope": scope, "status": 200, "rows": max(lines - 1, 0), "bytes": received,
                "seconds": round(seconds, 2), "ttfb_ms": round((ttfb or 0) * 1000, 1),
                "rss_growth_mb": round(growth[worker], 1), "rss_baseline_mb": round(baseline[worker] / 1024, 1),
                "rss_peak_mb": round(peak[worker] / 1024, 1)}
    return {"status": "n/a", "scope": "no CSV export answered 200"}


def serve(server: Server, env: dict[str, str], var: Path, workers: int) -> None:
    cmd = [PY, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(server.port), "--workers",
           str(workers), "--log-level", "warning"]
    env = {**env, "PYTHONPATH": str(server.cwd)}
    # Which code the workers import (the baseline's worktree, not this checkout).
    server.imports = subprocess.run([PY, "-c", "import importlib.util; print(importlib.util.find_spec('usage').origin)"], cwd=server.cwd,
                                    env=env, capture_output=True, text=True, check=True).stdout.strip()
    server.proc = start(cmd, env, server.cwd, var / f"usage-{server.label}.log")


# ----------------------------------------------------------------------------------- main


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def git(*argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores ({model or 'unknown CPU'}), Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=1_000_000, help="the reseller's traces")
    parser.add_argument("--keys", type=int, default=1_000, help="the reseller's client keys")
    parser.add_argument("--other-traces", type=int, default=100_000, help="traces of the other tenants")
    parser.add_argument("--other-tenants", type=int, default=100)
    parser.add_argument("--other-keys", type=int, default=5, help="keys per other tenant")
    parser.add_argument("--days", type=int, default=60, help="the traces span the last DAYS days")
    parser.add_argument("--steady", type=int, default=50_000, help="new traces for the steady-state pass")
    parser.add_argument("--tail", type=int, default=1_000, help="traces of the last minute left unrolled")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds (medians over them)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100, help="timed requests per endpoint per round")
    parser.add_argument("--max-seconds", type=float, default=20.0,
                        help="stop an endpoint's timed requests after this (at least 5 requests)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline-ref", default="99d6598",
                        help="the code before rollups (reports summed raw traces)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-csv", action="store_true")
    parser.add_argument("--only", help="measure only endpoints whose name contains this")
    args = parser.parse_args()

    database_url = os.environ.get("BENCH_USAGE_DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("BENCH_USAGE_REDIS_URL", DEFAULT_REDIS_URL)
    var = ROOT / "var" / "bench"
    var.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    recreate_database(database_url)
    subprocess.run(["redis-cli", "-u", redis_url, "flushdb"], check=False, capture_output=True)
    setup_django(database_url, redis_url)
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    world = seed_accounts(args)
    connections.close_all()
    log(f"accounts: 1 + {args.other_tenants} tenants, {len(world.keys)} + {len(world.other_keys)} keys")

    rng = random.Random(args.seed)
    now = time.time()
    day = 86_400
    # The history ends 15 minutes ago; the steady-state traces follow, then the tail.
    t0 = time.perf_counter()
    n = copy_traces(database_url, trace_rows(world, rng=rng, count=args.traces, other_count=args.other_traces,
                                             start=now - args.days * day, end=now - 900, prefix="bench-h-"))
    seed_seconds = time.perf_counter() - t0
    log(f"traces: {n} copied in {seed_seconds:.1f}s ({n / seed_seconds:,.0f}/s)")
    settle_counters(database_url)
    t0 = time.perf_counter()
    vacuum(database_url)
    log(f"vacuum analyze {time.perf_counter() - t0:.1f}s")

    backlog = roll_up()
    log(f"rollup backlog: {backlog}")
    steady_total = args.steady
    steady_main = round(steady_total * args.traces / max(args.traces + args.other_traces, 1))
    copy_traces(database_url, trace_rows(world, rng=rng, count=steady_main, other_count=steady_total - steady_main,
                                         start=now - 900, end=now - 60, prefix="bench-s-"))
    steady = roll_up()
    log(f"rollup steady state ({steady_total} new traces over the last 14 minutes): {steady}")
    tail_main = round(args.tail * args.traces / max(args.traces + args.other_traces, 1))
    copy_traces(database_url, trace_rows(world, rng=rng, count=tail_main, other_count=args.tail - tail_main,
                                         start=now - 60, end=time.time(), prefix="bench-t-"))
    settle_counters(database_url)
    vacuum(database_url)
    key_pools(database_url, world)
    log(f"key pools: {world.pools}")

    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "DEBUG": "0",
           "SECRET_KEY": "bench-only-secret", "TOLLGATE_VAR_DIR": str(var), "LOG_LEVEL": "WARNING",
           "API_THROTTLE_RATE": "100000000/min"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    head = git("rev-parse", "--short", "HEAD")
    servers = [Server("rollups", head, ROOT, free_port())]
    base_dir: Path | None = None
    if not args.no_baseline:
        base_dir = Path(tempfile.mkdtemp(prefix="tollgate-baseline-")) / "tree"
        git("worktree", "add", "--detach", str(base_dir), args.baseline_ref)
        servers.append(Server("raw", git("rev-parse", "--short", args.baseline_ref), base_dir, free_port()))

    today = datetime.now(UTC)
    first_of_month = today.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    since_12m = today - timedelta(days=365)
    ctx = {"since_12m": since_12m.strftime("%Y-%m-%dT%H:%M:%SZ"), "since_12m_date": since_12m.strftime("%Y-%m-%d"),
           "last_month": (first_of_month - timedelta(days=1)).strftime("%Y-%m")}
    endpoints = [e for e in ENDPOINTS if not args.only or args.only in e.name]
    results: dict[str, dict[str, Any]] = {e.name: {} for e in endpoints}
    csv: dict[str, Any] = {}
    try:
        for server in servers:
            serve(server, env, var, args.workers)
        for server in servers:
            wait_port(server.port, timeout=60)
        variants = {(s.label, e.name): probe(s, e, world, ctx) for s in servers for e in endpoints}
        for round_no in range(args.rounds):
            for server in servers:
                for e in endpoints:
                    variant, said = variants[(server.label, e.name)]
                    slot = results[e.name].setdefault(server.label, {"variant": variant, "rounds": []})
                    if variant is None:
                        slot["said"] = said
                        continue
                    res = measure(server, e, variant, world, ctx, args)
                    slot["rounds"].append(res)
                    log(f"round {round_no + 1} {server.label:7} {e.name}: {res}")
        if not args.no_csv:
            for server in servers:
                csv[server.label] = csv_export(server, world, ctx)
                log(f"csv {server.label}: {csv[server.label]}")
    finally:
        for server in servers:
            if server.proc is not None:
                stop(server.proc)
        if base_dir is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_dir)], cwd=ROOT, check=False)
            shutil.rmtree(base_dir.parent, ignore_errors=True)

    for per_server in results.values():
        for slot in per_server.values():
            rounds = slot["rounds"]
            slot.update({name: median([r[name] for r in rounds]) for name in ("p50_ms", "p99_ms", "cpu_ms_per_req")})
            slot["n"] = sum(r["n"] for r in rounds)
            slot["errors"] = sum(r["errors"] for r in rounds)

    meta = {
        "date": today.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "code": {s.label: s.ref for s in servers},
        "imports": {s.label: s.imports for s in servers},
        "sizes": {"traces": args.traces, "keys": args.keys, "other_traces": args.other_traces,
                  "other_tenants": args.other_tenants, "days": args.days, "steady": args.steady,
                  "tail": args.tail},
        "seed_traces_per_s": round(n / seed_seconds),
        "key_traces": {"busiest": world.pools["counts"][0], "quiet (70th percentile)": world.pools["counts"][1]},
        "workers": args.workers, "rounds": args.rounds, "requests": args.requests,
        "max_seconds": args.max_seconds,
    }
    out = {"meta": meta, "rollup": {"backlog": backlog, "steady": steady}, "endpoints": results, "csv": csv}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "usage-latest.json").write_text(json.dumps(out, indent=1))
    print(markdown(out))


def cell(slot: dict[str, Any] | None, name: str) -> str:
    if not slot or slot.get("variant") is None or slot.get(name) is None:
        return "n/a"
    return f"{slot[name]:g}"


def markdown(out: dict[str, Any]) -> str:
    meta, rollup = out["meta"], out["rollup"]
    sizes = meta["sizes"]
    code = meta["code"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']}; Tollgate with {meta['workers']} workers on PostgreSQL + "
        f"Redis; {sizes['traces']:,} traces of one reseller ({sizes['keys']:,} keys; the busiest has "
        f"{meta['key_traces']['busiest']:,} traces, a quiet one {meta['key_traces']['quiet (70th percentile)']:,}) "
        f"and {sizes['other_traces']:,} of {sizes['other_tenants']} other tenants over {sizes['days']} days. "
        f"Rollups: `{code.get('rollups')}`; raw traces: `{code.get('raw', 'not measured')}`. Sequential requests, "
        f"medians of {meta['rounds']} alternating rounds of up to {meta['requests']} timed requests "
        f"(at most {meta['max_seconds']:g} s each).",
        "",
        "| endpoint | rollups p50 / p99 ms | raw p50 / p99 ms | speed-up (p50) | rollups CPU ms/req | raw CPU ms/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, per_server in out["endpoints"].items():
        a, b = per_server.get("rollups"), per_server.get("raw")
        speedup = "n/a"
        if a and b and a.get("p50_ms") and b.get("p50_ms"):
            speedup = f"{b['p50_ms'] / a['p50_ms']:.1f}×"
        lines.append(f"| {name} | {cell(a, 'p50_ms')} / {cell(a, 'p99_ms')} | {cell(b, 'p50_ms')} / {cell(b, 'p99_ms')} "
                     f"| {speedup} | {cell(a, 'cpu_ms_per_req')} | {cell(b, 'cpu_ms_per_req')} |")
    notes = []
    for name, per_server in out["endpoints"].items():
        for label, slot in per_server.items():
            if slot.get("variant") is None:
                notes.append(f"{name} on {label}: n/a ({slot.get('said', '')[:80]})")
            elif slot.get("errors"):
                notes.append(f"{name} on {label}: {slot['errors']} non-200 answers")
            elif len(ENDPOINT_VARIANTS.get(name, ())) > 1:
                notes.append(f"{name} on {label}: `{slot['variant']}`")
    lines += [""] + [f"- {note}" for note in notes]
    backlog, steady = rollup["backlog"], rollup["steady"]
    lines += [
        "",
        f"Rollup pass, backlog: {backlog['traces']:,} traces into {backlog['buckets']:,} bucket rows in "
        f"{backlog['seconds']} s: **{backlog['traces_per_s']:,} traces/s** (target ≥ 5,000; the pass's own "
        f"Python CPU {backlog['python_cpu_s']} s, the rest is PostgreSQL).",
        f"Rollup pass, steady state: {steady['traces']:,} new traces in {steady['seconds']} s "
        f"({steady['traces_per_s']:,} traces/s).",
    ]
    for label, c in out["csv"].items():
        if c.get("status") == 200:
            lines.append(f"CSV export on {label} ({c['scope']}, `{c['path']}`): {c['rows']:,} rows, "
                         f"{c['bytes'] / 1e6:,.1f} MB in {c['seconds']} s (first byte {c['ttfb_ms']} ms); "
                         f"serving worker RSS {c['rss_baseline_mb']} → {c['rss_peak_mb']} MB, "
                         f"**growth {c['rss_growth_mb']} MB** (target ≤ 100).")
        else:
            lines.append(f"CSV export on {label}: n/a ({c['scope']}).")
    return "\n".join(lines)


ENDPOINT_VARIANTS = {e.name: e.variants for e in ENDPOINTS}


if __name__ == "__main__":
    main()
