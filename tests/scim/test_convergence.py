"""Convergence and identity safety of plan + executor, as properties, against an in-memory downstream.

Each arrival is planned from the stored state and executed; the state is saved when the executor
succeeds (as the apply stage does). Whatever the arrival order, the downstream ends holding what
event-time order gives, and no account owned by another externalId is ever written.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.changes import UserChange
from service.domain.drift import downstream_attributes
from service.domain.plan import DeletePolicy, plan_change
from service.domain.state import UserState
from service.errors import ScimConflict
from service.scim.client import Downstream
from service.scim.executor import execute
from tests.convergence import POOLS, UID, arrivals_strategy, changes_strategy, downstream_view, reference
from tests.properties import examples
from tests.scim.fake_downstream import FakeDownstream, run

DS = Downstream("acme", "http://scim.invalid/v2", "token")


def apply_all(downstream: FakeDownstream, arrivals: list[UserChange], policy: DeletePolicy) -> list[str]:
    """Plan and execute every arrival; returns the reasons of changes that were refused (conflicts)."""
    state, refused = UserState(), []
    for change in arrivals:
        plan = plan_change(state, change, policy)
        try:
            state = run(execute(plan, change, DS, downstream)).state
        except ScimConflict as exc:  # dead-lettered by the apply stage; the state is not saved
            refused.append(type(exc).__name__)
    return refused


@settings(max_examples=examples(1500), deadline=None)
@given(
    data=st.data(), changes=changes_strategy(), policy=st.sampled_from(list(DeletePolicy)), ignore_filters=st.booleans()
)
def test_the_downstream_ends_as_event_time_order_says(
    data: st.DataObject, changes: list[UserChange], policy: DeletePolicy, ignore_filters: bool
) -> None:
    """From an empty downstream, any arrival order ends with exactly the event-time-order user (or none)."""
    downstream = FakeDownstream(ignore_filters=ignore_filters)
    downstream.add("someone.else", "kc-someone-else")  # a bystander that must never be touched
    bystander = copy.deepcopy(downstream.accounts)
    assert apply_all(downstream, data.draw(arrivals_strategy(changes)), policy) == []
    expected = downstream_view(reference(changes, policy))
    ours = downstream.owned_by(UID)
    assert [downstream_attributes(r) for r in ours] == ([] if expected is None else [_compared(expected)])
    assert {k: v for k, v in downstream.accounts.items() if k in bystander} == bystander


@st.composite
def look_alikes(draw: st.DrawFn) -> list[tuple[str, str | None]]:
    """Accounts already downstream: same userName as ours in another case, owned by others or by nobody."""
    names = POOLS["userName"] + ["JDOE", "Jane.Doe"]
    owners = [None, "", "kc-leaver", "kc-other-realm", UID]
    return draw(
        st.lists(
            st.tuples(st.sampled_from(names), st.sampled_from(owners)), max_size=4, unique_by=lambda a: a[0].casefold()
        )
    )


@settings(max_examples=examples(1000), deadline=None)
@given(
    data=st.data(),
    changes=changes_strategy(),
    policy=st.sampled_from(list(DeletePolicy)),
    existing=look_alikes(),
    ignore_filters=st.booleans(),
)
def test_accounts_of_other_owners_are_never_written(
    data: st.DataObject,
    changes: list[UserChange],
    policy: DeletePolicy,
    existing: list[tuple[str, str | None]],
    ignore_filters: bool,
) -> None:
    """Whatever accounts exist downstream and however the server filters, an account owned by another
    externalId is never PATCHed or DELETEd, and our user never ends with two accounts."""
    downstream = FakeDownstream(ignore_filters=ignore_filters)
    foreign = {downstream.add(name, owner) for name, owner in existing if owner not in (None, "", UID)}
    apply_all(downstream, data.draw(arrivals_strategy(changes)), policy)
    assert [w for w in downstream.writes if w[1] in foreign] == []
    assert len(downstream.owned_by(UID)) <= 1


def _compared(view: dict[str, Any]) -> dict[str, Any]:
    return {k: view[k] for k in ("userName", "givenName", "familyName", "email", "active")}
