"""Scenarios shared by the process-level tests: a burst of user changes and its expected end state."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from service.settings import Settings
from tests import events as ev
from tests.conftest import SCIM_TOKEN
from tests.support import Api, by_external_id, downstream_users, spawn_service, wait_until


async def wait_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    async def ready() -> bool:
        assert process.poll() is None, f"service exited:\n{log.read_text()[-3000:]}"
        return await Api(port).ready()

    await wait_until(ready, timeout=60, what=f"service on port {port} ready")


def burst(realm: str, users: int, prefix: str) -> list[dict[str, Any]]:
    """Per user: create, two renames, and a disable for every third user."""
    events = [ev.create_user(realm, f"{prefix}{n}", f"{prefix}login{n}", "F", "L0") for n in range(users)]
    for version in (1, 2):
        events += [ev.update_user(realm, f"{prefix}{n}", lastName=f"L{version}") for n in range(users)]
    events += [ev.update_user(realm, f"{prefix}{n}", enabled=False) for n in range(0, users, 3)]
    return events


async def converged(base: str, users: int, prefix: str) -> bool:
    found = by_external_id(await downstream_users(base, SCIM_TOKEN))
    if len(found) < users:
        return False
    for n in range(users):
        matches = found.get(f"{prefix}{n}", [])
        assert len(matches) <= 1, f"duplicate downstream users for {prefix}{n}"
        if not matches or matches[0]["name"]["familyName"] != "L2" or matches[0]["active"] is not (n % 3 != 0):
            return False
    return True


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


async def start_with_tenant(
    settings: Settings, log: Path, realm: str, base: str, delete_policy: str = "ignore"
) -> subprocess.Popen[bytes]:
    """The service as a process, ready, with `realm` enabled towards `base`."""
    process = spawn_service(settings, log)
    await wait_ready(settings.api_port, process, log)
    assert (await Api(settings.api_port).enable(realm, base, SCIM_TOKEN, delete_policy))[0] == 201
    return process


async def when_downstream_has(base: str, users: int, what: str) -> None:
    async def enough() -> bool:
        return len(await downstream_users(base, SCIM_TOKEN)) >= users

    await wait_until(enough, what=what)
