"""ApplyStage's offset commits run beside the poll loop: a commit that waits for the changelog's
acknowledgements (a slow broker) does not hold back the records that are ready to be applied."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition
from pydantic import SecretStr

from service.metrics import Metrics
from service.pipeline import apply
from service.pipeline.apply import ApplyStage, Work
from service.pipeline.offsets import PartitionOffsets
from service.settings import Settings
from tests.support import wait_until

TP = TopicPartition("t.changes", 0)


@dataclass
class Consumer:
    """Hands out the records put in `ready`; remembers the offsets committed."""

    ready: asyncio.Queue[ConsumerRecord[bytes, bytes]] = field(default_factory=asyncio.Queue)
    committed: list[dict[TopicPartition, OffsetAndMetadata]] = field(default_factory=list)

    async def getmany(self, timeout_ms: int = 0) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        try:
            record = await asyncio.wait_for(self.ready.get(), timeout_ms / 1000)
        except TimeoutError:
            return {}
        return {TP: [record]}

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.committed.append(offsets)

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def last_stable_offset(self, tp: TopicPartition) -> int | None:
        return None

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def paused(self) -> set[TopicPartition]:
        return set()


class HeldFlush:
    """The user-state store's flush, held until released (the changelog's acknowledgements are late)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> None:
        self.started.set()
        await self.release.wait()


def holds(condition: Callable[[], object]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(condition())

    return check


def record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(TP.topic, TP.partition, offset, 0, 0, b"realm/u1", b"{}", None, 8, 2, [])


@pytest.fixture
def stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ApplyStage:
    monkeypatch.setattr(apply, "COMMIT_INTERVAL_SECONDS", 0.01)
    settings = Settings(token_key=SecretStr("k"), admin_token=SecretStr("a"), state_dir=str(tmp_path))
    stage = ApplyStage(settings, Metrics(), tenants=Any, scim=Any, producer=Any)  # type: ignore[arg-type]
    return stage


async def test_records_are_handed_out_while_a_commit_waits_for_the_changelog(
    stage: ApplyStage, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer, flush, handed_out = Consumer(), HeldFlush(), []
    monkeypatch.setattr(stage._states, "flush", flush)
    monkeypatch.setattr(stage._scheduler, "submit", lambda key, work: handed_out.append(work.record.offset))
    stage._consumer = consumer  # type: ignore[assignment]
    offsets = stage._offsets[TP] = PartitionOffsets()
    run = asyncio.create_task(stage._run())
    committer = asyncio.create_task(stage._commit_every_interval())
    try:
        await consumer.ready.put(record(0))
        await wait_until(holds(lambda: handed_out == [0]), 5, "the first record handed out")
        offsets.finished(0)
        await asyncio.wait_for(flush.started.wait(), 5)  # a commit is under way, waiting for the changelog

        await consumer.ready.put(record(1))
        await wait_until(holds(lambda: handed_out == [0, 1]), 5, "the second record handed out during the commit")
        assert not flush.release.is_set() and consumer.committed == []

        flush.release.set()
        await wait_until(holds(lambda: consumer.committed), 5, "the offsets committed once the changelog answered")
        assert consumer.committed[0] == {TP: OffsetAndMetadata(1, "")}
    finally:
        flush.release.set()
        stage._stopping = True
        stage._stopped.set()
        run.cancel()
        await asyncio.gather(run, committer, return_exceptions=True)


async def test_a_commit_that_fails_unexpectedly_does_not_stop_the_committer(
    stage: ApplyStage, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in one commit")

    consumer = Consumer()
    monkeypatch.setattr(stage._states, "flush", flaky)
    stage._consumer = consumer  # type: ignore[assignment]
    stage._offsets[TP] = PartitionOffsets()
    stage._offsets[TP].started(0)
    stage._offsets[TP].finished(0)
    committer = asyncio.create_task(stage._commit_every_interval())
    try:
        await wait_until(holds(lambda: consumer.committed), 5, "a later commit goes through")
        assert calls >= 2
    finally:
        stage._stopped.set()
        await committer


def test_work_is_keyed_by_its_partition() -> None:
    assert Work(record(3), 0).tp == TP
