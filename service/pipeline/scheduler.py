"""Per-key FIFO queues with a global concurrency cap.

One change per key at a time, strictly in arrival order; different keys run concurrently up to
`max_in_flight`. A key's worker task exists only while the key has queued work.

With `take_queued`, a key's worker hands its handler everything queued for the key when it gets a
slot (still one handler call per key at a time, in order): the handler may fold them (a user's queued
changes become one downstream write).

Some keys take their queue in batches (groups: a burst of memberships becomes few PATCH requests):
`linger(key)` returns (quiet, most) seconds for them, and their worker waits until no item has arrived
for `quiet` seconds (at most `most` in all), then hands everything queued to the handler at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Linger = Callable[[str], tuple[float, float] | None]


def _no_batches(key: str) -> tuple[float, float] | None:
    return None


class KeyedScheduler(Generic[Item]):
    def __init__(
        self,
        handler: Callable[[list[Item]], Awaitable[None]],
        max_in_flight: int,
        *,
        linger: Linger = _no_batches,
        max_batch: int = 5000,
        take_queued: bool = False,
    ) -> None:
        self._handler = handler
        self._linger = linger
        self._max_batch = max_batch
        self._take_queued = take_queued
        self._slots = asyncio.Semaphore(max_in_flight)
        self._queues: dict[str, deque[Item]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, key: str, item: Item) -> None:
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(item)
            return
        self._queues[key] = deque([item])
        self._idle.clear()
        task = asyncio.create_task(self._drain(key))
        self._workers.add(task)
        task.add_done_callback(self._workers.discard)

    def drop_where(self, predicate: Callable[[Item], bool]) -> int:
        """Forget queued items that have not started, e.g. of partitions that were revoked."""
        dropped = 0
        for queue in self._queues.values():
            keep = [item for item in queue if not predicate(item)]
            dropped += len(queue) - len(keep)
            queue.clear()
            queue.extend(keep)
        return dropped

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def cancel(self) -> None:
        for task in list(self._workers):
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._queues.clear()
        self._idle.set()

    async def _drain(self, key: str) -> None:
        queue = self._queues[key]
        rule = self._linger(key)
        try:
            while queue:
                if rule is not None:
                    await self._gather(queue, *rule)
                async with self._slots:
                    if not queue:  # handed back while waiting for a slot
                        break
                    take = 1 if rule is None and not self._take_queued else min(len(queue), self._max_batch)
                    await self._handler([queue.popleft() for _ in range(take)])
        finally:
            del self._queues[key]
            if not self._queues:
                self._idle.set()

    @staticmethod
    async def _gather(queue: deque[Item], quiet: float, most: float) -> None:
        """Wait until the queue has been quiet for `quiet` seconds, or `most` seconds have passed."""
        waited = 0.0
        while waited < most:
            size = len(queue)
            await asyncio.sleep(quiet)
            waited += quiet
            if len(queue) == size:
                return
