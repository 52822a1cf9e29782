"""Which partition assignor the two consumer groups use (OUTBOUND_SCIM_KAFKA_PARTITION_ASSIGNOR).

Round robin (aiokafka's default, and ours) deals every partition anew at each rebalance. aiokafka's
sticky assignor (KIP-54) keeps each member's partitions where they were and moves only what balance
needs. aiokafka runs the eager protocol, so either way every rebalance revokes all partitions of every
member, which drains, commits and restores their state again: where the partitions land changes nothing
of that cost (docs/decisions/0009-partition-assignor.md). Two things about the sticky assignor:

- aiokafka keeps the member's last assignment on the class, so every consumer of a process would share
  one (the rekey consumer's source partitions reported as the apply consumer's): `sticky_assignor()`
  makes a class per consumer;
- it is offered alone. A member that offers two protocols re-joined with new metadata on every
  assignment and kept its group rebalancing (seen on Kafka 4.1 with static members); the price is that
  a group only admits members that offer the same protocol, so changing the setting needs every
  replica stopped first.
"""

from __future__ import annotations

from typing import Literal

from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

AssignorName = Literal["roundrobin", "sticky"]


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
        return (sticky_assignor(),)
    return (RoundRobinPartitionAssignor,)
