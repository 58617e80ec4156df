"""Per-key rate limits for the proxy: requests per minute, tokens per minute, concurrency.

Design overview
---------------
The proxy calls ``acquire`` before dispatching a request and ``release`` when it is done
(success, error or client disconnect alike, from a ``finally``). Both are on the async hot
path, so each is one ``EVALSHA`` of ``ratelimit.lua``, with no thread hop and no ORM; calls
queued while another is in flight share its next round trip (a pipeline). ``LocalRateLimiter`` implements the same rules in process, for development and
single-worker deployments, and passes the same tests.

Requests per minute
    A sliding 60 s window kept as a GCRA (generic cell rate algorithm): one "theoretical
    arrival time" per key that each admitted request pushes forward by ``60 s / limit`` and
    the clock catches up with. It admits a burst of ``limit`` requests into an empty window,
    then one request every ``60 s / limit`` - capacity comes back continuously, not at a
    minute boundary. An allowed acquire counts the request; the count is never handed back.

Tokens per minute
    The same GCRA over tokens *actually used*: ``release(tokens_used=…)`` adds them. An
    acquire needs room for ``estimated_tokens`` (the proxy passes the request's input-token
    bound), and always for at least one token, so a key whose window is full is refused even
    for a tiny request. A request estimated above the whole limit is admitted only into an
    empty window and then paid back over the following minutes (the window may hold more
    than the limit, and the reset can exceed 60 s). Because usage lands at release, in-flight
    requests can overshoot the limit by at most ``max_concurrency`` requests' worth.
    ``tokens_per_minute=None`` means unlimited and nothing is tracked.

Concurrency
    In-flight requests per key. Acquire takes a slot keyed by ``request_id`` (a sorted set
    scored by the slot's expiry) and release frees it. Slots expire after ``slot_ttl_seconds``
    (keep it above the proxy's longest upstream timeout), so a crashed worker never locks a
    key out: expired slots are swept inside every acquire. Releasing an unknown, expired or
    already released ``request_id`` is harmless, and tokens are counted once, by the release
    that actually frees the slot (so a request that outlives its slot is treated as crashed
    and its tokens may go uncounted). Acquiring again with an id that holds a slot takes no
    second slot.

All or nothing
    A refused acquire changes no counter: the request is not counted, no slot is taken. When
    several limits refuse, ``reason`` names the one that needs the longest wait.

Limit changes
    Limits arrive with every acquire, so an edited key applies at its next request. The
    units already in a window are kept and drain at the new rate: a raised limit has room
    at once; a lowered one finds its window at most full, never a backlog of hours.

Retry-After
    Whole seconds (at least 1) until the refusing limit would admit this request: exact for
    the two rates; 1 s for concurrency, since a slot frees whenever any request ends.

Clocks and keys
    Redis scripts read the server clock (``TIME``), so workers with skewed clocks agree. Keys
    are ``tg:rl:{<key_id>}:rate`` (hash) and ``tg:rl:{<key_id>}:slots`` (sorted set); the
    braces are a Redis Cluster hash tag keeping both in one slot, as a script requires. Both
    carry TTLs, so an idle key's state vanishes once its windows have drained and its slots
    have expired.

Failure
    If Redis is unreachable, ``acquire``/``release`` raise ``redis.RedisError``; whether to
    fail open or closed is the caller's decision.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import NoScriptError

from proxy.coalesce import Coalescer

WINDOW_SECONDS = 60
DEFAULT_SLOT_TTL_SECONDS = 900
REDIS_SENDERS = 2  # connections sending calls, per RedisRateLimiter (i.e. per worker)

REASON_REQUESTS = "requests_per_minute"
REASON_TOKENS = "tokens_per_minute"
REASON_CONCURRENCY = "concurrency"

_WINDOW_US = WINDOW_SECONDS * 1_000_000
# Same tolerance as ratelimit.lua: floating-point rounding must not refuse the limit-th unit.
_EPSILON_US = 1.0
_CONCURRENCY_RETRY_US = 1_000_000.0
# Reason codes returned by ratelimit.lua, in its order.
_REASONS: tuple[str | None, ...] = (None, REASON_REQUESTS, REASON_TOKENS, REASON_CONCURRENCY)

_SCRIPT_SOURCE = Path(__file__).with_name("ratelimit.lua").read_text()


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int
    tokens_per_minute: int | None  # None = unlimited
    max_concurrency: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str | None  # REASON_REQUESTS | REASON_TOKENS | REASON_CONCURRENCY | None
    retry_after_seconds: int  # >= 1 when refused, 0 when allowed
    limit_requests: int
    remaining_requests: int
    reset_requests_seconds: float
    limit_tokens: int | None
    remaining_tokens: int | None
    reset_tokens_seconds: float | None

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI-style ``x-ratelimit-*`` headers (and ``retry-after`` when refused), as
        lowercase byte pairs ready for an ASGI response."""
        headers = [
            (b"x-ratelimit-limit-requests", b"%d" % self.limit_requests),
            (b"x-ratelimit-remaining-requests", b"%d" % self.remaining_requests),
            (b"x-ratelimit-reset-requests", format_reset(self.reset_requests_seconds).encode()),
        ]
        if self.limit_tokens is not None:
            headers += [
                (b"x-ratelimit-limit-tokens", b"%d" % self.limit_tokens),
                (b"x-ratelimit-remaining-tokens", b"%d" % (self.remaining_tokens or 0)),
                (
                    b"x-ratelimit-reset-tokens",
                    format_reset(self.reset_tokens_seconds or 0.0).encode(),
                ),
            ]
        if not self.allowed:
            headers.append((b"retry-after", b"%d" % self.retry_after_seconds))
        return headers


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI writes its reset headers: ``0s``, ``0.5s``, ``20s``,
    ``6m0s``, ``1h0m0s`` (millisecond precision, trailing zeros dropped)."""
    millis = max(0, math.ceil(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    whole, fraction = divmod(millis, 1000)
    secs = f"{whole}.{fraction:03d}".rstrip("0") if fraction else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class RateLimiter(Protocol):
    async def acquire(
        self, *, key_id: int, request_id: str, limits: Limits, estimated_tokens: int = 0
    ) -> Decision:
        """Admit the request and take a concurrency slot, or refuse and change nothing."""
        ...

    async def release(self, *, key_id: int, request_id: str, tokens_used: int) -> None:
        """Free the request's slot and count its tokens; idempotent."""
        ...

    async def close(self) -> None: ...


def _decision(
    limits: Limits,
    *,
    allowed: bool,
    reason: str | None,
    retry_after_seconds: int,
    remaining_requests: int,
    reset_requests_us: float,
    remaining_tokens: int,
    reset_tokens_us: float,
) -> Decision:
    tokens_limited = limits.tokens_per_minute is not None
    return Decision(
        allowed=allowed,
        reason=reason,
        retry_after_seconds=retry_after_seconds,
        limit_requests=limits.requests_per_minute,
        remaining_requests=remaining_requests,
        reset_requests_seconds=reset_requests_us / 1_000_000,
        limit_tokens=limits.tokens_per_minute,
        remaining_tokens=remaining_tokens if tokens_limited else None,
        reset_tokens_seconds=reset_tokens_us / 1_000_000 if tokens_limited else None,
    )


class RedisRateLimiter:
    """Limits shared by every worker through one Redis: ``EVALSHA`` of ``ratelimit.lua``.

    Calls are not sent one per connection: they queue (``proxy.coalesce``), and each of a
    few senders takes every call waiting and sends them as one pipeline, so under load many
    requests' acquires and releases share a round trip, while at light load a call goes out
    alone at once. The replies are independent: one call's error is that call's alone.

    Create one per worker process and event loop (its connections and queue belong to the
    loop that first uses them), and ``close`` it on shutdown.
    """

    GROUP_MAX = 128
    RELEASE_DEFER_SECONDS = 0.025

    def __init__(
        self,
        url: str,
        *,
        slot_ttl_seconds: int = DEFAULT_SLOT_TTL_SECONDS,
        senders: int = REDIS_SENDERS,
    ) -> None:
        self._redis = aioredis.Redis.from_url(url, max_connections=max(1, senders) + 1)
        # register_script sends EVALSHA and loads the script only on NOSCRIPT (first use,
        # or after a Redis restart).
        self._script = self._redis.register_script(_SCRIPT_SOURCE)
        self._slot_ttl_us = slot_ttl_seconds * 1_000_000
        self._calls = Coalescer(self._send, senders=senders, group_max=self.GROUP_MAX)
        self._deferred: list[_Call] = []
        self._deferred_timer: asyncio.TimerHandle | None = None

    @staticmethod
    def _keys(key_id: int) -> list[str]:
        return [f"tg:rl:{{{key_id}}}:rate", f"tg:rl:{{{key_id}}}:slots"]

    def _call(self, keys: list[str], args: list[str | int]) -> asyncio.Future[Any]:
        call = _Call(keys, args, asyncio.get_running_loop().create_future())
        self._undefer()
        self._calls.submit(call)
        return call.future

    def _undefer(self) -> None:
        """Deferred releases go first, in order: a release always reaches Redis before any
        call queued after it."""
        if self._deferred:
            self._calls.extend(self._deferred)
            self._deferred.clear()
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None

    def _flush_deferred(self) -> None:
        self._deferred_timer = None
        self._undefer()
        self._calls.start()

    async def _send(self, calls: list[_Call]) -> None:
        try:
            if len(calls) == 1:
                # Alone (light load): a pipeline would only add overhead.
                replies: list[Any] = [await self._script(keys=calls[0].keys, args=calls[0].args)]
            else:
                replies = await self._pipeline(calls)
                if any(isinstance(reply, NoScriptError) for reply in replies):
                    # Redis restarted and forgot the script: load it, send the calls again.
                    await self._redis.script_load(_SCRIPT_SOURCE)
                    replies = await self._pipeline(calls)
        except Exception as exc:
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        for call, reply in zip(calls, replies, strict=True):
            if call.future.done():
                if call.args[0] == "acquire" and isinstance(reply, list) and reply[0]:
                    # Granted to a caller that has gone: nobody else would release it.
                    self._call(call.keys, ["release", call.args[1], 0])
                continue
            if isinstance(reply, Exception):
                call.future.set_exception(reply)
            else:
                call.future.set_result(reply)

    async def _pipeline(self, calls: list[_Call]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(self._script.sha, len(call.keys), *call.keys, *call.args)
        return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

    async def acquire(
        self, *, key_id: int, request_id: str, limits: Limits, estimated_tokens: int = 0
    ) -> Decision:
        args: list[str | int] = [
            "acquire",
            request_id,
            limits.requests_per_minute,
            limits.tokens_per_minute or 0,
            limits.max_concurrency,
            max(0, estimated_tokens),
            self._slot_ttl_us,
        ]
        # A caller that goes away cancels this future: unsent, the call is dropped; sent,
        # a slot it was granted is handed back when the reply arrives (see _send).
        reply = await self._call(self._keys(key_id), args)
        allowed, reason, retry, rq_left, rq_reset, tk_left, tk_reset = reply
        return _decision(
            limits,
            allowed=bool(allowed),
            reason=_REASONS[reason],
            retry_after_seconds=retry,
            remaining_requests=rq_left,
            reset_requests_us=rq_reset,
            remaining_tokens=tk_left,
            reset_tokens_us=tk_reset,
        )

    async def release(self, *, key_id: int, request_id: str, tokens_used: int) -> None:
        """Hand the slot back and count the tokens used; applied even if the caller is
        cancelled meanwhile (a lost release would hold a slot until it expires).

        A release is not urgent (the response has been sent): it waits up to
        ``RELEASE_DEFER_SECONDS`` for the next call of this worker and rides in its
        pipeline, ahead of it. With one request at a time that is the next request's
        acquire: one round trip per request instead of two (each round trip wakes two
        idle processes, which costs real CPU here).
        """
        loop = asyncio.get_running_loop()
        args: list[str | int] = ["release", request_id, max(0, tokens_used)]
        call = _Call(self._keys(key_id), args, loop.create_future())
        self._deferred.append(call)
        if self._deferred_timer is None:
            self._deferred_timer = loop.call_later(self.RELEASE_DEFER_SECONDS, self._flush_deferred)
        await asyncio.shield(call.future)

    async def close(self) -> None:
        if self._deferred:
            self._flush_deferred()
        await self._calls.wait_idle()
        await self._redis.aclose()


@dataclass(slots=True)
class _Call:
    keys: list[str]
    args: list[str | int]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _KeyState:
    requests_tat: float = 0.0
    requests_limit: int = 0
    tokens_tat: float = 0.0
    tokens_limit: int | None = None
    slot_expiry_us: dict[str, float] = field(default_factory=dict)


def _current_tat(tat: float, stored_limit: int | None, limit: int, now: float) -> float:
    """See ``current_tat`` in ratelimit.lua."""
    if tat <= now:
        return now
    if stored_limit and stored_limit != limit:
        backlog = tat - now
        return now + min(backlog * stored_limit / limit, max(backlog, _WINDOW_US))
    return tat


def _remaining(tat: float, now: float, interval: float, limit: int) -> int:
    return min(limit, max(0, math.floor((now + _WINDOW_US + _EPSILON_US - tat) / interval)))


class LocalRateLimiter:
    """The rules of ratelimit.lua for one process, with state in a dict.

    Each worker process has its own limits, so use it only in development or with a single
    worker. Every method runs without awaiting, hence atomically on its event loop; it is
    not meant to be shared between threads. ``clock`` returns seconds (monotonic).
    """

    def __init__(
        self,
        *,
        slot_ttl_seconds: int = DEFAULT_SLOT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slot_ttl_us = slot_ttl_seconds * 1_000_000
        self._clock = clock
        self._keys: dict[int, _KeyState] = {}

    def _now_us(self) -> float:
        return self._clock() * 1_000_000

    async def acquire(
        self, *, key_id: int, request_id: str, limits: Limits, estimated_tokens: int = 0
    ) -> Decision:
        now = self._now_us()
        state = self._keys.get(key_id) or _KeyState()

        rq_limit = limits.requests_per_minute
        rq_interval = _WINDOW_US / rq_limit
        rq_tat = _current_tat(state.requests_tat, state.requests_limit, rq_limit, now)
        rq_new_tat = rq_tat + rq_interval
        reason, wait = None, 0.0
        rq_wait = rq_new_tat - _WINDOW_US - now
        if rq_wait > _EPSILON_US:
            reason, wait = REASON_REQUESTS, rq_wait

        tk_limit = limits.tokens_per_minute
        tk_interval, tk_tat = 0.0, now
        if tk_limit is not None:
            tk_interval = _WINDOW_US / tk_limit
            tk_tat = _current_tat(state.tokens_tat, state.tokens_limit, tk_limit, now)
            need = min(max(estimated_tokens, 1), tk_limit)
            tk_wait = tk_tat + need * tk_interval - _WINDOW_US - now
            if tk_wait > _EPSILON_US and tk_wait > wait:
                reason, wait = REASON_TOKENS, tk_wait

        slots = state.slot_expiry_us
        for expired in [rid for rid, expiry in slots.items() if expiry <= now]:
            del slots[expired]
        if (
            request_id not in slots
            and len(slots) >= limits.max_concurrency
            and _CONCURRENCY_RETRY_US > wait
        ):
            reason, wait = REASON_CONCURRENCY, _CONCURRENCY_RETRY_US

        retry_after = 0
        if reason is not None:
            retry_after = max(1, math.ceil((wait - _EPSILON_US) / 1_000_000))
        else:
            rq_tat = rq_new_tat
            state.requests_tat, state.requests_limit = rq_tat, rq_limit
            state.tokens_tat, state.tokens_limit = tk_tat, tk_limit
            slots[request_id] = now + self._slot_ttl_us
            self._keys[key_id] = state

        return _decision(
            limits,
            allowed=reason is None,
            reason=reason,
            retry_after_seconds=retry_after,
            remaining_requests=_remaining(rq_tat, now, rq_interval, rq_limit),
            reset_requests_us=math.ceil(rq_tat - now),
            remaining_tokens=(
                _remaining(tk_tat, now, tk_interval, tk_limit) if tk_limit is not None else -1
            ),
            reset_tokens_us=math.ceil(tk_tat - now),
        )

    async def release(self, *, key_id: int, request_id: str, tokens_used: int) -> None:
        state = self._keys.get(key_id)
        if state is None or state.slot_expiry_us.pop(request_id, None) is None:
            return
        if tokens_used > 0 and state.tokens_limit is not None:
            now = self._now_us()
            state.tokens_tat = (
                max(state.tokens_tat, now) + tokens_used * _WINDOW_US / state.tokens_limit
            )
        # The dict holds at most one entry per client key; drop the ones that have gone idle
        # so that memory follows the active keys, as the Redis TTLs do.
        if not state.slot_expiry_us and max(state.requests_tat, state.tokens_tat) <= self._now_us():
            del self._keys[key_id]

    async def close(self) -> None:
        self._keys.clear()


def rate_limiter_from_settings() -> RateLimiter:
    """Redis-backed limits when ``REDIS_URL`` is set (shared by all workers), else local."""
    if settings.REDIS_URL:
        return RedisRateLimiter(settings.REDIS_URL)
    return LocalRateLimiter()
