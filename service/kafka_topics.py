"""Create the service's internal topics when they are missing (idempotent, run at start-up)."""

from __future__ import annotations

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


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        [description] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if description.get("error_code") or not description.get("partitions"):
        raise ConfigError(f"topic {topic} is not available")
    return sorted(p["partition"] for p in description["partitions"])
