"""The consumer groups' assignor (pure): members join, leave and return; partitions move only where
balance needs them, and each consumer of a process remembers its own assignment.

A rebalance is played as the group protocol plays it: every member reports `metadata()` (its last
assignment in the user data), the leader's assignor `assign()`s, every member gets `on_assignment()`."""

from __future__ import annotations

from functools import partial
from typing import Any, cast

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from service.kafka_assignor import partition_assignors, sticky_assignor

CHANGES = "changes"
Owners = dict[int, str]  # partition -> member


class Cluster:
    """The two calls an assignor makes of aiokafka's ClusterMetadata."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self._partitions = partitions

    def topics(self) -> set[str]:
        return set(self._partitions)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self._partitions.get(topic)
        return None if count is None else set(range(count))


class Group:
    """Members of one consumer group, each with its own assignor, as its own process would have."""

    def __init__(self, partitions: int, assignor: Any = None) -> None:
        self.cluster = cast(ClusterMetadata, Cluster({CHANGES: partitions}))
        self.members: dict[str, Any] = {}
        self._new = assignor or sticky_assignor

    def join(self, *names: str) -> Owners:
        for name in names:
            self.members[name] = self._new()
        return self.rebalance()

    def leave(self, name: str) -> Owners:
        del self.members[name]
        return self.rebalance()

    def rebalance(self) -> Owners:
        metadata = {name: a.metadata([CHANGES]) for name, a in self.members.items()}
        leader = next(iter(self.members.values()))
        assignment = leader.assign(self.cluster, metadata)
        owners: Owners = {}
        for name, a in self.members.items():
            a.on_assignment(assignment[name])
            for topic, partitions in assignment[name].assignment:
                assert topic == CHANGES
                owners.update(dict.fromkeys(partitions, name))
        return owners


def counts(owners: Owners) -> dict[str, int]:
    result: dict[str, int] = {}
    for member in owners.values():
        result[member] = result.get(member, 0) + 1
    return result


def balanced(owners: Owners, members: int, partitions: int) -> bool:
    sizes = counts(owners)
    return len(owners) == partitions and len(sizes) == members and max(sizes.values()) - min(sizes.values()) <= 1


def moved(before: Owners, after: Owners) -> int:
    """Partitions taken from a member that is still there (a leaver's partitions must move anyway)."""
    return sum(1 for p, member in before.items() if member in after.values() and after[p] != member)


def test_a_fresh_group_gets_partitions_balanced_within_one() -> None:
    """7 partitions over 3 new members -> 3, 2, 2."""
    owners = Group(7).join("a", "b", "c")
    assert balanced(owners, 3, 7)
    assert sorted(counts(owners).values()) == [2, 2, 3]


def test_a_joining_member_takes_only_its_share() -> None:
    """12 partitions over 3, a 4th joins -> it gets 3, one from each; nothing else moves."""
    group = Group(12)
    before = group.join("a", "b", "c")
    after = group.join("d")
    assert balanced(after, 4, 12)
    assert moved(before, after) == 3 == counts(after)["d"]


def test_a_leaving_member_s_partitions_go_to_the_others_and_nothing_else_moves() -> None:
    """12 over 4, one leaves -> its 3 are shared out, the others keep every partition they had."""
    group = Group(12)
    before = group.join("a", "b", "c", "d")
    after = group.leave("b")
    assert balanced(after, 3, 12)
    assert moved(before, after) == 0


def test_a_returning_member_takes_back_a_share_and_no_more() -> None:
    """A member leaves and comes back with its old assignment in its user data -> balanced again, and
    only its share moves (the others report the partitions they hold now)."""
    group = Group(6)
    group.join("a", "b", "c")
    returning = group.members["c"]
    group.leave("c")
    before = group.rebalance()
    group.members["c"] = returning
    after = group.rebalance()
    assert balanced(after, 3, 6)
    assert moved(before, after) == counts(after)["c"] == 2


def test_a_rolling_restart_moves_a_fraction_of_what_round_robin_moves() -> None:
    """3 members over 6 partitions replaced one by one (leave, then a new name joins), as a rollout
    does: sticky moves only the leaver's and the newcomer's share; round robin re-deals more."""

    def rollout(assignor: Any) -> int:
        group = Group(6, assignor)
        owners = group.join("a", "b", "c")
        total = 0
        for old, new in (("a", "a2"), ("b", "b2"), ("c", "c2")):
            for step in (partial(group.leave, old), partial(group.join, new)):
                after = step()
                assert balanced(after, len(group.members), 6)
                total += moved(owners, after)
                owners = after
        return total

    sticky = rollout(sticky_assignor)
    assert sticky == 6  # each newcomer takes 2 partitions from those who stayed
    assert rollout(lambda: RoundRobinPartitionAssignor) > sticky


def test_each_consumer_of_a_process_remembers_its_own_assignment() -> None:
    """The rekey and apply consumers of one process, each in its group: each one's user data reports its
    own partitions (aiokafka keeps them on the class, so both would report whichever came last)."""
    reported = {}
    for topic, partitions in (("source", 2), (CHANGES, 3)):
        group = Group(partitions)
        group.cluster = cast(ClusterMetadata, Cluster({topic: partitions}))
        group.members["p"] = assignor = sticky_assignor()
        metadata = {"p": assignor.metadata([topic])}
        assignor.on_assignment(assignor.assign(group.cluster, metadata)["p"])
        reported[topic] = assignor
    for topic, assignor in reported.items():
        decoded = assignor.parse_member_metadata(assignor.metadata([topic]))
        assert {tp.topic for tp in decoded.partitions} == {topic}


def test_each_consumer_gets_one_protocol_and_a_sticky_class_of_its_own() -> None:
    """'sticky' -> a fresh sticky class per consumer, offered alone; 'roundrobin' -> aiokafka's round robin."""
    first, second = partition_assignors("sticky"), partition_assignors("sticky")
    # aiokafka declares `name` as an abstract instance property, but every assignor sets it on the class
    # and the coordinator reads it from the class, as here.
    assert [cast(str, a.name) for a in first] == ["sticky"]
    assert first[0] is not second[0]
    assert partition_assignors("roundrobin") == (RoundRobinPartitionAssignor,)
