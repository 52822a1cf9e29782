"""Create the service's internal topics when they are missing (idempotent, run at start-up)."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.errors import ConfigError
from service.settings import Settings

log = structlog.get_logger(__name__)

COMPACTED = {"cleanup.policy": "compact"}


def internal_topics(settings: Settings) -> list[NewTopic]:
    """The changes topic and its user-state changelog must be co-partitioned: same count, same key."""
    n, rf = settings.internal_partitions, settings.internal_replication_factor
    return [
        NewTopic(settings.changes_topic, n, rf),
        NewTopic(settings.user_state_topic, n, rf, topic_configs=COMPACTED),
        NewTopic(settings.tenants_topic, 1, rf, topic_configs=COMPACTED),
        NewTopic(settings.dead_letter_topic, 1, rf),
        NewTopic(settings.parking_topic, n, rf),
        NewTopic(settings.replay_cursors_topic, 1, rf, topic_configs=COMPACTED),
    ]


async def ensure_topics(settings: Settings, extra: list[NewTopic] | None = None) -> None:
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in internal_topics(settings) + (extra or []) if t.name not in existing]
        if missing:
            await admin.create_topics(missing)
            log.info("kafka.topics.created", topics=[t.name for t in missing])
    finally:
        await admin.close()


async def partitions_of(settings: Settings, topic: str, wait_seconds: float = 30.0) -> list[int]:
    """The topic's partition numbers; waits while a topic created a moment ago becomes visible."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while True:
            [description] = await admin.describe_topics([topic])
            partitions = description.get("partitions") or []
            if not description.get("error_code") and partitions and all(p["leader"] >= 0 for p in partitions):
                return sorted(p["partition"] for p in partitions)
            if asyncio.get_running_loop().time() > deadline:
                raise ConfigError(f"topic {topic} is not available")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
