"""Stage 2: apply the keyed changes to the tenants' downstreams, one at a time per user.

Records of the changes topic are queued per key (`<realm>/<user id>`) and run concurrently across
keys up to a global cap. Offsets are committed per partition only below the first unfinished record.
On revocation, queued work is handed back, running work is drained, finished offsets are committed;
work of an old assignment that completes late is ignored (assignment epoch).

A change that cannot be applied now is parked (retry budget spent, breaker open, token refused) or
dead-lettered (rejected by the downstream); either way the offset moves on and nothing is dropped.
With Keycloak access configured, each change is first replaced by the user as Keycloak stores it.
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

from service.domain.changes import UserChange
from service.domain.plan import plan_change
from service.errors import (
    CircuitOpen,
    Parked,
    PoisonRecord,
    ScimError,
    ScimNotFound,
    ScimOwnershipConflict,
    ScimRejected,
    ScimTransient,
    TenantUnreadable,
)
from service.keycloak_admin.client import KeycloakAdminClient
from service.keycloak_admin.errors import KeycloakError, KeycloakUnavailable
from service.metrics import Metrics
from service.pipeline.authoritative import read_truth
from service.pipeline.dead_letters import DOWNSTREAM_ID, OWNER, REPLAYED, dead_letter
from service.pipeline.offsets import PartitionOffsets
from service.pipeline.rewind import rewind_to_committed
from service.pipeline.scheduler import KeyedScheduler
from service.pipeline.user_state import UserStateStore
from service.scim.client import ScimClient
from service.scim.executor import execute
from service.scim.retry import RetryPolicy
from service.settings import Settings
from service.tenants.models import Tenant
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
    ) -> None:
        self._settings = settings
        self._keycloak = keycloak  # re-reads users whose event carried no representation
        self._authoritative = authoritative and keycloak is not None  # ... and, if set, every user
        self._warned_no_representation: set[str] = set()
        self._metrics = metrics
        self._tenants = tenants
        self._scim = scim
        self._producer = producer
        self._states = UserStateStore(settings, producer)
        self._scheduler: KeyedScheduler[Work] = KeyedScheduler(self._process, settings.max_in_flight)
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._epoch = 0
        self._to_restore: set[TopicPartition] | None = None
        self._backoff = RetryPolicy(1, settings.retry_base_seconds, settings.retry_max_seconds)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.assigned = asyncio.Event()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **self._settings.kafka_client_options(),
            group_id=f"{self._settings.group_id}.apply",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            rebalance_timeout_ms=self._settings.rebalance_timeout_ms,
            max_poll_records=5000,
        )
        self._consumer.subscribe([self._settings.changes_topic], listener=self)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="apply")

    async def stop(self) -> None:
        """Stop intake, let running work finish (bounded), commit what finished, leave the group."""
        self._stopping = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drain()
        await self._commit()
        if self._consumer:
            await self._consumer.stop()

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
        users = await self._states.restore({tp.partition for tp in assigned})
        assert self._consumer is not None
        for tp in assigned & self._consumer.assignment():
            self._offsets[tp] = PartitionOffsets()
        log.info("apply.assigned", partitions=sorted(tp.partition for tp in assigned), users_restored=users)
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
        assert self._consumer is not None
        last_commit = time.monotonic()
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
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_SECONDS:
                    await self._commit()
                    last_commit = time.monotonic()
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

    async def _commit(self) -> None:
        if self._consumer is None:
            return
        offsets = {
            tp: OffsetAndMetadata(o.committable, "")
            for tp, o in self._offsets.items()
            if o.committable is not None and o.committable != self._committed.get(tp)
        }
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

    async def _process(self, work: Work) -> None:
        """Apply one change; never raises (the scheduler's worker must survive)."""
        self._metrics.in_flight.inc()
        try:
            await self._apply(work)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not stop the consumer; the change is dead-lettered
            log.exception("change.failed.unexpectedly", partition=work.record.partition, offset=work.record.offset)
            await self._dead_letter(work, "internal_error", exc)
        finally:
            self._metrics.in_flight.dec()
        if work.epoch == self._epoch and work.tp in self._offsets:
            self._offsets[work.tp].finished(work.record.offset)

    async def _apply(self, work: Work) -> None:
        record = work.record
        try:
            change = UserChange.from_json(record.value or b"")
        except PoisonRecord as exc:
            await self._dead_letter(work, exc.reason, exc)
            return
        try:
            tenant = await self._readable_tenant(change, time.monotonic() + self._settings.change_retry_budget_seconds)
        except TenantUnreadable as exc:
            await self._park(work, replace(change, realm=exc.realm), exc.label, exc)
            return
        if tenant is None:
            self._metrics.changes.labels("unknown", "skipped_no_tenant").inc()
            log.info(
                "change.skipped",
                reason="no_enabled_tenant",
                realm=change.realm,
                user_id=change.user_id,
                event_id=change.event_id,
                partition=record.partition,
                offset=record.offset,
            )
            return
        change = replace(change, realm=tenant.realm)  # a realm id (playa plugin) becomes the realm's name
        bound = log.bind(
            tenant=change.realm,
            user_id=change.user_id,
            event_id=change.event_id,
            partition=record.partition,
            offset=record.offset,
        )
        state = self._states.get(change.key)
        if state.parked and not is_replay(record):
            await self._park(work, change, "behind_parked", Parked(f"an earlier change is parked ({state.parked})"))
            return
        if tenant.status == "unauthorized":
            await self._park(work, change, "unauthorized", Parked("the downstream refuses the tenant's token"))
            return
        deadline = time.monotonic() + self._settings.change_retry_budget_seconds
        attempt = 0
        while True:
            attempt += 1
            state = self._states.get(change.key)
            try:
                effective = await self._effective(change)
                if effective is None:
                    await self._no_representation(change, bound)
                    return
                plan = plan_change(state, effective, tenant.delete_policy)
                outcome = await execute(plan, effective, tenant.downstream, self._scim)
                break
            except CircuitOpen as exc:
                await self._park(work, change, "circuit_open", exc)
                return
            except KeycloakError as exc:
                if not isinstance(exc, KeycloakUnavailable):  # refused credentials or roles: fix, then replay
                    await self._park(work, change, "keycloak_refused", exc)
                    return
                if time.monotonic() + self._settings.retry_max_seconds > deadline:
                    await self._park(work, change, "retries_exhausted", exc)
                    return
                bound.warning("change.retry", error=str(exc), attempt=attempt)
                await asyncio.sleep(self._backoff.delay(min(attempt, 10), exc.retry_after))
            except ScimTransient as exc:
                delay = self._backoff.delay(min(attempt, 10), exc.retry_after)
                if time.monotonic() + delay > deadline:
                    await self._park(work, change, "retries_exhausted", exc)
                    return
                bound.warning("change.retry", error=str(exc), attempt=attempt, delay=round(delay, 2))
                await asyncio.sleep(delay)
                try:
                    refreshed = await self._readable_tenant(change, deadline)
                except TenantUnreadable as exc:
                    await self._park(work, change, exc.label, exc)
                    return
                if refreshed is None:  # disabled meanwhile
                    self._metrics.changes.labels("unknown", "skipped_no_tenant").inc()
                    bound.info("change.skipped", reason="no_enabled_tenant")
                    return
                tenant = refreshed
            except ScimRejected as exc:
                if exc.unauthorized:
                    await self._tenants.mark_unauthorized(tenant)
                    await self._park(work, change, "unauthorized", exc)
                    return
                self._metrics.changes.labels(change.realm, "rejected").inc()
                bound.error("change.rejected", status=exc.status, error=str(exc))
                await self._dead_letter(work, exc.reason, exc, tenant=change.realm)
                return
            except ScimOwnershipConflict as exc:  # never written: an operator resolves or links
                self._metrics.changes.labels(change.realm, "conflict").inc()
                self._metrics.conflicts.labels(change.realm).inc()
                bound.error(
                    "change.conflict",
                    downstream_id=exc.downstream_id,
                    owner=exc.owner,
                    hint="resolve downstream then replay, or link the user to the account",
                )
                await self._dead_letter(
                    work,
                    "conflict",
                    exc,
                    tenant=change.realm,
                    headers={DOWNSTREAM_ID: exc.downstream_id, OWNER: exc.owner},
                )
                return
            except ScimNotFound as exc:  # only an operator's link reaches here: the account is not there
                self._metrics.changes.labels(change.realm, "failed").inc()
                bound.error("change.failed", status=exc.status, error=str(exc))
                await self._dead_letter(work, "link_target_missing", exc, tenant=change.realm)
                return
            except ScimError as exc:  # a conflict that could not be adopted
                self._metrics.changes.labels(change.realm, "conflict").inc()
                self._metrics.conflicts.labels(change.realm).inc()
                bound.error("change.conflict", status=exc.status, error=str(exc))
                await self._dead_letter(work, "conflict", exc, tenant=change.realm)
                return
        new_state = outcome.state
        if new_state.parked is not None:  # a replayed change went through: unpark the user
            new_state = replace(new_state, parked=None)
        if new_state != state:
            await self._states.save(change.key, record.partition, new_state)
        self._metrics.changes.labels(change.realm, outcome.result).inc()
        bound.info(
            "change.applied",
            result=outcome.result,
            reason=outcome.reason or None,
            type=change.event_type,
            attributes=sorted(change.attributes),
            event_time=change.time_ms,
            downstream_id=outcome.state.downstream_id,
            replay=is_replay(record),
        )

    async def _effective(self, change: UserChange) -> UserChange | None:
        """The change to apply: the user as Keycloak stores it (authoritative mode, or an event without
        a representation), else the change itself. None: nothing says what changed."""
        if change.op == "link":
            return change
        if self._keycloak is not None and (self._authoritative or change.reread):
            return await read_truth(self._keycloak, change)
        return None if change.reread else change

    async def _no_representation(self, change: UserChange, bound: structlog.typing.FilteringBoundLogger) -> None:
        """Counted, and warned once per realm with the fix: the change itself is not knowable here."""
        self._metrics.changes.labels(change.realm, "no_representation").inc()
        if change.realm not in self._warned_no_representation:
            self._warned_no_representation.add(change.realm)
            bound.warning(
                "change.no_representation",
                type=change.event_type,
                hint="turn on the realm's Admin events > Include representation, "
                "or configure Keycloak access (OUTBOUND_SCIM_KEYCLOAK_*) so users are re-read",
            )
        await self._tenants.note(change.realm, "no_representation")

    async def _readable_tenant(self, change: UserChange, deadline: float) -> Tenant | None:
        """The change's tenant (None: not enabled). A record this replica cannot read is a transient
        failure, never "no tenant": wait with backoff until `deadline`, then raise TenantUnreadable."""
        attempt = 0
        while True:
            try:
                return self._tenants.get(change.realm)
            except TenantUnreadable as exc:
                attempt += 1
                delay = self._backoff.delay(min(attempt, 10))
                if time.monotonic() + delay > deadline:
                    raise
                if attempt == 1:
                    log.warning(
                        "change.waiting",
                        reason=exc.label,
                        tenant=exc.realm,
                        user_id=change.user_id,
                        event_id=change.event_id,
                        error=str(exc),
                        fix=exc.fix,
                    )
                await asyncio.sleep(delay)

    async def _park(self, work: Work, change: UserChange, reason: str, exc: BaseException) -> None:
        """Set the change aside, and every later change of the user with it, so the offset can advance
        while the user's order is kept. A replay (API, CLI, or automatic on recovery) brings them back."""
        letter = dead_letter(work.record, reason, exc, tenant=change.realm)
        await self._producer.send_and_wait(
            self._settings.parking_topic, key=letter.key, value=letter.value, headers=letter.headers
        )
        state = self._states.get(change.key)
        if state.parked is None:
            await self._states.save(change.key, work.record.partition, replace(state, parked=reason))
        self._metrics.parked.labels(change.realm, reason).inc()
        self._metrics.changes.labels(change.realm, "parked").inc()
        log.warning(
            "change.parked",
            reason=reason,
            error=str(exc)[:300],
            tenant=change.realm,
            user_id=change.user_id,
            event_id=change.event_id,
            partition=work.record.partition,
            offset=work.record.offset,
        )

    async def _dead_letter(
        self,
        work: Work,
        reason: str,
        exc: BaseException,
        tenant: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        letter = dead_letter(work.record, reason, exc, tenant=tenant, headers=headers)
        await self._producer.send_and_wait(
            self._settings.dead_letter_topic, key=letter.key, value=letter.value, headers=letter.headers
        )
        self._metrics.dead_letters.labels(reason).inc()


def is_replay(record: ConsumerRecord[bytes, bytes]) -> bool:
    return any(k == REPLAYED and v == b"1" for k, v in (record.headers or ()))
