"""Backfill: feed every user of a realm into the keyed pipeline, as Keycloak stores it now.

Users that existed before outbound SCIM was enabled are never pushed by events ("initial backfill is
not automatic" is the first complaint about every Keycloak SCIM plugin). A backfill pages through the
realm's users and publishes one `UserChange` per user (op upsert, all five attributes, type BACKFILL)
to the changes topic, keyed like live changes: ordering with live events holds. Each change carries the
time taken just before the request of the page that returned the user, not the time it is published:
a listing can take minutes, and the per-attribute time rule (service.domain.state) must let a live
change Keycloak applied after that read (a disable, say) win over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from service.domain.changes import UserChange
from service.domain.stamps import ChangeSource
from service.keycloak_admin.mapping import user_attributes
from service.metrics import Metrics
from service.pipeline.ports import Producer, UserListing

log = structlog.get_logger(__name__)
PAGE_SIZE = 500


@dataclass
class BackfillProgress:
    realm: str
    total: int | None = None
    done: int = 0
    skipped: int = 0
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
            "rate_per_second": round(self.done / elapsed, 1) if elapsed > 0 else None,
            "elapsed_seconds": round(elapsed, 1),
            "error": self.error,
        }


class Backfills:
    """One backfill per realm at a time, run in the background; progress kept for the API."""

    def __init__(
        self,
        keycloak: UserListing,
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

    def start(self, realm: str) -> BackfillProgress:
        running = self._tasks.get(realm)
        if running is not None and not running.done():
            return self._progress[realm]
        progress = self._progress[realm] = BackfillProgress(realm)
        self._tasks[realm] = asyncio.create_task(self._run(progress), name=f"backfill-{realm}")
        return progress

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, progress: BackfillProgress) -> None:
        realm = progress.realm
        log.info("backfill.started", tenant=realm)
        try:
            progress.total = await self._keycloak.count_users(realm)
            async for page in self._keycloak.iter_user_pages(realm, self._page_size, brief=True):
                for rep in page.users:
                    await self._publish(progress, rep, page.read_started_ms)
                log.info("backfill.progress", tenant=realm, done=progress.done, total=progress.total)
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
