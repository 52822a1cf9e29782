"""KeyedScheduler: per-key FIFO, keys concurrent up to a cap, queued work can be dropped."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.pipeline.scheduler import KeyedScheduler

T = TypeVar("T")


def single(handle: Callable[[T], Awaitable[None]]) -> Callable[[list[T]], Awaitable[None]]:
    """A handler of one item at a time (keys without batches get one-item lists)."""

    async def handler(items: list[T]) -> None:
        assert len(items) == 1
        await handle(items[0])

    return handler


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_per_key_order_is_kept_with_random_delays() -> None:
    """Items of one key are handled one at a time in submission order, whatever each takes."""
    rng = random.Random(7)
    seen: dict[str, list[int]] = defaultdict(list)
    running: set[str] = set()

    async def handle(item: tuple[str, int]) -> None:
        key, n = item
        assert key not in running, f"two items of {key} at once"
        running.add(key)
        await asyncio.sleep(rng.random() / 1000)
        seen[key].append(n)
        running.discard(key)

    scheduler: KeyedScheduler[tuple[str, int]] = KeyedScheduler(single(handle), max_in_flight=4)
    keys = [f"acme/user-{k}" for k in range(8)]
    for n in range(30):
        for key in rng.sample(keys, 3):
            scheduler.submit(key, (key, n))
    await asyncio.wait_for(scheduler.wait_idle(), 10)
    assert seen
    for numbers in seen.values():
        assert numbers == sorted(numbers)
    assert sum(len(v) for v in seen.values()) == 90


async def test_different_keys_run_concurrently() -> None:
    """Two keys under a cap of 2 are in their handlers at the same time."""
    both_in = asyncio.Event()
    inside: set[str] = set()

    async def handle(key: str) -> None:
        inside.add(key)
        if len(inside) == 2:
            both_in.set()
        await both_in.wait()

    scheduler: KeyedScheduler[str] = KeyedScheduler(single(handle), max_in_flight=2)
    scheduler.submit("a", "a")
    scheduler.submit("b", "b")
    await asyncio.wait_for(both_in.wait(), 2)
    await asyncio.wait_for(scheduler.wait_idle(), 2)


async def test_concurrency_cap_is_respected() -> None:
    """With 20 keys and a cap of 3, never more than 3 handlers run, and the cap is reached."""
    current = peak = 0

    async def handle(item: int) -> None:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        await asyncio.sleep(0.001)
        current -= 1

    scheduler: KeyedScheduler[int] = KeyedScheduler(single(handle), max_in_flight=3)
    for n in range(60):
        scheduler.submit(f"k{n % 20}", n)
    await asyncio.wait_for(scheduler.wait_idle(), 10)
    assert peak == 3


async def test_wait_idle_returns_when_all_work_is_done() -> None:
    """wait_idle is immediate with nothing queued, and waits for queued work otherwise."""
    scheduler: KeyedScheduler[int] = KeyedScheduler(lambda items: asyncio.sleep(0), max_in_flight=1)
    await asyncio.wait_for(scheduler.wait_idle(), 1)
    done: list[int] = []

    async def handle(n: int) -> None:
        await asyncio.sleep(0.001)
        done.append(n)

    scheduler = KeyedScheduler(single(handle), max_in_flight=1)
    for n in range(5):
        scheduler.submit("k", n)
    await asyncio.wait_for(scheduler.wait_idle(), 2)
    assert done == [0, 1, 2, 3, 4]


async def test_key_can_be_reused_after_its_queue_drained() -> None:
    """A key whose worker finished gets a new worker on the next submit."""
    done: list[int] = []

    async def handle(n: int) -> None:
        done.append(n)

    scheduler: KeyedScheduler[int] = KeyedScheduler(single(handle), max_in_flight=1)
    scheduler.submit("k", 1)
    await asyncio.wait_for(scheduler.wait_idle(), 1)
    scheduler.submit("k", 2)
    await asyncio.wait_for(scheduler.wait_idle(), 1)
    assert done == [1, 2]


async def test_drop_where_forgets_items_queued_behind_a_running_one() -> None:
    """Queued items matching the predicate are dropped; the running item and the rest still run in order."""
    release = asyncio.Event()
    done: list[str] = []

    async def handle(item: str) -> None:
        if item == "a1":
            await release.wait()
        done.append(item)

    scheduler: KeyedScheduler[str] = KeyedScheduler(single(handle), max_in_flight=4)
    for item in ("a1", "a2", "a3", "a4"):
        scheduler.submit("a", item)
    await settle()
    assert scheduler.drop_where(lambda item: item in ("a2", "a4")) == 2
    release.set()
    await asyncio.wait_for(scheduler.wait_idle(), 2)
    assert done == ["a1", "a3"]


async def test_drop_where_does_not_count_the_running_item() -> None:
    """drop_where(all) while a1 runs and a2 waits behind it hands back (and counts) a2 only."""
    release = asyncio.Event()
    done: list[str] = []

    async def handle(item: str) -> None:
        if item == "a1":
            await release.wait()
        done.append(item)

    scheduler: KeyedScheduler[str] = KeyedScheduler(single(handle), max_in_flight=4)
    scheduler.submit("a", "a1")
    scheduler.submit("a", "a2")
    await settle()
    dropped = scheduler.drop_where(lambda item: True)
    release.set()
    await asyncio.wait_for(scheduler.wait_idle(), 2)
    assert done == ["a1"]
    assert dropped == 1, "the running item was counted as handed back"


async def test_drop_where_hands_back_an_item_still_waiting_for_a_slot() -> None:
    """An item whose worker waits for a free slot is not running yet: once dropped, it never runs.

    Cap 1: a1 runs, b1 is the head of key b's queue and its worker waits on the cap.
    """
    release = asyncio.Event()
    started: list[str] = []

    async def handle(item: str) -> None:
        started.append(item)
        if item == "a1":
            await release.wait()

    scheduler: KeyedScheduler[str] = KeyedScheduler(single(handle), max_in_flight=1)
    scheduler.submit("a", "a1")
    scheduler.submit("b", "b1")
    await settle()
    assert started == ["a1"]
    scheduler.drop_where(lambda item: item == "b1")
    release.set()
    await asyncio.wait_for(scheduler.wait_idle(), 2)
    assert started == ["a1"], "a dropped item still ran"


async def test_cancel_stops_running_work_and_clears_queues() -> None:
    """cancel() cancels the workers, forgets queued items and leaves the scheduler idle."""
    started: list[int] = []

    async def handle(n: int) -> None:
        started.append(n)
        await asyncio.sleep(10)

    scheduler: KeyedScheduler[int] = KeyedScheduler(single(handle), max_in_flight=2)
    for n in range(4):
        scheduler.submit(f"k{n % 2}", n)
    await settle()
    await asyncio.wait_for(scheduler.cancel(), 2)
    await asyncio.wait_for(scheduler.wait_idle(), 1)
    assert sorted(started) == [0, 1]


async def test_a_batched_key_gets_its_burst_at_once_after_a_quiet_spell() -> None:
    """Items of a batched key arriving in a burst reach the handler together, once the queue is quiet."""
    batches: list[list[int]] = []

    async def handle(items: list[int]) -> None:
        batches.append(items)

    scheduler: KeyedScheduler[int] = KeyedScheduler(
        handle, max_in_flight=2, linger=lambda key: (0.05, 1.0) if key.startswith("g") else None
    )
    for n in range(50):
        scheduler.submit("g1", n)
        if n % 10 == 0:
            await asyncio.sleep(0.01)  # a burst that trickles in, quicker than the quiet spell
    scheduler.submit("u1", 100)
    scheduler.submit("u1", 101)
    await asyncio.wait_for(scheduler.wait_idle(), 5)
    assert [b for b in batches if b[0] < 100] == [list(range(50))]
    assert [b for b in batches if b[0] >= 100] == [[100], [101]]


async def test_with_take_queued_a_key_gets_what_queued_behind_its_running_item_at_once() -> None:
    """take_queued: while u1's first item runs, three more queue; they come next as one list, in order,
    and no two calls of a key overlap."""
    release = asyncio.Event()
    batches: list[list[int]] = []

    async def handle(items: list[int]) -> None:
        batches.append(items)
        if items == [1]:
            await release.wait()

    scheduler: KeyedScheduler[int] = KeyedScheduler(handle, max_in_flight=4, take_queued=True)
    scheduler.submit("u1", 1)
    await settle()
    for n in (2, 3, 4):
        scheduler.submit("u1", n)
    release.set()
    await asyncio.wait_for(scheduler.wait_idle(), 2)
    assert batches == [[1], [2, 3, 4]]
