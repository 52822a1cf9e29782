"""The activity log on Kafka: every replica publishes what it did, and every replica reads it all back.

    pipeline, breakers, backfill, reconciliation, on-demand sync
        -> ActivityPublisher (an ActivitySink: fire and forget, bounded)   -> the activity topic
    the activity topic -> ActivityFollower (an ActivityView: no consumer group, the whole topic)
        -> ActivityBook (service.domain.activity: the newest entries and the summary per downstream)

The log is not the source of truth (docs/decisions/0018): an entry may be lost in a crash or dropped
when Kafka cannot keep up, and nothing downstream depends on it. Entries are keyed by tenant key, so one
downstream's entries keep their order. This module also turns the pipeline's verdicts into entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from service.domain.activity import (
    ANSWER_CHARS,
    ActivityBook,
    ActivityEntry,
    ActivitySummary,
    SentRequest,
    decode_entry,
    encode_entry,
)
from service.domain.changes import UserChange
from service.domain.downstreams import split_tenant_key, tenant_key
from service.domain.groups import GroupChange
from service.domain.state import UserState
from service.kafka_topics import partitions_of
from service.metrics import Metrics
from service.pipeline.applier import Applied, GroupApplied, SetAside, Verdict
from service.scim.breaker import BreakerState
from service.settings import Settings

log = structlog.get_logger(__name__)

UNSENT_MAX = 10_000  # entries waiting for the producer; more are dropped (and counted)
STOP_SECONDS = 2.0  # at shutdown, how long what is waiting may take to reach the producer
RECORD_MAX_BYTES = 64 * 1024  # a record read back larger than this is not an entry of ours

_ACTIONS = {
    "created": "create",
    "linked": "link",
    "updated": "update",
    "deactivated": "deactivate",
    "deleted": "delete",
    "unchanged": "none",
    "skipped": "none",
}
_SHARED = frozenset({"coalesced", "superseded"})  # reasons of a queued change whose write another one made
_CIRCUIT = {BreakerState.CLOSED: "closed", BreakerState.HALF_OPEN: "half_open", BreakerState.OPEN: "open"}


# -- publishing --------------------------------------------------------------------------------------


class ActivityPublisher:
    """An ActivitySink over the service's producer. `record` only queues (never blocks, never raises); one
    task hands the entries to the producer, which batches them. At most `unsent_max` wait: beyond that an
    entry is dropped and counted (Kafka is slower than the pipeline, or unreachable)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, metrics: Metrics, unsent_max: int = UNSENT_MAX) -> None:
        self._producer = producer
        self._topic = topic
        self._unsent: deque[ActivityEntry] = deque()
        self._unsent_max = unsent_max
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # nothing waits
        self._task: asyncio.Task[None] | None = None
        self._published = metrics.activity.labels("published")
        self._dropped = metrics.activity.labels("dropped")

    def start(self) -> None:
        self._task = asyncio.create_task(self._send_all(), name="activity-publisher")

    def record(self, entry: ActivityEntry) -> None:
        try:
            if len(self._unsent) >= self._unsent_max:
                self._dropped.inc()
                return
            self._unsent.append(entry)
            self._idle.clear()
            self._wake.set()
        except Exception:  # a log entry must never cost a change
            log.exception("activity.record.failed")

    async def stop(self) -> None:
        """Hand what waits to the producer (bounded: STOP_SECONDS), then stop; the producer's own stop
        sends what it holds."""
        if self._task is None:
            return
        if self._unsent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), STOP_SECONDS)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _send_all(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._unsent:
                entry = self._unsent[0]
                try:
                    key = tenant_key(entry.realm, entry.downstream).encode()
                    delivery = await self._producer.send(self._topic, key=key, value=encode_entry(entry))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # KafkaError, or an entry that does not encode: dropped
                    self._dropped.inc()
                    log.warning("activity.publish.failed", error=str(exc)[:300])
                else:
                    delivery.add_done_callback(self._delivered)
                    self._published.inc()
                self._unsent.popleft()
            self._idle.set()

    def _delivered(self, delivery: asyncio.Future[Any]) -> None:
        if not delivery.cancelled() and delivery.exception() is not None:
            self._dropped.inc()


# -- reading back --------------------------------------------------------------------------------------


class ActivityFollower:
    """An ActivityView: this replica's fold of the whole activity topic, read without a consumer group from
    the start of the retained window and followed from there, so every replica shows the same entries.
    `loaded` is set once what the topic held at start has been read."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        book: ActivityBook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._book = book or ActivityBook(settings.activity_recent_per_downstream)
        self._unreadable = metrics.activity.labels("unreadable")
        self._clock = clock
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.loaded = asyncio.Event()

    def recent(self, realm: str, downstream: str, *, user: str | None = None, limit: int = 50) -> list[ActivityEntry]:
        return self._book.recent(realm, downstream, user=user, limit=limit)

    def summary(self, realm: str, downstream: str, now: float) -> ActivitySummary:
        return self._book.summary(realm, downstream, now)

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **self._settings.kafka_client_options(),
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=1024 * 1024,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._follow(self._consumer), name="activity-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                end = await self._assign(consumer)
                break
            except Exception as exc:  # the topic not visible yet, the broker away: the log waits, nothing else
                log.warning("activity.follow.failed", error=str(exc)[:300])
                await asyncio.sleep(1)
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            except KafkaError as exc:
                log.warning("activity.follow.failed", error=str(exc)[:300])
                await asyncio.sleep(1)
                continue
            for records in batches.values():
                for record in records:
                    self._add(record.value)
            if not self.loaded.is_set() and await self._reached(consumer, end):
                self.loaded.set()

    async def _assign(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        """Every partition, from the first entry of the retention window; returns their end offsets now."""
        topic = self._settings.activity_topic
        partitions = [TopicPartition(topic, p) for p in await partitions_of(self._settings, topic)]
        consumer.assign(partitions)
        since_ms = int((self._clock() - self._settings.activity_retention_hours * 3600) * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, max(since_ms, 0)))
        end: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        for tp in partitions:
            at = found.get(tp)
            consumer.seek(tp, at.offset if at is not None else end[tp])
        return end

    @staticmethod
    async def _reached(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
        """Whether every partition was read up to `end`."""
        for tp, offset in end.items():
            if int(await consumer.position(tp)) < offset:
                return False
        return True

    def _add(self, value: bytes | None) -> None:
        try:
            if value is None or len(value) > RECORD_MAX_BYTES:
                raise ValueError("not an activity entry")
            entry = decode_entry(value)
        except (ValueError, TypeError):  # junk on the topic: counted, skipped
            self._unreadable.inc()
            return
        self._book.add(entry)


# -- entries from what the pipeline did ----------------------------------------------------------------


def user_entries(
    changes: Sequence[UserChange],
    verdicts: Sequence[Verdict],
    sent: Sequence[SentRequest],
    states: Callable[[str], UserState],
    now: float,
) -> list[ActivityEntry]:
    """One entry per change of a user's run (changes applied together share one write): the requests go
    with the change that made the write (or, on a failure, the last). Changes of a realm no tenant knows
    make no entry. `states`: the user's stored state by key (for the username when a change lacks it)."""
    made = [i for i, v in enumerate(verdicts) if not (isinstance(v, Applied) and v.reason in _SHARED)]
    writer = made[-1] if made else len(verdicts) - 1
    found = []
    for i, (change, verdict) in enumerate(zip(changes, verdicts, strict=True)):
        entry = _user_entry(change, verdict, tuple(sent) if i == writer else (), states, now)
        if entry is not None:
            found.append(entry)
    return found


def _user_entry(
    change: UserChange, verdict: Verdict, sent: tuple[SentRequest, ...], states: Callable[[str], UserState], now: float
) -> ActivityEntry | None:
    detail: dict[str, Any] = {"event": change.event_type}
    if change.attributes:
        detail["attributes"] = sorted(change.attributes)
    if isinstance(verdict, Applied):
        applied = verdict.change
        name = applied.attributes.get("userName") or verdict.state.values.get("userName")
        outcome = "coalesced" if verdict.reason == "coalesced" else str(verdict.result)
        if applied.attributes:
            detail["attributes"] = sorted(applied.attributes)
        return ActivityEntry(
            now,
            applied.realm,
            applied.downstream,
            "user",
            outcome,
            applied.user_id,
            _text(name),
            _ACTIONS.get(str(verdict.result)),
            verdict.reason or None,
            sent,
            detail,
        )
    if isinstance(verdict, GroupApplied) or verdict.realm is None:
        return None  # no tenant knows the realm: nothing to show
    realm, downstream = split_tenant_key(verdict.realm)
    name = change.attributes.get("userName") or states(change.key).values.get("userName")
    if isinstance(verdict, SetAside):
        detail["error"] = str(verdict.error)[:ANSWER_CHARS]
        outcome = "parked" if verdict.park else "dead_lettered"
        return ActivityEntry(
            now, realm, downstream, "user", outcome, change.user_id, _text(name), None, verdict.reason, sent, detail
        )
    return ActivityEntry(
        now, realm, downstream, "user", "skipped", change.user_id, _text(name), None, verdict.reason, sent, detail
    )


def group_entry(
    changes: Sequence[GroupChange], verdict: Verdict, sent: Sequence[SentRequest], now: float
) -> ActivityEntry | None:
    """A group's batch as one entry (None: no tenant knows the realm)."""
    first = changes[0]
    detail: dict[str, Any] = {"changes": len(changes)}
    if isinstance(verdict, GroupApplied):
        detail["patches"] = verdict.patches
        change = verdict.change
        name = change.name or verdict.state.name
        return ActivityEntry(
            now,
            change.realm,
            change.downstream,
            "group",
            str(verdict.result),
            change.group_id,
            _text(name),
            _ACTIONS.get(str(verdict.result)),
            verdict.reason or None,
            tuple(sent),
            detail,
        )
    if isinstance(verdict, Applied) or verdict.realm is None:
        return None
    realm, downstream = split_tenant_key(verdict.realm)
    outcome = "skipped"
    if isinstance(verdict, SetAside):
        detail["error"] = str(verdict.error)[:ANSWER_CHARS]
        outcome = "parked" if verdict.park else "dead_lettered"
    return ActivityEntry(
        now,
        realm,
        downstream,
        "group",
        outcome,
        first.group_id,
        _text(first.name),
        None,
        verdict.reason,
        tuple(sent),
        detail,
    )


def circuit_entry(key: str, state: BreakerState, now: float) -> ActivityEntry:
    """A breaker transition of the downstream with tenant key `key`, as this replica saw it."""
    realm, downstream = split_tenant_key(key)
    return ActivityEntry(now, realm, downstream, "circuit", _CIRCUIT[state])


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
