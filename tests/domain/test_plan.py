"""plan_change: (known state, change, delete policy) -> what to do downstream, decided without the network."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.changes import UserChange
from service.domain.plan import DeletePolicy, Plan, plan_change
from service.domain.state import UserState, newer_attributes

UID = "3f6c1a2b-7d4e-4f80-a1b2-c3d4e5f60718"
ALL = {"userName": "jdoe", "givenName": "Jane", "familyName": "Doe", "email": "jane.doe@example.com", "active": True}


def upsert(time_ms: int, **attributes: Any) -> UserChange:
    return UserChange("acme", UID, "upsert", time_ms, "USER_UPDATE", f"e-{time_ms}", attributes)


def delete(time_ms: int) -> UserChange:
    return UserChange("acme", UID, "delete", time_ms, "USER_DELETE", f"e-{time_ms}")


def written(values: dict[str, Any], time_ms: int, downstream_id: str | None = "d-1") -> UserState:
    """The state after `values` were all set by a change at `time_ms` and written downstream."""
    return UserState(downstream_id=downstream_id, values=dict(values), times=dict.fromkeys(values, time_ms))


def test_first_change_without_link_syncs_all_attributes() -> None:
    """With no stored link, every attribute of the change is to be synced and remembered with its time."""
    plan = plan_change(UserState(), upsert(5, **ALL), DeletePolicy.IGNORE)
    assert plan == Plan("sync", UserState(values=ALL, times=dict.fromkeys(ALL, 5)), changed=ALL)
    assert plan.values == ALL


def test_linked_user_patches_only_what_differs() -> None:
    """With a stored link, only attributes whose value differs from the last write are PATCHed."""
    state = written(ALL, 5)
    plan = plan_change(state, upsert(6, userName="jdoe", givenName="Janet"), DeletePolicy.IGNORE)
    assert plan.action == "sync"
    assert plan.changed == {"givenName": "Janet"}
    assert plan.values == {**ALL, "givenName": "Janet"}
    assert plan.state.downstream_id == "d-1"
    assert plan.state.times == {**dict.fromkeys(ALL, 5), "userName": 6, "givenName": 6}


def test_change_equal_to_last_write_is_unchanged() -> None:
    """A change that repeats what was last written needs no call."""
    state = written(ALL, 5)
    plan = plan_change(state, upsert(9, **ALL), DeletePolicy.IGNORE)
    assert plan.action == "none"
    assert plan.reason == "unchanged"
    assert plan.state.values == ALL


def test_replayed_change_is_unchanged() -> None:
    """The same change seen twice (a replay after a crash) is unchanged the second time."""
    first = plan_change(UserState(downstream_id="d-1"), upsert(5, **ALL), DeletePolicy.IGNORE)
    again = plan_change(first.state, upsert(5, **ALL), DeletePolicy.IGNORE)
    assert (again.action, again.reason) == ("none", "unchanged")


def test_older_change_applies_to_attributes_nothing_newer_set() -> None:
    """A newer disable (t=10) then an older name edit (t=5): the name applies, active stays false."""
    created = written(ALL, 1)
    disabled = plan_change(created, upsert(10, active=False), DeletePolicy.IGNORE)
    assert (disabled.action, disabled.changed) == ("sync", {"active": False})
    renamed = plan_change(disabled.state, upsert(5, givenName="Janet", active=True), DeletePolicy.IGNORE)
    assert renamed.action == "sync"
    assert renamed.changed == {"givenName": "Janet"}
    assert renamed.values["active"] is False
    assert renamed.state.times["active"] == 10
    assert renamed.state.times["givenName"] == 5


def test_older_full_update_after_newer_partial_one_keeps_the_newer_attribute() -> None:
    """An older full-user UPDATE arriving after a newer `{"enabled": false}` only touches the other attributes."""
    state = plan_change(written(ALL, 1), upsert(10, active=False), DeletePolicy.IGNORE).state
    plan = plan_change(state, upsert(5, **{**ALL, "email": "new@example.com"}), DeletePolicy.IGNORE)
    assert plan.changed == {"email": "new@example.com"}
    assert plan.values == {**ALL, "email": "new@example.com", "active": False}


def test_race_without_link_keeps_the_newer_attribute_for_the_create() -> None:
    """A disable seen before the (older) create: the create's values are synced with active false."""
    disabled = plan_change(UserState(), upsert(10, active=False), DeletePolicy.IGNORE)
    created = plan_change(disabled.state, upsert(5, **ALL), DeletePolicy.IGNORE)
    assert created.action == "sync"
    assert "active" not in created.changed
    assert created.values == {**ALL, "active": False}


def test_change_entirely_superseded_is_none() -> None:
    """An older change whose every attribute was set by something newer does nothing."""
    state = written(ALL, 10)
    plan = plan_change(state, upsert(5, givenName="Old", active=True), DeletePolicy.IGNORE)
    assert (plan.action, plan.reason) == ("none", "superseded")
    assert plan.state == state


def test_equal_time_applies() -> None:
    """A change with the same time as the one that set an attribute still applies (ties are not dropped)."""
    assert newer_attributes(written(ALL, 5), upsert(5, givenName="Janet")) == {"givenName": "Janet"}


@pytest.mark.parametrize("policy", list(DeletePolicy))
def test_change_older_than_a_delete_is_none(policy: DeletePolicy) -> None:
    """After a delete at t=10, an upsert from t=5 does nothing, whatever the policy."""
    deleted = plan_change(written(ALL, 1), delete(10), policy).state
    plan = plan_change(deleted, upsert(5, givenName="Janet"), policy)
    assert (plan.action, plan.reason) == ("none", "older_than_delete")
    assert plan.state == deleted


def test_delete_policy_ignore_records_the_delete_only() -> None:
    """IGNORE: no downstream call; the delete time is remembered, values and link kept."""
    state = written(ALL, 1)
    plan = plan_change(state, delete(10), DeletePolicy.IGNORE)
    assert plan == Plan("none", UserState("d-1", ALL, dict.fromkeys(ALL, 1), deleted_ms=10), reason="delete_ignored")


def test_delete_policy_deactivate_patches_active_false() -> None:
    """DEACTIVATE: PATCH active=false, remembered as set at the delete's time."""
    plan = plan_change(written(ALL, 1), delete(10), DeletePolicy.DEACTIVATE)
    assert plan.action == "deactivate"
    assert plan.changed == {"active": False}
    assert plan.state.values == {**ALL, "active": False}
    assert plan.state.times["active"] == 10
    assert plan.state.deleted_ms == 10
    assert plan.state.downstream_id == "d-1"


def test_delete_policy_delete_forgets_values_but_keeps_the_link_for_the_executor() -> None:
    """DELETE: DELETE /Users/{id}; values are dropped, the downstream id stays until the executor clears it."""
    plan = plan_change(written(ALL, 1), delete(10), DeletePolicy.DELETE)
    assert plan.action == "delete"
    assert plan.state.values == {}
    assert plan.state.deleted_ms == 10
    assert plan.state.downstream_id == "d-1"


@pytest.mark.parametrize("policy", list(DeletePolicy))
@pytest.mark.parametrize("second", [10, 9], ids=["same-time", "older"])
def test_duplicate_delete_is_none(policy: DeletePolicy, second: int) -> None:
    """A second delete not newer than the first (a replay, or the user event twin) does nothing."""
    first = plan_change(written(ALL, 1), delete(10), policy)
    plan = plan_change(first.state, delete(second), policy)
    assert (plan.action, plan.reason) == ("none", "already_deleted")
    assert plan.state == first.state


def test_user_state_json_round_trip() -> None:
    """UserState survives to_json / from_json unchanged."""
    state = UserState("d-1", {**ALL, "email": None}, dict.fromkeys(ALL, 7), deleted_ms=9)
    assert UserState.from_json(state.to_json()) == state
