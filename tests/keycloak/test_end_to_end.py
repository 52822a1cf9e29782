"""Real end to end (issue 4): Keycloak's admin REST API -> Keycloak's Kafka event listener -> the real
broker -> this service (event-carried mode: no Keycloak admin access) -> scim2-server. Each step must
show downstream within 10 s of the admin call being made.

The listener is scripts/keycloak/listener (SnuK87/keycloak-kafka's record format, sent synchronously),
installed by the `keycloak` fixture and pointed at the session broker; the realm enables it with admin
events and their representations. The rename is sent as the admin console does (the whole user back,
changed); disable and re-enable as a script would (a partial `{"enabled": ...}`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer

from tests.conftest import SCIM_TOKEN
from tests.keycloak.conftest import LISTENER, RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, realm_with_listener
from tests.support import Api, ScimServer, by_external_id, downstream_users, running_service, wait_until

pytestmark = pytest.mark.integration

BOUND = 10.0  # seconds from an admin call to its effect downstream (the requirement)

Check = Callable[[dict[str, Any] | None], bool]


@dataclass
class EndToEnd:
    keycloak: RealKeycloak
    admin: MasterAdmin
    realm: str
    base_url: str  # the tenant's downstream (scim2-server)
    timings: dict[str, float] = field(default_factory=dict)

    async def downstream(self, user_id: str) -> dict[str, Any] | None:
        matches = by_external_id(await downstream_users(self.base_url, SCIM_TOKEN)).get(user_id, [])
        assert len(matches) <= 1, f"duplicate downstream users for {user_id}: {matches}"
        return matches[0] if matches else None

    async def step(
        self, name: str, action: Callable[[], Awaitable[Any]], check: Check, user_id: str | None = None
    ) -> Any:
        """Run one admin call; the user downstream (`user_id`, else the id the call returned) must
        satisfy `check` within BOUND seconds of the call's start. Returns what the call returned."""
        began = time.monotonic()
        result = await action()
        seen: dict[str, Any] = {}

        async def reflected() -> bool:
            seen["user"] = await self.downstream(user_id or str(result))
            return check(seen["user"])

        try:
            await wait_until(reflected, timeout=BOUND, what=name)
        except AssertionError:
            raise AssertionError(
                f"{name}: not reflected downstream within {BOUND:.0f} s; last seen {seen.get('user')}\n"
                f"Keycloak log about the listener:\n{self.keycloak.log_lines(LISTENER, 'kafka')}"
            ) from None
        elapsed = time.monotonic() - began
        assert elapsed <= BOUND, f"{name}: reflected after {elapsed:.1f} s, more than {BOUND:.0f} s"
        self.timings[name] = elapsed
        return result


@pytest.fixture
async def e2e(keycloak: RealKeycloak, kafka_bootstrap: str, scim_server: ScimServer) -> AsyncIterator[EndToEnd]:
    listener = keycloak.kafka_listener()
    async with aiohttp.ClientSession() as session:
        admin = MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)
        realm = f"e2e-{uuid.uuid4().hex[:8]}"
        # Event-carried mode: the plugin's topics are the listener's, the internal ones fresh.
        settings = await realm_with_listener(admin, listener, kafka_bootstrap, realm, account_roles=None)
        async with running_service(settings) as service:
            assert service.api_port is not None
            base_url = scim_server.base_url(realm)
            status, body = await Api(service.api_port).enable(realm, base_url, SCIM_TOKEN, delete_policy="delete")
            assert status in (200, 201), body
            yield EndToEnd(keycloak, admin, realm, base_url)


def email(user: dict[str, Any]) -> str | None:
    emails = user.get("emails") or []
    return emails[0].get("value") if emails else None


async def test_admin_api_changes_reach_the_downstream_within_10_s(e2e: EndToEnd) -> None:
    admin, realm = e2e.admin, e2e.realm

    user_id: str = await e2e.step(
        "create",
        lambda: admin.create_user(
            realm,
            {
                "username": "e2e.jane",
                "firstName": "Jane",
                "lastName": "Doe",
                "email": "jane.doe@example.com",
                "enabled": True,
            },
        ),
        lambda u: (
            u is not None
            and u.get("userName") == "e2e.jane"
            and u.get("active") is True
            and u.get("name", {}).get("givenName") == "Jane"
            and u.get("name", {}).get("familyName") == "Doe"
            and email(u) == "jane.doe@example.com"
        ),
    )

    async def rename() -> None:  # as the admin console saves: the whole user, changed
        stored = await admin.ok("GET", f"/{realm}/users/{user_id}")
        stored.update(firstName="Janet", lastName="Doe-Smith", email="janet.smith@example.com")
        await admin.ok("PUT", f"/{realm}/users/{user_id}", stored)

    await e2e.step(
        "change name and email",
        rename,
        lambda u: (
            u is not None
            and u.get("name", {}).get("givenName") == "Janet"
            and u.get("name", {}).get("familyName") == "Doe-Smith"
            and email(u) == "janet.smith@example.com"
            and u.get("userName") == "e2e.jane"
            and u.get("active") is True
        ),
        user_id,
    )
    await e2e.step(
        "disable",
        lambda: admin.ok("PUT", f"/{realm}/users/{user_id}", {"enabled": False}),
        lambda u: u is not None and u.get("active") is False and email(u) == "janet.smith@example.com",
        user_id,
    )
    await e2e.step(
        "re-enable",
        lambda: admin.ok("PUT", f"/{realm}/users/{user_id}", {"enabled": True}),
        lambda u: u is not None and u.get("active") is True and u.get("name", {}).get("givenName") == "Janet",
        user_id,
    )
    await e2e.step("delete", lambda: admin.ok("DELETE", f"/{realm}/users/{user_id}"), lambda u: u is None, user_id)
    print(
        "end to end, seconds from admin call to downstream:",
        ", ".join(f"{name} {seconds:.2f}" for name, seconds in e2e.timings.items()),
    )

    # What travelled: SnuK87's records, one per admin call, on the admin topic.
    records = await admin_records(e2e.keycloak, realm, user_id, expected=5)
    assert all(r.key is None and not r.headers for r in records)
    events = [json.loads(r.value) for r in records]
    assert sorted(e["operationType"] for e in events) == ["CREATE", "DELETE", "UPDATE", "UPDATE", "UPDATE"]
    for event in events:
        assert event["resourceType"] == "USER" and event["resourcePath"] == f"users/{user_id}"
        assert event["realmName"] == realm and event["id"] and isinstance(event["time"], int)
        assert "@class" not in event and event["authDetails"]["realmName"] == "master"
        # A JSON string inside the JSON. On DELETE, Keycloak 26.5 sends {"id", "username"} (older: null).
        representation = event["representation"]
        if event["operationType"] != "DELETE" or representation is not None:
            assert isinstance(representation, str) and isinstance(json.loads(representation), dict)


def about(value: bytes, realm: str, user_id: str) -> bool:
    event = json.loads(value)
    return bool(
        event.get("realmName") == realm
        and event.get("resourceType") == "USER"
        and str(event.get("resourcePath", "")).startswith(f"users/{user_id}")
    )


async def admin_records(keycloak: RealKeycloak, realm: str, user_id: str, expected: int) -> list[Any]:
    """The admin topic's records about one user, read from the beginning until `expected` are there."""
    consumer = AIOKafkaConsumer(
        keycloak.admin_events_topic,
        bootstrap_servers=keycloak.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[Any] = []
    try:

        async def complete() -> bool:
            batches = await consumer.getmany(timeout_ms=500)
            found.extend(
                r for batch in batches.values() for r in batch if r.value is not None and about(r.value, realm, user_id)
            )
            return len(found) >= expected

        await wait_until(complete, timeout=BOUND, what=f"{expected} admin events of {realm} on the topic")
    finally:
        await consumer.stop()
    return found
