"""Which downstreams each realm has, as stage 1 needs it to fan a change out: names only, never secrets.

Stage 1 runs in a process of its own without the token keys, so it reads the tenants topic itself, raw:
the record key says which downstream (service.domain.downstreams), a tombstone that it was disabled, and
the record's `realm_id` (read without a key: record_fields) lets a change that names its realm by internal
id (the playa plugin) find the same downstreams. A record that cannot be decrypted still counts: stage 2
holds its changes until it can read it, rather than stage 1 dropping them.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from service.domain.downstreams import split_tenant_key
from service.kafka_topics import read_whole_topic
from service.settings import Settings
from service.tenants.models import record_fields

log = structlog.get_logger(__name__)


class DownstreamIndex:
    """Tenant records in -> the downstream names of a realm (by name or internal id) out. Pure."""

    def __init__(self) -> None:
        self._realm_ids: dict[str, str | None] = {}  # tenant key -> the realm's internal id it declared
        self._names: dict[str, tuple[str, ...]] = {}  # realm name or internal id -> downstream names

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        tenant = key.decode(errors="replace")
        if value is None:
            self._realm_ids.pop(tenant, None)
        else:
            realm_id = record_fields(value).get("realm_id")
            self._realm_ids[tenant] = realm_id if isinstance(realm_id, str) and realm_id else None
        names: dict[str, set[str]] = {}
        realms_by_id: dict[str, str] = {}
        for known, realm_id in self._realm_ids.items():
            realm, name = split_tenant_key(known)
            names.setdefault(realm, set()).add(name)
            if realm_id is not None:
                realms_by_id[realm_id] = realm
        self._names = {realm: tuple(sorted(found)) for realm, found in names.items()}
        for realm_id, realm in realms_by_id.items():  # the id of a realm named by any of its records
            self._names.setdefault(realm_id, self._names[realm])

    def __len__(self) -> int:
        """How many downstreams are known, of every realm."""
        return len(self._realm_ids)

    def names(self, realm: str) -> tuple[str, ...]:
        """The names of the realm's downstreams (enabled or unauthorized or unreadable here); () when none."""
        return self._names.get(realm, ())


class DownstreamFollower:
    """Reads the tenants topic from the beginning into a DownstreamIndex, then follows it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.index = DownstreamIndex()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Returns once every record written before the call is in the index."""
        self._consumer = AIOKafkaConsumer(
            **self._settings.kafka_client_options(), enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await self._consumer.start()
        end = await read_whole_topic(self._consumer, self._settings, self._settings.tenants_topic)
        while not await self._caught_up(end):
            await self._read_once()
        self._task = asyncio.create_task(self._follow(), name="downstream-names")
        log.info("rekey.downstreams.loaded", downstreams=len(self.index))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer:
            await self._consumer.stop()

    async def _caught_up(self, end: dict[TopicPartition, int]) -> bool:
        assert self._consumer is not None
        for tp, offset in end.items():
            if await self._consumer.position(tp) < offset:
                return False
        return True

    async def _read_once(self) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=500)
        for records in batches.values():
            for record in records:
                self.index.apply(record.key, record.value)

    async def _follow(self) -> None:
        while True:
            await self._read_once()
