"""A local Kafka broker (assembled from Maven Central by scripts/kafka/kafka.sh), topics, and a publisher
that writes records the way the Keycloak plugin does."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devkit.local import ROOT
from service.settings import Settings

KAFKA_SCRIPT = ROOT / "scripts" / "kafka" / "kafka.sh"


def start_broker(data: Path, port: int = 0) -> str:
    """A single-node broker from scripts/kafka/kafka.sh; returns its bootstrap address."""
    started = subprocess.run(
        ["bash", str(KAFKA_SCRIPT), "start", str(port), str(data)], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        raise RuntimeError(f"the Kafka broker did not start:\n{started.stderr[-3000:]}")
    return started.stdout.strip().splitlines()[-1]


def stop_broker(data: Path) -> None:
    subprocess.run(["bash", str(KAFKA_SCRIPT), "stop", str(data)], capture_output=True, check=False)


async def create_source_topics(settings: Settings, partitions: int = 3, configs: dict[str, str] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, partitions, 1, topic_configs=configs or {}) for t in settings.source_topics]
        )
    finally:
        await admin.close()


class Publisher:
    """Publishes plugin-format records the way the plugin does: JSON value, null key, no headers."""

    def __init__(self, bootstrap: str, max_request_size: int = 1048576) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=max_request_size)

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, topic: str, event: dict[str, Any] | bytes, partition: int | None = None) -> None:
        value = event if isinstance(event, bytes) else json.dumps(event).encode()
        await self._producer.send(topic, value=value, partition=partition)

    async def send_all(self, topic: str, events: Iterable[dict[str, Any]], partitions: int | None = None) -> None:
        for i, event in enumerate(events):
            await self.send(topic, event, partition=(i % partitions) if partitions else None)
        await self._producer.flush()

    async def flush(self) -> None:
        await self._producer.flush()
