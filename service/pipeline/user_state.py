"""Per-user and per-group state of the partitions this replica owns, backed by a compacted changelog topic.

The changelog is co-partitioned with the changes topic by construction: a state record is written to
the partition number of the change it results from. On assignment the owned partitions are read back
from the beginning, so per-user versions and downstream ids survive restarts and rebalances.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from service.domain.groups import GroupState
from service.domain.state import UserState
from service.settings import Settings

State = UserState | GroupState


def decode_state(raw: bytes) -> State:
    """A changelog record: a group's state says so (`"kind": "group"`), a user's does not."""
    return GroupState.from_json(raw) if raw.startswith(b'{"kind":"group"') else UserState.from_json(raw)


class UserStateStore:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self._producer = producer
        self._states: dict[str, State] = {}
        self._partition_of: dict[str, int] = {}

    def get(self, key: str) -> UserState:
        state = self._states.get(key)
        return state if isinstance(state, UserState) else UserState()

    def get_group(self, key: str) -> GroupState:
        state = self._states.get(key)
        return state if isinstance(state, GroupState) else GroupState()

    async def save(self, key: str, partition: int, state: State) -> None:
        self._states[key] = state
        self._partition_of[key] = partition
        await self._producer.send_and_wait(
            self._settings.user_state_topic, key=key.encode(), value=state.to_json(), partition=partition
        )

    async def restore(self, partitions: set[int]) -> int:
        """Read the changelog of `partitions` to its end; returns how many users were loaded."""
        if not partitions:
            return 0
        topic = self._settings.user_state_topic
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer = AIOKafkaConsumer(**self._settings.kafka_client_options(), enable_auto_commit=False)
        await consumer.start()
        loaded = 0
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if end[tp] > 0}
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        if record.key is None:
                            continue
                        key = record.key.decode()
                        if record.value is None:
                            self._states.pop(key, None)
                        else:
                            self._states[key] = decode_state(record.value)
                            self._partition_of[key] = tp.partition
                            loaded += 1
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return loaded

    def forget(self, partitions: set[int]) -> None:
        for key in [k for k, p in self._partition_of.items() if p in partitions]:
            del self._partition_of[key]
            self._states.pop(key, None)
