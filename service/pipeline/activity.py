"""The activity log on Kafka: every replica publishes what it did, and every replica reads it all back.

    pipeline, breakers, backfill, reconciliation, on-demand sync
        -> ActivityPublisher (an ActivitySink: fire and forget, bounded)   -> the activity topic
    the activity topic -> ActivityFollower (an ActivityView: no consumer group, the whole topic)
        -> ActivityBook (service.domain.activity: the newest entries and the summary per downstream)

The log is not the source of truth (docs/decisions/0020): an entry may be lost in a crash or dropped
when Kafka cannot keep up, and nothing downstream depends on it. Records are keyed by tenant key, so one
downstream's entries keep their order; a record carries the entries of a downstream that came within
LINGER_SECONDS (one send and one read for many). This module also turns the pipeline's verdicts into
entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
    decode_entries,
    encode_entries,
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
LINGER_SECONDS = 0.05  # an entry waits this long for others to share its record (the console does not mind)
TAKEN = 1_000  # entries taken from the queue at once (grouped by downstream into records)
RECORD_ENTRIES = 50  # entries per record at most (an entry is at most ~13 kB: 20 requests, answers cut)
STOP_SECONDS = 2.0  # at shutdown, how long what is waiting may take to reach the producer
RECORD_MAX_BYTES = 1024 * 1024  # a record read back larger than this is not of ours

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
        self._idle = asyncio.Event()  # nothing waits, nothing is being handed over
        self._idle.set()
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
        if not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), STOP_SECONDS)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _send_all(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(LINGER_SECONDS)  # what comes meanwhile joins the same records
            self._wake.clear()
            while self._unsent:
                for key, entries in self._take().items():
                    await self._send(key, entries)
            self._idle.set()

    def _take(self) -> dict[str, list[ActivityEntry]]:
        """What waits now (up to TAKEN), by tenant key in order, each key's in records of RECORD_ENTRIES."""
        taken: dict[str, list[ActivityEntry]] = {}
        for _ in range(min(len(self._unsent), TAKEN)):
            entry = self._unsent.popleft()
            taken.setdefault(tenant_key(entry.realm, entry.downstream), []).append(entry)
        return taken

    async def _send(self, key: str, entries: list[ActivityEntry]) -> None:
        for first in range(0, len(entries), RECORD_ENTRIES):
            chunk = entries[first : first + RECORD_ENTRIES]
            try:
                value = encode_entries(chunk)
                delivery = await self._producer.send(self._topic, key=key.encode(), value=value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # KafkaError, or an entry that does not encode: dropped
                self._dropped.inc(len(chunk))
                log.warning("activity.publish.failed", error=str(exc)[:300], entries=len(chunk))
            else:
                delivery.add_done_callback(functools.partial(self._delivered, len(chunk)))
                self._published.inc(len(chunk))

    def _delivered(self, entries: int, delivery: asyncio.Future[Any]) -> None:
        if not delivery.cancelled() and delivery.exception() is not None:
            self._dropped.inc(entries)


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

    def downstreams(self) -> list[tuple[str, str]]:
        return self._book.downstreams()

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
            entries = decode_entries(value)
        except (ValueError, TypeError):  # junk on the topic: counted, skipped
            self._unreadable.inc()
            return
        for entry in entries:
            self._book.add(entry)


# -- entries from what the pipeline did ----------------------------------------------------------------


def user_entries(
    changes: Sequence[UserChange],
    verdicts: Sequence[Verdict],
    sent: Sequence[SentRequest],
    states: Callable[[str], UserState],
    now: float,
) -> list[ActivityEntry]:
    """What a user's run of changes did, an entry per write: the changes whose values went out in another
    one's write (coalesced, superseded), and changes sharing one failure, are counted in its entry
    (detail `changes`, `attributes`: every name they changed) rather than shown alone; the requests go
    with the last entry. A realm no tenant knows makes no entry. `states`: the stored state by key (the
    username, when a change lacks it)."""
    shown: list[int] = []
    for i, verdict in enumerate(verdicts):
        shared = isinstance(verdict, Applied) and verdict.reason in _SHARED
        if not shared and all(verdicts[j] is not verdict for j in shown):
            shown.append(i)
    if not shown:
        shown = [len(verdicts) - 1]
    counted: dict[int, list[UserChange]] = {i: [] for i in shown}
    for i, verdict in enumerate(verdicts):
        counted[next((j for j in shown if verdicts[j] is verdict), shown[-1])].append(changes[i])
    found = []
    for i in shown:
        entry = _user_entry(verdicts[i], changes[i], counted[i], tuple(sent) if i == shown[-1] else (), states, now)
        if entry is not None:
            found.append(entry)
    return found


def _user_entry(
    verdict: Verdict,
    change: UserChange,
    counted: list[UserChange],
    sent: tuple[SentRequest, ...],
    states: Callable[[str], UserState],
    now: float,
) -> ActivityEntry | None:
    detail: dict[str, Any] = {"event": change.event_type}
    names = set(change.attributes).union(*(c.attributes for c in counted)) if len(counted) > 1 else change.attributes
    if len(counted) > 1:
        detail["changes"] = len(counted)
    if isinstance(verdict, Applied):
        applied = verdict.change
        name = applied.attributes.get("userName") or verdict.state.values.get("userName")
        outcome = "coalesced" if verdict.reason == "coalesced" else str(verdict.result)
        if names or applied.attributes:
            detail["attributes"] = sorted(names or applied.attributes)
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
    if names:
        detail["attributes"] = sorted(names)
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
