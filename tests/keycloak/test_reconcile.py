"""Reconciliation against a real Keycloak: drift planted downstream is reported by a dry run (which
changes nothing) and fixed by a real run; an extra downstream user is reported, never touched; a user
whose event was lost (never published) is repaired."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from service.app import Service
from tests.conftest import SCIM_TOKEN
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, keycloak_settings
from tests.support import (
    Api,
    ScimServer,
    by_external_id,
    create_source_topics,
    downstream_users,
    running_service,
    wait_until,
)

HEADERS = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}


@pytest.fixture
async def setup(
    keycloak: RealKeycloak, kafka_bootstrap: str, scim_server: ScimServer
) -> AsyncIterator[tuple[Service, MasterAdmin, str, dict[str, str], str]]:
    async with aiohttp.ClientSession() as session:
        admin = MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)
        realm = f"rc-{uuid.uuid4().hex[:8]}"
        await admin.create_realm(realm)
        account = await admin.create_service_account(realm, "outbound-scim")
        ids = {}
        for name, enabled in (("alice", True), ("bob", False), ("carol", True), ("dave", True)):
            ids[name] = await admin.create_user(
                realm,
                {
                    "username": name,
                    "firstName": name.title(),
                    "lastName": "Test",
                    "email": f"{name}@example.com",
                    "enabled": enabled,
                },
            )
        settings = keycloak_settings(kafka_bootstrap, keycloak.url, account, reconcile_check_seconds=0.5)
        await create_source_topics(settings)
        async with running_service(settings) as service:
            base = scim_server.base_url()
            status, body = await Api(service.api_port or 0).call(
                "PUT", f"/tenants/{realm}", {"base_url": base, "token": SCIM_TOKEN, "backfill": True}
            )
            assert status == 201, body

            async def backfilled() -> bool:
                return len(await downstream_users(base, SCIM_TOKEN)) == 4

            await wait_until(backfilled, what="4 users backfilled")
            yield service, admin, realm, ids, base


async def scim(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    async with aiohttp.ClientSession() as http, http.request(method, url, json=body, headers=HEADERS) as r:
        assert r.status < 300, await r.text()
        return await r.json(content_type=None) if r.status != 204 else None


async def test_reconciliation_reports_and_fixes_drift(
    setup: tuple[Service, MasterAdmin, str, dict[str, str], str],
) -> None:
    """Changed email, wrongly active user, missing user, extra user, lost event: dry run reports all
    and changes nothing; a real run fixes all but the extra user, which stays untouched."""
    service, admin, realm, ids, base = setup
    api = Api(service.api_port or 0)
    users = {u["externalId"]: u for u in await downstream_users(base, SCIM_TOKEN)}
    patch = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": []}
    await scim(
        "PATCH",
        f"{base}/Users/{users[ids['alice']]['id']}",
        {
            **patch,
            "Operations": [
                {
                    "op": "replace",
                    "path": "emails",
                    "value": [{"value": "hacked@example.com", "type": "work", "primary": True}],
                }
            ],
        },
    )
    await scim(
        "PATCH",
        f"{base}/Users/{users[ids['bob']]['id']}",
        {**patch, "Operations": [{"op": "replace", "path": "active", "value": True}]},
    )
    await scim("DELETE", f"{base}/Users/{users[ids['carol']]['id']}")
    extra = await scim(
        "POST",
        f"{base}/Users",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "outsider",
            "externalId": "not-in-keycloak",
        },
    )
    lost = await admin.create_user(realm, {"username": "erin", "email": "erin@example.com", "enabled": True})

    status, report = await api.call("POST", f"/tenants/{realm}/reconcile", {"dry_run": True})
    assert status == 200, report
    assert sorted(report["missing"]["ids"]) == sorted([ids["carol"], lost])
    assert {u["id"]: u["attributes"] for u in report["stale"]["users"]} == {
        ids["alice"]: ["email"],
        ids["bob"]: ["active"],
    }
    assert [u["externalId"] for u in report["extra"]["users"]] == ["not-in-keycloak"]
    assert report["fixes_queued"] == 0
    after_dry_run = by_external_id(await downstream_users(base, SCIM_TOKEN))
    assert after_dry_run[ids["alice"]][0]["emails"][0]["value"] == "hacked@example.com"
    assert ids["carol"] not in after_dry_run

    status, report = await api.call("POST", f"/tenants/{realm}/reconcile", {"dry_run": False})
    assert (status, report["fixes_queued"]) == (200, 4)

    async def fixed() -> bool:
        now = by_external_id(await downstream_users(base, SCIM_TOKEN))
        return (
            now.get(ids["alice"], [{}])[0].get("emails", [{}])[0].get("value") == "alice@example.com"
            and now.get(ids["bob"], [{}])[0].get("active") is False
            and ids["carol"] in now
            and lost in now
        )

    await wait_until(fixed, what="drift fixed")
    final = by_external_id(await downstream_users(base, SCIM_TOKEN))
    assert final["not-in-keycloak"] == [extra], "the extra downstream user is never touched"
    assert all(len(v) == 1 for v in final.values())
    status, report = await api.call("POST", f"/tenants/{realm}/reconcile", {"dry_run": True})
    assert (report["missing"]["count"], report["stale"]["count"], report["extra"]["count"]) == (0, 0, 1)


async def test_provision_one_user_now_returns_the_step_trace(
    setup: tuple[Service, MasterAdmin, str, dict[str, str], str],
) -> None:
    """On-demand sync of a user changed in Keycloak without an event: the downstream matches at once,
    and the answer shows the Keycloak read, the plan, the lookup and the PATCH with their answers."""
    service, admin, realm, ids, base = setup
    await admin.ok("PUT", f"/{realm}/users/{ids['dave']}", {"firstName": "David", "enabled": False})
    status, trace = await Api(service.api_port or 0).call("POST", f"/tenants/{realm}/users/{ids['dave']}/sync")
    assert status == 200, trace
    assert trace["result"] == "updated"
    steps = trace["steps"]
    assert steps[0] == {
        "step": "read_keycloak",
        "found": True,
        "attributes": {
            "userName": "dave",
            "givenName": "David",
            "familyName": "Test",
            "email": "dave@example.com",
            "active": False,
        },
    }
    assert steps[1]["step"] == "plan"
    assert steps[1]["action"] == "sync"
    assert [(s["method"], s["outcome"]) for s in steps[2:]] == [("GET", "ok"), ("PATCH", "ok")]
    assert steps[2]["query"]["filter"] == f'externalId eq "{ids["dave"]}"'
    assert steps[2]["answer"]["totalResults"] == 1
    user = by_external_id(await downstream_users(base, SCIM_TOKEN))[ids["dave"]][0]
    assert (user["name"]["givenName"], user["active"]) == ("David", False)

    status, trace = await Api(service.api_port or 0).call("POST", f"/tenants/{realm}/users/no-such-user/sync")
    assert (status, trace["result"], trace["steps"][0]) == (200, "skipped", {"step": "read_keycloak", "found": False})


async def test_periodic_reconciliation_repairs_drift_by_itself(
    setup: tuple[Service, MasterAdmin, str, dict[str, str], str],
) -> None:
    """A tenant with reconcile_interval_minutes gets its drift fixed without anyone asking."""
    service, _, realm, ids, base = setup
    api = Api(service.api_port or 0)
    status, body = await api.call(
        "PUT", f"/tenants/{realm}", {"base_url": base, "token": SCIM_TOKEN, "reconcile_interval_minutes": 0.05}
    )
    assert (status, body["reconcile_interval_minutes"]) == (200, 0.05)
    users = {u["externalId"]: u for u in await downstream_users(base, SCIM_TOKEN)}
    await scim("DELETE", f"{base}/Users/{users[ids['alice']]['id']}")

    async def recreated() -> bool:
        return ids["alice"] in by_external_id(await downstream_users(base, SCIM_TOKEN))

    await wait_until(recreated, timeout=60, what="the periodic reconciliation re-created alice")
    assert (
        service.metrics.registry.get_sample_value(
            "outbound_scim_drift_users", {"tenant": realm, "downstream": "default", "kind": "missing"}
        )
        is not None
    )


async def test_a_user_with_a_second_account_carrying_its_id_is_reported_with_both(
    setup: tuple[Service, MasterAdmin, str, dict[str, str], str],
) -> None:
    """A create that landed after its client gave up, and a rename since, left dave a second account
    carrying his id: a dry run reports both accounts under dave (not as extra); a real run touches
    neither (only dave's state knows which one is linked) and the next dry run still reports them."""
    service, _, realm, ids, base = setup
    api = Api(service.api_port or 0)
    linked = by_external_id(await downstream_users(base, SCIM_TOKEN))[ids["dave"]][0]
    late = await scim(
        "POST",
        f"{base}/Users",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "dave-before-the-rename",
            "externalId": ids["dave"],
        },
    )
    status, report = await api.call("POST", f"/tenants/{realm}/reconcile", {"dry_run": True})
    assert status == 200, report
    assert report["duplicates"]["count"] == 1
    [dave] = report["duplicates"]["users"]
    assert dave["id"] == ids["dave"]
    assert sorted(a["id"] for a in dave["accounts"]) == sorted([linked["id"], late["id"]])
    assert ids["dave"] not in [u["externalId"] for u in report["extra"]["users"]]

    status, report = await api.call("POST", f"/tenants/{realm}/reconcile", {"dry_run": False})
    assert status == 200 and report["duplicates"]["count"] == 1

    async def settled() -> bool:
        status, again = await api.call("POST", f"/tenants/{realm}/reconcile", {"dry_run": True})
        return status == 200 and again["stale"]["count"] == 0

    await wait_until(settled, what="the real run's fixes applied")
    accounts = by_external_id(await downstream_users(base, SCIM_TOKEN))[ids["dave"]]
    assert sorted(a["id"] for a in accounts) == sorted([linked["id"], late["id"]]), "neither account touched"
    status, report = await api.call("POST", f"/tenants/{realm}/reconcile", {"dry_run": True})
    assert report["duplicates"]["count"] == 1
