"""A local Kafka broker (assembled from Maven Central by scripts/kafka/kafka.sh), topics, and a publisher
that writes records the way the Keycloak plugin does."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devkit.local import ROOT, free_port
from devkit.tls import make_broker_tls
from service.kafka_access import Acl
from service.kafka_protocol import create_acl
from service.settings import Settings

KAFKA_SCRIPT = ROOT / "scripts" / "kafka" / "kafka.sh"


@dataclass(frozen=True)
class SecuredListener:
    """The broker's SASL_SSL listener: SCRAM-SHA-512 user `username`, TLS from a CA of the tests' own."""

    bootstrap: str
    ca_file: Path
    username: str
    password: str

    @property
    def principal(self) -> str:
        return f"User:{self.username}"

    def settings(self) -> dict[str, Any]:
        """Service settings (make_settings overrides) that connect through this listener."""
        return {
            "kafka_bootstrap_servers": self.bootstrap,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": self.username,
            "kafka_sasl_password": self.password,
            "kafka_ssl_cafile": str(self.ca_file),
        }


def start_broker(data: Path, port: int = 0, env: dict[str, str] | None = None) -> str:
    """A single-node broker from scripts/kafka/kafka.sh; returns its bootstrap address."""
    started = subprocess.run(
        ["bash", str(KAFKA_SCRIPT), "start", str(port), str(data)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if started.returncode != 0:
        raise RuntimeError(f"the Kafka broker did not start:\n{started.stderr[-3000:]}")
    return started.stdout.strip().splitlines()[-1]


def start_secured_broker(data: Path, username: str = "outbound-scim") -> tuple[str, SecuredListener]:
    """A broker with its PLAINTEXT listener (a super user: clients there are not authorized) and a
    SASL_SSL one under the StandardAuthorizer, where `username` may do only what ACLs allow."""
    tls = make_broker_tls(data / "tls")
    password = secrets.token_urlsafe(16)
    port = free_port()
    env = {
        "KAFKA_SASL_SSL_PORT": str(port),
        "KAFKA_SSL_KEYSTORE": str(tls.keystore),
        "KAFKA_SCRAM_USERS": f"{username}={password}",
    }
    bootstrap = start_broker(data / "kafka", env=env)
    return bootstrap, SecuredListener(f"127.0.0.1:{port}", tls.ca_file, username, password)


async def grant(bootstrap: str, principal: str, acls: Iterable[Acl]) -> None:
    """Create ALLOW ACLs for `principal`, through the (super user) PLAINTEXT listener at `bootstrap`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for acl in acls:
            await create_acl(admin, principal, acl.resource, acl.name, acl.operation, acl.pattern)
    finally:
        await admin.close()


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

    async def send_batched(self, records: Iterable[tuple[str, int, bytes]]) -> None:
        """Records as (topic, partition, value), null keys, appended to one batch per topic partition and
        handed to the producer as batches: a fraction of `send`'s CPU per record (no future and no
        accumulator call per record), for the bench's load, where the producer took more of the host's
        CPU than the service it loaded. Delivery is awaited by `flush`."""
        batches: dict[tuple[str, int], Any] = {}
        for topic, partition, value in records:
            batch = batches.get((topic, partition))
            if batch is None:
                batch = batches[(topic, partition)] = self._producer.create_batch()
            if batch.append(timestamp=None, key=None, value=value) is None:  # full: send it, start another
                await self._producer.send_batch(batch, topic, partition=partition)
                batch = batches[(topic, partition)] = self._producer.create_batch()
                batch.append(timestamp=None, key=None, value=value)
        for (topic, partition), batch in batches.items():
            await self._producer.send_batch(batch, topic, partition=partition)

    async def send_all(self, topic: str, events: Iterable[dict[str, Any]], partitions: int | None = None) -> None:
        for i, event in enumerate(events):
            await self.send(topic, event, partition=(i % partitions) if partitions else None)
        await self._producer.flush()

    async def flush(self) -> None:
        await self._producer.flush()
