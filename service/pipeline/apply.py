"""Stage 2, the consumer: read the keyed changes, one at a time per user, and act on each verdict.

Records of the changes topic are queued per key (`<realm>/<user id>`) and run concurrently across
keys up to a global cap. Offsets are committed per partition only below the first unfinished record.
On revocation, queued work is handed back, running work is drained, finished offsets are committed;
work of an old assignment that completes late is ignored (assignment epoch). A newly assigned
partition's user state is restored before any of its records is read.

What to do with one change is the applier's decision (service.pipeline.applier); this module carries
it out: it saves the user's new state, parks or dead-letters what cannot be applied now (the offset
moves on and nothing is dropped), counts and logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from service.domain.activity import ActivitySink, SentRequest
from service.domain.changes import UserChange, decode_change
from service.domain.downstreams import labels
from service.domain.groups import GroupChange, is_group_key
from service.errors import PoisonRecord
from service.kafka_assignor import partition_assignors
from service.kafka_protocol import leave_static_group
from service.keycloak_admin.client import KeycloakAdminClient
from service.metrics import Metrics
from service.pipeline.activity import group_entry, user_entries
from service.pipeline.applier import Applier, GroupApplied, GroupApplier, SetAside, Skipped, Verdict, foldable
from service.pipeline.offsets import PartitionOffsets
from service.pipeline.rewind import rewind_to_committed
from service.pipeline.scheduler import KeyedScheduler
from service.pipeline.set_aside import REPLAYED, SetAsideRecord, set_aside
from service.pipeline.user_state import UserStateStore
from service.retry import RetryPolicy
from service.scim.bulk import BulkPort
from service.scim.client import ScimClient
from service.scim.transport import recording
from service.settings import Settings
from service.tenants.store import TenantStore

log = structlog.get_logger(__name__)

COMMIT_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Work:
    record: ConsumerRecord[bytes, bytes]
    epoch: int

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)


class ApplyStage(ConsumerRebalanceListener):
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        tenants: TenantStore,
        scim: ScimClient,
        producer: AIOKafkaProducer,
        keycloak: KeycloakAdminClient | None = None,
        *,
        authoritative: bool = False,
        activity: ActivitySink | None = None,
    ) -> None:
        self._activity = activity  # what became of each change, for the activity log
        self._settings = settings
        self._metrics = metrics
        self._tenants = tenants
        self._scim = scim
        self._producer = producer
        self._states = UserStateStore(settings, producer, metrics)
        self._applier = Applier(
            tenants,
            self._states,
            BulkPort(scim, metrics),  # user writes of many users at once go out as SCIM /Bulk where announced
            keycloak,
            authoritative=authoritative,
            budget_seconds=settings.change_retry_budget_seconds,
            backoff=RetryPolicy(1, settings.retry_base_seconds, settings.retry_max_seconds),
            metrics=metrics,
        )
        self._group_applier = GroupApplier(
            tenants,
            self._states,
            scim,
            keycloak,
            authoritative=authoritative,
            budget_seconds=settings.change_retry_budget_seconds,
            backoff=RetryPolicy(1, settings.retry_base_seconds, settings.retry_max_seconds),
            metrics=metrics,
        )
        batch = (settings.group_batch_quiet_seconds, settings.group_batch_max_seconds)
        self._scheduler: KeyedScheduler[Work] = KeyedScheduler(
            self._process,
            settings.max_in_flight,
            linger=lambda key: batch if is_group_key(key) else None,
            take_queued=True,  # a user's queued changes: one downstream write (Applier.apply_queued)
        )
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._epoch = 0
        self._to_restore: set[TopicPartition] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._committing = asyncio.Lock()  # one commit at a time: the committer's, a revocation's, the last
        self._stopping = False
        self._stopped = asyncio.Event()
        self.assigned = asyncio.Event()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **self._settings.kafka_client_options(),
            group_id=f"{self._settings.group_id}.apply",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            rebalance_timeout_ms=self._settings.rebalance_timeout_ms,
            partition_assignment_strategy=partition_assignors(self._settings.kafka_partition_assignor),
            max_poll_records=5000,
            **self._settings.static_membership(),
        )
        self._consumer.subscribe([self._settings.changes_topic], listener=self)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="apply")
        self._committer = asyncio.create_task(self._commit_every_interval(), name="apply.commit")

    async def stop(self) -> None:
        """Stop intake, let running work finish (bounded), commit what finished, leave the group."""
        self._stopping = True
        self._stopped.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._committer:  # not cancelled: a commit under way finishes (its sends are not abandoned)
            await self._committer
        await self._drain()
        await self._commit()
        log.info("apply.revoked", partitions=sorted(tp.partition for tp in self._offsets), stopping=True)
        if self._consumer:
            await leave_static_group(self._consumer)
            await self._consumer.stop()
        self._states.close()

    def owns(self, partition: int) -> bool:
        """Whether this replica applies the changes of `partition` now (one replica does singleton work)."""
        return any(tp.partition == partition for tp in self._offsets)

    # -- rebalance listener -------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._drain()
        await self._commit()
        self._epoch += 1
        for tp in revoked:
            self._offsets.pop(tp, None)
            self._committed.pop(tp, None)
            with contextlib.suppress(KeyError):  # another replica reports this partition from now on
                self._metrics.consumer_lag.remove(str(tp.partition))
        self._states.forget({tp.partition for tp in revoked})
        log.info("apply.revoked", partitions=sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """The loop restores the partitions' user state before it reads a record of them: aiokafka may
        already fetch while this listener runs, and a change applied without its state would replay
        older values over newer ones."""
        self._epoch += 1
        self._to_restore = set(assigned)

    async def _restore(self) -> None:
        assigned, self._to_restore = self._to_restore or set(), None
        restored = await self._states.restore({tp.partition for tp in assigned})
        assert self._consumer is not None
        for tp in assigned & self._consumer.assignment():
            self._offsets[tp] = PartitionOffsets()
        log.info(
            "apply.assigned",
            partitions=sorted(tp.partition for tp in assigned),
            records_restored=restored.total,
            from_checkpoint=list(restored.from_checkpoint),
            from_scratch=list(restored.from_scratch),
            users=restored.users,
            groups=restored.groups,
            seconds=restored.seconds,
        )
        self.assigned.set()

    async def _drain(self) -> None:
        """Hand back queued work, and give running work up to drain_timeout to finish."""
        dropped = self._scheduler.drop_where(lambda work: True)
        try:
            await asyncio.wait_for(self._scheduler.wait_idle(), self._settings.drain_timeout_seconds)
        except TimeoutError:
            log.warning("apply.drain.timeout", seconds=self._settings.drain_timeout_seconds)
            await self._scheduler.cancel()
        self._epoch += 1
        if dropped:
            log.info("apply.drain.handed_back", changes=dropped)

    # -- the loop -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        """Poll and hand out; never waits for a commit (the committer task does those), so a slow
        changelog acknowledgement does not hold back records that are ready."""
        assert self._consumer is not None
        while not self._stopping:
            try:
                if self._to_restore is not None:
                    await self._restore()
                epoch = self._epoch
                batches = await self._consumer.getmany(timeout_ms=200)
                if self._epoch != epoch or self._to_restore is not None:  # a rebalance came in between:
                    # these records are read again, from the committed offsets, once state is restored
                    await rewind_to_committed(self._consumer, batches)
                    continue
                for records in batches.values():
                    for record in records:
                        self._accept(record)
                self._apply_backpressure()
            except KafkaError as exc:
                log.warning("apply.poll.failed", error=str(exc))
                await asyncio.sleep(1)

    def _accept(self, record: ConsumerRecord[bytes, bytes]) -> None:
        tp = TopicPartition(record.topic, record.partition)
        offsets = self._offsets.get(tp)
        if offsets is None:
            return  # a partition we no longer own
        if not offsets.started(record.offset, time.monotonic()):
            return  # already handed out in this assignment
        key = record.key.decode(errors="replace") if record.key else f"no-key/{record.offset}"
        self._scheduler.submit(key, Work(record, self._epoch))

    def _apply_backpressure(self) -> None:
        assert self._consumer is not None
        buffered = sum(o.unfinished for o in self._offsets.values())
        self._metrics.buffered.set(buffered)
        oldest = [t for o in self._offsets.values() if (t := o.oldest_started_at) is not None]
        self._metrics.oldest_unfinished_age.set(time.monotonic() - min(oldest) if oldest else 0.0)
        for tp in self._offsets:
            highwater = self._consumer.highwater(tp)
            last = self._consumer.last_stable_offset(tp) if highwater is None else highwater
            position = self._offsets[tp].next_offset
            if last is not None and position is not None:
                self._metrics.consumer_lag.labels(str(tp.partition)).set(max(0, last - position))
        assignment = self._consumer.assignment()
        if buffered >= self._settings.max_buffered:
            self._consumer.pause(*assignment)
        elif self._consumer.paused():
            self._consumer.resume(*assignment)

    async def _commit_every_interval(self) -> None:
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), COMMIT_INTERVAL_SECONDS)
            if self._stopped.is_set():
                return
            try:
                await self._commit()
            except Exception:  # the next interval tries again; offsets must keep being committed
                log.exception("apply.commit.failed.unexpectedly")

    async def _commit(self) -> None:
        async with self._committing:
            await self._commit_finished()

    async def _commit_finished(self) -> None:
        if self._consumer is None:
            return
        offsets = {
            tp: OffsetAndMetadata(o.committable, "")
            for tp, o in self._offsets.items()
            if o.committable is not None and o.committable != self._committed.get(tp)
        }
        try:
            # the states of the changes below these offsets were sent before the offsets were taken:
            # in the changelog once the flush returns, so a committed change never loses its state
            await self._states.flush()
        except KafkaError as exc:
            log.warning("apply.commit.failed", error=str(exc))
            return
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("apply.commit.failed", error=str(exc))
            return
        self._metrics.commits.inc()
        for tp, meta in offsets.items():
            self._committed[tp] = meta.offset

    # -- one change ---------------------------------------------------------------------------------

    async def _process(self, works: list[Work]) -> None:
        """Apply one key's changes (a user's one at a time, a group's queue as one batch) and act on the
        verdicts; never raises (the scheduler's worker must survive). Every record is finished once
        acted on."""
        self._metrics.in_flight.inc(len(works))
        try:
            await self._guarded(works)
        finally:
            self._metrics.in_flight.dec(len(works))
        for work in works:
            if work.epoch == self._epoch and work.tp in self._offsets:
                self._offsets[work.tp].finished(work.record.offset)

    async def _guarded(self, works: list[Work]) -> None:
        try:
            decoded = [(work, self._decode(work)) for work in works]
            for work, change in decoded:
                if isinstance(change, PoisonRecord):
                    await self._act(work, change)
            users = [(w, c) for w, c in decoded if isinstance(c, UserChange)]
            groups = [(w, c) for w, c in decoded if isinstance(c, GroupChange)]
            for run in self._runs(users):
                with self._recording() as sent:
                    if len(run) == 1:
                        work, user = run[0]
                        verdicts = [await self._applier.apply(user, replay=is_replay(work.record))]
                    else:
                        verdicts = await self._applier.apply_queued([user for _, user in run])
                for (work, _), verdict in zip(run, verdicts, strict=True):
                    await self._act(work, verdict)
                self._report_users([user for _, user in run], verdicts, sent)
            if groups:
                replay = any(is_replay(w.record) for w, _ in groups)
                with self._recording() as sent:
                    verdict = await self._group_applier.apply([c for _, c in groups], replay=replay)
                await self._act_on_group([w for w, _ in groups], verdict)
                self._report_group([c for _, c in groups], verdict, sent)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not stop the consumer; the changes are dead-lettered
            log.exception(
                "change.failed.unexpectedly",
                partition=works[0].record.partition,
                offsets=[w.record.offset for w in works],
            )
            for work in works:
                await self._write_aside(self._settings.dead_letter_topic, set_aside(work.record, "internal_error", exc))
                self._metrics.dead_letters.labels("internal_error").inc()

    # -- the activity log ----------------------------------------------------------------------------

    def _recording(self) -> contextlib.AbstractContextManager[list[SentRequest] | None]:
        """Keeps the requests sent for a change, only when the activity log is on (it costs)."""
        return recording() if self._activity is not None else contextlib.nullcontext()

    def _report_users(self, changes: list[UserChange], verdicts: list[Verdict], sent: list[SentRequest] | None) -> None:
        if self._activity is not None:
            for entry in user_entries(changes, verdicts, sent or (), self._states.get, time.time()):
                self._activity.record(entry)

    def _report_group(self, changes: list[GroupChange], verdict: Verdict, sent: list[SentRequest] | None) -> None:
        if self._activity is not None and (entry := group_entry(changes, verdict, sent or (), time.time())):
            self._activity.record(entry)

    def _runs(self, users: list[tuple[Work, UserChange]]) -> list[list[tuple[Work, UserChange]]]:
        """A user's queued changes in order, cut into runs that may share one downstream write (foldable,
        not replayed) and single changes that go alone."""
        runs: list[list[tuple[Work, UserChange]]] = []
        joinable = False  # whether the last run takes the next foldable change
        for work, user in users:
            fits = not is_replay(work.record) and foldable(user, authoritative=self._applier.rereads_all)
            if fits and joinable:
                runs[-1].append((work, user))
            else:
                runs.append([(work, user)])
            joinable = fits
        return runs

    @staticmethod
    def _decode(work: Work) -> UserChange | GroupChange | PoisonRecord:
        try:
            return decode_change(work.record.value or b"")
        except PoisonRecord as exc:
            return exc

    async def _act_on_group(self, works: list[Work], verdict: Verdict) -> None:
        """A group's batch shares one verdict: saved once, or set aside record by record."""
        if isinstance(verdict, GroupApplied):
            change = verdict.change
            await self._send_hops(verdict.hops)
            if verdict.state != self._states.get_group(change.key):
                await self._states.save(change.key, works[-1].record.partition, verdict.state)
            self._metrics.group_changes.labels(change.realm, change.downstream, verdict.result).inc(len(works))
            self._metrics.group_patches.labels(change.realm, change.downstream).inc(verdict.patches)
            log.info(
                "group.applied",
                tenant=change.realm,
                downstream=change.downstream,
                group_id=change.group_id,
                result=verdict.result,
                reason=verdict.reason or None,
                changes=len(works),
                patches=verdict.patches,
                hops=len(verdict.hops),
                downstream_id=verdict.state.downstream_id,
            )
            return
        for work in works:
            await self._act(work, verdict)

    async def _send_hops(self, hops: tuple[GroupChange, ...]) -> None:
        """Hops to other keys go out before the sender's state is saved: a crash re-sends them (with the
        same sequence numbers, which the receiver ignores), never loses them."""
        for hop in hops:
            await self._producer.send(self._settings.changes_topic, key=hop.key.encode(), value=hop.to_json())
        if hops:
            await self._producer.flush()

    async def _act(self, work: Work, verdict: Verdict | PoisonRecord) -> None:
        assert not isinstance(verdict, GroupApplied), "a group's batch is acted on by _act_on_group"
        record = work.record
        where = {"partition": record.partition, "offset": record.offset}
        if isinstance(verdict, PoisonRecord):
            await self._write_aside(self._settings.dead_letter_topic, set_aside(record, verdict.reason, verdict))
            self._metrics.dead_letters.labels(verdict.reason).inc()
            log.warning("change.dead_lettered", reason=verdict.reason, **where)
        elif isinstance(verdict, Skipped):
            self._metrics.changes.labels(
                *(labels(verdict.realm) if verdict.realm else ("unknown", "unknown")), verdict.outcome
            ).inc()
            log.info("change.skipped", reason=verdict.reason, realm=verdict.realm, **where)
        elif isinstance(verdict, SetAside):
            await self._set_aside(work, verdict)
        else:
            change = verdict.change
            await self._send_hops(verdict.hops)
            if verdict.state != self._states.get(change.key):
                await self._states.save(change.key, record.partition, verdict.state)
            # a change whose values went out in a later one's write counts once, as coalesced, so
            # created / updated count writes, not the events folded into them
            outcome = "coalesced" if verdict.reason == "coalesced" else verdict.result
            self._metrics.changes.labels(change.realm, change.downstream, outcome).inc()
            log.info(
                "change.applied",
                tenant=change.realm,
                downstream=change.downstream,
                user_id=change.user_id,
                event_id=change.event_id,
                result=verdict.result,
                reason=verdict.reason or None,
                type=change.event_type,
                attributes=sorted(change.attributes),
                event_time=change.time_ms,
                downstream_id=verdict.state.downstream_id,
                replay=is_replay(record),
                **where,
            )

    async def _set_aside(self, work: Work, verdict: SetAside) -> None:
        """Park (the user is held: its later changes queue behind, until a replay) or dead-letter."""
        letter = set_aside(work.record, verdict.reason, verdict.error, tenant=verdict.realm, headers=verdict.headers)
        realm, downstream = labels(verdict.realm)
        where = {
            "tenant": realm,
            "downstream": downstream,
            "partition": work.record.partition,
            "offset": work.record.offset,
        }
        self._metrics.changes.labels(realm, downstream, verdict.outcome).inc()
        if verdict.park:
            await self._write_aside(self._settings.parking_topic, letter)
            if is_group_key(verdict.key):
                group = self._states.get_group(verdict.key)
                if group.parked is None:
                    await self._states.save(verdict.key, work.record.partition, replace(group, parked=verdict.reason))
            else:
                state = self._states.get(verdict.key)
                if state.parked is None:
                    await self._states.save(verdict.key, work.record.partition, replace(state, parked=verdict.reason))
            self._metrics.parked.labels(realm, downstream, verdict.reason).inc()
            log.warning(
                "change.parked", reason=verdict.reason, error=str(verdict.error)[:300], key=verdict.key, **where
            )
            return
        await self._write_aside(self._settings.dead_letter_topic, letter)
        self._metrics.dead_letters.labels(verdict.reason).inc()
        if verdict.reason == "conflict":
            self._metrics.conflicts.labels(realm, downstream).inc()
        log.error(
            "change.dead_lettered",
            reason=verdict.reason,
            outcome=verdict.outcome,
            error=str(verdict.error)[:300],
            key=verdict.key,
            **verdict.headers,
            **where,
        )

    async def _write_aside(self, topic: str, letter: SetAsideRecord) -> None:
        await self._producer.send_and_wait(topic, key=letter.key, value=letter.value, headers=letter.headers)


def is_replay(record: ConsumerRecord[bytes, bytes]) -> bool:
    return any(k == REPLAYED and v == b"1" for k, v in (record.headers or ()))
