"""Backoff for transient failures (downstreams, Keycloak): exponential with full jitter, Retry-After
honoured, and `retrying`, the one retry loop for callers outside the pipeline's applier."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from service.errors import ServiceError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6
    base_seconds: float = 0.2
    max_seconds: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt number `attempt + 1` (attempt counts from 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_seconds)
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
        return (rng or random).uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` is either delay-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


async def retrying(
    policy: RetryPolicy,
    call: Callable[[], Awaitable[T]],
    *,
    on_retry: Callable[[ServiceError, int, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`call()` until it succeeds or fails with an error that is not `retriable`, at most
    `policy.attempts` times, with the policy's backoff (honouring a `retry_after` the error carries)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except ServiceError as exc:
            if not exc.retriable or attempt >= policy.attempts:
                raise
            delay = policy.delay(attempt, getattr(exc, "retry_after", None))
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            await sleep(delay)
