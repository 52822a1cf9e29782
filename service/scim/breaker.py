"""A circuit breaker per tenant: stop hammering a downstream that keeps failing, probe it now and then.

    closed --(threshold consecutive transient failures)--> open
    open   --(open period elapsed)--> half_open: one probe (by the health monitor) decides
    half_open --probe ok--> closed            half_open --probe fails--> open, period doubled (capped)

Pure state machine: the clock is passed in, so tests drive it without sleeping. An `observer`, if set,
hears each transition (the activity log reports them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class CircuitBreaker:
    threshold: int = 5
    open_seconds: float = 5.0
    max_open_seconds: float = 300.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    period: float = 0.0
    observer: Callable[[BreakerState], None] | None = field(default=None, repr=False, compare=False)

    def allows(self, now: float) -> bool:
        """Whether a request may go out now. Open and half-open hold traffic; the monitor probes."""
        return self.state is BreakerState.CLOSED

    def probe_due(self, now: float) -> bool:
        return self.state is BreakerState.OPEN and now >= self.opened_at + self.period

    def retry_in(self, now: float) -> float:
        return max(0.0, self.opened_at + self.period - now) if self.state is BreakerState.OPEN else 0.0

    def succeeded(self) -> BreakerState:
        self.failures = 0
        self._move(BreakerState.CLOSED)
        return self.state

    def failed(self, now: float) -> BreakerState:
        self.failures += 1
        if self.state is BreakerState.CLOSED and self.failures >= self.threshold:
            self._open(now, self.open_seconds)
        elif self.state is BreakerState.HALF_OPEN:
            self._open(now, min(self.period * 2, self.max_open_seconds))
        return self.state

    def start_probe(self) -> None:
        self._move(BreakerState.HALF_OPEN)

    def _open(self, now: float, period: float) -> None:
        self.opened_at = now
        self.period = period
        self._move(BreakerState.OPEN)

    def _move(self, state: BreakerState) -> None:
        moved = state is not self.state
        self.state = state
        if moved and self.observer is not None:
            self.observer(state)
