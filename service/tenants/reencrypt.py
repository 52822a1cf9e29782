"""`outbound-scim reencrypt-tenants`: rewrite every tenant record whose token is not encrypted with the
first OUTBOUND_SCIM_TOKEN_KEY, so the older keys can then be removed.

It talks to Kafka directly (the tenants topic), not to the API, so it works while every replica is
unready. Records are rewritten with every field as it was (the generation too: no gate is reset). The
topic's end is read again just before writing: if a replica wrote meanwhile (an enable, a rotation), the
records are read again, so a newer record is never overwritten with an older one re-encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from service.errors import ConfigError, TenantUnreadable
from service.kafka_topics import partitions_of
from service.settings import Settings
from service.tenants.models import TokenCipher, reencrypted

ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Reencryption:
    """What a run found: realms rewritten, realms already current, records no key decrypts."""

    rewritten: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    unreadable: list[TenantUnreadable] = field(default_factory=list)


def plan_reencryption(records: dict[str, bytes], cipher: TokenCipher) -> tuple[dict[str, bytes], Reencryption]:
    """Pure: the records to write (realm -> new value) and the report, from the latest record per realm."""
    writes: dict[str, bytes] = {}
    report = Reencryption()
    for realm in sorted(records):
        try:
            value = reencrypted(records[realm], cipher, realm)
        except TenantUnreadable as exc:
            report.unreadable.append(exc)
            continue
        if value is None:
            report.current.append(realm)
        else:
            writes[realm] = value
            report.rewritten.append(realm)
    return writes, report


async def reencrypt_tenants(settings: Settings) -> Reencryption:
    cipher = TokenCipher(settings.token_key.get_secret_value())
    topic = settings.tenants_topic
    tps = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    # earliest: with the default (latest) the initial position reset can win over seek_to_beginning
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_options(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(**settings.kafka_client_options(), acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign(tps)
        for _ in range(ATTEMPTS):
            records, end = await _latest(consumer, tps)
            writes, report = plan_reencryption(records, cipher)
            if await consumer.end_offsets(tps) != end:
                continue  # a replica wrote meanwhile: plan again from its record
            for realm, value in writes.items():
                await producer.send(topic, key=realm.encode(), value=value)
            await producer.flush()
            return report
        raise ConfigError(f"{topic} kept changing while it was read: run reencrypt-tenants again")
    finally:
        await producer.stop()
        await consumer.stop()


async def _latest(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> tuple[dict[str, bytes], dict[TopicPartition, int]]:
    """The latest value per key (tombstones remove it), read from the beginning to the end as of now."""
    end = await consumer.end_offsets(tps)
    await consumer.seek_to_beginning(*tps)
    records: dict[str, bytes] = {}
    remaining = {tp for tp in tps if end[tp] > 0}
    while remaining:
        batches = await consumer.getmany(*remaining, timeout_ms=1000)
        for tp, batch in batches.items():
            for record in batch:
                if record.offset >= end[tp] or record.key is None:
                    continue
                if record.value is None:
                    records.pop(record.key.decode(), None)
                else:
                    records[record.key.decode()] = record.value
        for tp in list(remaining):
            if await consumer.position(tp) >= end[tp]:
                remaining.discard(tp)
    return records, end
