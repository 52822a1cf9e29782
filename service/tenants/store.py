"""The tenant store: every replica materializes the compacted tenants topic into memory.

Like Kafka Connect's config topic: writes go to Kafka (key = realm, tombstone = disabled), and every
replica reads the whole topic from the beginning, then follows it. `put` and `remove` wait until this
replica has read its own write, so an API call returns only once the change is in effect here.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from service.errors import ConfigError
from service.kafka_topics import partitions_of
from service.metrics import Metrics
from service.settings import Settings
from service.tenants.models import Tenant, TokenCipher, decode_tenant, encode_tenant

log = structlog.get_logger(__name__)


class TenantStore:
    def __init__(self, settings: Settings, cipher: TokenCipher, metrics: Metrics) -> None:
        self._settings = settings
        self._cipher = cipher
        self._metrics = metrics
        self._tenants: dict[str, Tenant] = {}
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
        """By realm name, or by the realm's internal id when the tenant declared it."""
        tenant = self._tenants.get(realm)
        if tenant is None and (name := self._names_by_id.get(realm)) is not None:
            tenant = self._tenants.get(name)
        return tenant

    def all(self) -> list[Tenant]:
        return sorted(self._tenants.values(), key=lambda t: t.realm)

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
                    self._apply(record.key, record.value)
            async with self._progress:
                for tp in self._consumer.assignment():
                    self._positions[tp.partition] = await self._consumer.position(tp)
                self._progress.notify_all()
            self._metrics.tenants.set(len(self._tenants))

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        realm = key.decode()
        if value is None:
            self._tenants.pop(realm, None)
            self._names_by_id = {k: v for k, v in self._names_by_id.items() if v != realm}
            self._metrics.tenant_unauthorized.labels(realm).set(0)
            return
        try:
            tenant = self._tenants[realm] = decode_tenant(value, self._cipher)
        except (ValueError, KeyError, ConfigError) as exc:
            log.error("tenants.record.invalid", tenant=realm, error=str(exc))
            return
        self._metrics.tenant_unauthorized.labels(realm).set(1 if tenant.status == "unauthorized" else 0)
        self._names_by_id = {k: v for k, v in self._names_by_id.items() if v != realm}
        if tenant.realm_id:
            self._names_by_id[tenant.realm_id] = realm
