"""Memberships converge across both hops, as a property: users' creates, joins and leaves, and the
group's create, processed in any order the keyed pipeline allows (each key in its own order, keys
interleaved, the group's queue taken in batches of any size), end with the downstream group holding
exactly the members Keycloak's last word says, as the users' downstream ids."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.changes import UserChange
from service.domain.groups import GroupChange, GroupOptions, GroupState, plan_group
from service.domain.plan import DeletePolicy, membership_hops, plan_change
from service.domain.state import UserState
from service.scim.client import Downstream
from service.scim.executor import execute
from service.scim.group_executor import execute_group
from tests.properties import examples
from tests.scim.fake_downstream import FakeDownstream, run

DS = Downstream("acme", "http://scim.invalid/v2", "token")
USERS = ("u1", "u2", "u3")


@dataclass
class Pipeline:
    """The two hops of docs/decisions/0005, in memory: per-key queues, states, one downstream."""

    downstream: FakeDownstream = field(default_factory=FakeDownstream)
    users: dict[str, UserState] = field(default_factory=dict)
    group: GroupState = field(default_factory=GroupState)
    queues: dict[str, list[UserChange | GroupChange]] = field(default_factory=dict)

    def submit(self, change: UserChange | GroupChange) -> None:
        key = change.key
        self.queues.setdefault(key, []).append(change)

    def step(self, key: str, batch: int) -> None:
        queue = self.queues[key]
        if isinstance(queue[0], GroupChange):
            taken = [c for c in queue[:batch] if isinstance(c, GroupChange)]
            del queue[: len(taken)]
            plan = plan_group(self.group, taken, GroupOptions(), now_ms=100)
            self.group = run(execute_group(plan, "acme", "g", DS, self.downstream, 2)).state
            return
        change = queue.pop(0)
        assert isinstance(change, UserChange)
        state = self.users.get(change.user_id, UserState())
        outcome = run(execute(plan_change(state, change, DeletePolicy.IGNORE), change, DS, self.downstream))
        self.users[change.user_id], hops = membership_hops(outcome.state, "acme", change.user_id, 100)
        for hop in hops:
            self.submit(hop)


@st.composite
def histories(draw: st.DrawFn) -> list[UserChange | GroupChange]:
    """Per user a create and some joins / leaves of group g; the group's create; times from a small range."""
    changes: list[UserChange | GroupChange] = [
        GroupChange("acme", "g", "upsert", draw(st.integers(0, 9)), name="staff", parent_known=True)
    ]
    for uid in USERS:
        changes.append(
            UserChange(
                "acme",
                uid,
                "upsert",
                draw(st.integers(0, 9)),
                "USER_CREATE",
                f"c-{uid}",
                {"userName": uid, "active": True},
            )
        )
        for n in range(draw(st.integers(0, 3))):
            changes.append(
                UserChange(
                    "acme",
                    uid,
                    "membership",
                    draw(st.integers(0, 9)),
                    "GROUP_MEMBERSHIP",
                    f"m-{uid}-{n}",
                    group_id="g",
                    member=draw(st.booleans()),
                )
            )
    return changes


def wanted(changes: list[UserChange | GroupChange]) -> set[str]:
    """Users whose newest membership of g is a join (at equal times a leave wins)."""
    members = set()
    for uid in USERS:
        mine = [c for c in changes if isinstance(c, UserChange) and c.user_id == uid and c.op == "membership"]
        if mine:
            newest = max(c.time_ms for c in mine)
            if all(c.member for c in mine if c.time_ms == newest):
                members.add(uid)
    return members


@settings(max_examples=examples(800), deadline=None)
@given(data=st.data(), changes=histories())
def test_the_group_ends_with_keycloaks_members_in_any_order(
    data: st.DataObject, changes: list[UserChange | GroupChange]
) -> None:
    pipeline = Pipeline()
    for change in data.draw(st.permutations(changes)):
        pipeline.submit(change)
    while any(pipeline.queues.values()):
        key = data.draw(st.sampled_from(sorted(k for k, q in pipeline.queues.items() if q)))
        pipeline.step(key, batch=data.draw(st.integers(1, 5)))
    groups = pipeline.downstream.groups_owned_by("g")
    assert len(groups) == 1
    ids = {uid: pipeline.users[uid].downstream_id for uid in USERS}
    expected = {ids[uid] for uid in wanted(changes)}
    assert set(pipeline.downstream.members_of(groups[0]["id"])) == expected
    assert len(pipeline.downstream.members_of(groups[0]["id"])) == len(expected)  # each member once
