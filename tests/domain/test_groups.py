"""Groups, pure: the merge of a group's parts, what the downstream should hold, the plan and its hops;
a user's memberships and the member hops they send. Order-independence is stated as properties."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import reduce

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.changes import UserChange
from service.domain.groups import (
    GroupAction,
    GroupChange,
    GroupDisplay,
    GroupOptions,
    GroupState,
    confirmed_removals,
    desired_group,
    merge_group,
    path_of,
    plan_group,
)
from service.domain.plan import DeletePolicy, membership_hops, plan_change
from service.domain.state import UserState, merge
from tests.properties import examples

NAME = GroupOptions()


def upsert(gid: str, t: int, name: str | None = None, parent: str | None = None, known: bool = True) -> GroupChange:
    return GroupChange("acme", gid, "upsert", t, "GROUP_CREATE", f"e-{t}", name=name, parent=parent, parent_known=known)


def member(gid: str, user: str, seq: int, downstream: str | None, present: bool = True) -> GroupChange:
    return GroupChange("acme", gid, "member", 0, user_id=user, member_id=downstream, present=present, seq=seq)


def state(*changes: GroupChange) -> GroupState:
    return reduce(merge_group, changes, GroupState())


def test_a_top_level_group_has_its_path_a_sub_group_waits_for_its_parents() -> None:
    """/eng is known at once; /eng/backend once /eng has told it its path (ancestry)."""
    assert path_of(state(upsert("eng", 1, "eng"))) == "/eng"
    backend = state(upsert("be", 2, "backend", parent="eng"))
    assert path_of(backend) is None
    told = merge_group(backend, GroupChange("acme", "be", "ancestry", 3, parent="eng", path="/eng", seq=1))
    assert path_of(told) == "/eng/backend"


def test_a_word_from_a_former_parent_does_not_count() -> None:
    """After a move under /ops, a late ancestry from /eng does not give the group /eng's path."""
    moved = state(upsert("pl", 1, "platform", parent="eng"), upsert("pl", 5, parent="ops"))
    late = merge_group(moved, GroupChange("acme", "pl", "ancestry", 6, parent="eng", path="/eng", seq=9))
    assert path_of(late) is None
    told = merge_group(late, GroupChange("acme", "pl", "ancestry", 7, parent="ops", path="/ops", seq=1))
    assert path_of(told) == "/ops/platform"


def test_what_the_downstream_should_hold() -> None:
    """displayName is the name or the full path; members are those with a downstream id; a filter and a
    deletion (under policy delete) mean nothing."""
    g = state(upsert("eng", 1, "eng"), member("eng", "u1", 1, "d1"), member("eng", "u2", 1, None))
    want = desired_group(g, NAME)
    assert want is not None and (want.display_name, want.members) == ("eng", frozenset({"d1"}))
    assert desired_group(g, GroupOptions(display=GroupDisplay.PATH)).display_name == "/eng"  # type: ignore[union-attr]
    assert desired_group(g, GroupOptions(path_prefixes=("/ops",))) is None
    assert desired_group(g, GroupOptions(path_pattern="^/e")) is not None
    gone = merge_group(g, GroupChange("acme", "eng", "delete", 9))
    assert desired_group(gone, GroupOptions(delete=True)) is None


def test_a_burst_of_members_is_planned_as_few_requests() -> None:
    """1,000 new members of a created group: added in requests of 100 operations, 10 in all."""
    created = replace(state(upsert("eng", 1, "eng")), downstream_id="g-1", written_name="eng")
    burst = [member("eng", f"u{n}", 1, f"d{n}") for n in range(1000)]
    plan = plan_group(created, burst, NAME, now_ms=5)
    assert plan.action is GroupAction.SYNC and not plan.rename
    assert (len(plan.add), plan.remove) == (1000, ())
    assert len(plan.batches(100)) == 10


def test_a_linked_group_changes_only_what_differs() -> None:
    g = replace(
        state(upsert("eng", 1, "eng"), member("eng", "u1", 1, "d1"), member("eng", "u2", 1, "d2")),
        downstream_id="g-1",
        written_name="eng",
        written_members=frozenset({"d1", "d2"}),
    )
    left = plan_group(g, [member("eng", "u2", 2, None), upsert("eng", 3, "engineering", known=False)], NAME, 9)
    assert (left.action, left.rename, left.add, left.remove) == (GroupAction.SYNC, True, (), ("d2",))
    same = plan_group(g, [member("eng", "u1", 1, "d1")], NAME, 9)
    assert (same.action, same.reason) == (GroupAction.NONE, "unchanged")


def test_a_member_who_joins_and_leaves_within_a_batch_is_rechecked() -> None:
    """A join then a leave (or a leave then a join) in one batch: what was last written says nothing is
    to change, but a replica that wrote the first and died before saving may have left the downstream
    holding the intermediate. The one not wanted is to be rechecked, the one wanted is added again."""
    g = replace(
        state(upsert("eng", 1, "eng"), member("eng", "u0", 1, "d0")),
        downstream_id="g-1",
        written_name="eng",
        written_members=frozenset({"d0"}),
    )
    joined_left = plan_group(g, [member("eng", "u1", 1, "d1"), member("eng", "u1", 2, None)], NAME, 9)
    assert (joined_left.action, joined_left.add, joined_left.remove, joined_left.recheck) == (
        GroupAction.SYNC,
        (),
        (),
        ("d1",),
    )
    left_joined = plan_group(g, [member("eng", "u0", 2, None), member("eng", "u0", 3, "d0")], NAME, 9)
    assert (left_joined.add, left_joined.remove, left_joined.recheck) == (("d0",), (), ())
    once = plan_group(g, [member("eng", "u1", 1, "d1"), member("eng", "u2", 1, "d2")], NAME, 9)
    assert (once.add, once.recheck) == (("d1", "d2"), ())


def test_a_sub_groups_members_passing_through_a_flattened_batch_are_rechecked() -> None:
    """Flattening: a sub-group's members that it passed up and took back within one batch are rechecked."""
    g = replace(
        state(upsert("eng", 1, "eng"), GroupChange("acme", "eng", "child", 2, child_id="be", seq=1)),
        downstream_id="g-1",
        written_name="eng",
    )
    passed = GroupChange("acme", "eng", "inherit", 3, child_id="be", members=("d7",), seq=2)
    taken_back = GroupChange("acme", "eng", "inherit", 4, child_id="be", seq=3)
    plan = plan_group(g, [passed, taken_back], GroupOptions(flatten=True), 9)
    assert (plan.add, plan.remove, plan.recheck) == ((), (), ("d7",))


def test_a_reconciliations_extra_members_are_rechecked_unless_wanted_by_then() -> None:
    """A forced upsert carrying the ids a reconciliation saw held and unwanted (`prune`): the ones the
    group still does not want are rechecked (removed if the downstream holds them), one that joined
    after the listing is added and kept; the prune list survives the changes topic's encoding."""
    g = replace(
        state(upsert("eng", 1, "eng"), member("eng", "u0", 1, "d0")),
        downstream_id="g-1",
        written_name="eng",
        written_members=frozenset({"d0"}),
    )
    fix = GroupChange("acme", "eng", "upsert", 5, "RECONCILE", name="eng", force=True, prune=("d9", "dx", "d0"))
    assert GroupChange.from_doc(json.loads(fix.to_json())) == fix
    plan = plan_group(g, [fix], NAME, 9)
    assert (plan.action, plan.add, plan.remove, plan.recheck) == (GroupAction.SYNC, ("d0",), (), ("d9", "dx"))
    joined_since = plan_group(g, [member("eng", "u9", 1, "d9"), fix], NAME, 9)
    assert (joined_since.add, joined_since.recheck) == (("d0", "d9"), ("dx",))


def test_confirmed_removals_trust_only_a_member_list_that_holds_what_we_keep() -> None:
    """Only rechecked ids are acted on; a list proves absence only if it lists every member we keep."""
    listed = {"id": "g-1", "members": [{"value": "d0"}, {"value": "d1"}, {"value": "stranger"}, "junk", {"value": 3}]}
    assert confirmed_removals(("d1", "d2"), listed, {"d0"}) == ("d1",)
    assert confirmed_removals(("d1", "d2"), {"id": "g-1"}, {"d0"}) == ("d1", "d2")  # members omitted
    assert confirmed_removals(("d1", "d2"), {"members": "d1"}, set()) == ("d1", "d2")  # not a list
    assert confirmed_removals(("d1", "d2"), None, set()) == ("d1", "d2")
    assert confirmed_removals(("d1", "d2"), {"members": [{"value": "d1"}]}, {"d0"}) == ("d1", "d2")  # truncated


def test_a_deleted_group_is_deleted_under_policy_delete_and_kept_otherwise() -> None:
    g = replace(state(upsert("eng", 1, "eng")), downstream_id="g-1")
    deleted = [GroupChange("acme", "eng", "delete", 5)]
    assert plan_group(g, deleted, GroupOptions(delete=True), 9).action is GroupAction.DELETE
    assert plan_group(g, deleted, NAME, 9).action is GroupAction.NONE


def test_hops_tell_the_parent_and_the_children() -> None:
    """A sub-group registers with its parent; a parent tells its children its path, and again on a rename;
    a move tells the old parent it left."""
    sub = plan_group(GroupState(), [upsert("be", 1, "backend", parent="eng")], NAME, 9)
    assert [(h.group_id, h.op, h.child_id, h.present) for h in sub.hops] == [("eng", "child", "be", True)]
    parent = plan_group(
        GroupState(), [upsert("eng", 1, "eng"), GroupChange("acme", "eng", "child", 1, child_id="be", seq=1)], NAME, 9
    )
    assert [(h.group_id, h.op, h.parent, h.path) for h in parent.hops] == [("be", "ancestry", "eng", "/eng")]
    renamed = plan_group(parent.state, [upsert("eng", 5, "engineering", known=False)], NAME, 9)
    assert [(h.group_id, h.path) for h in renamed.hops] == [("be", "/engineering")]
    quiet = plan_group(renamed.state, [upsert("eng", 6, "engineering", known=False)], NAME, 9)
    assert quiet.hops == ()
    moved = plan_group(sub.state, [upsert("be", 7, parent="ops")], NAME, 9)
    assert [(h.group_id, h.op, h.present) for h in moved.hops] == [("eng", "child", False), ("ops", "child", True)]


def test_a_deletion_reaches_the_sub_groups() -> None:
    """Keycloak sends one GROUP DELETE: the parent passes it on, so a sub-group is deleted too."""
    parent = plan_group(
        GroupState(), [upsert("eng", 1, "eng"), GroupChange("acme", "eng", "child", 1, child_id="be", seq=1)], NAME, 9
    )
    gone = plan_group(parent.state, [GroupChange("acme", "eng", "delete", 5)], GroupOptions(delete=True), 9)
    assert [(h.group_id, h.deleted_ms) for h in gone.hops] == [("be", 5)]
    child = state(upsert("be", 2, "backend", parent="eng"), gone.hops[0])
    assert desired_group(child, GroupOptions(delete=True)) is None


def test_flattening_passes_members_up() -> None:
    flat = GroupOptions(flatten=True)
    sub = plan_group(GroupState(), [upsert("be", 1, "backend", parent="eng"), member("be", "u1", 1, "d1")], flat, 9)
    inherit = [h for h in sub.hops if h.op == "inherit"]
    assert [(h.group_id, h.members) for h in inherit] == [("eng", ("d1",))]
    parent = state(upsert("eng", 1, "eng"), GroupChange("acme", "eng", "child", 1, child_id="be", seq=1), *inherit)
    assert desired_group(parent, flat).members == frozenset({"d1"})  # type: ignore[union-attr]
    assert desired_group(parent, NAME).members == frozenset()  # type: ignore[union-attr]


# -- a user's memberships ---------------------------------------------------------------------------------


def joins(group: str, t: int, is_member: bool = True, event: str | None = None) -> UserChange:
    return UserChange(
        "acme", "u1", "membership", t, "GROUP_MEMBERSHIP_CREATE", event or f"e-{t}", group_id=group, member=is_member
    )


def test_a_membership_before_the_user_exists_downstream_is_told_once_it_does() -> None:
    """No downstream id yet: no hop. Created later: the group hears the member with its id."""
    waiting = plan_change(UserState(), joins("eng", 5), DeletePolicy.IGNORE).state
    assert membership_hops(waiting, "acme", "u1", 9) == (waiting, ())
    linked = replace(waiting, downstream_id="d1")
    told, hops = membership_hops(linked, "acme", "u1", 9)
    assert [(h.group_id, h.op, h.user_id, h.member_id, h.seq) for h in hops] == [("eng", "member", "u1", "d1", 1)]
    assert membership_hops(told, "acme", "u1", 10) == (told, ())


def test_leaving_and_deletion_are_told() -> None:
    linked = merge(replace(UserState(), downstream_id="d1"), joins("eng", 5))
    told, _ = membership_hops(linked, "acme", "u1", 9)
    _, hops = membership_hops(merge(told, joins("eng", 6, is_member=False)), "acme", "u1", 9)
    assert [(h.member_id, h.seq) for h in hops] == [(None, 2)]
    _, hops = membership_hops(replace(told, downstream_id=None), "acme", "u1", 9)  # its account deleted
    assert [(h.member_id, h.seq) for h in hops] == [(None, 2)]


def test_at_equal_times_leaving_wins() -> None:
    a = merge(merge(UserState(), joins("eng", 5, True, "e-z")), joins("eng", 5, False, "e-a"))
    b = merge(merge(UserState(), joins("eng", 5, False, "e-a")), joins("eng", 5, True, "e-z"))
    assert a.groups == b.groups and a.groups["eng"][0] is False


@settings(max_examples=examples(500), deadline=None)
@given(data=st.data(), flips=st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=8))
def test_memberships_merge_in_any_order(data: st.DataObject, flips: list[tuple[int, bool]]) -> None:
    """A user's joins and leaves of one group, in any order with duplicates, end as event-time order says."""
    changes = [joins("eng", t, m, f"e-{i}") for i, (t, m) in enumerate(flips)]
    arrivals = data.draw(st.permutations(changes + data.draw(st.lists(st.sampled_from(changes), max_size=3))))
    final = reduce(merge, arrivals, UserState()).groups["eng"][0]
    newest = max(t for t, _ in flips)
    expected = all(m for t, m in flips if t == newest)  # at the newest time, any leave wins
    assert final is expected


@settings(max_examples=examples(500), deadline=None)
@given(data=st.data(), views=st.lists(st.one_of(st.none(), st.sampled_from(["d1", "d2"])), min_size=1, max_size=6))
def test_a_group_keeps_the_users_last_word_in_any_order(data: st.DataObject, views: list[str | None]) -> None:
    """Member hops of one user (sequence 1..n) reach the group in any order, twice over: it keeps the last."""
    hops = [member("eng", "u1", seq, v) for seq, v in enumerate(views, start=1)]
    arrivals = data.draw(st.permutations(hops + hops))
    assert state(*arrivals).members["u1"] == (len(views), views[-1])
