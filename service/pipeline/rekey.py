"""Stage 1: plugin records -> `UserChange` records on the keyed changes topic, exactly once.

The plugin writes null keys, so one user's events are spread over all source partitions. This stage
parses each record and re-publishes the normalized change keyed `<realm>/<user id>` (Kafka Streams'
repartition idea), in a transaction together with the input offsets: a crash either publishes a
batch and commits its offsets, or neither. A realm with several downstreams gets one change per
downstream, each keyed for its downstream (service.domain.downstreams), so a downstream that is slow or
down holds only its own lanes; the names come from following the tenants topic (downstream_names).
Poison records go to the dead-letter topic in the same transaction; events that need nothing
downstream are counted and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from service.domain.changes import Skip, change_from_event, clamp_future
from service.domain.downstreams import fan_out
from service.domain.keycloak import parse_record
from service.errors import PoisonRecord
from service.kafka_assignor import partition_assignors
from service.kafka_partitioner import CachedPartitioner
from service.kafka_protocol import leave_static_group
from service.metrics import Metrics
from service.pipeline.downstream_names import DownstreamFollower
from service.pipeline.rewind import rewind_to_committed
from service.pipeline.set_aside import set_aside
from service.settings import Settings

log = structlog.get_logger(__name__)

# Retry pause of the transactional producer: the Java client's pause between back-to-back transactions.
TXN_RETRY_BACKOFF_MS = 20
# Records per transaction at most. A transaction costs a few broker round trips whatever its size, each
# waiting its turn in an event loop that stage 2 keeps busy: at a low rate batches are small (what came
# in since the last commit), and behind a burst they grow, so the stage keeps up with a backlog.
MAX_BATCH = 10_000
YIELD_EVERY = 500  # records routed between two turns of the event loop (stage 2 and the API keep going)

# Event types that get their own metric label; anything else is "other" (labels stay bounded).
KNOWN_TYPES = frozenset(
    {
        "REGISTER",
        "UPDATE_PROFILE",
        "UPDATE_EMAIL",
        "USER_DISABLED_BY_PERMANENT_LOCKOUT",
        "DELETE_ACCOUNT",
        "LOGIN",
        "LOGOUT",
        "CODE_TO_TOKEN",
        "USER_CREATE",
        "USER_UPDATE",
        "USER_DELETE",
        "USER_ACTION",
        "GROUP_MEMBERSHIP_CREATE",
        "GROUP_MEMBERSHIP_DELETE",
        "REALM_ROLE_MAPPING_CREATE",
    }
)


class RekeyStage(ConsumerRebalanceListener):
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._counted: dict[tuple[str, str], Any] = {}  # events_total's series, looked up once each
        self._group_id = f"{settings.group_id}.rekey"
        self._max_ahead_ms = int(settings.max_clock_skew_seconds * 1000)
        self._lock = asyncio.Lock()
        self._generation = 0  # bumped by every rebalance: a batch fetched across one is dropped
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._downstreams = DownstreamFollower(settings)
        self._publishing: asyncio.Future[None] | None = None  # the batch whose transaction is open
        self.assigned = asyncio.Event()

    async def start(self) -> None:
        await self._downstreams.start()  # before the first event: each must find its realm's downstreams
        options = self._settings.kafka_client_options()
        # Stable per instance: a restarted process fences its predecessor's open transaction at once; the
        # short timeout bounds the wait when an instance does not come back (a batch commits in well under a second).
        transactional_id = f"{self._group_id}-{self._settings.instance_name}"
        # A transaction begun while the previous one's commit markers are still being written is
        # answered CONCURRENT_TRANSACTIONS and retried after retry_backoff_ms: aiokafka's 100 ms default
        # put a tenth of a second on the path of every change behind it (TXN_RETRY_BACKOFF_MS).
        self._producer = AIOKafkaProducer(
            **options,
            transactional_id=transactional_id,
            partitioner=CachedPartitioner(),  # the default's partitions, each key hashed once
            linger_ms=5,
            transaction_timeout_ms=20_000,
            retry_backoff_ms=TXN_RETRY_BACKOFF_MS,
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            **options,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_bytes=max(52_428_800, self._settings.max_record_bytes * 2),
            rebalance_timeout_ms=self._settings.rebalance_timeout_ms,
            partition_assignment_strategy=partition_assignors(self._settings.kafka_partition_assignor),
            **self._settings.static_membership(),
        )
        self._consumer.subscribe(self._settings.source_topics, listener=self)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="rekey")

    async def stop(self) -> None:
        log.info("rekey.stopping", batch_open=self._publishing is not None and not self._publishing.done())
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._publishing is not None:
            # the loop's cancellation leaves its shielded batch running, and releases the lock: the batch
            # finishes its transaction (or fails it) before the clients it uses stop
            with contextlib.suppress(Exception):
                await self._publishing
        async with self._lock:
            if self._consumer:
                await leave_static_group(self._consumer)
                await self._consumer.stop()
            if self._producer:
                await self._producer.stop()
        await self._downstreams.stop()
        log.info("rekey.stopped")

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:  # a batch's transaction completes before the partitions go
            self._generation += 1

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._generation += 1
        self.assigned.set()
        log.info("rekey.assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            generation = self._generation
            batches = await self._consumer.getmany(timeout_ms=500, max_records=MAX_BATCH)
            if not batches:
                continue
            async with self._lock:
                if generation != self._generation:  # fetched across a rebalance: read again from the commits
                    await rewind_to_committed(self._consumer, batches)
                    continue
                self._publishing = asyncio.ensure_future(self._publish(batches))
                try:
                    await asyncio.shield(self._publishing)
                except Exception as exc:  # the stage must outlive a failed batch
                    log.warning("rekey.batch.aborted", error=str(exc), error_type=type(exc).__name__)
                    await asyncio.sleep(1)  # e.g. the broker is away: do not spin
                    await rewind_to_committed(self._consumer, self._consumer.assignment())

    async def _publish(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        assert self._producer is not None
        routed = 0
        async with self._producer.transaction():
            for records in batches.values():
                for record in records:
                    await self._route(record)
                    routed += 1
                    if routed % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
            offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
            await self._producer.send_offsets_to_transaction(offsets, self._group_id)

    def _count(self, label: str, outcome: str) -> None:
        """One event in events_total (a labels() lookup per event cost more than the count)."""
        series = self._counted.get((label, outcome))
        if series is None:
            series = self._counted[(label, outcome)] = self._metrics.events.labels(label, outcome)
        series.inc()

    async def _route(self, record: ConsumerRecord[bytes, bytes]) -> None:
        assert self._producer is not None
        ctx = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            if record.value is not None and len(record.value) > self._settings.max_record_bytes:
                raise PoisonRecord("record_too_large", f"{len(record.value)} bytes")
            event = parse_record(record.value)
            result = change_from_event(event)
        except Exception as exc:  # no record may stop the consumer
            reason = exc.reason if isinstance(exc, PoisonRecord) else "unexpected_error"
            letter = set_aside(record, reason, exc, keep_value=reason != "record_too_large")
            await self._producer.send(
                self._settings.dead_letter_topic, key=letter.key, value=letter.value, headers=letter.headers
            )
            self._metrics.events.labels("unparsed", reason).inc()
            self._metrics.dead_letters.labels(reason).inc()
            log.warning("event.dead_lettered", reason=reason, detail=str(exc)[:200], **ctx)
            return
        label = event.type if event.type in KNOWN_TYPES else "other"
        if isinstance(result, Skip):
            self._count(label, result.reason)
            log.debug(
                "event.skipped",
                reason=result.reason,
                realm=event.realm,
                event_id=event.event_id,
                type=event.type,
                **ctx,
            )
            return
        result, clamped = clamp_future(result, int(time.time() * 1000), self._max_ahead_ms)
        if clamped:
            self._metrics.clamped_times.inc()
            log.warning(
                "event.time.clamped",
                realm=event.realm,
                event_id=event.event_id,
                event_time=event.time_ms,
                clamped_to=result.time_ms,
                hint="a Keycloak node's clock is ahead; check its NTP",
                **ctx,
            )
        for change in fan_out(result, self._downstreams.index.names(result.realm)):
            await self._producer.send(self._settings.changes_topic, key=change.key.encode(), value=change.to_json())
        self._count(label, "forwarded")
        log.debug(
            "event.forwarded",
            realm=result.realm,
            user_id=result.user_id,
            event_id=result.event_id,
            type=event.type,
            **ctx,
        )
