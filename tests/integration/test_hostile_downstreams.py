"""Downstreams with real-world flaws (a real scim2-server, behind tests/hostile.py where it lies):
the service writes only to accounts that are provably the user's, whatever the downstream answers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests import events
from tests.conftest import SCIM_TOKEN
from tests.hostile import HostileProxy
from tests.integration.conftest import Pipeline
from tests.support import ScimServer, downstream_users, wait_until

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


async def put_account(base: str, user_name: str, external_id: str | None, family: str = "Other") -> dict[str, Any]:
    """An account made downstream directly (by hand, or for another Keycloak user)."""
    body: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "active": True,
        "name": {"givenName": "Some", "familyName": family},
    }
    if external_id is not None:
        body["externalId"] = external_id
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {SCIM_TOKEN}"}) as http,
        http.post(f"{base}/Users", json=body, headers={"Content-Type": "application/scim+json"}) as answer,
    ):
        assert answer.status == 201, await answer.text()
        created: dict[str, Any] = await answer.json(content_type=None)
        return created


def by_id(accounts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Accounts by id, without the server's bookkeeping (meta changes on every read in some servers)."""
    return {a["id"]: {k: v for k, v in a.items() if k != "meta"} for a in accounts}


@pytest.fixture
async def filter_ignoring(scim_server: ScimServer) -> AsyncIterator[HostileProxy]:
    proxy = await HostileProxy(f"http://127.0.0.1:{scim_server.port}", mode="ignore_filters").start()
    yield proxy
    await proxy.stop()


async def test_a_downstream_that_ignores_filters_never_gets_a_write_to_the_wrong_account(
    pipeline: Pipeline, filter_ignoring: HostileProxy
) -> None:
    """Lookups answered with every account: a new hire is created (no existing account renamed), an
    unlinked account of ours is found and updated, a delete removes only ours; the bystanders are
    untouched and the tenant shows that lookups now list accounts (`lookups: scan`, the gauge at 1)."""
    realm = pipeline.realm()
    space = f"{realm}-{uuid.uuid4().hex[:6]}"
    upstream = filter_ignoring.upstream_url(space)
    for n in range(5):
        await put_account(upstream, f"bystander{n}", f"kc-other-{n}")
    ours = await put_account(upstream, "already.there", "kc-already-there", family="Before")
    bystanders = {k: v for k, v in by_id(await downstream_users(upstream, SCIM_TOKEN)).items() if k != ours["id"]}
    status, body = await pipeline.api.enable(realm, filter_ignoring.base_url(space), SCIM_TOKEN, "delete")
    assert status == 201, body
    pipeline.bases[realm] = upstream  # read back behind the proxy, honestly

    hire = str(uuid.uuid4())
    await pipeline.admin(events.create_user(realm, hire, "new.hire", "New", "Hire"))
    await pipeline.admin(events.update_user(realm, "kc-already-there", lastName="After"))
    await pipeline.wait_user(realm, hire, userName="new.hire", name__familyName="Hire")
    await pipeline.wait_user(realm, "kc-already-there", userName="already.there", name__familyName="After")
    await pipeline.admin(events.delete_user(realm, hire))

    async def hire_deleted() -> bool:
        return await pipeline.user_by_external_id(realm, hire) is None

    await wait_until(hire_deleted, what="the new hire deleted downstream")
    after = by_id(await downstream_users(upstream, SCIM_TOKEN))
    assert {k: v for k, v in after.items() if k in bystanders} == bystanders
    assert set(after) == {*bystanders, ours["id"]}
    assert filter_ignoring.misbehaved["ignore_filters"] >= 1
    status, tenant = await pipeline.api.call("GET", f"/tenants/{realm}")
    assert (status, tenant["lookups"]) == (200, "scan")
    assert pipeline.counter("outbound_scim_lookup_scan", tenant=realm) == 1


async def test_a_look_alike_account_of_another_owner_is_a_conflict_then_linked_by_the_operator(
    pipeline: Pipeline,
) -> None:
    """A leaver's account holds the new hire's userName (another externalId): the create is never
    written to it but dead-lettered as a conflict naming the account and its owner; once the operator
    links the user to that account and replays, the account becomes the new hire's."""
    realm = pipeline.realm()
    base = await pipeline.enable(realm, delete_policy="ignore")
    leaver = await put_account(base, "jdoe", "kc-leaver", family="Leaver")
    hire = str(uuid.uuid4())
    await pipeline.admin(events.create_user(realm, hire, "JDoe", "Jane", "Hire"))

    letters: list[dict[str, Any]] = []

    async def conflicted() -> bool:
        status, body = await pipeline.api.call("GET", f"/tenants/{realm}/dead-letters")
        assert status == 200, body
        letters[:] = [d for d in body["dead_letters"] if d.get("user_id") == hire]
        return bool(letters)

    await wait_until(conflicted, what="a conflict dead letter")
    assert [(d["reason"], d["downstream_id"], d["owner"]) for d in letters] == [("conflict", leaver["id"], "kc-leaver")]
    assert pipeline.counter("outbound_scim_conflicts_total", tenant=realm) == 1
    assert by_id(await pipeline.users(realm)) == by_id([leaver]), "the leaver's account was written"

    status, body = await pipeline.api.call(
        "POST", f"/tenants/{realm}/users/{hire}/link", {"downstream_id": leaver["id"]}
    )
    assert status == 202, body
    status, body = await pipeline.api.call("POST", f"/tenants/{realm}/dead-letters/replay")
    assert (status, body["replayed"]) == (200, 1)
    await pipeline.wait_user(realm, hire, id=leaver["id"], userName="JDoe", name__familyName="Hire")
    assert len(await pipeline.users(realm)) == 1


async def test_a_conflict_resolved_downstream_is_created_on_replay(pipeline: Pipeline) -> None:
    """The other resolution: the operator removes the look-alike downstream, replays, and the user is created."""
    realm = pipeline.realm()
    base = await pipeline.enable(realm)
    leaver = await put_account(base, "sam", "kc-leaver")
    hire = str(uuid.uuid4())
    await pipeline.admin(events.create_user(realm, hire, "sam", "Sam", "Hire"))

    async def conflicted() -> bool:
        return pipeline.counter("outbound_scim_conflicts_total", tenant=realm) == 1

    await wait_until(conflicted, what="a conflict")
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {SCIM_TOKEN}"}) as http,
        http.delete(f"{base}/Users/{leaver['id']}") as answer,
    ):
        assert answer.status == 204
    status, body = await pipeline.api.call("POST", f"/tenants/{realm}/dead-letters/replay")
    assert (status, body["replayed"]) == (200, 1)
    created = await pipeline.wait_user(realm, hire, userName="sam", name__familyName="Hire")
    assert created["id"] != leaver["id"]


async def test_a_post_answered_with_another_owners_account_never_links_it(
    pipeline: Pipeline, scim_server: ScimServer
) -> None:
    """A downstream that answers POST /Users with the account already holding the userName (another
    owner's, unchanged) instead of 409: the create is dead-lettered as a conflict naming that account,
    and neither it nor the user's next change writes to that account (with no link, the update waits for
    the create's replay)."""
    proxy = await HostileProxy(f"http://127.0.0.1:{scim_server.port}", mode="answer_posts_with_holder").start()
    try:
        realm = pipeline.realm()
        space = f"{realm}-{uuid.uuid4().hex[:6]}"
        upstream = proxy.upstream_url(space)
        leaver = await put_account(upstream, "jdoe", "kc-leaver", family="Leaver")
        status, body = await pipeline.api.enable(realm, proxy.base_url(space), SCIM_TOKEN, "ignore")
        assert status == 201, body
        pipeline.bases[realm] = upstream
        hire = str(uuid.uuid4())
        await pipeline.admin(events.create_user(realm, hire, "jdoe", "Jane", "Hire"))
        await pipeline.admin(events.update_user(realm, hire, lastName="Later"))

        letters: list[dict[str, Any]] = []

        async def conflicted_then_updated() -> bool:
            status, body = await pipeline.api.call("GET", f"/tenants/{realm}/dead-letters")
            assert status == 200, body
            letters[:] = [d for d in body["dead_letters"] if d.get("user_id") == hire]
            return (
                bool(letters) and pipeline.counter("outbound_scim_changes_total", tenant=realm, outcome="skipped") > 0
            )

        await wait_until(conflicted_then_updated, what="the create dead-lettered, then the update applied")
        assert [(d["reason"], d["downstream_id"], d["owner"]) for d in letters] == [
            ("conflict", leaver["id"], "kc-leaver")
        ]
        assert proxy.misbehaved["answer_posts_with_holder"] == 1
        assert proxy.seen["PATCH Users"] == proxy.seen["PUT Users"] == proxy.seen["DELETE Users"] == 0
        assert by_id(await downstream_users(upstream, SCIM_TOKEN)) == by_id([leaver]), (
            "the leaver's account was written"
        )
    finally:
        await proxy.stop()
