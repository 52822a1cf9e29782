"""Send a consumer back to its group's committed offsets (earliest where nothing was committed yet).

Used when records were fetched but must not be used (a rebalance came in between, or a transaction
aborted). aiokafka's own `seek_to_committed` leaves a partition without a commit where it is, which
would skip those records.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition


async def rewind_to_committed(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> None:
    for tp in set(partitions) & consumer.assignment():
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)
