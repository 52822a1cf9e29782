"""Per-key FIFO queues with a global concurrency cap.

One change per key at a time, strictly in arrival order; different keys run concurrently up to
`max_in_flight`. A key's worker task exists only while the key has queued work.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class KeyedScheduler(Generic[Item]):
    def __init__(self, handler: Callable[[Item], Awaitable[None]], max_in_flight: int) -> None:
        self._handler = handler
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
        try:
            while queue:
                async with self._slots:
                    if not queue:  # handed back while waiting for a slot
                        break
                    await self._handler(queue.popleft())
        finally:
            del self._queues[key]
            if not self._queues:
                self._idle.set()
