"""The partition of a keyed record: aiokafka's default (the Java client's murmur2 of the key), each key's
hash remembered.

aiokafka computes murmur2 in pure Python for every keyed send: in stage 1, which sends one keyed record
per event, it was an eighth of the CPU. A user's key recurs with each of its events, so the hash is
kept per key (bounded); the partition that follows from it is exactly the default's, so records of a
key land where the Java client, our other producers and the co-partitioned state topic expect them.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.partitioner import DefaultPartitioner, murmur2

KEPT_KEYS = 100_000


class CachedPartitioner:
    """A `partitioner` for AIOKafkaProducer: DefaultPartitioner's choice, with murmur2 of each key kept."""

    def __init__(self, kept: int = KEPT_KEYS) -> None:
        self._kept = kept
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is None:
            chosen: int = self._default(key, all_partitions, available)  # a random one
            return chosen
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._kept:
                self._hashes.clear()  # a new start beats bookkeeping: hashing again is all it costs
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]
