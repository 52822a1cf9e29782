"""The stage 1 producer's partitioner (service.kafka_partitioner)."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from service.kafka_partitioner import CachedPartitioner


def test_keyed_records_go_where_the_default_partitioner_puts_them() -> None:
    """Every key gets the default's partition, first time and remembered, for any partition count."""
    cached, default = CachedPartitioner(kept=50), DefaultPartitioner()
    keys = [f"realm/user-{i}".encode() for i in range(200)] + [b"", "réalm/ü".encode()]
    for partitions in ([0, 1, 2], list(range(6)), [0], [3, 5, 9]):
        for _ in range(2):
            for key in keys:
                assert cached(key, partitions, partitions) == default(key, partitions, partitions)


def test_the_kept_hashes_stay_bounded() -> None:
    """More keys than it keeps start the memory afresh instead of growing it."""
    cached = CachedPartitioner(kept=10)
    for i in range(25):
        cached(f"k{i}".encode(), [0, 1, 2], [0, 1, 2])
    assert len(cached._hashes) <= 10


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    """No key: a partition of those available, as the default chooses."""
    assert CachedPartitioner()(None, [0, 1, 2], [1]) == 1
