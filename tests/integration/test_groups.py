"""Groups and memberships on the real broker, to a real scim2-server (behind tests/hostile.py's proxy where
requests are counted or /Groups is refused): events in the shapes Keycloak sends (tests/fixtures/keycloak-groups)."""

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
from tests.support import ScimServer, wait_until


async def downstream_groups(base: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {SCIM_TOKEN}"}) as http,
        http.get(f"{base}/Groups", params={"count": "1000"}) as answer,
    ):
        assert answer.status == 200, await answer.text()
        doc: dict[str, Any] = await answer.json(content_type=None)
    return list(doc.get("Resources") or [])


async def group_by_external_id(base: str, group_id: str) -> dict[str, Any] | None:
    found = [g for g in await downstream_groups(base) if g.get("externalId") == group_id]
    assert len(found) <= 1, f"two downstream groups for {group_id}"
    return found[0] if found else None


async def wait_group(base: str, group_id: str, **expected: Any) -> dict[str, Any]:
    """Until the downstream group has the expected displayName and members (downstream user ids)."""
    seen: dict[str, dict[str, Any] | None] = {}

    async def matches() -> bool:
        group = seen["group"] = await group_by_external_id(base, group_id)
        if group is None:
            return False
        members = {m["value"] for m in group.get("members") or []}
        return all(group.get(k) == v if k != "members" else members == v for k, v in expected.items())

    await wait_until(matches, timeout=30, what=f"group {group_id} with {expected}; last seen {seen}")
    group = seen["group"]
    assert group is not None
    return group


async def enable_with_groups(pipeline: Pipeline, base: str, realm: str, **options: Any) -> None:
    status, body = await pipeline.api.call(
        "PUT", f"/tenants/{realm}", {"base_url": base, "token": SCIM_TOKEN, "groups": True, **options}
    )
    assert status == 201, body
    assert body["groups"] is True


@pytest.fixture
async def counting(scim_server: ScimServer) -> AsyncIterator[HostileProxy]:
    proxy = await HostileProxy(f"http://127.0.0.1:{scim_server.port}", mode="honest").start()
    yield proxy
    await proxy.stop()


async def test_a_group_is_created_renamed_moved_and_deleted(pipeline: Pipeline, scim_server: ScimServer) -> None:
    """Create /eng and /eng/backend (displayName as full path), rename /eng (the sub-group's path follows
    with no event of its own), move backend to the top, delete both (policy delete)."""
    realm = pipeline.realm()
    base = pipeline.bases[realm] = scim_server.base_url(realm + uuid.uuid4().hex[:6])
    await enable_with_groups(pipeline, base, realm, group_display="path", delete_policy="delete")
    await pipeline.admin(
        events.create_group(realm, "g-eng", "eng"), events.create_group(realm, "g-be", "backend", parent="g-eng")
    )
    await wait_group(base, "g-eng", displayName="/eng")
    await wait_group(base, "g-be", displayName="/eng/backend")
    await pipeline.admin(events.rename_group(realm, "g-eng", "engineering"))
    await wait_group(base, "g-eng", displayName="/engineering")
    await wait_group(base, "g-be", displayName="/engineering/backend")
    await pipeline.admin(events.move_group(realm, "g-be", "backend", parent=None))
    await wait_group(base, "g-be", displayName="/backend")
    await pipeline.admin(events.move_group(realm, "g-be", "backend", parent="g-eng"))
    await wait_group(base, "g-be", displayName="/engineering/backend")
    await pipeline.admin(events.delete_group(realm, "g-eng"))  # one event: the sub-group goes with it

    async def both_gone() -> bool:
        return await downstream_groups(base) == []

    await wait_until(both_gone, what="both groups deleted downstream")


async def test_memberships_in_any_order_end_right(pipeline: Pipeline, scim_server: ScimServer) -> None:
    """A membership before its user's create and before its group's create is applied once both exist;
    a removal removes; the downstream holds exactly the members Keycloak has."""
    realm = pipeline.realm()
    base = pipeline.bases[realm] = scim_server.base_url(realm + uuid.uuid4().hex[:6])
    await enable_with_groups(pipeline, base, realm)
    await pipeline.admin(events.join_group(realm, "u-early", "g-staff", "/staff"))  # neither exists yet
    await pipeline.admin(events.create_user(realm, "u-early", "early.bird"))
    await pipeline.admin(events.create_group(realm, "g-staff", "staff"))
    await pipeline.admin(events.create_user(realm, "u-late", "late.comer"))
    await pipeline.admin(events.join_group(realm, "u-late", "g-staff", "/staff"))
    early = await pipeline.wait_user(realm, "u-early", userName="early.bird")
    late = await pipeline.wait_user(realm, "u-late", userName="late.comer")
    await wait_group(base, "g-staff", displayName="staff", members={early["id"], late["id"]})
    await pipeline.admin(events.join_group(realm, "u-early", "g-staff", "/staff", leave=True))
    await wait_group(base, "g-staff", members={late["id"]})


async def test_a_burst_of_a_thousand_members_takes_few_patches(
    pipeline: Pipeline, scim_server: ScimServer, counting: HostileProxy
) -> None:
    """1,000 existing users added to one group in a burst: at most 12 PATCH requests reach the downstream."""
    realm = pipeline.realm()
    space = f"{realm}-{uuid.uuid4().hex[:6]}"
    pipeline.bases[realm] = f"http://127.0.0.1:{scim_server.port}/{space}"
    await enable_with_groups(pipeline, counting.base_url(space), realm)
    users = [f"u-{n:04d}" for n in range(1000)]
    await pipeline.admin(
        events.create_group(realm, "g-all", "everyone"),
        *[events.create_user(realm, uid, f"login{uid}") for uid in users],
        partitions=3,
    )

    async def all_created() -> bool:
        return pipeline.counter("outbound_scim_changes_total", tenant=realm, outcome="created") >= 1000

    await wait_until(all_created, timeout=120, what="1,000 users created")
    await wait_group(pipeline.bases[realm], "g-all", displayName="everyone", members=set())
    before = counting.seen["PATCH Groups"]
    await pipeline.admin(*[events.join_group(realm, uid, "g-all", "/everyone") for uid in users], partitions=3)

    async def all_members() -> bool:
        group = await group_by_external_id(pipeline.bases[realm], "g-all")
        return group is not None and len(group.get("members") or []) == 1000

    await wait_until(all_members, timeout=120, what="1,000 members downstream")
    patches = counting.seen["PATCH Groups"] - before
    print(f"\nFIGURES group burst: 1,000 memberships in {patches} PATCH requests")
    assert patches <= 12


async def test_a_downstream_without_groups_keeps_provisioning_users(
    pipeline: Pipeline, scim_server: ScimServer
) -> None:
    """/Groups answers 404: the group is dead-lettered (groups_unsupported), users are created all the same."""
    proxy = await HostileProxy(f"http://127.0.0.1:{scim_server.port}", mode="no_groups").start()
    try:
        realm = pipeline.realm()
        space = f"{realm}-{uuid.uuid4().hex[:6]}"
        pipeline.bases[realm] = f"http://127.0.0.1:{scim_server.port}/{space}"
        await enable_with_groups(pipeline, proxy.base_url(space), realm)
        await pipeline.admin(
            events.create_group(realm, "g-x", "x"),
            events.create_user(realm, "u-1", "still.works"),
            events.join_group(realm, "u-1", "g-x", "/x"),
        )
        await pipeline.wait_user(realm, "u-1", userName="still.works")

        async def dead_lettered() -> bool:
            status, body = await pipeline.api.call("GET", f"/tenants/{realm}/dead-letters")
            return status == 200 and any(d["reason"] == "groups_unsupported" for d in body["dead_letters"])

        await wait_until(dead_lettered, what="the group dead-lettered as groups_unsupported")
        await pipeline.admin(events.create_user(realm, "u-2", "after.the.group"))
        await pipeline.wait_user(realm, "u-2", userName="after.the.group")
    finally:
        await proxy.stop()


async def test_flattening_sends_sub_group_members_to_the_ancestors(pipeline: Pipeline, scim_server: ScimServer) -> None:
    """With group_flatten, a member of /eng/backend is also a member of /eng; leaving removes it from both."""
    realm = pipeline.realm()
    base = pipeline.bases[realm] = scim_server.base_url(realm + uuid.uuid4().hex[:6])
    await enable_with_groups(pipeline, base, realm, group_flatten=True)
    await pipeline.admin(
        events.create_group(realm, "g-eng", "eng"),
        events.create_group(realm, "g-be", "backend", parent="g-eng"),
        events.create_user(realm, "u-dev", "dev.one"),
        events.join_group(realm, "u-dev", "g-be", "/eng/backend"),
    )
    dev = await pipeline.wait_user(realm, "u-dev", userName="dev.one")
    await wait_group(base, "g-be", members={dev["id"]})
    await wait_group(base, "g-eng", members={dev["id"]})
    await pipeline.admin(events.join_group(realm, "u-dev", "g-be", "/eng/backend", leave=True))
    await wait_group(base, "g-be", members=set())
    await wait_group(base, "g-eng", members=set())
