"""Which partition assignors the two consumer groups offer, in order of preference.

aiokafka's default, round robin, deals every partition anew at each rebalance: in a rolling restart
most partitions change hands at every step. Its sticky assignor (KIP-54) keeps each member's partitions
where they were and moves only what balance needs. Two things make it unfit to use as it comes:

- it keeps the member's last assignment on the class, so every consumer of a process shares one: the
  rekey consumer's source partitions would be reported as the apply consumer's. `sticky_assignor()`
  makes a subclass per consumer, each with its own memory;
- a group can only pick a protocol every member offers: replicas of a version that offered round robin
  alone would refuse new members that offer sticky alone. Round robin is offered second, so such a group
  keeps it until the last old replica is gone, then takes sticky at the next rebalance.
"""

from __future__ import annotations

from typing import Literal

from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

AssignorName = Literal["sticky", "roundrobin"]


def sticky_assignor() -> type[StickyPartitionAssignor]:
    """aiokafka's sticky assignor with state of its own (it keeps the last assignment on the class)."""
    return type(
        "ConsumerStickyAssignor",
        (StickyPartitionAssignor,),
        {"member_assignment": None, "generation": StickyPartitionAssignor.DEFAULT_GENERATION_ID},
    )


def partition_assignors(name: AssignorName) -> tuple[type[AbstractPartitionAssignor], ...]:
    """The `partition_assignment_strategy` of one consumer; call once per consumer."""
    if name == "sticky":
        return (sticky_assignor(), RoundRobinPartitionAssignor)
    return (RoundRobinPartitionAssignor,)
