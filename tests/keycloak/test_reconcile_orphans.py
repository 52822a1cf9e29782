"""Reconciliation's orphan check under the delete policy `deactivate`, against a real Keycloak (its Kafka
event listener feeding the service), the real broker and a real scim2-server: a user is created, then
deleted in Keycloak (its account is deactivated); a request that lands late then makes a second, active
account carrying the user's id as externalId. A real reconciliation run deactivates that account, and
writes to no other: not the linked account (inactive already), not accounts whose externalId merely
looks like the id, not a live user's two accounts (reported as duplicates only)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from service.app import Service
from tests.conftest import SCIM_TOKEN
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, realm_with_listener
from tests.support import (
    Api,
    ScimServer,
    by_external_id,
    create_source_topics,
    downstream_users,
    running_service,
    wait_until,
)

pytestmark = pytest.mark.integration

HEADERS = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


@dataclass
class Setup:
    service: Service
    api: Api
    admin: MasterAdmin
    realm: str
    base: str  # the tenant's downstream, on scim2-server


@pytest.fixture
async def setup(keycloak: RealKeycloak, kafka_bootstrap: str, scim_server: ScimServer) -> AsyncIterator[Setup]:
    """A realm whose events reach the service through Keycloak's listener, and which the service can read
    (reconciliation lists its users); its tenant deactivates deleted users."""
    listener = keycloak.kafka_listener()
    async with aiohttp.ClientSession() as session:
        admin = MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)
        realm = f"ro-{uuid.uuid4().hex[:8]}"
        settings = await realm_with_listener(admin, listener, kafka_bootstrap, realm)
        await create_source_topics(settings)
        async with running_service(settings) as service:
            assert service.api_port is not None
            api = Api(service.api_port)
            base = scim_server.base_url(realm)
            status, body = await api.enable(realm, base, SCIM_TOKEN, delete_policy="deactivate")
            assert status == 201, body
            yield Setup(service, api, admin, realm, base)


async def post_user(base: str, body: dict[str, Any]) -> dict[str, Any]:
    """An account made directly downstream (as a late POST, or by hand, would make it)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/Users", json={"schemas": [USER_SCHEMA], **body}, headers=HEADERS) as answer,
    ):
        assert answer.status == 201, await answer.text()
        created: dict[str, Any] = await answer.json(content_type=None)
        return created


async def accounts(base: str) -> dict[str, dict[str, Any]]:
    return {user["id"]: user for user in await downstream_users(base, SCIM_TOKEN)}


def skipped(setup: Setup) -> float:
    """Changes of the realm that ended skipped (an orphan check of an id the state never saw does)."""
    labels = {"tenant": setup.realm, "downstream": "default", "outcome": "skipped"}
    return setup.service.metrics.registry.get_sample_value("outbound_scim_changes_total", labels) or 0.0


async def test_a_late_account_of_a_deleted_user_is_deactivated_by_a_reconciliation(setup: Setup) -> None:
    """Policy `deactivate`: after the deletion, a late second account carrying the user's id stays active
    until a reconciliation (not a dry run); then it is inactive, and every other account, the linked one
    included, is exactly as it was (not written: same meta)."""
    admin, realm, base = setup.admin, setup.realm, setup.base
    uid = await admin.create_user(realm, {"username": "zed", "email": "zed@example.com", "enabled": True})
    keeper = await admin.create_user(realm, {"username": "keeper", "email": "keeper@example.com", "enabled": True})

    async def both_created() -> bool:
        found = by_external_id(await downstream_users(base, SCIM_TOKEN))
        return len(found.get(uid, [])) == 1 and len(found.get(keeper, [])) == 1

    await wait_until(both_created, timeout=60, what="zed and keeper created downstream")
    [linked] = by_external_id(await downstream_users(base, SCIM_TOKEN))[uid]
    assert linked["active"] is True

    await admin.ok("DELETE", f"/{realm}/users/{uid}")

    async def deactivated() -> bool:
        return (await accounts(base))[linked["id"]].get("active") is False

    await wait_until(deactivated, timeout=60, what="the deletion deactivated zed's account")

    # The late POST: scim2-server keeps userNames unique, so it carries the user's name before a rename.
    late = await post_user(base, {"userName": "zed.before", "externalId": uid, "active": True})
    look_alikes = [
        await post_user(base, {"userName": "zed.upper", "externalId": uid.upper(), "active": True}),
        await post_user(base, {"userName": "zed.suffix", "externalId": f"{uid}-2", "active": True}),
    ]
    second_of_a_live_user = await post_user(base, {"userName": "keeper.two", "externalId": keeper, "active": True})
    before = await accounts(base)
    assert before[late["id"]]["active"] is True
    baseline = skipped(setup)

    status, report = await setup.api.call("POST", f"/tenants/{realm}/reconcile", {"dry_run": False})
    assert status == 200, report
    assert sorted(u["externalId"] for u in report["extra"]["users"]) == sorted([uid, uid, uid.upper(), f"{uid}-2"])
    assert [d["id"] for d in report["duplicates"]["users"]] == [keeper]

    async def late_deactivated() -> bool:
        return (await accounts(base))[late["id"]].get("active") is False

    await wait_until(late_deactivated, timeout=60, what="the orphan check deactivated the late account")

    async def look_alikes_checked() -> bool:
        return skipped(setup) >= baseline + len(look_alikes)

    await wait_until(look_alikes_checked, timeout=60, what="the look-alikes' orphan checks applied")
    after = await accounts(base)
    assert set(after) == set(before), "no account created or deleted"
    assert after[linked["id"]] == before[linked["id"]], "the linked account, inactive already, is not written"
    for untouched in [*look_alikes, second_of_a_live_user]:
        assert after[untouched["id"]] == before[untouched["id"]]
    assert after[untouched["id"]]["active"] is True
    changed = {i for i in after if after[i] != before[i]}
    assert changed == {late["id"]}
    assert {k: v for k, v in after[late["id"]].items() if k not in ("active", "meta")} == {
        k: v for k, v in before[late["id"]].items() if k not in ("active", "meta")
    }
