"""Groups end to end: Keycloak's admin REST API -> Keycloak's Kafka event listener -> the real broker ->
this service (event-carried mode) -> scim2-server. Creating a group, adding and removing a member,
renaming and deleting the group each show downstream within 10 s of the admin call."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.conftest import SCIM_TOKEN
from tests.keycloak.conftest import LISTENER, RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, realm_with_listener
from tests.support import Api, ScimServer, by_external_id, downstream_users, running_service, wait_until

BOUND = 10.0  # seconds from an admin call to its effect downstream


@dataclass
class GroupsEndToEnd:
    keycloak: RealKeycloak
    admin: MasterAdmin
    realm: str
    base_url: str
    timings: dict[str, float] = field(default_factory=dict)

    async def group(self, group_id: str) -> dict[str, Any] | None:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {SCIM_TOKEN}"}) as http,
            http.get(f"{self.base_url}/Groups", params={"count": "100"}) as answer,
        ):
            doc = await answer.json(content_type=None)
        found = [g for g in doc.get("Resources") or [] if g.get("externalId") == group_id]
        assert len(found) <= 1
        return found[0] if found else None

    async def step(self, name: str, action: Callable[[], Awaitable[Any]], check: Callable[[], Awaitable[bool]]) -> Any:
        began = time.monotonic()
        result = await action()
        try:
            await wait_until(check, timeout=BOUND, what=name)
        except AssertionError:
            raise AssertionError(
                f"{name}: not downstream within {BOUND:.0f} s\n{self.keycloak.log_lines(LISTENER, 'kafka')}"
            ) from None
        self.timings[name] = time.monotonic() - began
        return result


@pytest.fixture
async def e2e(keycloak: RealKeycloak, kafka_bootstrap: str, scim_server: ScimServer) -> AsyncIterator[GroupsEndToEnd]:
    listener = keycloak.kafka_listener()
    async with aiohttp.ClientSession() as session:
        admin = MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)
        realm = f"e2g-{uuid.uuid4().hex[:8]}"
        settings = await realm_with_listener(admin, listener, kafka_bootstrap, realm, account_roles=None)
        async with running_service(settings) as service:
            base_url = scim_server.base_url(realm)
            status, body = await Api(service.api_port or 0).call(
                "PUT",
                f"/tenants/{realm}",
                {"base_url": base_url, "token": SCIM_TOKEN, "delete_policy": "delete", "groups": True},
            )
            assert status == 201, body
            yield GroupsEndToEnd(keycloak, admin, realm, base_url)


async def test_group_changes_reach_the_downstream_within_10_s(e2e: GroupsEndToEnd) -> None:
    admin, realm = e2e.admin, e2e.realm
    user_id = await admin.create_user(
        realm,
        {
            "username": "e2g.jane",
            "firstName": "Jane",
            "lastName": "Doe",
            "email": "e2g.jane@example.com",
            "enabled": True,
        },
    )

    async def user_downstream() -> bool:
        return bool(by_external_id(await downstream_users(e2e.base_url, SCIM_TOKEN)).get(user_id))

    await wait_until(user_downstream, timeout=BOUND, what="the user downstream")
    account = by_external_id(await downstream_users(e2e.base_url, SCIM_TOKEN))[user_id][0]

    holder: dict[str, str] = {}

    async def created() -> bool:
        group = await e2e.group(holder["id"]) if "id" in holder else None
        return group is not None and group.get("displayName") == "engineering"

    async def create_and_remember() -> None:
        holder["id"] = await admin.ok("POST", f"/{realm}/groups", {"name": "engineering"})

    await e2e.step("create group", create_and_remember, created)
    group_id = holder["id"]

    async def members() -> set[str]:
        group = await e2e.group(group_id)
        return {m["value"] for m in (group or {}).get("members") or []}

    async def has_member() -> bool:
        return await members() == {account["id"]}

    async def no_member() -> bool:
        return await members() == set()

    await e2e.step("add member", lambda: admin.ok("PUT", f"/{realm}/users/{user_id}/groups/{group_id}"), has_member)
    await e2e.step(
        "remove member", lambda: admin.ok("DELETE", f"/{realm}/users/{user_id}/groups/{group_id}"), no_member
    )

    async def rename() -> None:
        group = await admin.ok("GET", f"/{realm}/groups/{group_id}")
        await admin.ok("PUT", f"/{realm}/groups/{group_id}", {**group, "name": "platform"})

    async def renamed() -> bool:
        group = await e2e.group(group_id)
        return group is not None and group.get("displayName") == "platform"

    await e2e.step("rename group", rename, renamed)

    async def gone() -> bool:
        return await e2e.group(group_id) is None

    await e2e.step("delete group", lambda: admin.ok("DELETE", f"/{realm}/groups/{group_id}"), gone)
    print(f"\nFIGURES groups end to end (s): { ({k: round(v, 2) for k, v in e2e.timings.items()}) }")
    assert all(t <= BOUND for t in e2e.timings.values())
