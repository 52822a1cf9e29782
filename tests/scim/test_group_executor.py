"""execute_group(): a GroupPlan becomes POST / PATCH / DELETE calls on the in-memory downstream, which
holds groups the way scim2-server does (tests/scim/fake_downstream.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from service.domain import scim
from service.domain.groups import GroupAction, GroupChange, GroupOptions, GroupPlan, GroupState, plan_group
from service.errors import ScimConflict, ScimOwnershipConflict, ScimRejected, ScimTransient
from service.scim.client import Downstream
from service.scim.group_executor import GroupOutcome, GroupResult, GroupScimPort, execute_group
from tests.scim.fake_downstream import FakeDownstream

REALM = "acme"
GID = "9b1f2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"  # the Keycloak group id: externalId downstream
DS = Downstream(REALM, "http://scim.invalid/v2", "token-1")


class Recording(FakeDownstream):
    """The fake downstream, with every call of the group port recorded in order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[Any, ...]] = []

    async def find_group(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
        self.calls.append(("find", attribute, value))
        return await super().find_group(ds, attribute, value)

    async def create_group(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", body))
        return await super().create_group(ds, body)

    async def patch_group(self, ds: Downstream, group_id: str, operations: list[dict[str, Any]]) -> None:
        self.calls.append(("patch", group_id, operations))
        await super().patch_group(ds, group_id, operations)

    async def delete_group(self, ds: Downstream, group_id: str) -> None:
        self.calls.append(("delete", group_id))
        await super().delete_group(ds, group_id)

    def patches(self) -> list[list[dict[str, Any]]]:
        return [call[2] for call in self.calls if call[0] == "patch"]


class FailingPatch(Recording):
    """Answers the `fail_at`-th PATCH (counting from 1) with a 503, once."""

    def __init__(self, fail_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_at = fail_at

    async def patch_group(self, ds: Downstream, group_id: str, operations: list[dict[str, Any]]) -> None:
        if len(self.patches()) + 1 == self.fail_at:
            self.fail_at = 0
            self.calls.append(("patch-failed", group_id, operations))
            raise ScimTransient(503, "PATCH", f"Groups/{group_id}")
        await super().patch_group(ds, group_id, operations)


def sync(
    state: GroupState | None = None,
    name: str = "Eng",
    *,
    rename: bool = False,
    add: tuple[str, ...] = (),
    remove: tuple[str, ...] = (),
    recheck: tuple[str, ...] = (),
) -> GroupPlan:
    return GroupPlan(GroupAction.SYNC, state or GroupState(), name, rename, add, remove, recheck=recheck)


def linked(downstream_id: str, name: str = "Eng", members: frozenset[str] = frozenset()) -> GroupState:
    return GroupState(downstream_id=downstream_id, written_name=name, written_members=members)


async def run(plan: GroupPlan, port: GroupScimPort, per_request: int = 100) -> GroupOutcome:
    return await execute_group(plan, REALM, GID, DS, port, per_request)


def ids(n: int) -> tuple[str, ...]:
    return tuple(f"u-{i:04d}" for i in range(n))


# -- no action --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("reason", "result"), [("unchanged", GroupResult.UNCHANGED), ("not_wanted", "skipped")])
async def test_no_action_sends_nothing_and_keeps_the_reason(reason: str, result: GroupResult) -> None:
    """NONE: no call; "unchanged" is UNCHANGED, any other reason SKIPPED with that reason."""
    plan = GroupPlan(GroupAction.NONE, linked("g-1"), reason=reason)
    down = Recording()
    assert await run(plan, down) == GroupOutcome(GroupResult(result), plan.state, reason)
    assert down.calls == []


# -- delete -----------------------------------------------------------------------------------------


async def test_delete_by_the_stored_id_forgets_what_was_written() -> None:
    """DELETE the linked group; the state keeps no id, no written name, no written members."""
    down = Recording()
    gid = down.add_group("Eng", GID, ("u-1",))
    plan = GroupPlan(GroupAction.DELETE, linked(gid, members=frozenset({"u-1"})))
    outcome = await run(plan, down)
    assert down.calls == [("delete", gid)]
    assert outcome == GroupOutcome(GroupResult.DELETED, GroupState())
    assert down.groups == {}


async def test_delete_of_an_unlinked_group_resolves_it_by_external_id() -> None:
    """A group that predates the link is found by a verified externalId lookup, then deleted."""
    down = Recording()
    gid = down.add_group("Eng", GID)
    other = down.add_group("Eng2", "another-group")
    outcome = await run(GroupPlan(GroupAction.DELETE, GroupState()), down)
    assert down.calls == [("find", "externalId", GID), ("delete", gid)]
    assert outcome.result is GroupResult.DELETED
    assert list(down.groups) == [other]


async def test_delete_never_resolves_by_display_name() -> None:
    """A group of our name but another externalId (or none) is not ours to delete: SKIPPED."""
    down = Recording()
    down.add_group("Eng", None)
    down.add_group("Sales", "another-group")
    outcome = await run(GroupPlan(GroupAction.DELETE, GroupState(name="Eng")), down)
    assert outcome == GroupOutcome(GroupResult.SKIPPED, GroupState(name="Eng"), "not_in_downstream")
    assert down.writes == []


async def test_delete_of_a_group_already_gone_is_skipped() -> None:
    """A 404 on DELETE: the group is gone already; the state forgets it all the same."""
    down = Recording()
    plan = GroupPlan(GroupAction.DELETE, linked("g-gone", members=frozenset({"u-1"})))
    outcome = await run(plan, down)
    assert down.calls == [("delete", "g-gone")]
    assert outcome == GroupOutcome(GroupResult.SKIPPED, GroupState(), "not_in_downstream")


# -- a linked group ---------------------------------------------------------------------------------


async def test_linked_group_rename_then_member_changes_in_one_patch() -> None:
    """A rename is one PATCH of displayName; the adds and removes of a batch share one PATCH."""
    down = Recording()
    gid = down.add_group("Old", GID, ("u-1", "u-2"))
    state = linked(gid, "Old", frozenset({"u-1", "u-2"}))
    outcome = await run(sync(state, "New", rename=True, add=("u-3",), remove=("u-1",)), down)
    assert down.calls == [
        ("patch", gid, [scim.display_name_replace("New")]),
        ("patch", gid, [scim.members_add(["u-3"]), *scim.member_removals(["u-1"])]),
    ]
    assert down.members_of(gid) == ["u-2", "u-3"]
    assert down.groups[gid]["displayName"] == "New"
    expected = replace(state, written_name="New", written_members=frozenset({"u-2", "u-3"}))
    assert outcome == GroupOutcome(GroupResult.UPDATED, expected, patches=2)


async def test_linked_group_member_changes_without_rename_send_no_display_name() -> None:
    """Without `rename`, only member operations are sent, and never a replacement of the member list."""
    down = Recording()
    gid = down.add_group("Eng", GID, ("u-1",))
    outcome = await run(sync(linked(gid, members=frozenset({"u-1"})), remove=("u-1",)), down)
    assert down.patches() == [scim.member_removals(["u-1"])]
    assert all(op["path"] != "displayName" and op["op"] != "replace" for p in down.patches() for op in p)
    assert outcome.state.written_members == frozenset()
    assert outcome.result is GroupResult.UPDATED


async def test_member_changes_are_cut_into_requests_of_at_most_per_request_operations() -> None:
    """250 adds and 30 removes at 100 per request: 3 PATCH requests, each of at most 100 member operations."""
    down = Recording()
    old = ids(300)[270:]
    gid = down.add_group("Eng", GID, old)
    outcome = await run(sync(linked(gid, members=frozenset(old)), add=ids(250), remove=old), down)
    sizes = [sum(len(op.get("value", [None])) for op in patch) for patch in down.patches()]
    assert sizes == [100, 100, 80]
    assert outcome.patches == 3
    assert sorted(down.members_of(gid)) == list(ids(250))
    assert outcome.state.written_members == frozenset(ids(250))


async def test_a_linked_group_gone_downstream_is_created_again_with_every_wanted_member() -> None:
    """PATCH 404 on the stored id: forget it, look up by externalId, POST, then add what should be held
    (what was written, less the removals, plus the adds)."""
    down = Recording()
    state = linked("g-gone", members=frozenset({"u-1", "u-2"}))
    outcome = await run(sync(state, add=("u-3",), remove=("u-1",)), down)
    created = down.groups_owned_by(GID)
    assert len(created) == 1
    new_id = created[0]["id"]
    assert down.calls[0][:2] == ("patch", "g-gone")
    assert down.calls[1:] == [
        ("find", "externalId", GID),
        ("create", scim.group_resource(GID, "Eng")),
        ("patch", new_id, [scim.members_add(["u-2", "u-3"])]),
    ]
    assert outcome.result is GroupResult.CREATED
    assert outcome.state.downstream_id == new_id
    assert outcome.state.written_members == frozenset({"u-2", "u-3"})
    assert outcome.patches == 2  # the one that answered 404 was sent too


async def test_a_linked_group_gone_downstream_is_relinked_by_external_id() -> None:
    """PATCH 404, but another group carries our externalId: that one is ours, brought up to date."""
    down = Recording()
    ours = down.add_group("Eng", GID)
    outcome = await run(sync(linked("g-gone", members=frozenset({"u-1"})), add=("u-2",)), down)
    assert outcome.result is GroupResult.UPDATED
    assert outcome.state.downstream_id == ours
    assert sorted(down.members_of(ours)) == ["u-1", "u-2"]


# -- an unlinked group ------------------------------------------------------------------------------


async def test_an_absent_group_is_created_then_its_members_added() -> None:
    """No link and no group of our externalId: POST {displayName, externalId}, then the member batches."""
    down = Recording()
    outcome = await run(sync(add=("u-1", "u-2")), down)
    [group] = down.groups.values()
    assert down.calls == [
        ("find", "externalId", GID),
        ("create", scim.group_resource(GID, "Eng")),
        ("patch", group["id"], [scim.members_add(["u-1", "u-2"])]),
    ]
    expected = GroupState(downstream_id=group["id"], written_name="Eng", written_members=frozenset({"u-1", "u-2"}))
    assert outcome == GroupOutcome(GroupResult.CREATED, expected, patches=1)


async def test_an_empty_group_is_created_without_a_patch() -> None:
    """No members: a POST and nothing else (an empty PATCH is a 400 on scim2-server)."""
    down = Recording()
    outcome = await run(sync(), down)
    assert [call[0] for call in down.calls] == ["find", "create"]
    assert outcome.patches == 0
    assert outcome.result is GroupResult.CREATED


async def test_a_group_of_our_external_id_is_linked_and_keeps_members_we_did_not_write() -> None:
    """Found by externalId: renamed, every wanted member added, none of its other members removed."""
    down = Recording()
    gid = down.add_group("Old name", GID, ("someone-else", "u-1"))
    outcome = await run(sync(name="Eng", add=("u-1", "u-2")), down)
    assert down.calls == [
        ("find", "externalId", GID),
        ("patch", gid, [scim.display_name_replace("Eng")]),
        ("patch", gid, [scim.members_add(["u-1", "u-2"])]),
    ]
    assert down.members_of(gid) == ["someone-else", "u-1", "u-2"]
    assert outcome.result is GroupResult.UPDATED
    assert outcome.state.downstream_id == gid
    assert outcome.state.written_members == frozenset({"u-1", "u-2"})


async def test_a_group_of_our_external_id_and_name_is_not_renamed() -> None:
    """Found with the displayName we want: no rename request, only the members."""
    down = Recording()
    gid = down.add_group("Eng", GID)
    outcome = await run(sync(add=("u-1",)), down)
    assert down.calls[1:] == [("patch", gid, [scim.members_add(["u-1"])])]
    assert outcome.patches == 1


async def test_conflict_adopts_a_group_of_our_name_that_nobody_owns() -> None:
    """POST 409, a group of our name ignoring case with no externalId: claimed (externalId, displayName),
    then the members added; its other members stay."""
    down = Recording()
    gid = down.add_group("ENG", None, ("someone-else",))
    outcome = await run(sync(add=("u-1",)), down)
    claim = [{"op": "replace", "path": "externalId", "value": GID}, scim.display_name_replace("Eng")]
    assert down.calls == [
        ("find", "externalId", GID),
        ("create", scim.group_resource(GID, "Eng")),
        ("find", "externalId", GID),
        ("find", "displayName", "Eng"),
        ("patch", gid, claim),
        ("patch", gid, [scim.members_add(["u-1"])]),
    ]
    assert down.groups[gid]["externalId"] == GID
    assert down.members_of(gid) == ["someone-else", "u-1"]
    assert outcome.result is GroupResult.LINKED
    assert outcome.state.downstream_id == gid


async def test_conflict_adopts_a_group_that_is_already_ours() -> None:
    """POST 409 for a group carrying our externalId (a lookup that missed it, a retried POST): LINKED."""

    class MissesOnce(Recording):
        async def find_group(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
            found = await super().find_group(ds, attribute, value)
            return None if len(self.calls) == 1 else found

    down = MissesOnce()
    gid = down.add_group("Eng", GID)
    outcome = await run(sync(add=("u-1",)), down)
    assert outcome.result is GroupResult.LINKED
    assert outcome.state.downstream_id == gid
    assert len(down.groups) == 1


async def test_conflict_with_a_group_of_another_owner_is_never_written() -> None:
    """POST 409, the group of our name belongs to another externalId: ScimOwnershipConflict naming it and
    its owner, and no write to it."""
    down = Recording()
    theirs = down.add_group("eng", "another-group", ("someone-else",))
    before = dict(down.groups[theirs])
    with pytest.raises(ScimOwnershipConflict) as raised:
        await run(sync(add=("u-1",)), down)
    assert (raised.value.downstream_id, raised.value.owner) == (theirs, "another-group")
    assert (raised.value.status, raised.value.path) == (409, "Groups")
    assert down.writes == []
    assert down.groups[theirs] == before


async def test_conflict_with_no_group_to_adopt_is_a_conflict() -> None:
    """POST 409 but no group matches our externalId or name: ScimConflict, nothing written."""

    class RefusesEveryCreate(Recording):
        async def create_group(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
            raise ScimConflict(409, "POST", "Groups", "uniqueness")

    down = RefusesEveryCreate()
    with pytest.raises(ScimConflict) as raised:
        await run(sync(add=("u-1",)), down)
    assert not isinstance(raised.value, ScimOwnershipConflict)
    assert down.writes == []


async def test_a_downstream_ignoring_filters_never_gets_a_write_to_another_group() -> None:
    """Lookups answered with every group are verified: another group is neither linked nor written."""
    down = Recording(ignore_filters=True, unique_group_names=False)
    theirs = down.add_group("Eng", "another-group", ("someone-else",))
    outcome = await run(sync(add=("u-1",)), down)
    assert outcome.result is GroupResult.CREATED
    assert outcome.state.downstream_id != theirs
    assert all(written != theirs for _, written in down.writes)


async def test_without_unique_names_a_group_of_our_name_but_another_owner_stays_apart() -> None:
    """A downstream that allows two groups of one name: ours is created beside theirs, theirs untouched."""
    down = Recording(unique_group_names=False)
    theirs = down.add_group("Eng", None)
    outcome = await run(sync(), down)
    assert outcome.result is GroupResult.CREATED
    assert "externalId" not in down.groups[theirs]
    assert len(down.groups) == 2


# -- batches and retries ----------------------------------------------------------------------------


def planned(members: int, *, state: GroupState | None = None) -> GroupPlan:
    """A top-level group named Eng with `members` users that exist downstream, as plan_group plans it."""
    changes = [GroupChange(REALM, GID, "upsert", 1, "GROUP_CREATE", "e-1", name="Eng", parent_known=True)]
    changes += [
        GroupChange(REALM, GID, "member", 2, user_id=f"k-{i}", member_id=member, seq=1)
        for i, member in enumerate(ids(members))
    ]
    return plan_group(state or GroupState(), changes, GroupOptions(members_per_request=100), 3)


async def test_a_thousand_members_take_at_most_twelve_patches() -> None:
    """A new group of 1,000 members at 100 per request: one POST and 10 PATCH requests."""
    down = Recording()
    plan = planned(1000)
    outcome = await run(plan, down, per_request=100)
    [group] = down.groups.values()
    assert outcome.result is GroupResult.CREATED
    assert outcome.patches == len(down.patches()) == 10
    assert all(len(patch) == 1 and len(patch[0]["value"]) == 100 for patch in down.patches())
    assert sorted(down.members_of(group["id"])) == list(ids(1000))
    assert outcome.state.written_members == frozenset(ids(1000))


async def test_a_thousand_members_of_a_found_group_take_at_most_twelve_patches() -> None:
    """A group found by externalId under another name: one rename and 10 member requests."""
    down = Recording()
    down.add_group("old", GID)
    outcome = await run(planned(1000), down, per_request=100)
    assert outcome.patches == 11


async def test_a_plan_run_again_after_a_failure_holds_each_member_once() -> None:
    """A 503 on the second batch reaches the caller; the whole plan run again (with the state from
    before) ends with every member held once and nothing removed twice."""
    down = FailingPatch(fail_at=2)
    gid = down.add_group("Eng", GID, ("u-old",))
    state = linked(gid, members=frozenset({"u-old"}))
    plan = sync(state, add=ids(150), remove=("u-old",))
    with pytest.raises(ScimTransient):
        await run(plan, down)
    outcome = await run(plan, down)
    assert down.members_of(gid) == list(ids(150))
    assert outcome.state.written_members == frozenset(ids(150))
    assert outcome.patches == 2


async def test_a_create_run_again_after_a_failure_makes_one_group() -> None:
    """A 503 after the POST: the retried plan finds the group by externalId and completes its members."""
    down = FailingPatch(fail_at=1)
    plan = planned(5)
    with pytest.raises(ScimTransient):
        await run(plan, down)
    outcome = await run(plan, down)
    [group] = down.groups.values()
    assert outcome.state.downstream_id == group["id"]
    assert down.members_of(group["id"]) == list(ids(5))


# -- what a crash may have left: rechecks, and removals of members already gone --------------------


async def test_a_removal_answered_no_target_counts_as_done() -> None:
    """A strict server refuses the PATCH for a removal of a non-member (400 noTarget): the request is
    sent again one removal at a time, the add goes through, and the group is not set aside."""
    down = Recording(strict_removals=True)
    gid = down.add_group("Eng", GID, ("u-1",))
    outcome = await run(
        sync(linked(gid, members=frozenset({"u-1", "u-gone"})), add=("u-2",), remove=("u-1", "u-gone")), down
    )
    assert down.members_of(gid) == ["u-2"]
    assert outcome.state.written_members == frozenset({"u-2"})
    assert len(down.patches()) == 4  # refused, then the add, then each removal (one refused: absent)


async def test_a_recheck_reads_the_members_once_and_removes_only_those_held() -> None:
    """Rechecked ids are removed only if the group's members say it holds them: no noTarget on a strict server."""
    down = Recording(strict_removals=True)
    gid = down.add_group("Eng", GID, ("d0", "d1"))
    outcome = await run(sync(linked(gid, members=frozenset({"d0"})), recheck=("d1", "d2")), down)
    assert down.reads == [gid]
    assert down.patches() == [scim.member_removals(["d1"])]
    assert down.members_of(gid) == ["d0"]
    assert outcome.state.written_members == frozenset({"d0"})


async def test_a_recheck_on_a_server_omitting_members_removes_and_takes_no_target_as_absent() -> None:
    """A read without members proves nothing: every rechecked id is removed, a noTarget means absent."""
    down = Recording(strict_removals=True, omit_members=True)
    gid = down.add_group("Eng", GID, ("d0", "d1"))
    await run(sync(linked(gid, members=frozenset({"d0"})), recheck=("d1", "d2")), down)
    assert down.members_of(gid) == ["d0"]


async def test_a_group_found_by_external_id_loses_the_rechecked_members_it_holds() -> None:
    """A replica created the group and added d1, then died before saving the link: the successor finds the
    group by externalId, adds what it wants, and removes d1 (rechecked), never a member it did not write."""
    down = Recording(strict_removals=True)
    gid = down.add_group("Eng", GID, ("d1", "someone"))
    outcome = await run(sync(add=("d0",), recheck=("d1",)), down)
    assert sorted(down.members_of(gid)) == ["d0", "someone"]
    assert outcome.state.written_members == frozenset({"d0"})


async def test_a_recheck_on_a_server_refusing_the_read_still_removes() -> None:
    """A read answered 400 (a server without `attributes`) proves nothing: the removals are sent."""

    class NoReads(Recording):
        async def read_group_members(self, ds: Downstream, group_id: str) -> Any:
            raise ScimRejected(400, "GET", f"Groups/{group_id}", "invalidValue")

    down = NoReads(strict_removals=True)
    gid = down.add_group("Eng", GID, ("d0", "d1"))
    await run(sync(linked(gid, members=frozenset({"d0"})), recheck=("d1", "d2")), down)
    assert down.members_of(gid) == ["d0"]


@pytest.mark.parametrize("owner", ["another-group", GID.upper()])
async def test_a_post_answered_with_another_owners_group_gets_no_members(owner: str) -> None:
    """A downstream that answers POST /Groups with a group it held already, of another externalId (exact
    match only): ScimOwnershipConflict naming it, and none of our members is written to it."""
    down = Recording()
    theirs = down.add_group("Eng", owner, ("someone-else",))
    before = dict(down.groups[theirs])

    class AnswersWithTheirs(Recording):
        async def create_group(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
            self.calls.append(("create", body))
            return dict(before)

    answering = AnswersWithTheirs()
    with pytest.raises(ScimOwnershipConflict) as raised:
        await run(sync(add=("u-1",)), answering)
    assert (raised.value.downstream_id, raised.value.owner) == (theirs, owner)
    assert [call[0] for call in answering.calls] == ["find", "create"]
