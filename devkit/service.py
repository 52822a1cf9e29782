"""The service on a local broker: settings of its own, run in-process or as `outbound-scim run`, and its
admin API as an operator's script would call it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet

from devkit.local import wait_until
from service.app import Service
from service.settings import Settings

ADMIN_TOKEN = "test-admin-token"


def make_settings(bootstrap: str, **overrides: Any) -> Settings:
    """Settings with topics and groups of their own, so runs share one broker without interfering."""
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
        "activity_topic": f"t{run}.activity",
        "allow_http_hosts": "127.0.0.1",
        "allow_private_networks": True,
        "group_id": f"t{run}",
        "instance_id": f"i{run}",  # processes on one host must not share the host name as their instance id
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


def spawn_service(settings: Settings, log_path: Path, python: str | None = None) -> subprocess.Popen[bytes]:
    """The service as its own process (`outbound-scim run`), for SIGTERM / kill / multi-replica runs.

    It starts in the log's directory, not the repository, so a developer's .env there cannot add settings.
    `python` is the interpreter (another tree's venv runs that tree's service); default: this one.
    It leads a process group of its own with its stage 1 child, as a container holds both: `kill_all`
    is a container's kill -9 (or SIGSTOP)."""
    env = {**os.environ, **settings_env(settings)}
    log = log_path.open("ab")
    return subprocess.Popen(
        [python or sys.executable, "-m", "service", "run"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=log_path.parent,
        start_new_session=True,
    )


def kill_all(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """`sig` to the service and its stage 1 child at once, as when a container is killed."""
    os.killpg(process.pid, sig)


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
