"""Session fixtures: one real Kafka broker, one real scim2-server and one django-scim2 server (started
on first use, scripts/django_scim) for the whole test session.

A test that needs a real server (any of SERVER_FIXTURES, however indirectly, or any test under
tests/integration/) is marked `integration` at collection, so `pytest -m "not integration"` (`make
unit`) runs without a broker, scim2-server or Keycloak.

Kafka, in order of preference: KAFKA_BOOTSTRAP_SERVERS if set; testcontainers when a Docker engine
answers; else the single-node broker assembled from Maven Central by scripts/kafka/kafka.sh. That one
also serves a SASL_SSL listener under an authorizer (`secured_kafka`); with the other two the tests
that need it are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import properties  # noqa: F401 - loads the Hypothesis profile (HYPOTHESIS_PROFILE)
from tests.django_scim import DjangoScim, start_django_scim
from tests.support import ScimServer, SecuredListener, start_scim_server, start_secured_broker, stop_broker

pytest_plugins = ["tests.browser.fixtures"]  # the browser fixtures, for tests/browser and tests/keycloak

SCIM_TOKEN = "downstream-token-1"
SERVER_FIXTURES = frozenset(
    {"kafka_bootstrap", "kafka_broker", "secured_kafka", "scim_server", "keycloak", "django_scim"}
)
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
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SecuredListener | None]]:
    """The session's broker: its PLAINTEXT bootstrap (every client there is a super user) and, when it is
    ours, its SASL_SSL listener."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"], None
        return
    if _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server(), None
        return
    data = tmp_path_factory.mktemp("kafka")
    bootstrap, secured = start_secured_broker(data)
    try:
        yield bootstrap, secured
    finally:
        stop_broker(data / "kafka")


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: tuple[str, SecuredListener | None]) -> str:
    return kafka_broker[0]


@pytest.fixture(scope="session")
def secured_kafka(kafka_broker: tuple[str, SecuredListener | None]) -> SecuredListener:
    if kafka_broker[1] is None:
        pytest.skip("needs the broker of scripts/kafka/kafka.sh (KAFKA_BOOTSTRAP_SERVERS unset, no Docker)")
    return kafka_broker[1]


@pytest.fixture(scope="session")
def scim_server() -> Iterator[ScimServer]:
    server = start_scim_server(SCIM_TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def django_scim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DjangoScim]:
    """django-scim2 0.23's SCIM server (scripts/django_scim), a static bearer token, one per session."""
    server = start_django_scim(tmp_path_factory.mktemp("django-scim"))
    yield server
    server.stop()
