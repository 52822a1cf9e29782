"""What the real scim2-server does with the group requests we send (RFC 7643 §4.2, RFC 7644 §3.5.2),
through ScimClient; then the group executor against it. No broker: just the client and the server.

What the executor relies on, and what it must avoid:
- an add of a member the group holds is accepted and the member held once; a removal of a member it
  does not hold is accepted: a plan run again after a failure is harmless;
- one add naming an id twice holds it twice: members_add names each id once;
- an empty PATCH is a 400: no PATCH is sent without an operation;
- member values are not checked against users, and a deleted user stays among the members;
- `GET /Groups/{id}?attributes=members` answers the members (what a recheck after a crash reads);
- displayName is not unique unless a schema says so (then a 409, ignoring case); filters compare
  externalId exactly and displayName ignoring case.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from scim2_server.utils import load_json_resource

from service.domain import scim
from service.domain.groups import (
    GroupAction,
    GroupChange,
    GroupOptions,
    GroupPlan,
    GroupState,
    confirmed_removals,
    plan_group,
)
from service.errors import ScimConflict, ScimNotFound, ScimOwnershipConflict, ScimRejected
from service.metrics import Metrics
from service.scim.client import Downstream, ScimClient
from service.scim.egress import EgressPolicy
from service.scim.group_executor import GroupResult, execute_group
from tests.conftest import SCIM_TOKEN
from tests.support import ScimServer, start_scim_server

LOCAL = EgressPolicy(frozenset({"127.0.0.1"}), allow_private_networks=True)
GID = "9b1f2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"  # a Keycloak group id


@pytest.fixture(scope="module")
def unique_names_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScimServer]:
    """scim2-server serving RFC 7643's schemas with Group.displayName declared unique (as AWS IAM
    Identity Center and others enforce it)."""
    schemas: list[dict[str, Any]] = load_json_resource("default-schemas.json")
    for schema in schemas:
        if schema["id"] == scim.GROUP_SCHEMA:
            for attribute in schema["attributes"]:
                if attribute["name"] == "displayName":
                    attribute["uniqueness"] = "server"
    path = tmp_path_factory.mktemp("scim2") / "schemas.json"
    path.write_text(json.dumps(schemas))
    server = start_scim_server(SCIM_TOKEN, schema=path)
    yield server
    server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def scim_client(http: aiohttp.ClientSession) -> ScimClient:
    return ScimClient.over_http(http, Metrics(CollectorRegistry()), timeout_seconds=10, egress=LOCAL)


@pytest.fixture
def client(http: aiohttp.ClientSession) -> ScimClient:
    return scim_client(http)


@pytest.fixture
def ds(scim_server: ScimServer) -> Downstream:
    """A fresh tenant of the session's scim2-server (a base path of its own)."""
    return Downstream("groups", scim_server.base_url(), SCIM_TOKEN)


async def users(client: ScimClient, ds: Downstream, n: int) -> list[str]:
    created = [await client.create_user(ds, scim.user_resource(f"k-{i}", {"userName": f"user{i}"})) for i in range(n)]
    return [u["id"] for u in created]


async def group(client: ScimClient, ds: Downstream, downstream_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = await client.send_once(ds, "GET", scim.group_path(downstream_id))
    return doc


async def members(client: ScimClient, ds: Downstream, downstream_id: str) -> list[str]:
    return [m["value"] for m in (await group(client, ds, downstream_id)).get("members", [])]


async def create(client: ScimClient, ds: Downstream, name: str = "Eng", external_id: str = GID) -> str:
    created = await client.create_group(ds, scim.group_resource(external_id, name))
    return str(created["id"])


async def test_a_group_is_created_with_its_display_name_and_external_id(client: ScimClient, ds: Downstream) -> None:
    """POST /Groups answers the group with an id of its own, our displayName and externalId, no members."""
    created = await client.create_group(ds, scim.group_resource(GID, "Eng"))
    assert scim.valid_resource_id(created["id"]) == created["id"]
    assert (created["displayName"], created["externalId"]) == ("Eng", GID)
    assert created["schemas"] == [scim.GROUP_SCHEMA]
    assert "members" not in created


async def test_an_add_of_a_held_member_is_accepted_and_the_member_held_once(client: ScimClient, ds: Downstream) -> None:
    """PATCH add of users' ids; the same add again answers success and changes nothing."""
    u1, u2 = await users(client, ds, 2)
    gid = await create(client, ds)
    await client.patch_group(ds, gid, [scim.members_add([u1, u2])])
    await client.patch_group(ds, gid, [scim.members_add([u1])])
    assert await members(client, ds, gid) == [u1, u2]


async def test_one_add_naming_an_id_twice_holds_it_twice(client: ScimClient, ds: Downstream) -> None:
    """Within one operation a repeated id is stored twice (members_add names each id once because of
    this); one value-filter removal then removes both."""
    [u1] = await users(client, ds, 1)
    gid = await create(client, ds)
    await client.patch_group(ds, gid, [{"op": "add", "path": "members", "value": [{"value": u1}, {"value": u1}]}])
    assert await members(client, ds, gid) == [u1, u1]
    await client.patch_group(ds, gid, scim.member_removals([u1]))
    assert await members(client, ds, gid) == []


async def test_a_member_is_removed_by_value_filter_and_a_non_member_removal_is_accepted(
    client: ScimClient, ds: Downstream
) -> None:
    """`members[value eq "<id>"]` removes that member; the same removal again, or of an id never
    held, answers success."""
    u1, u2 = await users(client, ds, 2)
    gid = await create(client, ds)
    await client.patch_group(ds, gid, [scim.members_add([u1, u2])])
    await client.patch_group(ds, gid, scim.member_removals([u1]))
    await client.patch_group(ds, gid, scim.member_removals([u1, "never-a-member"]))
    assert await members(client, ds, gid) == [u2]


async def test_adds_and_removals_share_one_request(client: ScimClient, ds: Downstream) -> None:
    """One PATCH holding an add operation and remove operations applies them all."""
    u1, u2, u3 = await users(client, ds, 3)
    gid = await create(client, ds)
    await client.patch_group(ds, gid, [scim.members_add([u1, u2])])
    await client.patch_group(ds, gid, [scim.members_add([u3]), *scim.member_removals([u1, u2])])
    assert await members(client, ds, gid) == [u3]


async def test_member_values_are_not_checked_and_removals_match_them_exactly(
    client: ScimClient, ds: Downstream
) -> None:
    """Any string is accepted as a member (no check against users); a removal filter with a quote and a
    backslash, escaped as eq_filter does, removes exactly that value, and values are case-exact."""
    odd = 'a"b\\c'
    gid = await create(client, ds)
    await client.patch_group(ds, gid, [scim.members_add([odd, "ABC", "abc"])])
    await client.patch_group(ds, gid, scim.member_removals([odd, "abc"]))
    assert await members(client, ds, gid) == ["ABC"]


async def test_a_deleted_user_stays_among_the_members(client: ScimClient, ds: Downstream) -> None:
    """Deleting a user does not remove it from the groups that hold it: only a removal does."""
    u1, u2 = await users(client, ds, 2)
    gid = await create(client, ds)
    await client.patch_group(ds, gid, [scim.members_add([u1, u2])])
    await client.delete_user(ds, u1)
    assert await members(client, ds, gid) == [u1, u2]


async def test_a_rename_replaces_the_display_name(client: ScimClient, ds: Downstream) -> None:
    """PATCH replace of displayName; the externalId stays."""
    gid = await create(client, ds)
    await client.patch_group(ds, gid, [scim.display_name_replace("Engineering")])
    held = await group(client, ds, gid)
    assert (held["displayName"], held["externalId"]) == ("Engineering", GID)


async def test_an_empty_patch_is_refused(client: ScimClient, ds: Downstream) -> None:
    """A PatchOp without operations is a 400 (invalidValue)."""
    gid = await create(client, ds)
    with pytest.raises(ScimRejected) as raised:
        await client.patch_group(ds, gid, [])
    assert (raised.value.status, raised.value.scim_type) == (400, "invalidValue")


async def test_two_groups_may_share_a_display_name_by_default(client: ScimClient, ds: Downstream) -> None:
    """RFC 7643 declares Group.displayName uniqueness none: no 409, even for the same name or an
    externalId already held; a lookup of that name then finds no single group."""
    first = await create(client, ds, "Eng", GID)
    second = await create(client, ds, "ENG", "another-group")
    third = await create(client, ds, "Eng", GID)
    assert len({first, second, third}) == 3
    assert await client.find_group(ds, "displayName", "eng") is None
    assert await client.find_group(ds, "externalId", GID) is None


async def test_a_schema_declaring_display_name_unique_gives_a_409_ignoring_case(
    http: aiohttp.ClientSession, unique_names_server: ScimServer
) -> None:
    """With displayName declared unique, a POST of a name held by another group, in any case, is a 409
    (uniqueness), and so is a rename to it."""
    client, ds = scim_client(http), Downstream("groups", unique_names_server.base_url(), SCIM_TOKEN)
    await create(client, ds, "Eng", GID)
    with pytest.raises(ScimConflict) as raised:
        await create(client, ds, "ENG", "another-group")
    assert (raised.value.status, raised.value.scim_type) == (409, "uniqueness")
    sales = await create(client, ds, "Sales", "another-group")
    with pytest.raises(ScimConflict):
        await client.patch_group(ds, sales, [scim.display_name_replace("eng")])


async def test_filters_compare_external_id_exactly_and_display_name_ignoring_case(
    client: ScimClient, ds: Downstream
) -> None:
    """The server's own filter answers, and find_group's verified answers, agree with RFC 7643."""
    gid = await create(client, ds, "Eng", GID)
    await create(client, ds, "Sales", "another-group")

    async def filtered(expression: str) -> list[str]:
        doc = await client.send_once(ds, "GET", "Groups", params={"filter": expression})
        return [r["id"] for r in doc["Resources"]]

    assert await filtered(scim.eq_filter("externalId", GID)) == [gid]
    assert await filtered(scim.eq_filter("externalId", GID.upper())) == []
    assert await filtered(scim.eq_filter("displayName", "eng")) == [gid]
    assert (await client.find_group(ds, "externalId", GID) or {}).get("id") == gid
    assert (await client.find_group(ds, "displayName", "ENG") or {}).get("id") == gid
    assert await client.find_group(ds, "externalId", GID.upper()) is None
    assert client.lookup_mode(ds.tenant) == "filter"


async def test_groups_are_listed_with_or_without_their_members(client: ScimClient, ds: Downstream) -> None:
    """list_groups pages; `members=False` (excludedAttributes=members) leaves the member lists out,
    and `attributes=id,displayName,externalId` is honoured too."""
    u1, u2 = await users(client, ds, 2)
    ids = [await create(client, ds, f"g{i}", f"k-g{i}") for i in range(3)]
    for gid in ids:
        await client.patch_group(ds, gid, [scim.members_add([u1, u2])])
    full = [g async for g in client.list_groups(ds, page_size=2)]
    assert sorted(g["id"] for g in full) == sorted(ids)
    assert all([m["value"] for m in g["members"]] == [u1, u2] for g in full)
    bare = [g async for g in client.list_groups(ds, page_size=2, members=False)]
    assert sorted(g["id"] for g in bare) == sorted(ids)
    assert all("members" not in g and g["displayName"] and g["externalId"] for g in bare)
    doc = await client.send_once(ds, "GET", "Groups", params={"attributes": "id,displayName,externalId"})
    assert all(set(g) <= {"schemas", "id", "displayName", "externalId"} for g in doc["Resources"])


async def test_a_deleted_group_answers_404(client: ScimClient, ds: Downstream) -> None:
    """DELETE removes the group; a DELETE or PATCH of it afterwards is a 404."""
    gid = await create(client, ds)
    await client.delete_group(ds, gid)
    with pytest.raises(ScimNotFound):
        await client.delete_group(ds, gid)
    with pytest.raises(ScimNotFound):
        await client.patch_group(ds, gid, [scim.display_name_replace("x")])
    assert [g async for g in client.list_groups(ds)] == []


async def test_a_groups_members_are_read_with_attributes_members(client: ScimClient, ds: Downstream) -> None:
    """read_group_members answers the group's id and its members as values, as confirmed_removals reads them."""
    u1, u2 = await users(client, ds, 2)
    gid = await create(client, ds)
    await client.patch_group(ds, gid, [scim.members_add([u1, u2])])
    answer = await client.read_group_members(ds, gid)
    assert answer["id"] == gid
    assert sorted(m["value"] for m in answer["members"]) == sorted([u1, u2])
    assert confirmed_removals((u2, "never-a-member"), answer, {u1}) == (u2,)


# -- the executor against the real server -------------------------------------------------------------


async def test_the_executor_creates_renames_changes_members_and_deletes(client: ScimClient, ds: Downstream) -> None:
    """250 members at 100 per request: a POST and 3 PATCH requests; a plan run twice holds each member
    once; a rename with member changes; a delete."""
    accounts = await users(client, ds, 260)
    create_plan = GroupPlan(GroupAction.SYNC, GroupState(), "Eng", add=tuple(sorted(accounts[:250])))
    created = await execute_group(create_plan, "acme", GID, ds, client, 100)
    assert (created.result, created.patches) == (GroupResult.CREATED, 3)
    gid = created.state.downstream_id
    assert gid is not None
    assert sorted(await members(client, ds, gid)) == sorted(accounts[:250])

    change = GroupPlan(
        GroupAction.SYNC,
        created.state,
        "Engineering",
        rename=True,
        add=tuple(accounts[250:]),
        remove=tuple(accounts[:50]),
    )
    updated = await execute_group(change, "acme", GID, ds, client, 100)
    again = await execute_group(change, "acme", GID, ds, client, 100)  # as a retry after a failure would
    assert updated.result is again.result is GroupResult.UPDATED
    assert sorted(await members(client, ds, gid)) == sorted(accounts[50:])
    assert updated.state.written_members == frozenset(accounts[50:])
    assert (await group(client, ds, gid))["displayName"] == "Engineering"

    deleted = await execute_group(GroupPlan(GroupAction.DELETE, updated.state), "acme", GID, ds, client, 100)
    assert deleted.result is GroupResult.DELETED
    assert [g async for g in client.list_groups(ds)] == []


async def test_the_executor_adopts_a_nameless_owners_group_and_never_writes_another_owners(
    http: aiohttp.ClientSession, unique_names_server: ScimServer
) -> None:
    """On a server with unique names: POST 409, the group of our name without externalId is claimed;
    a group of our name owned by another externalId is a ScimOwnershipConflict and stays as it was."""
    client, ds = scim_client(http), Downstream("groups", unique_names_server.base_url(), SCIM_TOKEN)
    made_by_hand = (await client.create_group(ds, {"schemas": [scim.GROUP_SCHEMA], "displayName": "eng"}))["id"]
    plan = GroupPlan(GroupAction.SYNC, GroupState(), "Eng", add=("u-1",))
    adopted = await execute_group(plan, "acme", GID, ds, client, 100)
    assert (adopted.result, adopted.state.downstream_id) == (GroupResult.LINKED, made_by_hand)
    held = await group(client, ds, made_by_hand)
    assert (held["externalId"], held["displayName"], held["members"]) == (GID, "Eng", [{"value": "u-1"}])

    theirs = await create(client, ds, "Sales", "another-group")
    before = await group(client, ds, theirs)
    other_plan = GroupPlan(GroupAction.SYNC, GroupState(), "SALES", add=("u-1",))
    with pytest.raises(ScimOwnershipConflict) as raised:
        await execute_group(other_plan, "acme", "k-sales", ds, client, 100)
    assert (raised.value.downstream_id, raised.value.owner) == (theirs, "another-group")
    assert await group(client, ds, theirs) == before


async def test_the_executor_removes_a_member_a_crashed_replica_added_and_a_replay_cancelled(
    client: ScimClient, ds: Downstream
) -> None:
    """A replica added u2 and died before saving; the successor's batch holds u2's join and leave: from
    the restored state they cancel out, and the recheck reads the members and removes u2."""
    u1, u2 = await users(client, ds, 2)
    joined = GroupChange("acme", GID, "member", 5, user_id="k-1", member_id=u1, seq=1)
    create_change = GroupChange("acme", GID, "upsert", 1, "GROUP_CREATE", "e-1", name="Eng", parent_known=True)
    saved = await execute_group(
        plan_group(GroupState(), [create_change, joined], GroupOptions(), 9), "acme", GID, ds, client, 100
    )
    gid = saved.state.downstream_id
    assert gid is not None
    await client.patch_group(ds, gid, [scim.members_add([u2])])  # the dead replica's write
    batch = [
        GroupChange("acme", GID, "member", 6, user_id="k-2", member_id=u2, seq=1),
        GroupChange("acme", GID, "member", 7, user_id="k-2", member_id=None, seq=2),
    ]
    replayed = await execute_group(plan_group(saved.state, batch, GroupOptions(), 9), "acme", GID, ds, client, 100)
    assert await members(client, ds, gid) == [u1]
    assert replayed.state.written_members == frozenset({u1})
