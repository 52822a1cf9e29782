"""Per-user and per-group state of the partitions this replica owns: on disk, backed by a compacted
changelog topic.

The changelog is co-partitioned with the changes topic by construction: a state record is written to
the partition number of the change it results from. The replica keeps a copy of the changelog on disk
(service.pipeline.state_db, raw records, decoded when read) and a small in-memory cache of decoded
states, so memory does not grow with the users.

Like a Kafka Streams state store, the copy is checkpointed with the changelog offset it reflects: on
assignment a partition is read from its checkpoint to the end, or from the beginning when there is no
usable checkpoint (a first start, a new pod, a recreated or truncated topic). `save` writes the copy and
sends the record without waiting for the broker; `flush` waits for every send and moves the checkpoint
to what the broker acknowledged, in the same transaction as the data. The consumer flushes before it
commits offsets, so a change's state is in the changelog before its offset is committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from service.domain.groups import GroupState
from service.domain.state import UserState
from service.metrics import Metrics
from service.pipeline.state_db import WAL_BYTES, StateDb
from service.settings import Settings

log = structlog.get_logger(__name__)

State = UserState | GroupState
COUNT_INTERVAL_SECONDS = 30.0
# per partition and fetch: larger fetches read no faster, and their buffered records cost memory
RESTORE_FETCH_BYTES = 256 * 1024
# records per restore write (buffered while the previous write runs)
RESTORE_BATCH_RECORDS = 20_000
# records per restore transaction: larger ones write each touched index page once for more records
RESTORE_COMMIT_RECORDS = 100_000


class ChangelogProducer(Protocol):
    """What the store needs of a producer (aiokafka's): a send that returns the acknowledgement's future."""

    async def send(self, topic: str, value: bytes, key: bytes, partition: int) -> Any: ...


def decode_state(raw: bytes) -> State:
    """A changelog record: a group's state says so (`"kind": "group"`), a user's does not."""
    return GroupState.from_json(raw) if raw.startswith(b'{"kind":"group"') else UserState.from_json(raw)


def state_dir(settings: Settings) -> Path:
    return Path(settings.state_dir) if settings.state_dir else Path(tempfile.gettempdir()) / "outbound-scim-state"


@dataclass(frozen=True, slots=True)
class Restored:
    """What an assignment's restore read: records per start (checkpoint or scratch), and what is held."""

    records: dict[str, int] = field(default_factory=dict)  # "checkpoint" / "scratch" -> records read
    from_checkpoint: tuple[int, ...] = ()
    from_scratch: tuple[int, ...] = ()
    users: int = 0
    groups: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.records.values())


class UserStateStore:
    def __init__(self, settings: Settings, producer: ChangelogProducer, metrics: Metrics | None = None) -> None:
        self._settings = settings
        self._producer = producer
        self._metrics = metrics or Metrics()
        self._cache: OrderedDict[str, tuple[int, State]] = OrderedDict()
        self._cache_size = settings.state_cache_size
        self._pending: dict[int, list[tuple[bytes, asyncio.Future[RecordMetadata]]]] = {}
        self._owned: set[int] = set()
        self._db: StateDb | None = None
        self._counted_at = 0.0
        self._flushing = asyncio.Lock()  # a flush also waits for the sends a concurrent one took
        self._checkpointing: asyncio.Task[None] | None = None  # the WAL copied into the file, off the loop

    @property
    def db(self) -> StateDb:
        if self._db is None:
            self._db = StateDb.open(state_dir(self._settings), self._settings.user_state_topic)
        return self._db

    def close(self) -> None:
        """Commit what is written and release the file (the next process with this state dir takes it)."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self._cache.clear()

    # -- reads --------------------------------------------------------------------------------------

    def get(self, key: str) -> UserState:
        state = self._state(key)
        return state if isinstance(state, UserState) else UserState()

    def get_group(self, key: str) -> GroupState:
        state = self._state(key)
        return state if isinstance(state, GroupState) else GroupState()

    def _state(self, key: str) -> State | None:
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit[1]
        row = self.db.get(key.encode())
        if row is None:
            return None
        state = decode_state(row[1])
        self._remember(key, row[0], state)
        return state

    def _remember(self, key: str, partition: int, state: State) -> None:
        if self._cache_size <= 0:
            return
        self._cache[key] = (partition, state)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # -- writes -------------------------------------------------------------------------------------

    async def save(self, key: str, partition: int, state: State) -> None:
        """Write the state here and send it to the changelog; durable there once `flush` returns."""
        raw, raw_key = state.to_json(), key.encode()
        self.db.put(raw_key, partition, raw)
        self._remember(key, partition, state)
        sent = await self._producer.send(self._settings.user_state_topic, key=raw_key, value=raw, partition=partition)
        self._pending.setdefault(partition, []).append((raw_key, sent))

    async def flush(self) -> None:
        """Wait for every state sent so far; commit the local copy with the checkpoints the acknowledged
        offsets allow. Raises KafkaError when a send failed (its key's newest state is sent again): the
        caller must not commit offsets then."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        checkpoints: dict[int, int] = {}
        failed: list[tuple[bytes, int, BaseException]] = []
        for partition, sends in pending.items():
            results = await asyncio.gather(*(sent for _, sent in sends), return_exceptions=True)
            acked = [r.offset for r in results if isinstance(r, RecordMetadata)]
            for (key, _), result in zip(sends, results, strict=True):
                if isinstance(result, BaseException):
                    failed.append((key, partition, result))
            if acked:
                checkpoints[partition] = max(acked) + 1
        self.db.commit(checkpoints)
        if (self._checkpointing is None or self._checkpointing.done()) and self.db.wal_bytes() >= WAL_BYTES:
            self._checkpointing = asyncio.create_task(asyncio.to_thread(self.db.checkpoint_wal))
            self._checkpointing.add_done_callback(_log_checkpoint_failure)
        if time.monotonic() - self._counted_at >= COUNT_INTERVAL_SECONDS:
            await self._count()
        if failed:
            await self._send_again({(key, partition) for key, partition, _ in failed})
            error = failed[0][2]
            raise error if isinstance(error, KafkaError) else KafkaError(f"state not written to the changelog: {error}")

    async def _send_again(self, keys: set[tuple[bytes, int]]) -> None:
        for key, partition in keys:
            row = self.db.get(key)
            if row is not None:
                sent = await self._producer.send(
                    self._settings.user_state_topic, key=key, value=row[1], partition=partition
                )
                self._pending.setdefault(partition, []).append((key, sent))

    # -- assignment ---------------------------------------------------------------------------------

    async def restore(self, partitions: set[int]) -> Restored:
        """Bring the local copy of `partitions` up to the end of their changelog: from the checkpoint when
        it is within the partition's offsets, else from the beginning (the partition's rows dropped)."""
        if not partitions:
            return Restored()
        started = time.monotonic()
        try:
            restored = await self._restore(partitions)
        except sqlite3.DatabaseError as exc:
            log.warning("state.store.unreadable", path=str(self.db.path), error=str(exc))
            self.db.reset()
            self._cache.clear()
            restored = await self._restore(partitions)
        self._owned |= partitions
        users, groups = await self._count()
        for start, records in restored.records.items():
            self._metrics.state_restored.labels(start).inc(records)
        return Restored(
            restored.records,
            restored.from_checkpoint,
            restored.from_scratch,
            users,
            groups,
            round(time.monotonic() - started, 3),
        )

    async def _restore(self, partitions: set[int]) -> Restored:
        db, topic = self.db, self._settings.user_state_topic
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer = AIOKafkaConsumer(
            **self._settings.kafka_client_options(),
            enable_auto_commit=False,
            max_partition_fetch_bytes=RESTORE_FETCH_BYTES,
        )
        await consumer.start()
        records = {"checkpoint": 0, "scratch": 0}
        start_of: dict[int, str] = {}
        writing: asyncio.Task[None] | None = None
        loading = False
        try:
            consumer.assign(tps)
            begin = await consumer.beginning_offsets(tps)
            end = await consumer.end_offsets(tps)
            for tp in tps:
                checkpoint = db.checkpoint(tp.partition)
                if checkpoint is not None and begin[tp] <= checkpoint <= end[tp]:
                    start_of[tp.partition] = "checkpoint"
                    consumer.seek(tp, checkpoint)
                else:
                    start_of[tp.partition] = "scratch"
                    db.wipe(tp.partition)
                    consumer.seek(tp, begin[tp])
            remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
            # nothing held and no other partition in use (a new pod): append now, index the keys at the end
            loading = not self._owned and db.start_load()
            pending: dict[int, tuple[list[tuple[bytes, bytes | None]], int]] = {}
            buffered = uncommitted = 0
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, batch in batches.items():
                    if not batch:
                        continue
                    records[start_of[tp.partition]] += len(batch)
                    rows = pending.setdefault(tp.partition, ([], 0))[0]
                    rows += [(r.key, r.value) for r in batch if r.key is not None]
                    pending[tp.partition] = (rows, batch[-1].offset + 1)
                    buffered += len(batch)
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
                if buffered >= RESTORE_BATCH_RECORDS or (pending and not remaining):
                    if writing is not None:
                        await writing
                    uncommitted += buffered
                    commit = uncommitted >= RESTORE_COMMIT_RECORDS
                    # written while the next records are fetched and decoded (sqlite releases the GIL)
                    writing = asyncio.create_task(asyncio.to_thread(db.put_records, pending, commit=commit))
                    pending, buffered = {}, 0
                    uncommitted = 0 if commit else uncommitted
            if writing is not None:
                await writing
            db.commit({tp.partition: await consumer.position(tp) for tp in tps})
            if loading:
                await asyncio.to_thread(db.finish_load)
                loading = False
        finally:
            if writing is not None and not writing.done():
                await asyncio.wait([writing])
            if loading:  # a load that did not finish: its file cannot be continued
                db.reset()
            await consumer.stop()
        return Restored(
            {k: v for k, v in records.items() if v},
            tuple(p for p, s in sorted(start_of.items()) if s == "checkpoint"),
            tuple(p for p, s in sorted(start_of.items()) if s == "scratch"),
        )

    def forget(self, partitions: set[int]) -> None:
        """A revoked partition's rows stay on disk (a later assignment continues from its checkpoint);
        its cached states go."""
        for key in [k for k, (p, _) in self._cache.items() if p in partitions]:
            del self._cache[key]
        for partition in partitions:
            self._pending.pop(partition, None)
        self._owned -= partitions
        self._counted_at = 0.0  # the gauge is refreshed at the next flush

    async def _count(self) -> tuple[int, int]:
        """Refresh the gauge of users and groups held for the owned partitions (off the event loop)."""
        self._counted_at = time.monotonic()
        users, groups = await asyncio.to_thread(self.db.count, set(self._owned))
        self._metrics.state_entries.labels("user").set(users)
        self._metrics.state_entries.labels("group").set(groups)
        return users, groups


def _log_checkpoint_failure(task: asyncio.Task[None]) -> None:
    """A failed checkpoint loses nothing (the WAL keeps the rows); the next flush tries again."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("state.checkpoint.failed", error=str(error))
