"""Session fixtures: one real Kafka broker and one real scim2-server for the whole test session.

A test that needs a real server (any of SERVER_FIXTURES, however indirectly, or any test under
tests/integration/) is marked `integration` at collection, so `pytest -m "not integration"` (`make
unit`) runs without a broker, scim2-server or Keycloak.

Kafka, in order of preference: KAFKA_BOOTSTRAP_SERVERS if set; testcontainers when a Docker engine
answers; else the single-node broker assembled from Maven Central by scripts/kafka/kafka.sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import properties  # noqa: F401 - loads the Hypothesis profile (HYPOTHESIS_PROFILE)
from tests.support import ScimServer, start_broker, start_scim_server, stop_broker

SCIM_TOKEN = "downstream-token-1"
SERVER_FIXTURES = frozenset({"kafka_bootstrap", "scim_server", "keycloak"})
INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts or reaches a real server `integration`."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        fixtures -= set(callspec.params) if callspec else set()  # parameters that share a fixture's name
        if fixtures & SERVER_FIXTURES or INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


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
