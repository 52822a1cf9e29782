"""The garbage collector's settings once a process has started (service.heap)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from service import heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_settling_freezes_live_objects_and_collects_the_young_generation_less_often() -> None:
    live = Node()
    heap.settle_after_start()
    assert gc.get_freeze_count() > 0
    assert not any(o is live for o in gc.get_objects())
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD


@pytest.mark.usefixtures("restored_gc")
def test_start_up_garbage_is_collected_not_frozen() -> None:
    """A reference cycle that became garbage before the freeze is freed by it, not kept for good."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    heap.settle_after_start()
    assert gone() is None


@pytest.mark.usefixtures("restored_gc")
def test_a_cycle_made_after_settling_is_still_collected() -> None:
    heap.settle_after_start()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
