"""plan_change and desired: (known state, change, delete policy) -> what to do downstream, without the network.

The order-independence of these rules over every interleaving is stated as properties in
test_convergence.py; the examples here pin each rule of the convergence table (docs/convergence.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from service.domain.changes import UserChange
from service.domain.plan import Action, DeletePolicy, desired, plan_change
from service.domain.state import UserState, merge

UID = "3f6c1a2b-7d4e-4f80-a1b2-c3d4e5f60718"
ALL: dict[str, Any] = {
    "userName": "jdoe",
    "givenName": "Jane",
    "familyName": "Doe",
    "email": "jane.doe@example.com",
    "active": True,
}


def upsert(time_ms: int, event_id: str | None = None, **attributes: Any) -> UserChange:
    return UserChange("acme", UID, "upsert", time_ms, "USER_UPDATE", event_id or f"e-{time_ms}", attributes)


def delete(time_ms: int) -> UserChange:
    return UserChange("acme", UID, "delete", time_ms, "USER_DELETE", f"e-{time_ms}")


def written(values: dict[str, Any], time_ms: int, downstream_id: str | None = "d-1") -> UserState:
    """The state after `values` were all set by a change at `time_ms` and written downstream."""
    return UserState(downstream_id, dict(values), dict.fromkeys(values, (time_ms, f"e-{time_ms}")), written=values)


def test_first_change_without_link_syncs_all_attributes() -> None:
    """With no stored link, every attribute is to be synced and remembered with its version."""
    plan = plan_change(UserState(), upsert(5, **ALL), DeletePolicy.IGNORE)
    assert plan.action is Action.SYNC
    assert plan.values == plan.changed == ALL
    assert plan.state.versions == dict.fromkeys(ALL, (5, "e-5"))


def test_linked_user_patches_only_what_differs() -> None:
    """With a stored link, only attributes whose value differs from the last write are PATCHed."""
    plan = plan_change(written(ALL, 5), upsert(6, userName="jdoe", givenName="Janet"), DeletePolicy.IGNORE)
    assert plan.action is Action.SYNC
    assert plan.changed == {"givenName": "Janet"}
    assert plan.values == {**ALL, "givenName": "Janet"}
    assert plan.state.downstream_id == "d-1"


def test_change_equal_to_last_write_is_unchanged() -> None:
    """A change that repeats what was last written needs no call."""
    plan = plan_change(written(ALL, 5), upsert(9, **ALL), DeletePolicy.IGNORE)
    assert (plan.action, plan.reason) == (Action.NONE, "unchanged")


def test_replayed_change_is_superseded() -> None:
    """The same change seen twice (a replay after a crash) changes nothing the second time."""
    state = replace(
        plan_change(UserState(downstream_id="d-1"), upsert(5, **ALL), DeletePolicy.IGNORE).state, written=ALL
    )
    again = plan_change(state, upsert(5, **ALL), DeletePolicy.IGNORE)
    assert (again.action, again.reason) == (Action.NONE, "superseded")
    assert again.state is state


def test_older_change_applies_to_attributes_nothing_newer_set() -> None:
    """A newer disable (t=10) then an older name edit (t=5): the name applies, active stays false."""
    disabled = plan_change(written(ALL, 1), upsert(10, active=False), DeletePolicy.IGNORE)
    assert disabled.changed == {"active": False}
    state = replace(disabled.state, written=disabled.values)
    renamed = plan_change(state, upsert(5, givenName="Janet", active=True), DeletePolicy.IGNORE)
    assert renamed.changed == {"givenName": "Janet"}
    assert renamed.values["active"] is False
    assert renamed.state.versions["active"] == (10, "e-10")
    assert renamed.state.versions["givenName"] == (5, "e-5")


def test_race_without_link_creates_with_the_merged_newest_values() -> None:
    """A disable seen before the (older) create: the create sends every value, with active false."""
    disabled = plan_change(UserState(), upsert(10, active=False), DeletePolicy.IGNORE)
    created = plan_change(disabled.state, upsert(5, **ALL), DeletePolicy.IGNORE)
    assert created.action is Action.SYNC
    assert created.values == {**ALL, "active": False}


def test_change_entirely_superseded_is_none() -> None:
    """An older change whose every attribute was set by something newer does nothing."""
    state = written(ALL, 10)
    plan = plan_change(state, upsert(5, givenName="Old", active=True), DeletePolicy.IGNORE)
    assert (plan.action, plan.reason) == (Action.NONE, "superseded")
    assert plan.state is state


@pytest.mark.parametrize(
    ("first", "second", "winner"),
    [
        (("e-a", True), ("e-b", False), False),
        (("e-b", False), ("e-a", True), False),
        (("e-z", True), ("e-a", False), False),
    ],
)
def test_equal_times_active_false_wins(first: tuple[str, bool], second: tuple[str, bool], winner: bool) -> None:
    """Two changes of `active` at the same millisecond: false wins, whichever arrives first."""
    state = merge(merge(UserState(), upsert(7, first[0], active=first[1])), upsert(7, second[0], active=second[1]))
    assert state.values["active"] is winner


def test_equal_times_other_attributes_the_greater_event_id_wins() -> None:
    """Two renames at the same millisecond: the greater event id wins, whichever arrives first."""
    a, b = upsert(7, "e-a", givenName="Ann"), upsert(7, "e-b", givenName="Bea")
    assert merge(merge(UserState(), a), b).values == merge(merge(UserState(), b), a).values == {"givenName": "Bea"}


@pytest.mark.parametrize("policy", list(DeletePolicy))
def test_deleted_user_state_keeps_newer_values_before_any_create(policy: DeletePolicy) -> None:
    """The state keeps every attribute's newest value whether or not the user exists downstream yet."""
    state = merge(merge(UserState(), delete(10)), upsert(5, **ALL))
    assert state.values == ALL
    assert state.deleted_ms == 10


def test_ignore_an_older_change_after_the_delete_still_applies() -> None:
    """IGNORE: a disable made before the deletion but read after it is applied (the person does not stay active)."""
    deleted = plan_change(written(ALL, 1), delete(10), DeletePolicy.IGNORE)
    assert (deleted.action, deleted.reason) == (Action.NONE, "delete_ignored")
    late_disable = plan_change(deleted.state, upsert(5, active=False), DeletePolicy.IGNORE)
    assert late_disable.action is Action.SYNC
    assert late_disable.changed == {"active": False}


def test_ignore_a_create_read_after_its_delete_still_creates() -> None:
    """IGNORE: a REGISTER that reaches us after its deletion creates the user (Keycloak's last state had it)."""
    deleted = plan_change(UserState(), delete(10), DeletePolicy.IGNORE)
    assert (deleted.action, deleted.reason) == (Action.NONE, "nothing_known")
    created = plan_change(deleted.state, upsert(5, **ALL), DeletePolicy.IGNORE)
    assert created.action is Action.SYNC
    assert created.values == ALL


def test_deactivate_patches_active_false_and_older_changes_keep_it_false() -> None:
    """DEACTIVATE: the delete PATCHes active=false; an older enable read later does not re-enable."""
    plan = plan_change(written(ALL, 1), delete(10), DeletePolicy.DEACTIVATE)
    assert (plan.action, plan.changed) == (Action.SYNC, {"active": False})
    state = replace(plan.state, written=plan.values)
    older = plan_change(state, upsert(5, familyName="Doe-Smith", active=True), DeletePolicy.DEACTIVATE)
    assert older.changed == {"familyName": "Doe-Smith"}
    assert older.values["active"] is False


def test_deactivate_a_newer_enable_re_enables() -> None:
    """DEACTIVATE: an enable newer than the deletion (a re-create) wins like any newer change."""
    state = merge(merge(UserState(), upsert(1, **ALL)), delete(10))
    assert desired(state, DeletePolicy.DEACTIVATE) == {**ALL, "active": False}
    assert desired(merge(state, upsert(11, active=True)), DeletePolicy.DEACTIVATE) == ALL


def test_deactivate_a_delete_and_an_enable_at_the_same_time_leave_it_disabled() -> None:
    """DEACTIVATE: at equal times the deletion wins, as active=false does."""
    state = merge(merge(UserState(), upsert(10, **ALL)), delete(10))
    assert desired(state, DeletePolicy.DEACTIVATE) == {**ALL, "active": False}


def test_delete_policy_delete_removes_the_user_and_nothing_older_resurrects_it() -> None:
    """DELETE: DELETE /Users/{id}; afterwards an older change does nothing; a newer one re-creates."""
    plan = plan_change(written(ALL, 1), delete(10), DeletePolicy.DELETE)
    assert plan.action is Action.DELETE
    gone = replace(plan.state, downstream_id=None, written={})
    older = plan_change(gone, upsert(5, givenName="Janet"), DeletePolicy.DELETE)
    assert (older.action, older.reason) == (Action.NONE, "deleted")
    newer = plan_change(gone, upsert(11, givenName="Janet"), DeletePolicy.DELETE)
    assert newer.action is Action.SYNC
    assert newer.values == {**ALL, "givenName": "Janet"}


def test_delete_policy_delete_removes_an_unlinked_user_once() -> None:
    """DELETE: a deletion of a user we never linked still resolves and deletes it (it may predate us)."""
    plan = plan_change(UserState(), delete(10), DeletePolicy.DELETE)
    assert plan.action is Action.DELETE


@pytest.mark.parametrize("policy", list(DeletePolicy))
@pytest.mark.parametrize("second", [10, 9], ids=["same-time", "older"])
def test_duplicate_delete_changes_nothing(policy: DeletePolicy, second: int) -> None:
    """A second delete not newer than the first (a replay, or the user event twin) leaves the state as is."""
    first = merge(written(ALL, 1), delete(10))
    assert merge(first, delete(second)) is first


def test_link_takes_the_declared_account_and_writes_everything_known() -> None:
    """An operator's link: the plan writes every known value to the declared account."""
    link = UserChange("acme", UID, "link", 20, "LINK", link_to="d-9")
    plan = plan_change(merge(UserState(), upsert(5, **ALL)), link, DeletePolicy.IGNORE)
    assert (plan.action, plan.values) == (Action.LINK, ALL)


def test_user_state_json_round_trip() -> None:
    """UserState survives to_json / from_json unchanged, including what was written when it differs."""
    state = UserState(
        "d-1", {**ALL, "email": None}, dict.fromkeys(ALL, (7, "e-7")), deleted_ms=9, written={**ALL, "active": False}
    )
    assert UserState.from_json(state.to_json()) == state
    same = written(ALL, 3)
    assert b'"written"' not in same.to_json()
    assert UserState.from_json(same.to_json()) == same


def test_user_state_from_the_previous_format_is_read() -> None:
    """A changelog written before versions (times only) is still restored."""
    old = b'{"downstream_id":"d-1","values":{"active":true},"times":{"active":7},"deleted_ms":null,"parked":null}'
    state = UserState.from_json(old)
    assert state.versions == {"active": (7, "")}
    assert state.written == {"active": True}
