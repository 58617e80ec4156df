#!/usr/bin/env python3
"""`make bench`: Tollgate's proxy against the fast mock upstream, side by side with the
mock measured directly, in one run.

Starts the mock upstream (granian, 1 worker), Tollgate (``config.serve``, 2 workers) and
the *floor* (``passthrough.py``: a bare pass-through served the same way) on loopback, on
PostgreSQL + Redis (``BENCH_DATABASE_URL`` / ``BENCH_REDIS_URL``; a scratch
database ``tollgate_bench`` is recreated), seeds a reseller, an upstream, a price and a key
with limits high enough not to interfere, then runs each scenario ``--runs`` times
(direct, through the floor, then through Tollgate) and reports medians:

* non-streaming chat at concurrency 1 and 50,
* 20-chunk streaming chat at concurrency 1 and 50,
* 1,000 concurrent paced streams (100 ms to the first token, then 20 chunks 10 ms apart).

Server CPU per request is read from /proc for the whole server process tree (the steadiest
figure on a small, shared machine). Results go to ``bench/results/latest.json`` and a
Markdown table on stdout (paste it into the README with the date and machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
GRANIAN = str(Path(PY).parent / "granian")
MOCK_PORT = 9100
PROXY_PORT = 8100
FLOOR_PORT = 8200


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")


def start(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total_kb, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
        stack.extend(children.get(pid, []))
    return total_kb / 1024


def load(base: str, key: str, *, concurrency: int, requests: int, stream: bool, model: str,
         watch: dict[str, int], duration: float) -> dict:
    cmd = [PY, str(HERE / "load.py"), "--base", base, "--key", key, "--model", model,
           "-c", str(concurrency), "-n", str(requests), "--duration", str(duration),
           "--warmup", str(min(200, max(concurrency, 20))), "--req-timeout", "60"]
    if stream:
        cmd.append("--stream")
    for name, pid in watch.items():
        cmd += ["--watch", f"{name}={pid}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)  # noqa: S603
    return json.loads(out.stdout)


def service_pids(database_url: str, redis_url: str) -> dict[str, int]:
    """PostgreSQL's postmaster and the Redis server, when they run on this machine: their CPU
    per request is reported beside the server's (the database's share of the work)."""
    import psycopg
    import redis

    pids: dict[str, int] = {}
    with psycopg.connect(database_url) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    try:
        stat = Path(f"/proc/{backend}/stat").read_text()
        pids["postgres"] = int(stat[stat.rfind(")") + 2 :].split()[1])
    except OSError:
        pass
    with redis.Redis.from_url(redis_url) as client:
        pid = int(client.info("server")["process_id"])
    if Path(f"/proc/{pid}").exists():
        pids["redis"] = pid
    return pids


def vacuum(database_url: str) -> None:
    """Start each measured run from the same tables, as pgbench does: PostgreSQL's autovacuum
    may be off (it is on the machines this is measured on), and each request leaves a dead
    version of its key's row behind; unvacuumed, later runs measure a bloated table."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def seed(env: dict[str, str]) -> str:
    script = """
import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from billing.money import parse_usd
from billing.services import price_set, reseller_open, upstream_save, wallet_credit
from keys.services import key_create
tenant, _ = reseller_open(email="bench@example.com")
wallet_credit(tenant=tenant, amount_nanos=parse_usd("1000000"), reason="benchmark funds")
upstream = upstream_save(name="mock", kind="openai", base_url="http://127.0.0.1:%d/v1")
for model in ("mock-gpt", "mock-gpt__c20_d10_t100"):
    price_set(model=model, upstream=upstream, input_per_mtok_nanos=parse_usd("1"),
              output_per_mtok_nanos=parse_usd("2"), cached_input_per_mtok_nanos=parse_usd("0.5"))
issued = key_create(tenant=tenant, actor=None, label="bench", client_budget_nanos=parse_usd("500000"),
                    your_cost_nanos=parse_usd("400000"), rpm=1_000_000, max_concurrency=100_000)
print(issued.secret)
""" % MOCK_PORT
    out = subprocess.run([PY, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)  # noqa: S603
    return out.stdout.strip().splitlines()[-1]


def scenario_pairs(args: argparse.Namespace) -> list[dict]:
    n = args.requests
    return [
        {"name": "chat, non-streaming", "concurrency": 1, "stream": False, "model": "mock-gpt", "requests": n // 2},
        {"name": "chat, non-streaming", "concurrency": 50, "stream": False, "model": "mock-gpt", "requests": n},
        {"name": "chat, 20-chunk stream", "concurrency": 1, "stream": True, "model": "mock-gpt", "requests": n // 2},
        {"name": "chat, 20-chunk stream", "concurrency": 50, "stream": True, "model": "mock-gpt", "requests": n},
        {"name": "paced streams (t100 c20 d10)", "concurrency": args.paced, "stream": True,
         "model": "mock-gpt__c20_d10_t100", "requests": args.paced},
    ]


def added(through: float | None, direct: float | None) -> float | None:
    """What a path added to the direct figure, when both were measured."""
    return round(through - direct, 3) if through is not None and direct is not None else None


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--paced", type=int, default=1000, help="concurrent paced streams")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement at most")
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn",
                        help="Tollgate's (and the floor's) server: config.serve's uvicorn workers, or granian for A/B runs")
    parser.add_argument("--server-args", default="", help="extra options for Tollgate's server")
    args = parser.parse_args()

    database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_bench")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    var = ROOT / "var" / "bench"
    var.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "DEBUG": "0",
           "SECRET_KEY": "bench-only-secret", "TOLLGATE_VAR_DIR": str(var), "LOG_LEVEL": "WARNING"}

    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    target = conninfo_to_dict(database_url)
    admin = make_conninfo(database_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{target["dbname"]}"')
        conn.execute(f'CREATE DATABASE "{target["dbname"]}"')
    subprocess.run(["redis-cli", "-u", redis_url, "flushdb"], check=False, capture_output=True)  # noqa: S607
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)  # noqa: S603
    key = seed(env)
    services = service_pids(database_url, redis_url)

    mock = start([GRANIAN, "--interface", "asgi", "--loop", "uvloop", "--workers", "1", "--host", "127.0.0.1",
                  "--port", str(MOCK_PORT), "--backlog", "4096", "--log-level", "warning", "mock_upstream:app"],
                 env, HERE, var / "mock.log")
    def serve(port: int, app: str, extra: list[str]) -> list[str]:
        if args.server == "granian":
            return [GRANIAN, "--interface", "asgi", "--loop", "uvloop", "--workers", str(args.workers),
                    "--host", "127.0.0.1", "--port", str(port), "--backlog", "4096", "--no-ws",
                    "--log-level", "warning", *extra, app]
        return [PY, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(port), "--workers",
                str(args.workers), "--log-level", "warning", *extra, app]

    server = start(serve(PROXY_PORT, "config.asgi:application", args.server_args.split()), env, ROOT,
                   var / "server.log")
    floor_env = {**env, "PYTHONPATH": str(ROOT)}
    floor = start(serve(FLOOR_PORT, "passthrough:app", []), floor_env, HERE, var / "floor.log")
    results = []
    try:
        wait_port(MOCK_PORT)
        wait_port(PROXY_PORT)
        wait_port(FLOOR_PORT)
        direct_base = f"http://127.0.0.1:{MOCK_PORT}"
        proxy_base = f"http://127.0.0.1:{PROXY_PORT}"
        floor_base = f"http://127.0.0.1:{FLOOR_PORT}"
        for sc in scenario_pairs(args):
            if args.only and args.only not in sc["name"]:
                continue
            runs: dict[str, list[dict]] = {"direct": [], "floor": [], "proxy": []}
            peak_rss = 0.0
            for _ in range(args.runs):
                for label, base, pid in (("direct", direct_base, mock.pid), ("floor", floor_base, floor.pid),
                                         ("proxy", proxy_base, server.pid)):
                    if label == "proxy":
                        vacuum(database_url)
                    watch = {"server": pid, **(services if label == "proxy" else {})}
                    res = load(base, key, concurrency=sc["concurrency"], requests=sc["requests"], stream=sc["stream"],
                               model=sc["model"], watch=watch, duration=args.duration)
                    runs[label].append(res)
                    if label == "proxy":
                        peak_rss = max(peak_rss, tree_rss_mb(server.pid))
            row = {"scenario": sc["name"], "concurrency": sc["concurrency"], "runs": args.runs,
                   "proxy_rss_mb": round(peak_rss, 1)}
            for label in ("direct", "floor", "proxy"):
                rs = runs[label]
                row[label] = {
                    "rps": median([r["rps"] for r in rs]),
                    "p50_ms": median([r["latency_ms"].get("p50") for r in rs]),
                    "p99_ms": median([r["latency_ms"].get("p99") for r in rs]),
                    "ttfb_p50_ms": median([r.get("ttfb_ms", {}).get("p50") for r in rs]),
                    "ttfb_p99_ms": median([r.get("ttfb_ms", {}).get("p99") for r in rs]),
                    "cpu_ms_per_req": median([r["watched_cpu"]["server"]["cpu_ms_per_req"] for r in rs]),
                    "services_cpu_ms_per_req": median([
                        sum(r["watched_cpu"][name]["cpu_ms_per_req"] for name in services)
                        for r in rs]) if label == "proxy" and services else None,
                    "ok": sum(r["ok"] for r in rs),
                    "errors": sum(sum(r["errors"].values()) for r in rs),
                    "error_samples": {k: v for r in rs for k, v in r.get("error_samples", {}).items()},
                }
            d, p, f = row["direct"], row["proxy"], row["floor"]
            for prefix, through in (("floor_", f), ("", p)):
                for name, field in (("added_p50_ms", "p50_ms"), ("added_ttfb_p50_ms", "ttfb_p50_ms"),
                                    ("added_ttfb_p99_ms", "ttfb_p99_ms")):
                    row[prefix + name] = added(through[field], d[field])
            row["rps_ratio"] = round(p["rps"] / d["rps"], 3) if p["rps"] and d["rps"] else None
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        stop(server)
        stop(floor)
        stop(mock)

    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "workers": args.workers,
        "server": "uvicorn, config.serve" if args.server == "uvicorn" else "granian",
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(markdown(meta, results))


def markdown(meta: dict, results: list[dict]) -> str:
    lines = [
        f"Measured {meta['date']} on {meta['machine']}; Tollgate with {meta['workers']} workers "
        f"({meta.get('server', 'granian')}) on PostgreSQL + Redis; medians of the runs.",
        "",
        "| scenario | conc. | direct RPS | Tollgate RPS | ratio | direct p50 / p99 ms | Tollgate p50 / p99 ms "
        "| added p50 ms | added TTFB p50 / p99 ms | server CPU ms/req | PostgreSQL + Redis CPU ms/req | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        d, p = r["direct"], r["proxy"]
        ttfb = (f"{r['added_ttfb_p50_ms']} / {r['added_ttfb_p99_ms']}" if r["added_ttfb_p50_ms"] is not None else "–")
        lines.append(
            f"| {r['scenario']} | {r['concurrency']} | {d['rps']} | {p['rps']} | {r['rps_ratio']} | "
            f"{d['p50_ms']} / {d['p99_ms']} | {p['p50_ms']} / {p['p99_ms']} | {r['added_p50_ms']} | {ttfb} | "
            f"{p['cpu_ms_per_req']} | {p['services_cpu_ms_per_req'] if p['services_cpu_ms_per_req'] is not None else '–'} "
            f"| {p['errors']} |"
        )
    lines += [
        "",
        "The floor: a bare pass-through (`bench/passthrough.py`) served the same way in the same run — "
        "what the server and the upstream client cost before Tollgate does any work.",
        "",
        "| scenario | conc. | floor RPS | floor p50 / p99 ms | floor added p50 ms | floor added TTFB p50 / p99 ms "
        "| floor server CPU ms/req | Tollgate CPU − floor CPU ms/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        f, p = r["floor"], r["proxy"]
        ttfb = (f"{r['floor_added_ttfb_p50_ms']} / {r['floor_added_ttfb_p99_ms']}"
                if r.get("floor_added_ttfb_p50_ms") is not None else "–")
        own = added(p["cpu_ms_per_req"], f["cpu_ms_per_req"])
        lines.append(
            f"| {r['scenario']} | {r['concurrency']} | {f['rps']} | {f['p50_ms']} / {f['p99_ms']} | "
            f"{r['floor_added_p50_ms']} | {ttfb} | {f['cpu_ms_per_req']} | {'–' if own is None else own} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
