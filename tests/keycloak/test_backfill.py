"""Backfill against a real Keycloak: users that existed before outbound SCIM was enabled all reach an
empty downstream (real broker, real scim2-server)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from service.app import Service
from tests.conftest import SCIM_TOKEN
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, ServiceAccount, keycloak_settings
from tests.support import (
    Api,
    ScimServer,
    by_external_id,
    create_source_topics,
    downstream_users,
    running_service,
    wait_until,
)

USERS = 1000


def expected(i: int) -> dict[str, object]:
    return {
        "userName": f"pre{i:04d}",
        "givenName": f"Given{i}",
        "familyName": None if i % 7 == 0 else f"Fam{i}",
        "email": f"pre{i:04d}@example.com",
        "active": i % 3 != 0,
    }


@pytest.fixture(scope="module")
async def populated(keycloak: RealKeycloak) -> AsyncIterator[tuple[str, ServiceAccount, dict[str, int]]]:
    """A realm with 1,000 users created through the Admin API before anything is enabled."""
    async with aiohttp.ClientSession() as session:
        admin = MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)
        realm = f"bf-{uuid.uuid4().hex[:8]}"
        await admin.create_realm(realm)
        account = await admin.create_service_account(realm, "outbound-scim")
        ids: dict[str, int] = {}
        slots = asyncio.Semaphore(16)

        async def create(i: int) -> None:
            attrs = expected(i)
            rep = {
                "username": attrs["userName"],
                "firstName": attrs["givenName"],
                "email": attrs["email"],
                "enabled": attrs["active"],
            }
            if attrs["familyName"]:
                rep["lastName"] = attrs["familyName"]
            async with slots:
                ids[await admin.create_user(realm, rep)] = i

        started = time.monotonic()
        await asyncio.gather(*(create(i) for i in range(USERS)))
        print(f"\nFIGURES backfill setup: {USERS} Keycloak users created in {time.monotonic() - started:.1f}s")
        yield realm, account, ids


@pytest.fixture
async def service(
    keycloak: RealKeycloak, kafka_bootstrap: str, populated: tuple[str, ServiceAccount, dict[str, int]]
) -> AsyncIterator[Service]:
    _, account, _ = populated
    settings = keycloak_settings(kafka_bootstrap, keycloak.url, account)
    await create_source_topics(settings)
    async with running_service(settings) as running:
        yield running


async def test_backfill_of_a_thousand_existing_users_into_an_empty_downstream(
    service: Service, scim_server: ScimServer, populated: tuple[str, ServiceAccount, dict[str, int]]
) -> None:
    """Enable with backfill: every pre-existing user is created downstream once, with its attributes,
    and the progress shows done = total."""
    realm, _, ids = populated
    api, base = Api(service.api_port or 0), scim_server.base_url()
    started = time.monotonic()
    status, body = await api.call("PUT", f"/tenants/{realm}", {"base_url": base, "token": SCIM_TOKEN, "backfill": True})
    assert status == 201, body
    assert body["backfill"]["state"] == "running"

    async def all_there() -> bool:
        return len(await downstream_users(base, SCIM_TOKEN)) >= USERS

    await wait_until(all_there, timeout=180, what=f"{USERS} users backfilled")
    elapsed = time.monotonic() - started
    users = by_external_id(await downstream_users(base, SCIM_TOKEN))
    assert len(users) == USERS
    for user_id, i in ids.items():
        [user] = users[user_id]
        want = expected(i)
        assert user["userName"] == want["userName"]
        assert user["active"] is want["active"]
        assert user["name"].get("familyName") == want["familyName"]
        assert user["emails"][0]["value"] == want["email"]
    status, progress = await api.call("GET", f"/tenants/{realm}/backfill")
    assert (status, progress["state"], progress["done"], progress["total"]) == (200, "done", USERS, USERS)
    print(f"\nFIGURES backfill: {USERS} users into an empty scim2-server in {elapsed:.1f}s")


async def test_backfill_needs_an_enabled_tenant(service: Service) -> None:
    """Starting a backfill for a realm that is not enabled is refused with 404."""
    status, body = await Api(service.api_port or 0).call("POST", "/tenants/nowhere/backfill")
    assert (status, body["error"]) == (404, "not_enabled")
