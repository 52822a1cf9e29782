"""The orphan check (service.domain.plan.orphan_plan): an account downstream carries a user's id as
externalId and Keycloak has no such user. It is deleted only under the policy `delete` and only when the
state knows the user and its deletion is the newest change, whatever order the user's changes came in."""

from __future__ import annotations

from functools import reduce
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.changes import UserChange
from service.domain.drift import orphan_ids
from service.domain.plan import Action, DeletePolicy, plan_change
from service.domain.stamps import ChangeSource
from service.domain.state import UserState, merge
from tests.convergence import UID, arrivals_strategy, changes_strategy, reference
from tests.properties import examples


def orphan(time_ms: int = 10) -> UserChange:
    return UserChange("acme", UID, "upsert", time_ms, "RECONCILE", source=ChangeSource.RECONCILE, orphan=True)


@settings(max_examples=examples(2000), deadline=None)
@given(
    data=st.data(),
    changes=changes_strategy(),
    policy=st.sampled_from(list(DeletePolicy)),
    linked=st.sampled_from([None, "acc-1"]),
    when=st.integers(0, 10),
)
def test_an_orphan_is_deleted_exactly_when_the_state_says_the_user_is_gone(
    data: st.DataObject, changes: list[UserChange], policy: DeletePolicy, linked: str | None, when: int
) -> None:
    """For any arrival order: DELETE under policy `delete` when event-time order ends with the user
    deleted; nothing otherwise (a live user, a newer re-create, policies `ignore` and `deactivate`). The
    check merges nothing: the state it plans with is the state it found, whatever its time."""
    state = reduce(merge, data.draw(arrivals_strategy(changes)), UserState(downstream_id=linked))
    plan = plan_change(state, orphan(when), policy)
    gone = policy is DeletePolicy.DELETE and reference(changes, policy) is None
    assert plan.action is (Action.DELETE if gone else Action.NONE)
    assert plan.state is state


@given(policy=st.sampled_from(list(DeletePolicy)), when=st.integers(0, 10))
def test_an_account_carrying_an_id_the_state_never_saw_is_never_touched(policy: DeletePolicy, when: int) -> None:
    """Another realm's user, an account made by hand: not provably ours, whatever the policy."""
    plan = plan_change(UserState(), orphan(when), policy)
    assert plan.action is Action.NONE and plan.reason == "orphan_not_known_deleted"


def test_the_orphan_flag_survives_the_changes_topic() -> None:
    assert UserChange.from_json(orphan().to_json()).orphan is True
    assert b"orphan" not in UserChange("acme", UID, "upsert", 1, "USER_UPDATE").to_json()


def test_orphan_ids_are_the_extra_accounts_external_ids_each_once() -> None:
    extra: list[dict[str, Any]] = [
        {"id": "1", "externalId": "u1", "userName": "a"},
        {"id": "2", "externalId": None, "userName": "b"},
        {"id": "3", "externalId": "", "userName": "c"},
        {"id": "4", "externalId": "u1", "userName": "d"},
        {"id": "5", "externalId": "u2", "userName": "e"},
    ]
    assert orphan_ids(extra) == ["u1", "u2"]
