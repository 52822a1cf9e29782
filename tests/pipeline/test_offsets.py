"""PartitionOffsets: records finish out of order; only offsets below the first unfinished one are committable."""

from __future__ import annotations

import random

from service.pipeline.offsets import PartitionOffsets


def tracker(*offsets: int) -> PartitionOffsets:
    t = PartitionOffsets()
    for offset in offsets:
        assert t.started(offset)
    return t


def test_nothing_committable_before_anything_finishes() -> None:
    """A fresh or all-running partition has nothing to commit."""
    assert PartitionOffsets().committable is None
    assert tracker(0, 1, 2).committable is None


def test_in_order_completion_advances_the_watermark() -> None:
    """Each finished head record moves the committable offset to the next one."""
    t = tracker(0, 1, 2)
    t.finished(0)
    assert t.committable == 1
    t.finished(1)
    assert t.committable == 2
    t.finished(2)
    assert t.committable == 3
    assert t.unfinished == 0


def test_out_of_order_completion_waits_for_the_first_unfinished() -> None:
    """Later records finishing first do not move the watermark past an unfinished one."""
    t = tracker(10, 11, 12, 13)
    t.finished(12)
    t.finished(13)
    assert t.committable is None
    assert t.unfinished == 4
    t.finished(11)
    assert t.committable is None
    t.finished(10)
    assert t.committable == 14
    assert t.unfinished == 0


def test_watermark_stops_at_a_gap_in_completion() -> None:
    """With 0, 1 and 3 done and 2 running, the committable offset is 2."""
    t = tracker(0, 1, 2, 3)
    for offset in (3, 0, 1):
        t.finished(offset)
    assert t.committable == 2
    assert t.unfinished == 2


def test_offset_gaps_from_compaction_or_transaction_markers() -> None:
    """Offsets need not be contiguous: the watermark is the last finished one plus one."""
    t = tracker(5, 8, 20)
    t.finished(8)
    t.finished(5)
    assert t.committable == 9
    t.finished(20)
    assert t.committable == 21


def test_duplicate_start_is_ignored() -> None:
    """A record handed out twice (a re-fetch after seek) is refused the second time."""
    t = tracker(0, 1)
    assert not t.started(1)
    assert not t.started(0)
    assert t.unfinished == 2
    t.finished(0)
    t.finished(1)
    assert t.committable == 2
    assert t.unfinished == 0


def test_out_of_order_start_is_ignored() -> None:
    """An offset below the last handed out is refused and never blocks the watermark."""
    t = tracker(5, 7)
    assert not t.started(6)
    t.finished(5)
    t.finished(7)
    assert t.committable == 8


def test_watermark_never_moves_backwards() -> None:
    """Once committable, the offset only grows, whatever the completion order."""
    rng = random.Random(1234)
    offsets = list(range(200))
    t = tracker(*offsets)
    done: set[int] = set()
    last = -1
    rng.shuffle(offsets)
    for offset in offsets:
        t.finished(offset)
        done.add(offset)
        expected = next(o for o in range(201) if o not in done)
        assert t.committable == (expected if expected > 0 else None)
        assert (t.committable or -1) >= last
        last = t.committable or -1
    assert t.committable == 200
