"""Convergence as a property: whatever order one user's changes arrive in, with duplicates, the merged
state says what applying them in event-time order says (tests/convergence.py has the reference)."""

from __future__ import annotations

from functools import reduce

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.changes import UserChange
from service.domain.plan import DeletePolicy, desired
from service.domain.state import UserState, merge
from tests.convergence import arrivals_strategy, changes_strategy, reference
from tests.properties import examples


def fold(changes: list[UserChange]) -> UserState:
    return reduce(merge, changes, UserState())


@settings(max_examples=examples(3000), deadline=None)
@given(data=st.data(), changes=changes_strategy(), policy=st.sampled_from(list(DeletePolicy)))
def test_any_arrival_order_desires_what_event_time_order_gives(
    data: st.DataObject, changes: list[UserChange], policy: DeletePolicy
) -> None:
    """For every policy, the user the downstream should hold is the event-time-order answer, from any arrival order."""
    arrivals = data.draw(arrivals_strategy(changes))
    assert desired(fold(arrivals), policy) == reference(changes, policy)


@settings(max_examples=examples(1000), deadline=None)
@given(data=st.data(), changes=changes_strategy())
def test_merge_is_order_independent_and_idempotent(data: st.DataObject, changes: list[UserChange]) -> None:
    """Two arrival orders with duplicates end in the very same state (values, versions, deletion)."""
    first = fold(data.draw(arrivals_strategy(changes)))
    second = fold(data.draw(arrivals_strategy(changes)))
    assert (first.values, first.versions, first.deleted_ms) == (second.values, second.versions, second.deleted_ms)
    assert reduce(merge, changes, first) is first  # everything seen again: nothing new


@settings(max_examples=examples(500), deadline=None)
@given(data=st.data(), changes=changes_strategy())
def test_state_survives_the_changelog_at_any_point(data: st.DataObject, changes: list[UserChange]) -> None:
    """Restoring the state from its changelog record mid-way (a rebalance, a restart) changes nothing."""
    arrivals = data.draw(arrivals_strategy(changes))
    cut = data.draw(st.integers(0, len(arrivals)))
    restored = UserState.from_json(fold(arrivals[:cut]).to_json())
    resumed = reduce(merge, arrivals[cut:], restored)
    straight = fold(arrivals)
    assert (resumed.values, resumed.versions, resumed.deleted_ms) == (
        straight.values,
        straight.versions,
        straight.deleted_ms,
    )
