"""The orphan check (service.domain.plan.orphan_plan): an account downstream carries a user's id as
externalId and Keycloak has no such user. Only when the state knows the user and its deletion is the
newest change, whatever order the user's changes came in, are its accounts acted on: deleted under the
policy `delete`, deactivated under `deactivate`, left alone under `ignore`."""

from __future__ import annotations

from dataclasses import replace
from functools import reduce
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.changes import UserChange
from service.domain.drift import orphan_ids
from service.domain.plan import Action, DeletePolicy, orphan_plan, plan_change
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
    """For any arrival order, when event-time order ends with the user deleted: DELETE under policy
    `delete`, a deactivation (active=false, nothing else changed) under `deactivate`; nothing otherwise
    (a live user, a newer re-create, policy `ignore`). The check merges nothing: the state it plans with
    is the state it found, whatever its time."""
    state = reduce(merge, data.draw(arrivals_strategy(changes)), UserState(downstream_id=linked))
    plan = plan_change(state, orphan(when), policy)
    gone = reference(changes, DeletePolicy.DELETE) is None
    expected = {DeletePolicy.DELETE: Action.DELETE, DeletePolicy.DEACTIVATE: Action.DEACTIVATE}
    assert plan.action is (expected.get(policy, Action.NONE) if gone else Action.NONE)
    assert plan.state is state
    if plan.action is Action.DEACTIVATE:
        assert plan.changed == {"active": False}


@given(policy=st.sampled_from(list(DeletePolicy)), when=st.integers(0, 10))
def test_an_account_carrying_an_id_the_state_never_saw_is_never_touched(policy: DeletePolicy, when: int) -> None:
    """Another realm's user, an account made by hand: not provably ours, whatever the policy."""
    plan = plan_change(UserState(), orphan(when), policy)
    assert plan.action is Action.NONE and plan.reason == "orphan_not_known_deleted"


KNOWN = {"userName": "jdoe", "active": True}
LIVE = UserState(values=KNOWN, versions=dict.fromkeys(KNOWN, (5, "e-1")))


@pytest.mark.parametrize(
    ("policy", "state", "action", "reason"),
    [
        # the state knows the user and its deletion is the newest change
        (DeletePolicy.DELETE, replace(LIVE, deleted_ms=7), Action.DELETE, "orphan"),
        (DeletePolicy.DEACTIVATE, replace(LIVE, deleted_ms=7), Action.DEACTIVATE, "orphan"),
        (DeletePolicy.IGNORE, replace(LIVE, deleted_ms=7), Action.NONE, "orphan_delete_ignored"),
        # at equal times the deletion is the newest change (as desired() rules)
        (DeletePolicy.DELETE, replace(LIVE, deleted_ms=5), Action.DELETE, "orphan"),
        (DeletePolicy.DEACTIVATE, replace(LIVE, deleted_ms=5), Action.DEACTIVATE, "orphan"),
        # still linked to the account the deletion deactivated: its other accounts are deactivated all the same
        (DeletePolicy.DEACTIVATE, replace(LIVE, downstream_id="d-1", deleted_ms=7), Action.DEACTIVATE, "orphan"),
        # re-created after the deletion: a live user's accounts are never touched
        (DeletePolicy.DELETE, replace(LIVE, deleted_ms=4), Action.NONE, "orphan_not_known_deleted"),
        (DeletePolicy.DEACTIVATE, replace(LIVE, deleted_ms=4), Action.NONE, "orphan_not_known_deleted"),
        (DeletePolicy.IGNORE, replace(LIVE, deleted_ms=4), Action.NONE, "orphan_not_known_deleted"),
        # a live user
        (DeletePolicy.DELETE, LIVE, Action.NONE, "orphan_not_known_deleted"),
        (DeletePolicy.DEACTIVATE, LIVE, Action.NONE, "orphan_not_known_deleted"),
        (DeletePolicy.IGNORE, LIVE, Action.NONE, "orphan_not_known_deleted"),
        # a user the state never saw (another realm's, an account made by hand)
        (DeletePolicy.DELETE, UserState(), Action.NONE, "orphan_not_known_deleted"),
        (DeletePolicy.DEACTIVATE, UserState(), Action.NONE, "orphan_not_known_deleted"),
        (DeletePolicy.IGNORE, UserState(), Action.NONE, "orphan_not_known_deleted"),
    ],
)
def test_orphan_plan_by_policy_and_state(policy: DeletePolicy, state: UserState, action: Action, reason: str) -> None:
    """Accounts are acted on only for a user the state knows deleted last, and then as the policy says."""
    plan = orphan_plan(state, policy)
    assert (plan.action, plan.reason) == (action, reason)
    assert plan.state is state


def test_an_orphan_deactivation_changes_active_and_nothing_else() -> None:
    """The orphan may hold an older userName than the user's last: only active=false is written to it."""
    plan = orphan_plan(replace(LIVE, deleted_ms=7), DeletePolicy.DEACTIVATE)
    assert (plan.changed, plan.values) == ({"active": False}, {})


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
