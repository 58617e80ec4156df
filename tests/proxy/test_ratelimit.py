"""Rate limits: every behaviour runs against both backends (Redis and in-process).

The in-process backend gets a fake clock; the Redis backend reads the server clock, so its
``advance`` really sleeps and the tests keep waits below a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
from pytest_django.fixtures import Settings

from proxy.ratelimit import (
    REASON_CONCURRENCY,
    REASON_REQUESTS,
    REASON_TOKENS,
    Decision,
    Limits,
    LocalRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    format_reset,
    rate_limiter_from_settings,
)

REDIS_TEST_URL = os.environ.get("TEST_RATELIMIT_REDIS_URL", "redis://127.0.0.1:6379/14")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    async def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    name: str
    make: Callable[..., RateLimiter]
    advance: Callable[[float], Awaitable[None]]


def _redis_reachable() -> bool:
    try:
        with redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_available() -> bool:
    return _redis_reachable()


@pytest.fixture
def key_id(redis_available: bool) -> Iterator[int]:
    """A client key id no other test (or xdist worker) uses; its Redis keys go afterwards."""
    key_id = uuid.uuid4().int >> 68
    yield key_id
    if redis_available:
        with redis.Redis.from_url(REDIS_TEST_URL) as client:
            client.delete(f"tg:rl:{{{key_id}}}:rate", f"tg:rl:{{{key_id}}}:slots")


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest, redis_available: bool) -> Backend:
    if request.param == "local":
        clock = FakeClock()
        return Backend(
            "local",
            lambda **kwargs: LocalRateLimiter(clock=clock, **kwargs),
            clock.advance,
        )
    if not redis_available:
        pytest.skip(f"Redis not reachable at {REDIS_TEST_URL}")
    return Backend(
        "redis", lambda **kwargs: RedisRateLimiter(REDIS_TEST_URL, **kwargs), asyncio.sleep
    )


@pytest_asyncio.fixture
async def make_limiter(backend: Backend) -> AsyncIterator[Callable[..., RateLimiter]]:
    created: list[RateLimiter] = []

    def make(**kwargs: int) -> RateLimiter:
        limiter = backend.make(**kwargs)
        created.append(limiter)
        return limiter

    yield make
    for limiter in created:
        await limiter.close()


@pytest_asyncio.fixture
async def limiter(make_limiter: Callable[..., RateLimiter]) -> RateLimiter:
    return make_limiter()


def limits(rpm: int = 1_000, tpm: int | None = None, concurrency: int = 1_000) -> Limits:
    return Limits(requests_per_minute=rpm, tokens_per_minute=tpm, max_concurrency=concurrency)


async def acquire(
    limiter: RateLimiter, key_id: int, lim: Limits, request_id: str | None = None, tokens: int = 0
) -> Decision:
    return await limiter.acquire(
        key_id=key_id,
        request_id=request_id or uuid.uuid4().hex,
        limits=lim,
        estimated_tokens=tokens,
    )


@pytest.mark.asyncio
async def test_rpm_refuses_the_request_over_the_limit_with_retry_after_and_headers(
    limiter: RateLimiter, key_id: int
) -> None:
    lim = limits(rpm=3)
    admitted = [await acquire(limiter, key_id, lim) for _ in range(3)]

    assert [d.allowed for d in admitted] == [True, True, True]
    assert [d.remaining_requests for d in admitted] == [2, 1, 0]
    assert all(d.retry_after_seconds == 0 and d.reason is None for d in admitted)
    assert 19 < admitted[0].reset_requests_seconds <= 20  # one request drains in 60 s / 3

    refused = await acquire(limiter, key_id, lim)
    assert not refused.allowed
    assert refused.reason == REASON_REQUESTS
    assert refused.retry_after_seconds == 20  # the next request fits one interval later
    assert refused.remaining_requests == 0
    assert 59 < refused.reset_requests_seconds <= 60
    headers = dict(refused.headers())
    assert headers[b"x-ratelimit-limit-requests"] == b"3"
    assert headers[b"x-ratelimit-remaining-requests"] == b"0"
    assert headers[b"x-ratelimit-reset-requests"] in {b"1m0s"} | {
        b"59.%03ds" % ms for ms in range(900, 1000)
    }
    assert headers[b"retry-after"] == b"20"
    assert b"x-ratelimit-limit-tokens" not in headers
    assert all(name == name.lower() for name, _ in refused.headers())


@pytest.mark.asyncio
async def test_rpm_window_slides_one_interval_at_a_time(
    limiter: RateLimiter, backend: Backend, key_id: int
) -> None:
    lim = limits(rpm=120)  # one request every 0.5 s once the burst is spent
    burst = await asyncio.gather(*(acquire(limiter, key_id, lim) for _ in range(120)))
    assert all(d.allowed for d in burst)
    refused = await acquire(limiter, key_id, lim)
    assert (refused.reason, refused.retry_after_seconds) == (REASON_REQUESTS, 1)

    await backend.advance(0.5)

    assert (await acquire(limiter, key_id, lim)).allowed
    assert (await acquire(limiter, key_id, lim)).reason == REASON_REQUESTS


@pytest.mark.asyncio
async def test_concurrency_refuses_beyond_max_and_admits_after_release(
    limiter: RateLimiter, key_id: int
) -> None:
    lim = limits(concurrency=2)
    assert (await acquire(limiter, key_id, lim, "a")).allowed
    assert (await acquire(limiter, key_id, lim, "b")).allowed

    refused = await acquire(limiter, key_id, lim, "c")
    assert (refused.allowed, refused.reason, refused.retry_after_seconds) == (
        False,
        REASON_CONCURRENCY,
        1,
    )
    assert dict(refused.headers())[b"retry-after"] == b"1"

    await limiter.release(key_id=key_id, request_id="a", tokens_used=0)
    assert (await acquire(limiter, key_id, lim, "c")).allowed
    assert (await acquire(limiter, key_id, lim, "d")).reason == REASON_CONCURRENCY


@pytest.mark.asyncio
async def test_slot_of_a_crashed_worker_expires(
    make_limiter: Callable[..., RateLimiter], backend: Backend, key_id: int
) -> None:
    limiter = make_limiter(slot_ttl_seconds=1)
    lim = limits(concurrency=1)
    assert (await acquire(limiter, key_id, lim, "crashed")).allowed  # never released
    assert (await acquire(limiter, key_id, lim)).reason == REASON_CONCURRENCY

    await backend.advance(1.05)

    assert (await acquire(limiter, key_id, lim)).allowed


@pytest.mark.asyncio
async def test_double_release_frees_one_slot_and_counts_tokens_once(
    limiter: RateLimiter, key_id: int
) -> None:
    lim = limits(tpm=100, concurrency=2)
    assert (await acquire(limiter, key_id, lim, "a")).allowed
    assert (await acquire(limiter, key_id, lim, "b")).allowed

    await limiter.release(key_id=key_id, request_id="a", tokens_used=60)
    await limiter.release(key_id=key_id, request_id="a", tokens_used=60)

    c = await acquire(limiter, key_id, lim, "c")
    assert c.allowed
    assert c.remaining_tokens == 40
    assert (await acquire(limiter, key_id, lim, "d")).reason == REASON_CONCURRENCY


@pytest.mark.asyncio
async def test_release_of_an_unknown_request_is_harmless(limiter: RateLimiter, key_id: int) -> None:
    await limiter.release(key_id=key_id, request_id="never-acquired", tokens_used=10_000)
    decision = await acquire(limiter, key_id, limits(tpm=100, concurrency=1))
    assert decision.allowed
    assert decision.remaining_tokens == 100


@pytest.mark.asyncio
async def test_tpm_refuses_once_used_tokens_reach_the_limit_and_recovers_as_the_window_slides(
    limiter: RateLimiter, backend: Backend, key_id: int
) -> None:
    lim = limits(tpm=600)  # one token drains every 0.1 s
    first = await acquire(limiter, key_id, lim, "first", tokens=100)
    assert (first.allowed, first.limit_tokens, first.remaining_tokens) == (True, 600, 600)
    await limiter.release(key_id=key_id, request_id="first", tokens_used=600)

    refused = await acquire(limiter, key_id, lim)  # no estimate still needs one token
    assert (refused.allowed, refused.reason, refused.retry_after_seconds) == (
        False,
        REASON_TOKENS,
        1,
    )
    assert refused.remaining_tokens == 0
    assert refused.reset_tokens_seconds is not None
    assert 59 < refused.reset_tokens_seconds <= 60
    whole_window = await acquire(limiter, key_id, lim, tokens=600)
    assert (whole_window.reason, whole_window.retry_after_seconds) == (REASON_TOKENS, 60)
    headers = dict(refused.headers())
    assert headers[b"x-ratelimit-limit-tokens"] == b"600"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"0"

    await backend.advance(0.15)

    assert (await acquire(limiter, key_id, lim, tokens=1)).allowed


@pytest.mark.asyncio
async def test_tpm_needs_room_for_the_estimated_tokens(limiter: RateLimiter, key_id: int) -> None:
    lim = limits(tpm=1_000)  # 60 ms per token
    assert (await acquire(limiter, key_id, lim, "r")).allowed
    await limiter.release(key_id=key_id, request_id="r", tokens_used=700)

    too_big = await acquire(limiter, key_id, lim, tokens=400)
    assert (too_big.reason, too_big.retry_after_seconds) == (REASON_TOKENS, 6)  # 100 x 60 ms
    assert too_big.remaining_tokens == 300
    assert (await acquire(limiter, key_id, lim, tokens=300)).allowed


@pytest.mark.asyncio
async def test_a_refused_acquire_changes_no_counter(
    limiter: RateLimiter, backend: Backend, key_id: int
) -> None:
    lim = limits(rpm=2, tpm=100, concurrency=1)  # 30 s per request, 0.6 s per token
    assert (await acquire(limiter, key_id, lim, "a")).remaining_requests == 1

    assert (await acquire(limiter, key_id, lim, "b")).reason == REASON_CONCURRENCY
    await limiter.release(key_id=key_id, request_id="a", tokens_used=100)
    assert (await acquire(limiter, key_id, lim, "c", tokens=1)).reason == REASON_TOKENS

    await backend.advance(0.65)

    # Had "b" or "c" been counted, the request budget would be spent; had "c" taken a
    # slot, concurrency would refuse.
    d = await acquire(limiter, key_id, lim, "d", tokens=1)
    assert (d.allowed, d.remaining_requests) == (True, 0)
    assert (await acquire(limiter, key_id, lim, "e")).reason == REASON_REQUESTS


@pytest.mark.asyncio
async def test_concurrent_acquires_admit_exactly_max_concurrency(
    limiter: RateLimiter, key_id: int
) -> None:
    decisions = await asyncio.gather(
        *(acquire(limiter, key_id, limits(concurrency=5)) for _ in range(200))
    )
    assert sum(d.allowed for d in decisions) == 5
    assert {d.reason for d in decisions if not d.allowed} == {REASON_CONCURRENCY}


@pytest.mark.asyncio
async def test_raising_a_limit_takes_effect_at_once(limiter: RateLimiter, key_id: int) -> None:
    for _ in range(2):
        assert (await acquire(limiter, key_id, limits(rpm=2))).allowed
    assert (await acquire(limiter, key_id, limits(rpm=2))).reason == REASON_REQUESTS

    raised = await acquire(limiter, key_id, limits(rpm=4))
    assert (raised.allowed, raised.remaining_requests) == (True, 1)


@pytest.mark.asyncio
async def test_lowering_a_limit_leaves_the_window_at_most_full(
    limiter: RateLimiter, key_id: int
) -> None:
    for _ in range(10):
        assert (await acquire(limiter, key_id, limits(rpm=600))).allowed

    lowered = await acquire(limiter, key_id, limits(rpm=2))
    # Ten requests at the new 30 s each would mean a 270 s wait; the window is only full.
    assert (lowered.reason, lowered.retry_after_seconds) == (REASON_REQUESTS, 30)


@pytest.mark.asyncio
async def test_unlimited_tokens_track_nothing(limiter: RateLimiter, key_id: int) -> None:
    lim = limits(tpm=None)
    assert (await acquire(limiter, key_id, lim, "a", tokens=10**9)).allowed
    await limiter.release(key_id=key_id, request_id="a", tokens_used=10**9)

    decision = await acquire(limiter, key_id, lim, tokens=10**9)
    assert decision.allowed
    assert (decision.limit_tokens, decision.remaining_tokens, decision.reset_tokens_seconds) == (
        None,
        None,
        None,
    )


@pytest.mark.asyncio
async def test_concurrent_releases_are_all_applied_once_awaited(
    limiter: RateLimiter, key_id: int
) -> None:
    lim = limits(concurrency=20, tpm=6_000)
    ids = [uuid.uuid4().hex for _ in range(20)]
    assert all([(await acquire(limiter, key_id, lim, rid)).allowed for rid in ids])

    await asyncio.gather(
        *(limiter.release(key_id=key_id, request_id=rid, tokens_used=10) for rid in ids)
    )

    again = [await acquire(limiter, key_id, lim) for _ in range(20)]
    assert all(d.allowed for d in again)
    # Every release counted its tokens (the window refills 100 tokens a second meanwhile).
    remaining = again[-1].remaining_tokens
    assert remaining is not None and 6_000 - 200 <= remaining < 6_000 - 200 + 50


@pytest.mark.asyncio
async def test_batched_releases_survive_redis_forgetting_the_script(
    redis_available: bool, key_id: int
) -> None:
    if not redis_available:
        pytest.skip(f"Redis not reachable at {REDIS_TEST_URL}")
    limiter = RedisRateLimiter(REDIS_TEST_URL)
    try:
        lim = limits(concurrency=1)
        assert (await acquire(limiter, key_id, lim, "a")).allowed
        admin = aioredis.Redis.from_url(REDIS_TEST_URL)
        await admin.script_flush()
        await admin.aclose()

        await limiter.release(key_id=key_id, request_id="a", tokens_used=0)

        assert (await acquire(limiter, key_id, lim, "b")).allowed
    finally:
        await limiter.close()


@pytest.mark.asyncio
async def test_two_redis_workers_share_limits(redis_available: bool, key_id: int) -> None:
    if not redis_available:
        pytest.skip(f"Redis not reachable at {REDIS_TEST_URL}")
    first, second = RedisRateLimiter(REDIS_TEST_URL), RedisRateLimiter(REDIS_TEST_URL)
    try:
        lim = limits(rpm=3, concurrency=1)
        assert (await acquire(first, key_id, lim, "a")).allowed
        assert (await acquire(second, key_id, lim, "b")).reason == REASON_CONCURRENCY
        await second.release(key_id=key_id, request_id="a", tokens_used=0)
        assert (await acquire(second, key_id, lim, "b")).remaining_requests == 1
        await first.release(key_id=key_id, request_id="b", tokens_used=0)
        assert (await acquire(first, key_id, lim, "c")).remaining_requests == 0
        assert (await acquire(second, key_id, lim, "d")).reason == REASON_REQUESTS
    finally:
        await first.close()
        await second.close()


@pytest.mark.asyncio
async def test_local_tokens_are_all_back_after_one_window(key_id: int) -> None:
    """The full minute is too long to sleep through against Redis; the rule is the same."""
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock)
    lim = limits(tpm=600)
    assert (await acquire(limiter, key_id, lim, "a")).allowed
    await limiter.release(key_id=key_id, request_id="a", tokens_used=600)
    assert (await acquire(limiter, key_id, lim, tokens=600)).retry_after_seconds == 60

    await clock.advance(60)

    back = await acquire(limiter, key_id, lim, tokens=600)
    assert (back.allowed, back.remaining_tokens) == (True, 600)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "0.001s"),
        (0.5, "0.5s"),
        (1, "1s"),
        (8.64, "8.64s"),
        (59.9995, "1m0s"),
        (90.5, "1m30.5s"),
        (360, "6m0s"),
        (3_600, "1h0m0s"),
    ],
)
def test_reset_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_rate_limiter_from_settings_picks_redis_only_when_configured(
    settings: Settings,
) -> None:
    settings.REDIS_URL = ""
    assert isinstance(rate_limiter_from_settings(), LocalRateLimiter)
    settings.REDIS_URL = REDIS_TEST_URL
    limiter = rate_limiter_from_settings()
    assert isinstance(limiter, RedisRateLimiter)
    asyncio.run(limiter.close())


@pytest.mark.asyncio
@pytest.mark.parametrize("yields", [0, 1, 2, 3, 5, 8])
async def test_a_cancelled_acquire_never_keeps_a_slot(
    limiter: RateLimiter, key_id: int, yields: int
) -> None:
    """Whenever the caller goes away (before or after the call left), the key is not
    left holding a concurrency slot nobody will release."""
    lim = limits(concurrency=1)
    task = asyncio.get_running_loop().create_task(acquire(limiter, key_id, lim, "gone"))
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        if (await task).allowed:
            # It finished before the cancel: its caller holds the slot and releases it.
            await limiter.release(key_id=key_id, request_id="gone", tokens_used=0)

    async def next_admitted() -> bool:
        decision = await acquire(limiter, key_id, lim, uuid.uuid4().hex)
        return decision.allowed

    # The hand-back is queued behind the cancelled call; allow it a moment to land.
    for _ in range(50):
        if await next_admitted():
            return
        await asyncio.sleep(0.01)
    pytest.fail("a cancelled acquire kept its concurrency slot")


@pytest.mark.asyncio
async def test_a_pending_release_reaches_redis_before_the_next_acquire(
    limiter: RateLimiter, key_id: int
) -> None:
    """Releases wait for the worker's next call and ride ahead of it: back-to-back requests
    on a key limited to one in flight are admitted one after the other."""
    lim = limits(concurrency=1)
    assert (await acquire(limiter, key_id, lim, "first")).allowed
    releasing = asyncio.get_running_loop().create_task(
        limiter.release(key_id=key_id, request_id="first", tokens_used=0)
    )
    await asyncio.sleep(0)  # the release is queued, not yet applied

    assert (await acquire(limiter, key_id, lim, "second")).allowed
    await releasing
    assert not (await acquire(limiter, key_id, lim, "third")).allowed
