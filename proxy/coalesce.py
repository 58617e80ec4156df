"""Calls to another process, coalesced: what queues meanwhile shares one round trip.

On a small machine every round trip to another process costs real CPU on both sides (the
other process has to be woken, and so do we when the answer comes). The proxy's calls to
PostgreSQL (reserve / settle transactions) and Redis (rate-limit scripts) therefore queue
here, and each of a few *senders* takes every call waiting and sends them together: at
light load a call goes out alone at once; under load, N calls cost one round trip.

Each queued item carries the future its caller awaits; an item whose caller gave up
(cancelled future) before it was sent is dropped. What "sending together" means, and how
answers and errors are handed back, is the owner's ``send``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol


class Pending(Protocol):
    @property
    def future(self) -> asyncio.Future[Any]: ...


class Coalescer[P: Pending]:
    """Items queue; up to ``senders`` tasks each take every item waiting (at most
    ``group_max``) and await ``send(group)`` until the queue is empty.

    ``may_add``, when given, may allow one more sender beyond ``senders`` (up to
    ``most_senders``), e.g. when every sender is stuck on a slow call.
    """

    def __init__(
        self,
        send: Callable[[list[P]], Awaitable[None]],
        *,
        senders: int,
        group_max: int,
        may_add: Callable[[], bool] | None = None,
        most_senders: int = 0,
    ) -> None:
        self._send = send
        self._senders = max(1, senders)
        self._group_max = group_max
        self._may_add = may_add
        self._most_senders = max(most_senders, self._senders)
        self._queue: deque[P] = deque()
        self.sending = 0
        self._tasks: set[asyncio.Task[None]] = set()  # references to the running senders

    def submit(self, item: P) -> None:
        self._queue.append(item)
        self.start()

    def extend(self, items: Iterable[P]) -> None:
        """Queue without starting a sender (the caller starts one when it is ready)."""
        self._queue.extend(items)

    def put_back(self, items: list[P]) -> None:
        """Queue again, ahead of everything else (items that were never sent)."""
        self._queue.extendleft(reversed(items))

    def start(self) -> None:
        if not self._queue:
            return
        if self.sending < self._senders or (
            self.sending < self._most_senders and self._may_add is not None and self._may_add()
        ):
            self.sending += 1
            task = asyncio.get_running_loop().create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._queue:
                group: list[P] = []
                while self._queue and len(group) < self._group_max:
                    item = self._queue.popleft()
                    if not item.future.done():  # its caller gave up before it was sent
                        group.append(item)
                if group:
                    await self._send(group)
        finally:
            # In the same step as the last look at the queue: an item queued from now on
            # starts a sender of its own.
            self.sending -= 1

    async def wait_idle(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
