"""Token bucket per tenant (e.g. Slack: 180 user writes a minute): pace requests instead of earning 429s."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """`rate_per_minute` tokens a minute, bursting up to `burst`. The clock is passed in (pure)."""

    rate_per_minute: float
    burst: float
    tokens: float = 0.0  # negative: reserved ahead (callers are waiting for those)
    updated: float | None = None

    def reserve(self, now: float) -> float:
        """Take a token; returns how long to wait before using it (0 when one was available)."""
        if self.updated is None:  # first use: start full
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_minute / 60)
        self.updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens * 60 / self.rate_per_minute
