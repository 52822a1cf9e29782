"""Which offset of a partition may be committed, given records that finish out of order. Pure.

The committable offset is the first one not finished yet: everything below it is done. Records that
finished beyond it are replayed after a crash, so their effects must be idempotent (they are).
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    def __init__(self) -> None:
        self._pending: deque[int] = deque()  # offsets handed out, in order
        self._done: set[int] = set()
        self._watermark: int | None = None  # next offset to commit
        self._last: int | None = None
        self._started_at: dict[int, float] = {}

    def started(self, offset: int, at: float = 0.0) -> bool:
        """Track a record handed out; False (and ignored) if it is not past the last one handed out."""
        if self._last is not None and offset <= self._last:
            return False
        self._last = offset
        self._pending.append(offset)
        self._started_at[offset] = at
        return True

    def finished(self, offset: int) -> None:
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            first = self._pending.popleft()
            self._done.discard(first)
            self._started_at.pop(first, None)
            self._watermark = first + 1

    @property
    def committable(self) -> int | None:
        """Offset to commit (the next record to read after a restart), or None if nothing finished."""
        return self._watermark

    @property
    def next_offset(self) -> int | None:
        """The offset after the last record handed out: where reading stands."""
        return None if self._last is None else self._last + 1

    @property
    def oldest_started_at(self) -> float | None:
        """When the first unfinished record was handed out (it holds the watermark back)."""
        return self._started_at.get(self._pending[0]) if self._pending else None

    @property
    def unfinished(self) -> int:
        return len(self._pending)
