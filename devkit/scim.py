"""A real SCIM downstream (scim2-server, one tenant per base path) and reading back what it holds."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from devkit.local import free_port


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


def start_scim_server(
    *tokens: str, port: int | None = None, schema: Path | None = None, service_provider_config: Path | None = None
) -> ScimServer:
    """scim2-server on 127.0.0.1; `schema`: a JSON list of schemas served instead of RFC 7643's;
    `service_provider_config`: the ServiceProviderConfig it announces instead of "everything supported"."""
    port = port or free_port()
    command = [
        str(Path(sys.executable).parent / "scim2-server"),
        "--hostname",
        "127.0.0.1",
        "--port",
        str(port),
        "--dynamic-tenants",
    ]
    if schema is not None:
        command += ["--schema", str(schema)]
    if service_provider_config is not None:
        command += ["--service-provider-config", str(service_provider_config)]
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
