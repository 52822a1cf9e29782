"""The garbage collector's settings for a long-running process (`run` and its stage 1 child).

CPython's cyclic collector scans every tracked object of a generation. A full (oldest-generation)
collection of the service's heap, about 100,000 objects, most of them made at start (modules, classes,
settings, clients), paused the event loop for 30-180 ms a few times a minute on a 2-core host: every
change waiting meanwhile took that much longer (measured: docs/benchmarks.md). Objects made at start
live as long as the process, so they are frozen out of the collector's scans once it has started; and
the youngest generation is collected every YOUNG_THRESHOLD allocations instead of 700: most of a
request's objects are freed by reference counting before any collection sees them.

What freezing costs: a reference cycle among the frozen objects that becomes garbage is never freed.
Start-up objects do not become garbage (they are the process), and the heap is collected once before it
is frozen, so start-up's own garbage is not kept.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # allocations (net of frees) between collections of the youngest generation


def settle_after_start() -> None:
    """Collect start-up's garbage, freeze what is left out of later scans, and collect the youngest
    generation less often. Call once, when the process has started its clients and stages."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
