"""UserStateStore without a broker: saves land on disk and in the changelog, the checkpoint follows the
acknowledgements, the cache is bounded, and a revocation keeps the rows."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.structs import RecordMetadata, TopicPartition
from pydantic import SecretStr

from service.domain.groups import GroupState
from service.domain.state import UserState
from service.pipeline import user_state
from service.pipeline.user_state import UserStateStore
from service.settings import Settings

TOPIC = "t.user-state"


@dataclass
class Producer:
    """Acknowledges sends with consecutive offsets per partition; fails the first send of each key in `fail`."""

    fail: set[bytes] = field(default_factory=set)
    sent: list[tuple[bytes, bytes, int]] = field(default_factory=list)
    next_offset: dict[int, int] = field(default_factory=dict)

    async def send(self, topic: str, value: bytes, key: bytes, partition: int) -> Any:
        ack: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        if key in self.fail:
            self.fail.discard(key)
            ack.set_exception(KafkaTimeoutError())
            return ack
        offset = self.next_offset.get(partition, 0)
        self.next_offset[partition] = offset + 1
        self.sent.append((key, value, partition))
        ack.set_result(RecordMetadata(topic, partition, TopicPartition(topic, partition), offset, -1, -1, -1))
        return ack


def store(tmp_path: Path, producer: Producer | HeldProducer, cache: int = 10) -> UserStateStore:
    settings = Settings(
        token_key=SecretStr("k"),
        admin_token=SecretStr("a"),
        user_state_topic=TOPIC,
        state_dir=str(tmp_path),
        state_cache_size=cache,
    )
    return UserStateStore(settings, producer)


def user(name: str) -> UserState:
    return UserState(downstream_id=f"d-{name}", values={"userName": name}, versions={"userName": (1, "e")})


async def test_a_saved_state_is_read_back_and_sent_to_its_partition(tmp_path: Path) -> None:
    """save() writes the state locally and to the changelog partition of its change."""
    producer = Producer()
    states = store(tmp_path, producer)
    await states.save("acme/u1", 2, user("ann"))
    assert states.get("acme/u1") == user("ann")
    assert producer.sent == [(b"acme/u1", user("ann").to_json(), 2)]
    assert states.get("acme/none") == UserState()
    states.close()


async def test_users_and_groups_are_told_apart(tmp_path: Path) -> None:
    """A group's key read as a user (or the reverse) is an empty state, as before the store was on disk."""
    states = store(tmp_path, Producer())
    await states.save("acme/group:g", 0, GroupState(name="admins"))
    assert states.get_group("acme/group:g") == GroupState(name="admins")
    assert states.get("acme/group:g") == UserState()
    states.close()


async def test_states_beyond_the_cache_are_decoded_from_disk(tmp_path: Path) -> None:
    """With a cache of two, the first of three saved users is evicted and still read back whole."""
    states = store(tmp_path, Producer(), cache=2)
    for name in ("ann", "bob", "cy"):
        await states.save(f"acme/{name}", 0, user(name))
    assert len(states._cache) == 2
    assert "acme/ann" not in states._cache
    assert states.get("acme/ann") == user("ann")
    states.close()


async def test_flush_checkpoints_the_acknowledged_offsets_with_the_data(tmp_path: Path) -> None:
    """After a flush the next process finds the rows and, per partition, the offset after the last ack."""
    producer = Producer()
    states = store(tmp_path, producer)
    await states.save("acme/u1", 0, user("ann"))
    await states.save("acme/u2", 0, user("bob"))
    await states.save("acme/u3", 1, user("cy"))
    assert states.db.checkpoint(0) is None
    await states.flush()
    assert (states.db.checkpoint(0), states.db.checkpoint(1)) == (2, 1)
    states.close()
    again = store(tmp_path, producer)
    assert again.get("acme/u2") == user("bob")
    again.close()


async def test_a_failed_send_stops_the_commit_and_is_sent_again(tmp_path: Path) -> None:
    """flush() raises (so the consumer keeps the offset) and sends the key's newest state once more."""
    producer = Producer(fail={b"acme/u1"})
    states = store(tmp_path, producer)
    await states.save("acme/u1", 0, user("ann"))
    with pytest.raises(KafkaError):
        await states.flush()
    assert states.db.checkpoint(0) is None
    await states.flush()  # collects the acknowledgement of the send repeated by the failed flush
    assert producer.sent == [(b"acme/u1", user("ann").to_json(), 0)]
    assert states.db.checkpoint(0) == 1
    states.close()


async def test_forget_keeps_rows_and_drops_cached_states(tmp_path: Path) -> None:
    """A revoked partition leaves the cache, its rows stay on disk for a later assignment."""
    states = store(tmp_path, Producer())
    await states.save("acme/u1", 0, user("ann"))
    await states.save("acme/u2", 1, user("bob"))
    await states.flush()
    states.forget({0})
    assert list(states._cache) == ["acme/u2"]
    assert states.db.items(0) == [(b"acme/u1", user("ann").to_json())]
    states.close()


async def test_a_flush_waits_for_the_sends_a_concurrent_flush_took(tmp_path: Path) -> None:
    """Two commits at once (the loop's and a revocation's): the second returns only once the first one's
    sends are acknowledged too, so neither commits offsets of a state still in flight."""
    producer = HeldProducer()
    states = store(tmp_path, producer)
    await states.save("acme/u1", 0, user("ann"))
    first = asyncio.create_task(states.flush())
    await asyncio.sleep(0)
    second = asyncio.create_task(states.flush())
    await asyncio.sleep(0.05)
    assert not second.done()
    producer.release()
    await asyncio.gather(first, second)
    assert states.db.checkpoint(0) == 1
    states.close()


@dataclass
class HeldProducer:
    """Acknowledges every send only when released."""

    acks: list[asyncio.Future[RecordMetadata]] = field(default_factory=list)

    async def send(self, topic: str, value: bytes, key: bytes, partition: int) -> Any:
        ack: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack

    def release(self) -> None:
        for offset, ack in enumerate(self.acks):
            ack.set_result(RecordMetadata(TOPIC, 0, TopicPartition(TOPIC, 0), offset, -1, -1, -1))


@dataclass
class Record:
    key: bytes
    value: bytes
    offset: int


class FailingChangelog:
    """A consumer of a 10-record changelog partition 0: its first fetch returns 3 records, the next fails."""

    def __init__(self, **_: Any) -> None:
        self.fetches = 0
        self.at = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assign(self, tps: list[TopicPartition]) -> None: ...

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 10)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.at = offset

    async def position(self, tp: TopicPartition) -> int:
        return self.at

    async def getmany(self, *tps: TopicPartition, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        self.fetches += 1
        if self.fetches > 1:
            raise KafkaError("broker gone")
        self.at = 3
        return {tps[0]: [Record(f"acme/u{n}".encode(), user(f"u{n}").to_json(), n) for n in range(3)]}


async def test_a_restore_that_fails_during_its_bulk_load_leaves_a_usable_empty_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load into an empty file writes without indexes or journal; when its fetch fails after a write,
    the file is reset, so the store reads and upserts again and the next restore starts from scratch."""
    monkeypatch.setattr("service.pipeline.user_state.AIOKafkaConsumer", FailingChangelog)
    monkeypatch.setattr("service.pipeline.user_state.RESTORE_BATCH_RECORDS", 2)
    states = store(tmp_path, Producer())
    with pytest.raises(KafkaError):
        await states.restore({0})
    assert states.db.checkpoint(0) is None
    assert states.get("acme/u0") == UserState()
    await states.save("acme/u0", 0, user("again"))
    await states.save("acme/u0", 0, user("newest"))
    await states.flush()
    assert states.db.items(0) == [(b"acme/u0", user("newest").to_json())]
    states.close()


async def test_a_flush_past_the_wal_limit_checkpoints_it_on_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WAL is copied into the file beside the event loop, once it has grown past the limit; the
    flush does not wait for it."""
    monkeypatch.setattr(user_state, "WAL_BYTES", 64 * 1024)
    states = store(tmp_path, Producer())
    for i in range(50):
        await states.save(f"acme/u{i}", 0, user(f"user-{i}-" + "x" * 2000))
    await states.flush()
    assert states._checkpointing is not None
    await states._checkpointing
    grown = states.db.path.stat().st_size
    assert grown > 64 * 1024, "the rows were copied into the file"
    assert states.get("acme/u49").values["userName"].startswith("user-49-")
    states.close()
