"""Convergence through crashes, as a property: users' creates, updates, disables, enables, joins and
leaves, and their group's create, flow through both appliers (users' queued runs folded as the apply
stage folds them, the group's queue taken in batches of any size) on one partition, and a replica is
killed at arbitrary points, notably between "the downstream write happened" and "the state was saved".

What a kill does, as Kafka and the state changelog would: the downstream keeps every write; the states
saved since the last flush survive only as a prefix (the changelog is written in order); the records are
read again from the last committed offset; hops sent before the kill stay in the log. The downstream is
strict: a removal of a non-member is a 400 noTarget (an add of a member is harmless), and it may omit
members when a group is read. Whatever the kills, the downstream ends holding Keycloak's last word:
each user's attributes and `active`, and the group's members.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.changes import UserChange
from service.domain.drift import downstream_attributes
from service.domain.groups import GroupChange, GroupState
from service.domain.plan import DeletePolicy
from service.domain.state import UserState
from service.pipeline.applier import Applied, Applier, GroupApplied, GroupApplier, Verdict, foldable
from service.retry import RetryPolicy
from service.tenants.models import Tenant
from tests.pipeline.test_applier import Clock, Tenants
from tests.properties import examples
from tests.scim.fake_downstream import FakeDownstream, run

TENANT = Tenant(
    "acme",
    "https://scim.example.com/v2",
    "token",
    DeletePolicy.IGNORE,
    realm_id="id-acme",
    groups=True,
    group_members_per_request=2,
)
USERS = ("u1", "u2", "u3")
GROUP = "g"
MANY_OR_FEW = st.sampled_from([50, 1, 2, 3, 5])  # records read, or taken from a key's queue, at once

Change = UserChange | GroupChange


@dataclass
class Changelog:
    """The state store: what survives a kill (`durable`), and the saves since the last flush."""

    durable: dict[str, UserState | GroupState] = field(default_factory=dict)
    unflushed: list[tuple[str, UserState | GroupState]] = field(default_factory=list)

    def _latest(self, key: str) -> UserState | GroupState | None:
        for saved_key, state in reversed(self.unflushed):
            if saved_key == key:
                return state
        return self.durable.get(key)

    def get(self, key: str) -> UserState:
        state = self._latest(key)
        return state if isinstance(state, UserState) else UserState()

    def get_group(self, key: str) -> GroupState:
        state = self._latest(key)
        return state if isinstance(state, GroupState) else GroupState()

    def save(self, key: str, state: UserState | GroupState) -> None:
        self.unflushed.append((key, state))

    def flush(self) -> None:
        self.durable.update(self.unflushed)
        self.unflushed.clear()

    def lose_all_but(self, survivors: int) -> None:
        self.durable.update(self.unflushed[:survivors])
        self.unflushed.clear()


@dataclass
class Partition:
    """One partition of the changes topic and its consumer: reads, per-key queues, finished offsets."""

    log: list[Change]
    position: int = 0
    committed: int = 0
    queues: dict[str, list[int]] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)

    def read(self, count: int) -> None:
        for offset in range(self.position, min(self.position + count, len(self.log))):
            self.queues.setdefault(self.log[offset].key, []).append(offset)
        self.position = min(self.position + count, len(self.log))

    def committable(self) -> int:
        offset = self.committed
        while offset in self.finished:
            offset += 1
        return offset

    def rewind(self) -> None:
        """A successor: it reads again from the committed offset; nothing above it counts as finished."""
        self.position = self.committed
        self.queues.clear()
        self.finished = {o for o in self.finished if o < self.committed}

    @property
    def done(self) -> bool:
        return self.position == len(self.log) and not any(self.queues.values())


class Killed(Exception):
    """The replica was killed after the downstream write, before the state was saved."""


@dataclass
class Replica:
    downstream: FakeDownstream
    states: Changelog
    partition: Partition

    def appliers(self) -> tuple[Applier, GroupApplier]:
        clock = Clock()
        common: dict[str, Any] = {"backoff": RetryPolicy(1, 1.0, 8.0), "clock": clock, "sleep": clock.sleep}
        users = Applier(Tenants(tenant=TENANT), self.states, self.downstream, wall_clock=lambda: 1.0, **common)
        group = GroupApplier(Tenants(tenant=TENANT), self.states, self.downstream, wall_clock=lambda: 1.0, **common)
        return users, group

    def process(self, key: str, count: int, kill: bool, hops_out: bool) -> None:
        """Apply up to `count` of the key's queued records as the apply stage does; `kill`: the replica
        dies right after the last downstream write (its hops sent first if `hops_out`), saving nothing of it."""
        queue = self.partition.queues[key]
        taken, self.partition.queues[key] = queue[:count], queue[count:]
        users, group = self.appliers()
        changes = [self.partition.log[o] for o in taken]
        if isinstance(changes[0], GroupChange):
            verdict = run(group.apply([c for c in changes if isinstance(c, GroupChange)]))
            self._act(taken, [verdict] * len(taken), kill, hops_out)
            return
        runs = _runs(taken, changes)
        for n, (offsets, run_changes) in enumerate(runs):
            if len(run_changes) == 1:
                verdicts = [run(users.apply(run_changes[0]))]
            else:
                verdicts = run(users.apply_queued(run_changes))
            self._act(offsets, verdicts, kill and n == len(runs) - 1, hops_out)

    def _act(self, offsets: list[int], verdicts: list[Verdict], kill: bool, hops_out: bool) -> None:
        """What ApplyStage does with verdicts: hops out, then the state saved, then the records finished."""
        for verdict in verdicts:
            assert isinstance(verdict, Applied | GroupApplied), f"set aside or skipped: {verdict}"
        if kill:
            if hops_out:
                for verdict in verdicts:
                    assert isinstance(verdict, Applied | GroupApplied)
                    self.partition.log.extend(verdict.hops)
            raise Killed
        for offset, verdict in zip(offsets, verdicts, strict=True):
            assert isinstance(verdict, Applied | GroupApplied)
            self.partition.log.extend(verdict.hops)
            if isinstance(verdict, GroupApplied):
                if offset == offsets[-1]:
                    self.states.save(verdict.change.key, verdict.state)
            else:
                self.states.save(verdict.change.key, verdict.state)
            self.partition.finished.add(offset)

    def commit(self) -> None:
        self.states.flush()
        self.partition.committed = self.partition.committable()


def _runs(offsets: list[int], changes: list[Change]) -> list[tuple[list[int], list[UserChange]]]:
    """A user's queued changes cut as ApplyStage._runs cuts them: foldable ones together, others alone."""
    runs: list[tuple[list[int], list[UserChange]]] = []
    joinable = False
    for offset, change in zip(offsets, changes, strict=True):
        assert isinstance(change, UserChange)
        fits = foldable(change, authoritative=False)
        if fits and joinable:
            runs[-1][0].append(offset)
            runs[-1][1].append(change)
        else:
            runs.append(([offset], [change]))
        joinable = fits
    return runs


@st.composite
def histories(draw: st.DrawFn) -> list[Change]:
    """Keycloak's events in time order: each user's create before its other events, the group's create
    anywhere; names, disables, enables, joins and leaves of the group interleaved across users."""
    kinds = st.sampled_from(["name", "disable", "enable", "join", "leave"])
    steps = draw(st.lists(st.tuples(st.sampled_from(USERS), kinds), max_size=14))
    steps += [(uid, "") for uid in USERS]  # users with no other event are still created
    group_at = draw(st.integers(0, len(steps)))
    events: list[Change] = []
    created: set[str] = set()

    def event(kind: str, uid: str = "") -> None:
        t = len(events) + 1
        if kind == "group":
            events.append(
                GroupChange("acme", GROUP, "upsert", t, "GROUP_CREATE", f"e-{t}", name="staff", parent_known=True)
            )
        elif kind in ("join", "leave"):
            events.append(
                UserChange(
                    "acme", uid, "membership", t, "GROUP_MEMBERSHIP", f"e-{t}", group_id=GROUP, member=kind == "join"
                )
            )
        else:
            fixed: dict[str, dict[str, Any]] = {
                "create": {"userName": uid, "givenName": "A", "active": True},
                "disable": {"active": False},
                "enable": {"active": True},
            }
            attributes = fixed.get(kind) or {"givenName": draw(st.sampled_from(["A", "B"]))}
            events.append(UserChange("acme", uid, "upsert", t, "USER_UPDATE", f"e-{t}", attributes))

    for n, (uid, kind) in enumerate(steps):
        if n == group_at:
            event("group")
        if uid not in created:
            created.add(uid)
            event("create", uid)
        if kind:
            event(kind, uid)
    if group_at == len(steps):
        event("group")
    return events


def keycloak_says(events: list[Change]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Each user's last attributes, and the users whose last membership word is a join."""
    users: dict[str, dict[str, Any]] = {}
    members: set[str] = set()
    for event in events:
        if not isinstance(event, UserChange):
            continue
        if event.op == "membership":
            (members.add if event.member else members.discard)(event.user_id)
        else:
            users.setdefault(event.user_id, {}).update(event.attributes)
    return users, members


@settings(max_examples=examples(1500), deadline=None, suppress_health_check=[HealthCheck.large_base_example])
@given(data=st.data(), events=histories(), omit_members=st.booleans())
def test_users_and_the_group_end_as_keycloak_says_whatever_the_kills(
    data: st.DataObject, events: list[Change], omit_members: bool
) -> None:
    downstream = FakeDownstream(strict_removals=True, omit_members=omit_members)
    replica = Replica(downstream, Changelog(), Partition(list(events)))
    partition = replica.partition
    kills = 0
    while not partition.done:
        ready = sorted(k for k, q in partition.queues.items() if q)
        step = data.draw(st.sampled_from(["process", "process", "read", "commit", "kill"] if ready else ["read"]))
        if step == "read" or (not ready and partition.position < len(partition.log)):
            partition.read(data.draw(MANY_OR_FEW))
        elif step == "commit":
            replica.commit()
        elif step == "kill" and kills < 4:
            kills += 1
            replica.states.lose_all_but(data.draw(st.integers(0, len(replica.states.unflushed))))
            partition.rewind()
        elif ready:
            key = data.draw(st.sampled_from(ready))
            kill = kills < 4 and data.draw(st.integers(0, 3)) == 3
            try:
                replica.process(key, data.draw(MANY_OR_FEW), kill, data.draw(st.booleans()))
            except Killed:
                kills += 1
                replica.states.lose_all_but(data.draw(st.integers(0, len(replica.states.unflushed))))
                partition.rewind()
    users, members = keycloak_says(events)
    ids = {}
    for uid, attributes in users.items():
        [account] = downstream.owned_by(uid)
        ids[uid] = account["id"]
        held = downstream_attributes(account)
        assert {a: held[a] for a in attributes} == attributes, uid
    [group] = downstream.groups_owned_by(GROUP)
    assert sorted(downstream.members_of(group["id"])) == sorted(ids[u] for u in members)
