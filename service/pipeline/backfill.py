"""Backfill: feed every user of a realm into the keyed pipeline, as Keycloak stores it now.

Users that existed before outbound SCIM was enabled are never pushed by events ("initial backfill is
not automatic" is the first complaint about every Keycloak SCIM plugin). A backfill pages through the
realm's users and publishes one `UserChange` per user (op upsert, all five attributes, type BACKFILL)
to the changes topic, keyed like live changes: ordering with live events holds. Each change carries the
time taken just before the request of the page that returned the user, not the time it is published:
a listing can take minutes, and the per-attribute time rule (service.domain.state) must let a live
change Keycloak applied after that read (a disable, say) win over it.

With groups (the tenant's `groups` option), the users are followed by every group of the realm, parents
first, each as a `GroupChange` upsert with its name and parent on the group's key, and by each group's
direct members, each as a membership `UserChange` on the member's key (docs/decisions/0005: memberships
travel through the user's partition). These too carry the time before the page that returned them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from service.domain.changes import UserChange
from service.domain.groups import GroupChange
from service.domain.stamps import ChangeSource
from service.keycloak_admin.mapping import user_attributes
from service.metrics import Metrics
from service.pipeline.ports import Producer, RealmListing

log = structlog.get_logger(__name__)
PAGE_SIZE = 500


@dataclass
class BackfillProgress:
    realm: str
    total: int | None = None
    done: int = 0
    skipped: int = 0
    groups: int = 0  # group changes published (with groups)
    memberships: int = 0  # membership changes published (with groups)
    state: str = "running"  # running | done | failed
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def public(self) -> dict[str, Any]:
        elapsed = (self.finished or time.time()) - self.started
        return {
            "realm": self.realm,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "skipped": self.skipped,
            "groups": self.groups,
            "memberships": self.memberships,
            "rate_per_second": round(self.done / elapsed, 1) if elapsed > 0 else None,
            "elapsed_seconds": round(elapsed, 1),
            "error": self.error,
        }


class Backfills:
    """One backfill per realm at a time, run in the background; progress kept for the API."""

    def __init__(
        self,
        keycloak: RealmListing,
        producer: Producer,
        topic: str,
        metrics: Metrics,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._keycloak = keycloak
        self._page_size = page_size
        self._producer = producer
        self._topic = topic
        self._metrics = metrics
        self._progress: dict[str, BackfillProgress] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def get(self, realm: str) -> BackfillProgress | None:
        return self._progress.get(realm)

    def start(self, realm: str, *, groups: bool = False) -> BackfillProgress:
        """Starts a backfill of the realm's users (and with `groups`, its groups and memberships), or
        returns the progress of the one running."""
        running = self._tasks.get(realm)
        if running is not None and not running.done():
            return self._progress[realm]
        progress = self._progress[realm] = BackfillProgress(realm)
        self._tasks[realm] = asyncio.create_task(self._run(progress, groups), name=f"backfill-{realm}")
        return progress

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, progress: BackfillProgress, groups: bool) -> None:
        realm = progress.realm
        log.info("backfill.started", tenant=realm, groups=groups)
        try:
            progress.total = await self._keycloak.count_users(realm)
            async for page in self._keycloak.iter_user_pages(realm, self._page_size, brief=True):
                for rep in page.users:
                    await self._publish(progress, rep, page.read_started_ms)
                log.info("backfill.progress", tenant=realm, done=progress.done, total=progress.total)
            if groups:
                await self._publish_groups(progress)
            await self._producer.flush()
            progress.state = "done"
        except Exception as exc:  # reported through the API and the log; a new backfill can be started
            progress.state, progress.error = "failed", str(exc)[:300]
            log.error("backfill.failed", tenant=realm, error=progress.error, done=progress.done)
        finally:
            progress.finished = time.time()
        log.info("backfill.finished", tenant=realm, **progress.public())

    async def _publish(self, progress: BackfillProgress, rep: dict[str, Any], read_ms: int) -> None:
        user_id = rep.get("id")
        if not isinstance(user_id, str) or not user_id:
            progress.skipped += 1
            return
        change = UserChange(
            progress.realm,
            user_id,
            "upsert",
            read_ms,
            "BACKFILL",
            attributes=user_attributes(rep),
            source=ChangeSource.BACKFILL,
        )
        await self._producer.send(self._topic, key=change.key.encode(), value=change.to_json())
        progress.done += 1
        self._metrics.backfilled.labels(progress.realm).inc()

    async def _publish_groups(self, progress: BackfillProgress) -> None:
        """Every group (an upsert with its name and parent), each followed by its direct memberships."""
        realm = progress.realm
        async for page in self._keycloak.iter_group_pages(realm, self._page_size):
            for group in page.groups:
                change = GroupChange(
                    realm,
                    group["id"],
                    "upsert",
                    page.read_started_ms,
                    "BACKFILL",
                    name=group["name"],
                    parent=group["parent"],
                    parent_known=True,
                    source=ChangeSource.BACKFILL,
                )
                await self._producer.send(self._topic, key=change.key.encode(), value=change.to_json())
                progress.groups += 1
                await self._publish_members(progress, group["id"])
            log.info("backfill.progress", tenant=realm, groups=progress.groups, memberships=progress.memberships)

    async def _publish_members(self, progress: BackfillProgress, group_id: str) -> None:
        async for page in self._keycloak.iter_group_member_pages(progress.realm, group_id, self._page_size):
            for rep in page.users:
                user_id = rep.get("id")
                if not isinstance(user_id, str) or not user_id:
                    progress.skipped += 1
                    continue
                change = UserChange(
                    progress.realm,
                    user_id,
                    "membership",
                    page.read_started_ms,
                    "BACKFILL",
                    group_id=group_id,
                    member=True,
                    source=ChangeSource.BACKFILL,
                )
                await self._producer.send(self._topic, key=change.key.encode(), value=change.to_json())
                progress.memberships += 1
