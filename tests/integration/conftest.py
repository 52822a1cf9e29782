"""A running service on the session's real broker, with a real scim2-server downstream per realm."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from service.app import Service
from service.settings import Settings
from tests.conftest import SCIM_TOKEN
from tests.support import (
    Api,
    Publisher,
    ScimServer,
    by_external_id,
    create_source_topics,
    downstream_users,
    make_settings,
    running_service,
    wait_until,
)


@dataclass
class Pipeline:
    settings: Settings
    service: Service
    api: Api
    publisher: Publisher
    scim: ScimServer
    bases: dict[str, str] = field(default_factory=dict)

    def realm(self) -> str:
        return f"realm-{uuid.uuid4().hex[:8]}"

    async def enable(self, realm: str, delete_policy: str = "ignore") -> str:
        base = self.bases.setdefault(realm, self.scim.base_url(realm + uuid.uuid4().hex[:6]))
        status, body = await self.api.enable(realm, base, SCIM_TOKEN, delete_policy)
        assert status in (200, 201), body
        return base

    async def admin(self, *events: dict[str, Any], partitions: int | None = None) -> None:
        await self.publisher.send_all(self.settings.admin_events_topic, events, partitions)

    async def user(self, *events: dict[str, Any], partitions: int | None = None) -> None:
        await self.publisher.send_all(self.settings.events_topic, events, partitions)

    async def users(self, realm: str) -> list[dict[str, Any]]:
        return await downstream_users(self.bases[realm], SCIM_TOKEN)

    async def user_by_external_id(self, realm: str, user_id: str) -> dict[str, Any] | None:
        matches = by_external_id(await self.users(realm)).get(user_id, [])
        assert len(matches) <= 1, f"duplicate downstream users for {user_id}: {matches}"
        return matches[0] if matches else None

    async def wait_user(self, realm: str, user_id: str, **expected: Any) -> dict[str, Any]:
        """Wait until the downstream user has every expected top-level attribute value."""
        seen: dict[str, dict[str, Any] | None] = {}

        async def matches() -> bool:
            user = await self.user_by_external_id(realm, user_id)
            seen["user"] = user
            return user is not None and all(_get(user, k) == v for k, v in expected.items())

        await wait_until(matches, timeout=30, what=f"{user_id} with {expected}; last seen {seen}")
        user = seen["user"]
        assert user is not None
        return user

    def counter(self, name: str, **labels: str) -> float:
        """A sample's value (0 when absent); a `tenant` label alone means the realm's default downstream."""
        if "tenant" in labels:
            labels.setdefault("downstream", "default")
        value = self.service.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    async def counted(self, name: str, **labels: str) -> float:
        """The counter once it has counted at all: stage 1 runs in a child process whose counts reach this
        registry about once a second."""

        async def some() -> bool:
            return self.counter(name, **labels) > 0

        await wait_until(some, timeout=10, what=f"{name} {labels} counted")
        return self.counter(name, **labels)


def _get(user: dict[str, Any], dotted: str) -> Any:
    value: Any = user
    for part in dotted.split("__"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


@pytest.fixture
async def pipeline(kafka_bootstrap: str, scim_server: ScimServer) -> AsyncIterator[Pipeline]:
    settings = make_settings(kafka_bootstrap)
    await create_source_topics(settings)
    async with running_service(settings) as service, Publisher(kafka_bootstrap) as publisher:
        assert service.api_port is not None
        yield Pipeline(settings, service, Api(service.api_port), publisher, scim_server)
