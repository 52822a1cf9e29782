"""Reconciliation of group members against a real Keycloak, the real broker and scim2-server: members
added to one of our groups downstream behind our back (a Keycloak user who is not a member, and an
account Keycloak does not know) are reported by every run, left alone by a run that is not asked to
remove them, and removed by one that is; the accounts themselves stay."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.conftest import SCIM_TOKEN
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, keycloak_settings
from tests.support import Api, ScimServer, by_external_id, downstream_users, running_service, wait_until

HEADERS = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@dataclass
class Planted:
    api: Api
    realm: str
    base: str
    group: str  # the downstream id of our group /eng
    alice: str  # downstream ids: the member Keycloak has ...
    bob: str  # ... a Keycloak user who is not a member
    outsider: str  # ... and an account Keycloak does not know


async def scim(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    async with aiohttp.ClientSession() as http, http.request(method, url, json=body, headers=HEADERS) as r:
        assert r.status < 300, await r.text()
        return await r.json(content_type=None) if r.status != 204 else None


async def members(base: str, group_id: str) -> set[str]:
    group = await scim("GET", f"{base}/Groups/{group_id}")
    return {m["value"] for m in group.get("members") or []}


@pytest.fixture
async def planted(keycloak: RealKeycloak, kafka_bootstrap: str, scim_server: ScimServer) -> AsyncIterator[Planted]:
    async with aiohttp.ClientSession() as session:
        admin = MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)
        realm = f"rm-{uuid.uuid4().hex[:8]}"
        await admin.create_realm(realm)
        account = await admin.create_service_account(realm, "outbound-scim")
        ids = {
            name: await admin.create_user(
                realm, {"username": name, "email": f"{name}@example.com", "firstName": name, "lastName": "T"}
            )
            for name in ("alice", "bob")
        }
        eng = await admin.ok("POST", f"/{realm}/groups", {"name": "eng"})
        await admin.ok("PUT", f"/{realm}/users/{ids['alice']}/groups/{eng}")
        settings = keycloak_settings(kafka_bootstrap, keycloak.url, account)
        async with running_service(settings) as service:
            base = scim_server.base_url(realm)
            api = Api(service.api_port or 0)
            status, body = await api.call(
                "PUT", f"/tenants/{realm}", {"base_url": base, "token": SCIM_TOKEN, "backfill": True, "groups": True}
            )
            assert status == 201, body
            state: dict[str, Any] = {}

            async def backfilled() -> bool:
                users = by_external_id(await downstream_users(base, SCIM_TOKEN))
                found = await scim("GET", f"{base}/Groups?count=10")
                groups = [g for g in found.get("Resources") or [] if g.get("externalId") == eng]
                if len(users) < 2 or not groups:
                    return False
                state.update(users=users, group=groups[0]["id"])
                return await members(base, groups[0]["id"]) == {users[ids["alice"]][0]["id"]}

            await wait_until(backfilled, what="alice, bob and /eng with alice downstream")
            outsider = await scim(
                "POST",
                f"{base}/Users",
                {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "outsider", "externalId": "x"},
            )
            users = state["users"]
            planted = Planted(
                api,
                realm,
                base,
                state["group"],
                users[ids["alice"]][0]["id"],
                users[ids["bob"]][0]["id"],
                outsider["id"],
            )
            await scim(
                "PATCH",
                f"{base}/Groups/{planted.group}",
                {
                    "schemas": [PATCH],
                    "Operations": [
                        {"op": "add", "path": "members", "value": [{"value": planted.bob}, {"value": outsider["id"]}]}
                    ],
                },
            )
            assert await members(base, planted.group) == {planted.alice, planted.bob, planted.outsider}
            yield planted


async def test_extra_members_are_removed_only_when_the_reconciliation_is_asked_to(planted: Planted) -> None:
    p = planted
    extra = {p.bob, p.outsider}
    status, report = await p.api.call("POST", f"/tenants/{p.realm}/reconcile", {"dry_run": False})
    assert status == 200, report
    assert report["groups"]["members_extra"]["count"] == 2
    assert set(report["groups"]["members_extra"]["groups"][0]["members"]) == extra
    assert report["groups"]["member_removals_queued"] == 0
    status, report = await p.api.call("POST", f"/tenants/{p.realm}/reconcile", {"dry_run": True})
    assert report["groups"]["members_extra"]["count"] == 2, "a run not asked to remove them left them"
    assert await members(p.base, p.group) == {p.alice, *extra}

    status, report = await p.api.call(
        "POST", f"/tenants/{p.realm}/reconcile", {"dry_run": False, "remove_extra_members": True}
    )
    assert (status, report["groups"]["member_removals_queued"]) == (200, 2), report

    async def only_alice() -> bool:
        return await members(p.base, p.group) == {p.alice}

    await wait_until(only_alice, what="the extra members removed, alice kept")
    accounts = {u["id"] for u in await downstream_users(p.base, SCIM_TOKEN)}
    assert {p.alice, p.bob, p.outsider} <= accounts, "the accounts themselves stay"
    status, report = await p.api.call("POST", f"/tenants/{p.realm}/reconcile", {"dry_run": True})
    assert (report["groups"]["members_extra"]["count"], report["groups"]["members_missing"]["count"]) == (0, 0)
