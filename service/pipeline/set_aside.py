"""Records set aside: parked (to be replayed once the cause clears) or dead-lettered (for an operator).

Both keep the original key, value and headers, plus Kafka Connect style context headers saying where
the record came from and why it was set aside, and where a replay sends it (`set_aside`). An oversized
record keeps an empty value (a null key and a null value cannot be produced). `HeldTopic` lists and
replays what one of the two topics holds, per tenant.

A replay re-publishes each record, unchanged, to the topic named by its `outbound_scim.replay_to`
header (the changes topic for parked changes, the source topic for poison records), in the order they
were set aside, marked `outbound_scim.replay=1` so a parked user's changes are let through. How far a
tenant has been replayed is kept in a small compacted cursor topic, so nothing is replayed twice by
intent (and a replay done twice is harmless: applying a change is idempotent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from service.kafka_topics import partitions_of
from service.settings import Settings

REASON = "outbound_scim.reason"
TENANT = "outbound_scim.tenant"
REPLAY_TO = "outbound_scim.replay_to"
REPLAYED = "outbound_scim.replay"
ORIGINAL_SIZE = "outbound_scim.original_size"
DOWNSTREAM_ID = "outbound_scim.downstream_id"  # conflicts: the account that blocked the create ...
OWNER = "outbound_scim.owner"  # ... and the externalId that owns it


@dataclass(frozen=True, slots=True)
class SetAsideRecord:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def set_aside(
    record: ConsumerRecord[bytes, bytes],
    reason: str,
    exc: BaseException,
    *,
    tenant: str | None = None,
    keep_value: bool = True,
    headers: dict[str, str] | None = None,
) -> SetAsideRecord:
    """Keep the record as it was, and say where it came from and why it failed. `keep_value=False`
    (oversized records) keeps only the coordinates: the original stays readable in its source topic."""
    context = {
        "__connect.errors.topic": record.topic,
        "__connect.errors.partition": str(record.partition),
        "__connect.errors.offset": str(record.offset),
        "__connect.errors.exception.class.name": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "__connect.errors.exception.message": str(exc)[:1000],
        REASON: reason,
        REPLAY_TO: record.topic,
    }
    if tenant is not None:
        context[TENANT] = tenant
    context.update(headers or {})
    if not keep_value:
        context[ORIGINAL_SIZE] = str(len(record.value or b""))
    inherited = [(k, v) for k, v in (record.headers or ()) if not k.startswith(("__connect.errors.", "outbound_scim."))]
    own = [(k, v.encode()) for k, v in context.items()]
    return SetAsideRecord(record.key, record.value if keep_value else b"", inherited + own)


ALL = "*"


@dataclass(frozen=True, slots=True)
class HeldRecord:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def tenant(self) -> str | None:
        return self.headers.get(TENANT)

    @property
    def replayable(self) -> bool:
        """Oversized records were kept without their value: the original is in its source topic."""
        return self.value is not None and ORIGINAL_SIZE not in self.headers and REPLAY_TO in self.headers

    def public(self) -> dict[str, Any]:
        """What an operator needs to decide on a replay; attribute values (personal data) stay out."""
        summary: dict[str, Any] = {}
        try:
            doc = json.loads(self.value) if self.value is not None else None
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            summary = {k: doc.get(k) for k in ("user_id", "event_type", "event_id", "op")}
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "tenant": self.tenant,
            "reason": self.headers.get(REASON),
            "error": self.headers.get("__connect.errors.exception.message"),
            "source": {
                "topic": self.headers.get("__connect.errors.topic"),
                "partition": self.headers.get("__connect.errors.partition"),
                "offset": self.headers.get("__connect.errors.offset"),
            },
            "replayable": self.replayable,
            **(
                {"downstream_id": self.headers[DOWNSTREAM_ID], "owner": self.headers.get(OWNER)}
                if DOWNSTREAM_ID in self.headers
                else {}
            ),
            **summary,
        }


HeldRecords: TypeAlias = list[HeldRecord]  # inside HeldTopic, `list` names its method, not the builtin


class HeldTopic:
    def __init__(self, settings: Settings, topic: str, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self.topic = topic
        self._producer = producer

    async def list(self, tenant: str | None = None, limit: int = 1000) -> HeldRecords:
        """Records not replayed yet (for `tenant`, or all), oldest first."""
        records, _ = await self._pending(tenant)
        return records[:limit]

    async def counts(self) -> dict[str, int]:
        """Records not replayed yet, per tenant: one read of the cursors and one of the topic (from the
        cursor of a replay of every tenant), however many tenants there are."""
        cursors = await self._cursors()
        records, _ = await self._read(self.topic, cursors.get(self._cursor_key(None), {}))
        counted: dict[str, int] = {}
        for record in records:
            tenant = record.tenant
            if tenant is None:
                continue
            own = cursors.get(self._cursor_key(tenant), {})  # a replay of this tenant alone went further
            if record.offset >= own.get(record.partition, 0):
                counted[tenant] = counted.get(tenant, 0) + 1
        return counted

    async def replay(self, tenant: str | None = None) -> int:
        """Re-publish the pending records in order; returns how many were sent."""
        records, end = await self._pending(tenant)
        sent = 0
        for record in records:
            if not record.replayable:
                continue
            headers = [(k, v.encode()) for k, v in record.headers.items() if k != REPLAYED] + [(REPLAYED, b"1")]
            await self._producer.send(record.headers[REPLAY_TO], key=record.key, value=record.value, headers=headers)
            sent += 1
        await self._producer.flush()
        await self._producer.send_and_wait(
            self._settings.replay_cursors_topic,
            key=self._cursor_key(tenant).encode(),
            value=json.dumps({str(p): o for p, o in end.items()}).encode(),
        )
        return sent

    def _cursor_key(self, tenant: str | None) -> str:
        return f"{self.topic}/{tenant or ALL}"

    async def _pending(self, tenant: str | None) -> tuple[HeldRecords, dict[int, int]]:
        cursors = await self._cursors()
        start = _latest(cursors.get(self._cursor_key(tenant), {}), cursors.get(self._cursor_key(None), {}))
        records, end = await self._read(self.topic, start)
        wanted = [r for r in records if tenant is None or r.tenant == tenant]
        return wanted, end

    async def _cursors(self) -> dict[str, dict[int, int]]:
        records, _ = await self._read(self._settings.replay_cursors_topic, {})
        cursors: dict[str, dict[int, int]] = {}
        for record in records:
            if record.key is not None and record.value is not None:
                cursors[record.key.decode()] = {int(p): int(o) for p, o in json.loads(record.value).items()}
        return cursors

    async def _read(self, topic: str, start: dict[int, int]) -> tuple[HeldRecords, dict[int, int]]:
        """Every record of `topic` from `start` (per partition) to the end as of now."""
        tps = [TopicPartition(topic, p) for p in await partitions_of(self._settings, topic)]
        consumer = AIOKafkaConsumer(
            **self._settings.kafka_client_options(), enable_auto_commit=False, isolation_level="read_committed"
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            end = {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
            for tp in tps:
                consumer.seek(tp, start.get(tp.partition, 0))
            records: list[HeldRecord] = []
            remaining = {tp for tp in tps if start.get(tp.partition, 0) < end[tp.partition]}
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, batch in batches.items():
                    records += [
                        HeldRecord(
                            r.partition,
                            r.offset,
                            r.timestamp,
                            r.key,
                            r.value,
                            {k: v.decode(errors="replace") for k, v in r.headers},
                        )
                        for r in batch
                        if r.offset < end[tp.partition]
                    ]
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp.partition]:
                        remaining.discard(tp)
            records.sort(key=lambda r: (r.partition, r.offset))  # a user stays in one partition: its order holds
            return records, end
        finally:
            await consumer.stop()


def _latest(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    return {p: max(a.get(p, 0), b.get(p, 0)) for p in a.keys() | b.keys()}
