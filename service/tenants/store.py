"""The tenant store: every replica materializes the compacted tenants topic into memory.

Like Kafka Connect's config topic: writes go to Kafka (key = realm, tombstone = disabled), and every
replica reads the whole topic from the beginning, then follows it. `put` and `remove` wait until this
replica has read its own write, so an API call returns only once the change is in effect here.

A record this replica cannot read (its token key is not configured here, or it is malformed) is not
skipped: the realm is remembered as unreadable, `get` raises TenantUnreadable for it (its changes wait
instead of being dropped as "no tenant"), and observers hear when it becomes readable again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from service.errors import TenantUnreadable
from service.kafka_topics import partitions_of
from service.metrics import Metrics
from service.settings import Settings
from service.tenants.models import Tenant, TokenCipher, decode_tenant, encode_tenant, record_fields

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TenantUpdate:
    """What one record of the tenants topic changed, as observers see it (after it is in effect)."""

    realm: str
    tenant: Tenant | None  # the readable tenant now; None: disabled or unreadable
    previous: Tenant | None  # the readable tenant before
    unreadable: bool  # the record now cannot be read here
    was_unreadable: bool

    @property
    def disabled(self) -> bool:
        return self.tenant is None and not self.unreadable

    @property
    def readable_again(self) -> bool:
        """An unreadable record was replaced by a readable one or a tombstone."""
        return self.was_unreadable and not self.unreadable


TenantObserver = Callable[[TenantUpdate], None]


class TenantStore:
    def __init__(self, settings: Settings, cipher: TokenCipher, metrics: Metrics) -> None:
        self._settings = settings
        self._cipher = cipher
        self._metrics = metrics
        self._tenants: dict[str, Tenant] = {}
        self._unreadable: dict[str, TenantUnreadable] = {}
        self._generations: dict[str, int] = {}
        self._highest_generation: dict[str, int] = {}  # kept after a disable: generations only grow
        self._observers: list[TenantObserver] = []
        self._marking: set[str] = set()
        self._noting: set[tuple[str, str]] = set()
        self._names_by_id: dict[str, str] = {}
        self._positions: dict[int, int] = {}
        self._progress = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.loaded = asyncio.Event()

    def get(self, realm: str) -> Tenant | None:
        """By realm name, or by the realm's internal id when the tenant declared it. None: not enabled.

        Raises TenantUnreadable when the realm's record exists but cannot be read here.
        """
        name = realm if realm in self._tenants or realm in self._unreadable else self._names_by_id.get(realm, realm)
        if (unreadable := self._unreadable.get(name)) is not None:
            raise unreadable
        return self._tenants.get(name)

    def all(self) -> list[Tenant]:
        """The readable tenants (unreadable ones are in `unreadable()`)."""
        return sorted(self._tenants.values(), key=lambda t: t.realm)

    def unreadable(self) -> list[TenantUnreadable]:
        return [self._unreadable[realm] for realm in sorted(self._unreadable)]

    def last_generation(self, realm: str) -> int | None:
        """The generation of the realm's current record, readable or not; None when it has none (disabled)."""
        return self._generations.get(realm)

    def next_generation(self, realm: str) -> int:
        """The generation for the realm's next enable / rotation: above any it had, even before a disable,
        so a request still running with an older config never passes for the newer one."""
        return self._highest_generation.get(realm, 0) + 1

    def observe(self, observer: TenantObserver) -> None:
        """Call `observer` after each tenant record takes effect here (on every replica: each reads the topic)."""
        self._observers.append(observer)

    async def start(self) -> None:
        options = self._settings.kafka_client_options()
        self._producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, auto_offset_reset="earliest")
        await self._consumer.start()
        topic = self._settings.tenants_topic
        partitions = [TopicPartition(topic, p) for p in await partitions_of(self._settings, topic)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        end = await self._consumer.end_offsets(partitions)
        self._task = asyncio.create_task(self._follow(), name="tenant-store")
        for tp, offset in end.items():
            await self._wait_for(tp.partition, offset)
        self.loaded.set()
        log.info("tenants.loaded", tenants=len(self._tenants))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer:
            await self._consumer.stop()
        if self._producer:
            await self._producer.stop()

    async def put(self, tenant: Tenant) -> None:
        await self._write(tenant.realm, encode_tenant(tenant, self._cipher))

    async def mark_unauthorized(self, seen: Tenant) -> None:
        """The downstream refused `seen`'s token. Recorded for every replica, unless a rotation came since."""
        current = self._tenants.get(seen.realm)
        if current is None or current.generation != seen.generation or current.status == "unauthorized":
            return
        if seen.realm in self._marking:
            return
        self._marking.add(seen.realm)
        try:
            await self.put(replace(current, status="unauthorized"))
            log.error("tenant.unauthorized", tenant=seen.realm, base_url=current.base_url)
        finally:
            self._marking.discard(seen.realm)

    async def note(self, realm: str, code: str) -> None:
        """Record, once for every replica, that the tenant has something an operator should fix."""
        current = self._tenants.get(realm)
        if current is None or code in current.notices or (realm, code) in self._noting:
            return
        self._noting.add((realm, code))
        try:
            since = datetime.now(UTC).isoformat(timespec="seconds")
            await self.put(replace(current, notices={**current.notices, code: since}))
        finally:
            self._noting.discard((realm, code))

    async def remove(self, realm: str) -> None:
        await self._write(realm, None)

    async def _write(self, realm: str, value: bytes | None) -> None:
        assert self._producer is not None
        meta = await self._producer.send_and_wait(self._settings.tenants_topic, key=realm.encode(), value=value)
        await asyncio.wait_for(self._wait_for(meta.partition, meta.offset + 1), timeout=30)

    async def _wait_for(self, partition: int, offset: int) -> None:
        async with self._progress:
            await self._progress.wait_for(lambda: self._positions.get(partition, 0) >= offset)

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    self.apply_record(record.key, record.value)
            async with self._progress:
                for tp in self._consumer.assignment():
                    self._positions[tp.partition] = await self._consumer.position(tp)
                self._progress.notify_all()
            self._metrics.tenants.set(len(self._tenants))
            self._metrics.tenants_unreadable.set(len(self._unreadable))

    def apply_record(self, key: bytes | None, value: bytes | None) -> None:
        """Take one record of the tenants topic into effect (the follower calls it for each, in order)."""
        if key is None:
            return
        realm = key.decode()
        previous = self._tenants.pop(realm, None)
        was_unreadable = self._unreadable.pop(realm, None) is not None
        self._names_by_id = {k: v for k, v in self._names_by_id.items() if v != realm}
        self._generations.pop(realm, None)
        tenant: Tenant | None = None
        if value is None:
            self._metrics.tenant_unauthorized.labels(realm).set(0)
        else:
            fields = record_fields(value)
            try:
                tenant = self._tenants[realm] = decode_tenant(value, self._cipher, realm)
            except TenantUnreadable as exc:
                self._unreadable[realm] = exc
                log.error("tenants.record.unreadable", tenant=realm, error=str(exc), fix=exc.fix)
            else:
                self._metrics.tenant_unauthorized.labels(realm).set(1 if tenant.status == "unauthorized" else 0)
            realm_id = tenant.realm_id if tenant else fields.get("realm_id")
            if isinstance(realm_id, str) and realm_id:
                self._names_by_id[realm_id] = realm
            generation = tenant.generation if tenant else fields.get("generation", 1)
            self._generations[realm] = generation = generation if isinstance(generation, int) else 1
            self._highest_generation[realm] = max(generation, self._highest_generation.get(realm, 0))
        if was_unreadable and realm not in self._unreadable:
            log.info("tenants.record.readable", tenant=realm, enabled=tenant is not None)
        update = TenantUpdate(realm, tenant, previous, realm in self._unreadable, was_unreadable)
        for observer in self._observers:
            try:
                observer(update)
            except Exception:  # an observer's bug must not stop the store from following the topic
                log.exception("tenants.observer.failed", tenant=realm)
