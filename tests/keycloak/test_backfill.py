"""Backfill against a real Keycloak: users that existed before outbound SCIM was enabled all reach an
empty downstream (real broker, real scim2-server)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from service.app import Service
from tests.conftest import SCIM_TOKEN
from tests.counting import CountingProxy
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


@pytest.fixture
async def counting(scim_server: ScimServer) -> AsyncIterator[CountingProxy]:
    """A counting proxy in front of the session's scim2-server (whose default configuration announces /Bulk)."""
    proxy = await CountingProxy(f"http://127.0.0.1:{scim_server.port}").start()
    yield proxy
    await proxy.stop()


def changes(service: Service, realm: str, *outcomes: str) -> float:
    registry = service.metrics.registry
    return sum(
        registry.get_sample_value(
            "outbound_scim_changes_total", {"tenant": realm, "downstream": "default", "outcome": o}
        )
        or 0.0
        for o in outcomes
    )


async def backfill_through(service: Service, realm: str, base: str, bulk: str) -> dict[str, Any]:
    """Enable the realm on `base` with a backfill and wait until it is done and every user is downstream."""
    api = Api(service.api_port or 0)
    status, body = await api.call(
        "PUT", f"/tenants/{realm}", {"base_url": base, "token": SCIM_TOKEN, "backfill": True, "bulk": bulk}
    )
    assert status == 201, body

    async def done() -> bool:
        _, progress = await api.call("GET", f"/tenants/{realm}/backfill")
        return (
            bool(progress["state"] != "running")
            and service.metrics.changes.labels(realm, "default", "created")._value.get()
            + (service.metrics.changes.labels(realm, "default", "conflict")._value.get())
            >= USERS
        )

    await wait_until(done, timeout=180, what=f"{USERS} users backfilled")
    _, progress = await api.call("GET", f"/tenants/{realm}/backfill")
    return dict(progress)


async def test_backfill_into_an_empty_downstream_sends_one_request_per_user(
    service: Service,
    scim_server: ScimServer,
    counting: CountingProxy,
    populated: tuple[str, ServiceAccount, dict[str, int]],
) -> None:
    """Bulk off: one POST per user, plus a handful of requests in all (validation, configuration, the
    one-page listing): no lookup before the creates. Counted by a proxy in front of scim2-server."""
    realm, _, ids = populated
    tenant = scim_server.base_url().rsplit("/", 1)[1]
    progress = await backfill_through(service, realm, counting.base_url(tenant), "off")
    users = by_external_id(await downstream_users(scim_server.base_url(tenant), SCIM_TOKEN))
    assert sorted(users) == sorted(ids) and all(len(held) == 1 for held in users.values())
    assert counting.counted["POST /Users"] == USERS
    assert counting.counted["GET /Users"] <= 2  # the enable's token check and the backfill's listing
    assert counting.total() <= 1.05 * USERS, counting.counted
    assert progress["downstream_listed"] == 0
    print(f"\nFIGURES backfill requests: {dict(counting.counted)} for {USERS} users")


async def test_backfill_with_bulk_creates_every_user_through_bulk_requests(
    service: Service,
    scim_server: ScimServer,
    counting: CountingProxy,
    populated: tuple[str, ServiceAccount, dict[str, int]],
) -> None:
    """Bulk auto on a downstream announcing it: the creates leave as /Bulk requests (far fewer requests
    than users) and every user ends right downstream."""
    realm, _, ids = populated
    tenant = scim_server.base_url().rsplit("/", 1)[1]
    await backfill_through(service, realm, counting.base_url(tenant), "auto")
    users = by_external_id(await downstream_users(scim_server.base_url(tenant), SCIM_TOKEN))
    assert sorted(users) == sorted(ids)
    for user_id, i in ids.items():
        [user] = users[user_id]
        want = expected(i)
        assert (user["userName"], user["active"], user["name"].get("familyName")) == (
            want["userName"],
            want["active"],
            want["familyName"],
        )
    assert counting.counted["POST /Bulk"] >= 1
    assert counting.total() <= USERS / 4, counting.counted
    print(f"\nFIGURES backfill requests with /Bulk: {dict(counting.counted)} for {USERS} users")


async def test_backfill_never_writes_a_look_alike_account_owned_by_someone_else(
    service: Service,
    scim_server: ScimServer,
    counting: CountingProxy,
    populated: tuple[str, ServiceAccount, dict[str, int]],
) -> None:
    """The downstream already holds pre0005 under another externalId: that account is not written to,
    no second pre0005 appears, the user is dead-lettered as a conflict, and every other user is created."""
    realm, _, ids = populated
    tenant = scim_server.base_url().rsplit("/", 1)[1]
    base = scim_server.base_url(tenant)
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {SCIM_TOKEN}"}) as http,
        http.post(
            f"{base}/Users",
            json={"userName": "pre0005", "externalId": "someone-else", "name": {"familyName": "Theirs"}},
        ) as answer,
    ):
        assert answer.status == 201
        theirs = await answer.json(content_type=None)
    await backfill_through(service, realm, counting.base_url(tenant), "auto")
    users = by_external_id(await downstream_users(base, SCIM_TOKEN))
    [kept] = users.pop("someone-else")
    assert (kept["id"], kept["userName"], kept["name"]) == (theirs["id"], theirs["userName"], theirs["name"])
    look_alike = next(uid for uid, i in ids.items() if i == 5)
    assert sorted(users) == sorted(set(ids) - {look_alike})  # everyone else once; no second pre0005
    assert all(len(held) == 1 for held in users.values())
    assert changes(service, realm, "conflict") == 1
    assert counting.counted["PATCH /Users"] == 0
