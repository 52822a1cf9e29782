"""How long read_committed readers of the changes topic wait after a replica is killed (-9) with a stage-1
transaction open, until its successor starts: the last stable offset (LSO) stays below the end of
the partition until the open transaction is fenced (a successor under the same instance id, at its
start) or times out (transaction_timeout_ms, for a successor under a new id)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from devkit.events import create_user
from devkit.kafka import Publisher, create_source_topics
from devkit.local import wait_until
from devkit.service import Api, kill_all, spawn_service
from service.settings import Settings


@dataclass(frozen=True)
class FencingRun:
    same_instance: bool
    kill_to_visible: float  # seconds from the kill -9 until readers see past the killed transaction
    spawn_to_visible: float  # ... from the successor's start
    attempts: int  # processes run until a freeze caught a transaction open


async def _offsets(settings: Settings, isolation: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, isolation_level=isolation)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.changes_topic, p) for p in range(settings.internal_partitions)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


def _resolved(settings: Settings, stuck: dict[TopicPartition, int]) -> Callable[[], Awaitable[bool]]:
    """Whether read_committed readers see up to where the partitions ended at the kill."""

    async def check() -> bool:
        committed = await _offsets(settings, "read_committed")
        return all(committed.get(tp, 0) >= end for tp, end in stuck.items())

    return check


async def _publish_steadily(settings: Settings, stop: asyncio.Event) -> None:
    async with Publisher(settings.kafka_bootstrap_servers) as publisher:
        n = 0
        while not stop.is_set():
            await publisher.send_all(settings.admin_events_topic, [create_user("fence", f"u-{n}", f"user{n}")])
            n += 1
            await asyncio.sleep(0.002)


async def _freeze_inside_a_transaction(
    settings: Settings, process: subprocess.Popen[bytes], freezes: int
) -> dict[TopicPartition, int]:
    """Stop the process (SIGSTOP) at moments spread over its work until one finds a stage-1 transaction
    open (records written past the last stable offset), and return where those partitions end.

    Stage 1 commits a transaction every few milliseconds, so a blind kill mostly lands between two of
    them; frozen, the process cannot commit while the offsets are compared, so the check is exact."""
    for _ in range(freezes):
        kill_all(process, signal.SIGSTOP)
        ends = await _offsets(settings, "read_uncommitted")
        stable = await _offsets(settings, "read_committed")
        stuck = {tp: end for tp, end in ends.items() if stable.get(tp, 0) < end}
        if stuck:
            return stuck
        kill_all(process, signal.SIGCONT)
        await asyncio.sleep(random.uniform(0.001, 0.05))
    return {}


async def measure_fencing(settings: Settings, workdir: Path, *, same_instance: bool, tries: int = 3) -> FencingRun:
    """Run the service, kill -9 it during a steady stream while a stage-1 transaction is open, then start
    a successor (same or new instance id) and time until the changes topic is readable past it."""
    await create_source_topics(settings)
    stop = asyncio.Event()
    feeder = asyncio.create_task(_publish_steadily(settings, stop))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for attempt in range(1, tries + 1):
            process = spawn_service(settings, workdir / f"service-{attempt}.log")
            processes.append(process)
            await wait_until(Api(settings.api_port).ready, timeout=90, what="the service ready")
            await wait_until(lambda: _has_changes(settings), timeout=30, what="changes flowing")
            stuck = await _freeze_inside_a_transaction(settings, process, freezes=200)
            kill_all(process)  # a stopped process dies of SIGKILL as a running one does
            killed = time.monotonic()
            process.wait()
            if not stuck:
                continue  # no freeze found a transaction open: a fresh process, again
            successor = settings if same_instance else settings.model_copy(update={"instance_id": f"new-{attempt}"})
            spawned = time.monotonic()
            processes.append(spawn_service(successor, workdir / f"successor-{attempt}.log"))
            await wait_until(_resolved(settings, stuck), timeout=120, what="the killed transaction resolved")
            visible = time.monotonic()
            return FencingRun(same_instance, visible - killed, visible - spawned, attempt)
        raise AssertionError(f"no freeze in {tries} processes caught a stage-1 transaction open")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await feeder
        for p in processes:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


async def _has_changes(settings: Settings) -> bool:
    return sum((await _offsets(settings, "read_uncommitted")).values()) > 0
