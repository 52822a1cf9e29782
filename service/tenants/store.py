"""The tenant store: every replica materializes the compacted tenants topic into memory.

Like Kafka Connect's config topic: writes go to Kafka (key = the downstream's tenant key: the realm for
its `default` downstream, `<realm>/<name>` for the others; tombstone = disabled), and every
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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from service.domain.downstreams import split_tenant_key, tenant_key
from service.errors import TenantUnreadable
from service.kafka_topics import read_whole_topic
from service.metrics import Metrics
from service.settings import Settings
from service.tenants.models import Tenant, TokenCipher, decode_tenant, encode_tenant, record_fields

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TenantUpdate:
    """What one record of the tenants topic changed, as observers see it (after it is in effect)."""

    key: str  # the downstream's tenant key (service.domain.downstreams)
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
        self._realm_ids: dict[str, str] = {}  # tenant key -> the realm's internal id it declared
        self._names_by_id: dict[str, str] = {}  # a realm's internal id -> its name
        self._positions: dict[int, int] = {}
        self._progress = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.loaded = asyncio.Event()

    def get(self, key: str) -> Tenant | None:
        """By tenant key (`<realm>` for the default downstream, `<realm>/<name>`), the realm named or given
        by the internal id a downstream of it declared. None: not enabled.

        Raises TenantUnreadable when the downstream's record exists but cannot be read here.
        """
        if key not in self._tenants and key not in self._unreadable:
            realm, name = split_tenant_key(key)
            key = tenant_key(self._names_by_id.get(realm, realm), name)
        if (unreadable := self._unreadable.get(key)) is not None:
            raise unreadable
        return self._tenants.get(key)

    def all(self) -> list[Tenant]:
        """The readable tenants (unreadable ones are in `unreadable()`), by realm then name."""
        return sorted(self._tenants.values(), key=lambda t: (t.realm, t.name))

    def downstreams(self, realm: str) -> list[Tenant]:
        """The readable downstreams of one realm, by name."""
        return [t for t in self.all() if t.realm == realm]

    def unreadable(self) -> list[TenantUnreadable]:
        return [self._unreadable[key] for key in sorted(self._unreadable)]

    def last_generation(self, key: str) -> int | None:
        """The generation of the downstream's current record, readable or not; None when it has none (disabled)."""
        return self._generations.get(key)

    def next_generation(self, key: str) -> int:
        """The generation for the downstream's next enable / rotation: above any it had, even before a
        disable, so a request still running with an older config never passes for the newer one."""
        return self._highest_generation.get(key, 0) + 1

    def observe(self, observer: TenantObserver) -> None:
        """Call `observer` after each tenant record takes effect here (on every replica: each reads the topic)."""
        self._observers.append(observer)

    async def start(self) -> None:
        options = self._settings.kafka_client_options()
        self._producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, auto_offset_reset="earliest")
        await self._consumer.start()
        end = await read_whole_topic(self._consumer, self._settings, self._settings.tenants_topic)
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
        await self._write(tenant.key, encode_tenant(tenant, self._cipher))

    async def mark_unauthorized(self, seen: Tenant) -> None:
        """The downstream refused `seen`'s token. Recorded for every replica, unless a rotation came since."""
        current = self._tenants.get(seen.key)
        if current is None or current.generation != seen.generation or current.status == "unauthorized":
            return
        if seen.key in self._marking:
            return
        self._marking.add(seen.key)
        try:
            await self.put(replace(current, status="unauthorized"))
            log.error("tenant.unauthorized", tenant=seen.realm, downstream=seen.name, base_url=current.base_url)
        finally:
            self._marking.discard(seen.key)

    async def note(self, key: str, code: str) -> None:
        """Record, once for every replica, that the downstream has something an operator should fix."""
        current = self._tenants.get(key)
        if current is None or code in current.notices or (key, code) in self._noting:
            return
        self._noting.add((key, code))
        try:
            since = datetime.now(UTC).isoformat(timespec="seconds")
            await self.put(replace(current, notices={**current.notices, code: since}))
        finally:
            self._noting.discard((key, code))

    async def remove(self, key: str) -> None:
        await self._write(key, None)

    async def _write(self, key: str, value: bytes | None) -> None:
        assert self._producer is not None
        meta = await self._producer.send_and_wait(self._settings.tenants_topic, key=key.encode(), value=value)
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
        name = key.decode()
        realm, downstream = split_tenant_key(name)
        previous = self._tenants.pop(name, None)
        was_unreadable = self._unreadable.pop(name, None) is not None
        self._realm_ids.pop(name, None)
        self._generations.pop(name, None)
        tenant: Tenant | None = None
        if value is None:
            self._metrics.tenant_unauthorized.labels(realm, downstream).set(0)
        else:
            fields = record_fields(value)
            try:
                tenant = self._tenants[name] = decode_tenant(value, self._cipher, name)
            except TenantUnreadable as exc:
                self._unreadable[name] = exc
                log.error("tenants.record.unreadable", tenant=realm, downstream=downstream, error=str(exc), fix=exc.fix)
            else:
                unauthorized = 1 if tenant.status == "unauthorized" else 0
                self._metrics.tenant_unauthorized.labels(realm, downstream).set(unauthorized)
            realm_id = tenant.realm_id if tenant else fields.get("realm_id")
            if isinstance(realm_id, str) and realm_id:
                self._realm_ids[name] = realm_id
            generation = tenant.generation if tenant else fields.get("generation", 1)
            self._generations[name] = generation = generation if isinstance(generation, int) else 1
            self._highest_generation[name] = max(generation, self._highest_generation.get(name, 0))
        self._names_by_id = {realm_id: split_tenant_key(k)[0] for k, realm_id in self._realm_ids.items()}
        if was_unreadable and name not in self._unreadable:
            log.info("tenants.record.readable", tenant=realm, downstream=downstream, enabled=tenant is not None)
        update = TenantUpdate(name, tenant, previous, name in self._unreadable, was_unreadable)
        for observer in self._observers:
            try:
                observer(update)
            except Exception:  # an observer's bug must not stop the store from following the topic
                log.exception("tenants.observer.failed", tenant=realm, downstream=downstream)
