"""The start-up check of the internal topics on the real broker: topics an operator made differently."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from structlog.testing import capture_logs

from service.app import Service
from service.errors import ConfigError
from tests.support import create_source_topics, make_settings


async def test_a_user_state_topic_not_co_partitioned_with_the_changes_refuses_the_start(kafka_bootstrap: str) -> None:
    """user-state made with 2 partitions, changes with 3 -> ConfigError naming both topics and the fix; a
    parking topic with one hour of retention is only a warning in the log."""
    settings = make_settings(kafka_bootstrap)  # 3 internal partitions
    await create_source_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(settings.user_state_topic, 2, 1, topic_configs={"cleanup.policy": "compact"}),
                NewTopic(settings.parking_topic, 3, 1, topic_configs={"retention.ms": "3600000"}),
            ]
        )
    finally:
        await admin.close()
    service = Service(settings)
    with capture_logs() as logs, pytest.raises(ConfigError) as refused:
        await service.start()
    message = str(refused.value)
    assert settings.user_state_topic in message and settings.changes_topic in message
    assert "co-partitioned" in message and "--partitions" in message
    warnings = [e for e in logs if e["event"] == "kafka.topic.misconfigured" and e["log_level"] == "warning"]
    assert [w["topic"] for w in warnings] == [settings.parking_topic], logs
