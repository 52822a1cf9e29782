"""A create that lands late, as a property over the in-memory downstream (unique userNames, as
scim2-server): the first POST of a user times out on our side and is delivered after any of the user's
later changes. Whenever that leaves an account, reconciliation's orphan check removes it exactly when
the user ends deleted under policy `delete` (deactivates it under `deactivate`), and never touches an
account carrying an id nobody sent."""

from __future__ import annotations

import contextlib
from functools import reduce
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.changes import UserChange
from service.domain.plan import DeletePolicy, plan_change
from service.domain.stamps import ChangeSource
from service.domain.state import UserState, merge
from service.errors import ScimConflict, ScimError, ScimTransient
from service.scim.client import Downstream
from service.scim.executor import execute
from tests.convergence import UID, arrivals_strategy, changes_strategy, reference
from tests.properties import examples
from tests.scim.fake_downstream import FakeDownstream, run

DS = Downstream("acme", "http://scim.invalid/v2", "token-1")
STRANGER = "another-realms-user"


class FirstPostTimesOut(FakeDownstream):
    """The first POST never reaches the downstream in time: the client times out; `held` keeps it."""

    held: dict[str, Any] | None = None
    posts: int = 0

    async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        self.posts += 1
        if self.posts == 1:
            self.held = body
            raise ScimTransient(None, "POST", "Users", detail="no response TimeoutError")
        return await super().create_user(ds, body)

    async def land(self) -> None:
        """The held POST reaches the downstream now (a 409 if the userName is held)."""
        if self.held is not None:
            body, self.held = self.held, None
            with contextlib.suppress(ScimConflict):
                await super().create_user(DS, body)


def orphan(user_id: str) -> UserChange:
    return UserChange("acme", user_id, "upsert", 99, "RECONCILE", source=ChangeSource.RECONCILE, orphan=True)


async def apply(downstream: FakeDownstream, state: UserState, change: UserChange, policy: DeletePolicy) -> UserState:
    """As the applier: plan, execute, retry a transient failure with the same state; a set-aside keeps it."""
    for _ in range(3):
        try:
            return (await execute(plan_change(state, change, policy), change, DS, downstream)).state
        except ScimTransient:
            continue
        except ScimError:
            return merge(state, change)
    return merge(state, change)


@settings(max_examples=examples(1500), deadline=None)
@given(data=st.data(), changes=changes_strategy(), policy=st.sampled_from(list(DeletePolicy)))
def test_a_late_create_is_left_only_where_the_user_is_not_known_deleted(
    data: st.DataObject, changes: list[UserChange], policy: DeletePolicy
) -> None:
    """Any arrival order, the late POST landing between any two changes (or after all): after the orphan
    checks, a user deleted under policy `delete` has no account, under `deactivate` no active one, the
    stranger's account is untouched, and the state's deletion is what the changes say."""
    arrivals = data.draw(arrivals_strategy(changes))
    lands_after = data.draw(st.integers(0, len(arrivals)))
    downstream = FirstPostTimesOut()
    stranger = downstream.add("stranger", STRANGER)

    async def scenario() -> UserState:
        state = UserState()
        for n, change in enumerate(arrivals):
            if n == lands_after:
                await downstream.land()
            state = await apply(downstream, state, change, policy)
        await downstream.land()
        before = list(downstream.writes)
        await apply(downstream, UserState(), orphan(STRANGER), policy)
        assert downstream.writes == before  # an id the state never saw: nothing looked at, nothing written
        return await apply(downstream, state, orphan(UID), policy)

    state = run(scenario())
    assert stranger in downstream.accounts
    if policy is DeletePolicy.DELETE and reference(changes, policy) is None:
        assert downstream.owned_by(UID) == []
    if policy is DeletePolicy.DEACTIVATE and reference(changes, DeletePolicy.DELETE) is None:
        assert [account for account in downstream.owned_by(UID) if account.get("active") is not False] == []
    assert state.deleted_ms == reduce(merge, arrivals, UserState()).deleted_ms


def test_the_create_that_lands_after_the_deletion_leaves_an_account_until_the_orphan_check() -> None:
    """The sequence seen on scim2-server: POST #1 times out, the retry creates, the deletion deletes, POST
    #1 lands and creates; the orphan check deletes that account."""
    create = UserChange("acme", UID, "upsert", 1, "USER_CREATE", "e-1", {"userName": "jdoe", "active": True})
    deletion = UserChange("acme", UID, "delete", 2, "USER_DELETE", "e-2")
    downstream = FirstPostTimesOut()

    async def scenario() -> list[dict[str, Any]]:
        state = await apply(downstream, UserState(), create, DeletePolicy.DELETE)
        state = await apply(downstream, state, deletion, DeletePolicy.DELETE)
        await downstream.land()
        left = downstream.owned_by(UID)
        await apply(downstream, state, orphan(UID), DeletePolicy.DELETE)
        return left

    left = run(scenario())
    assert len(left) == 1 and downstream.posts == 2
    assert downstream.owned_by(UID) == []


def test_under_deactivate_the_create_that_lands_late_is_deactivated_by_the_orphan_check() -> None:
    """POST #1 times out, the retry creates, a rename frees the first userName, the deletion deactivates
    the linked account, POST #1 lands and creates a second, active account; the orphan check deactivates
    it and leaves the linked one as it is."""
    create = UserChange("acme", UID, "upsert", 1, "USER_CREATE", "e-1", {"userName": "jdoe", "active": True})
    rename = UserChange("acme", UID, "upsert", 2, "USER_UPDATE", "e-2", {"userName": "jane.doe"})
    deletion = UserChange("acme", UID, "delete", 3, "USER_DELETE", "e-3")
    downstream = FirstPostTimesOut()

    async def scenario() -> tuple[UserState, list[dict[str, Any]], int]:
        state = UserState()
        for change in (create, rename, deletion):
            state = await apply(downstream, state, change, DeletePolicy.DEACTIVATE)
        await downstream.land()
        left = [dict(account) for account in downstream.owned_by(UID)]
        written = len(downstream.writes)
        return await apply(downstream, state, orphan(UID), DeletePolicy.DEACTIVATE), left, written

    state, left, written = run(scenario())
    assert sorted((a["userName"], a["active"]) for a in left) == [("jane.doe", False), ("jdoe", True)]
    assert sorted((a["userName"], a["active"]) for a in downstream.owned_by(UID)) == [
        ("jane.doe", False),
        ("jdoe", False),
    ]
    late = next(a["id"] for a in left if a["userName"] == "jdoe")
    assert downstream.writes[written:] == [("PATCH", late)]
    assert state.downstream_id != late
