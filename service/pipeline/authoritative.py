"""Authoritative mode: Keycloak's stored user instead of what the event claims.

An event is only a trigger: the plugin publishes before Keycloak commits (an event can describe a
change that rolled back, and a read right after a CREATE can briefly 404), and an UPDATE may carry a
partial representation. So each change is replaced by the user as Keycloak stores it now; a user that
stays absent is a deletion (the tenant's delete policy applies). Backfill and reconciliation changes
were read from Keycloak already and pass through.

The replacement is stamped with the time taken just before the read (never earlier than the event): a
change Keycloak applies while the read is in flight may be missing from what it returns, so the read
must not claim to be newer than that change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from service.domain.changes import UserChange, user_attributes_of
from service.domain.stamps import ChangeSource
from service.keycloak_admin.mapping import user_attributes
from service.pipeline.ports import UserReader

CREATES = frozenset({"USER_CREATE", "REGISTER"})


async def read_truth(
    keycloak: UserReader,
    change: UserChange,
    *,
    create_attempts: int = 4,
    wait_seconds: float = 0.5,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.time,
) -> UserChange:
    if change.source is not ChangeSource.EVENT:
        return change
    attempts = create_attempts if change.event_type in CREATES else 1
    for attempt in range(attempts):
        read_at = max(int(clock() * 1000), change.time_ms)
        rep = await keycloak.get_user(change.realm, change.user_id)
        if rep is not None:
            return replace(change, op="upsert", time_ms=read_at, attributes=user_attributes(rep), **_custom(rep))
        if attempt + 1 < attempts:
            await sleep(wait_seconds * (attempt + 1))  # the event may precede Keycloak's commit
    return replace(change, op="delete", time_ms=read_at, attributes={})


def _custom(rep: Mapping[str, Any]) -> dict[str, Any]:
    """The stored user's attributes, all of them: one it lacks has none."""
    return {"user_attributes": user_attributes_of(rep) or {}, "user_attributes_complete": True}
