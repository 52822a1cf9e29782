"""Test helpers: real broker / real scim2-server plumbing shared by integration tests and the bench."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography.fernet import Fernet

from service.app import Service
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "") -> None:
    """Poll `check` until it is true; a readiness check, not a sleep."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.1)


# -- Kafka ---------------------------------------------------------------------------------------------


def make_settings(bootstrap: str, **overrides: Any) -> Settings:
    """Settings with topics and groups of their own, so tests share one broker without interfering."""
    run = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "events_topic": f"t{run}.keycloak-events",
        "admin_events_topic": f"t{run}.keycloak-admin-events",
        "changes_topic": f"t{run}.changes",
        "user_state_topic": f"t{run}.user-state",
        "tenants_topic": f"t{run}.tenants",
        "dead_letter_topic": f"t{run}.dead-letter",
        "parking_topic": f"t{run}.parked",
        "replay_cursors_topic": f"t{run}.replay-cursors",
        "allow_http_hosts": "127.0.0.1",
        "allow_private_networks": True,
        "group_id": f"t{run}",
        "internal_partitions": 3,
        "token_key": Fernet.generate_key().decode(),
        "admin_token": ADMIN_TOKEN,
        "api_host": "127.0.0.1",
        "api_port": 0,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 1.0,
        "drain_timeout_seconds": 10.0,
    }
    values.update(overrides)
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as OUTBOUND_SCIM_* variables, for a service run as a subprocess."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"OUTBOUND_SCIM_{name.upper()}"] = str(value)
    return env


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


# -- SCIM downstream (scim2-server) ------------------------------------------------------------------


@dataclass
class ScimServer:
    port: int
    tokens: tuple[str, ...]
    process: subprocess.Popen[bytes]

    @property
    def token(self) -> str:
        return self.tokens[0]

    def base_url(self, tenant: str | None = None) -> str:
        return f"http://127.0.0.1:{self.port}/{tenant or uuid.uuid4().hex[:12]}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_scim_server(*tokens: str, port: int | None = None) -> ScimServer:
    port = port or free_port()
    command = [
        str(Path(sys.executable).parent / "scim2-server"),
        "--hostname",
        "127.0.0.1",
        "--port",
        str(port),
        "--dynamic-tenants",
    ]
    for token in tokens:
        command += ["--bearer-token", token]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return ScimServer(port, tokens, process)
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("scim2-server exited at start") from None
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("scim2-server did not start")


async def downstream_users(base_url: str, token: str) -> list[dict[str, Any]]:
    """Every user of a downstream tenant (paged GET /Users)."""
    users: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        start = 1
        while True:
            async with http.get(f"{base_url}/Users", params={"startIndex": str(start), "count": "500"}) as r:
                r.raise_for_status()
                doc = await r.json(content_type=None)
            page = doc.get("Resources") or []
            users += page
            if not page or len(users) >= int(doc.get("totalResults", 0)):
                return users
            start += len(page)


def by_external_id(users: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for user in users:
        found.setdefault(user.get("externalId") or "", []).append(user)
    return found


# -- the service ------------------------------------------------------------------------------------


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[Service]:
    service = Service(settings)
    await service.start()
    try:
        await wait_until(_ready(service), timeout=60, what="service ready")
        yield service
    finally:
        await service.stop()


def _ready(service: Service) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return service.is_ready()

    return check


class Api:
    """The service's admin API, as an operator's script would call it."""

    def __init__(self, port: int, token: str = ADMIN_TOKEN) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url + path, json=body, headers=self.headers) as r,
        ):
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text

    async def ready(self) -> bool:
        try:
            return (await self.call("GET", "/readyz"))[0] == 200
        except aiohttp.ClientError:
            return False

    async def enable(self, realm: str, base_url: str, token: str, delete_policy: str = "ignore") -> tuple[int, Any]:
        return await self.call(
            "PUT", f"/tenants/{realm}", {"base_url": base_url, "token": token, "delete_policy": delete_policy}
        )


def spawn_service(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """The service as its own process (`outbound-scim run`), for SIGTERM / kill / multi-replica tests."""
    env = {**os.environ, **settings_env(settings)}
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "service", "run"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
