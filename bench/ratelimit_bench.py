"""Cost of one acquire + release pair for each rate-limit backend (measured, not asserted).

    .venv/bin/python bench/ratelimit_bench.py [redis://127.0.0.1:6379/14] [pairs]

Runs on uvloop, like the proxy. "sequential" is the latency one request pays (wall clock,
and the client's own CPU time, which is steadier on a busy machine); "64 in flight" is the
throughput of one worker process when many requests hit the limiter at once. For Redis it
also prints the server's time per EVALSHA, from INFO commandstats.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import redis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.ratelimit import (  # noqa: E402
    Limits,
    LocalRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)

LIMITS = Limits(requests_per_minute=10**9, tokens_per_minute=10**9, max_concurrency=10**6)
KEYS = 100  # spread over several client keys, as real traffic is


RELEASING: set[asyncio.Task[None]] = set()


async def pair(limiter: RateLimiter, i: int) -> None:
    """Acquire, then release as the proxy does: after the response, off the request's
    path (a Redis release waits to ride along with the worker's next call)."""
    key_id = 10**15 + i % KEYS
    request_id = uuid.uuid4().hex
    decision = await limiter.acquire(
        key_id=key_id, request_id=request_id, limits=LIMITS, estimated_tokens=500
    )
    assert decision.allowed
    task = asyncio.get_running_loop().create_task(
        limiter.release(key_id=key_id, request_id=request_id, tokens_used=800)
    )
    RELEASING.add(task)
    task.add_done_callback(RELEASING.discard)


async def released() -> None:
    await asyncio.gather(*RELEASING)


async def sequential(limiter: RateLimiter, pairs: int) -> tuple[float, float]:
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(pairs):
        await pair(limiter, i)
    await released()
    wall = time.perf_counter() - started
    return wall / pairs * 1e6, (time.process_time() - cpu_started) / pairs * 1e6


async def in_flight(limiter: RateLimiter, pairs: int, width: int = 64) -> float:
    async def lane(lane_no: int) -> None:
        for i in range(lane_no, pairs, width):
            await pair(limiter, i)

    started = time.perf_counter()
    await asyncio.gather(*(lane(n) for n in range(width)))
    await released()
    return (time.perf_counter() - started) / pairs * 1e6


async def measure(name: str, limiter: RateLimiter, pairs: int) -> None:
    await sequential(limiter, min(pairs, 1_000))  # warm up: script load, connections
    runs = [await sequential(limiter, pairs) for _ in range(3)]
    wall = statistics.median(run[0] for run in runs)
    cpu = statistics.median(run[1] for run in runs)
    par = statistics.median([await in_flight(limiter, pairs) for _ in range(3)])
    print(
        f"{name:6} sequential {wall:7.1f} µs/pair wall, {cpu:7.1f} µs/pair client CPU;"
        f"   64 in flight {par:7.1f} µs/pair"
    )
    await limiter.close()


def _evalsha_stats(url: str) -> tuple[int, int]:
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return stats.get("calls", 0), stats.get("usec", 0)


async def main(url: str, pairs: int) -> None:
    await measure("local", LocalRateLimiter(), pairs)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.RedisError as exc:
        print(f"redis  skipped: {exc}")
        return
    before = _evalsha_stats(url)
    await measure("redis", RedisRateLimiter(url), pairs)
    calls, usec = (after - prior for after, prior in zip(_evalsha_stats(url), before, strict=True))
    if calls:
        print(f"redis  server time {usec / calls:.1f} µs per EVALSHA ({calls} calls)")
    with redis.Redis.from_url(url) as client:
        for i in range(KEYS):
            client.delete(f"tg:rl:{{{10**15 + i}}}:rate", f"tg:rl:{{{10**15 + i}}}:slots")


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/14"
    pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    uvloop.run(main(url, pairs))
