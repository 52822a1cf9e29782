"""A local stack for `make demo` and `make run`: a Kafka broker (or KAFKA_BOOTSTRAP_SERVERS), a
scim2-server downstream, and the service as its own process (`outbound-scim run`) with one tenant
enabled on that downstream. Everything listens on 127.0.0.1 and is stopped, in reverse order, on exit."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit.kafka import create_source_topics, start_broker, stop_broker
from devkit.local import free_port, wait_until
from devkit.scim import ScimServer, start_scim_server
from devkit.service import Api, make_settings, spawn_service
from service.settings import Settings


@dataclass
class LocalStack:
    bootstrap: str
    scim: ScimServer
    settings: Settings
    service: subprocess.Popen[bytes]
    api: Api
    log: Path
    realm: str
    downstream_token: str

    @property
    def base_url(self) -> str:
        """The enabled tenant's downstream base URL."""
        return self.scim.base_url(self.realm)


class ServiceExited(RuntimeError):
    """The service process ended on its own; the message ends with its log's last lines."""


@asynccontextmanager
async def local_stack(
    workdir: Path,
    realm: str,
    downstream_token: str,
    *,
    delete_policy: str = "delete",
    say: Callable[[str], None] = print,
    **overrides: Any,
) -> AsyncIterator[LocalStack]:
    """Start everything, enable `realm`, yield; `overrides` are service settings (see make_settings)."""
    async with AsyncExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        if not bootstrap:
            say("-- starting a local Kafka broker (assembled from Maven Central; the first time takes a while)")
            data = workdir / "kafka"
            bootstrap = start_broker(data)
            stack.callback(stop_broker, data)
        scim = start_scim_server(downstream_token)
        stack.callback(scim.stop)
        settings = make_settings(bootstrap, **{"api_port": free_port(), **overrides})
        await create_source_topics(settings)
        log = workdir / "service.log"
        say("-- starting the service (outbound-scim run)")
        service = spawn_service(settings, log)
        stack.callback(_stop, service)
        api = Api(settings.api_port, settings.admin_token.get_secret_value())

        async def ready() -> bool:
            if service.poll() is not None:
                raise ServiceExited(exit_report(service, log))
            return await api.ready()

        await wait_until(ready, timeout=90, what="the service to be ready")
        status, body = await api.enable(realm, scim.base_url(realm), downstream_token, delete_policy)
        if status not in (200, 201):
            raise RuntimeError(f"enabling {realm} answered {status}: {body}")
        yield LocalStack(bootstrap, scim, settings, service, api, log, realm, downstream_token)


def exit_report(service: subprocess.Popen[bytes], log: Path) -> str:
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    return f"the service exited with {service.returncode}; the end of {log}:\n{tail}"


def _stop(service: subprocess.Popen[bytes]) -> None:
    service.terminate()
    try:
        service.wait(timeout=60)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait()
