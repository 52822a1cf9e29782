"""Session fixtures: one real Kafka broker and one real scim2-server for the whole test session.

Kafka, in order of preference: KAFKA_BOOTSTRAP_SERVERS if set; testcontainers when a Docker engine
answers; else the single-node broker assembled from Maven Central by scripts/kafka/kafka.sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.support import ScimServer, start_broker, start_scim_server, stop_broker

SCIM_TOKEN = "downstream-token-1"


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    data = tmp_path_factory.mktemp("kafka")
    bootstrap = start_broker(data)
    try:
        yield bootstrap
    finally:
        stop_broker(data)


@pytest.fixture(scope="session")
def scim_server() -> Iterator[ScimServer]:
    server = start_scim_server(SCIM_TOKEN)
    yield server
    server.stop()
