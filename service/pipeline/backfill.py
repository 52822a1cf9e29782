"""Backfill: feed every user of a realm into the keyed pipeline, as Keycloak stores it now.

Users that existed before outbound SCIM was enabled are never pushed by events ("initial backfill is
not automatic" is the first complaint about every Keycloak SCIM plugin). A backfill pages through the
realm's users and publishes one `UserChange` per user (op upsert, all five attributes, type BACKFILL)
to the changes topic, keyed like live changes: ordering with live events holds. Each change carries the
time taken just before the request of the page that returned the user, not the time it is published:
a listing can take minutes, and the per-attribute time rule (service.domain.state) must let a live
change Keycloak applied after that read (a disable, say) win over it.

One request per user: before publishing, the backfill lists the downstream's accounts once (paged,
only the compared attributes) while the first Keycloak pages are read, and each user's change carries
what that listing saw (service.domain.sighting): absent (the applier POSTs without a lookup), an
account of ours (linked; PATCHed only where it differs, often not at all), or a userName held by an
account not provably ours (the adoption rules decide on live lookups). A listing that fails or does not
add up is not used: the changes then carry nothing and each user is looked up as before. Users with a
stored link ignore it: their state's "last written" tells what differs. Keycloak pages are read ahead
of the publishing (READ_AHEAD_PAGES), so a page's request is under way while the previous one is sent.

With groups (the tenant's `groups` option), the users are followed by every group of the realm, parents
first, each as a `GroupChange` upsert with its name and parent on the group's key, and by each group's
direct members, each as a membership `UserChange` on the member's key (docs/decisions/0005: memberships
travel through the user's partition). These too carry the time before the page that returned them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import structlog

from service.domain.activity import ActivityEntry, ActivitySink
from service.domain.changes import UserChange, user_attributes_of
from service.domain.downstreams import DEFAULT, split_tenant_key, tenant_key
from service.domain.groups import GroupChange
from service.domain.mapping import DEFAULT_MAPPING, AttributeMapping, is_custom
from service.domain.sighting import DownstreamIndex
from service.domain.stamps import ChangeSource
from service.errors import ScimError, TenantUnreadable
from service.keycloak_admin.mapping import user_attributes
from service.metrics import Metrics
from service.pipeline.ports import DownstreamSnapshots, Producer, RealmListing
from service.retry import RetryPolicy
from service.tenants.models import Tenant

_log = structlog.get_logger(__name__)
PAGE_SIZE = 500
READ_AHEAD_PAGES = 2  # Keycloak pages fetched ahead of the one being published (bounded memory)
REPORT_SECONDS = 1.0  # progress in the activity log: about once a second, and the end
T = TypeVar("T")


class TenantLookup(Protocol):
    def get(self, key: str) -> Tenant | None: ...  # by tenant key; raises TenantUnreadable for a record it cannot read


@dataclass
class BackfillProgress:
    realm: str
    downstream: str = DEFAULT  # which of the realm's downstreams it feeds
    total: int | None = None
    done: int = 0
    skipped: int = 0
    groups: int = 0  # group changes published (with groups)
    memberships: int = 0  # membership changes published (with groups)
    downstream_listed: int | None = None  # accounts in the complete listing of the downstream; None: none
    state: str = "running"  # running | done | failed
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def key(self) -> str:
        return tenant_key(self.realm, self.downstream)

    def public(self) -> dict[str, Any]:
        elapsed = (self.finished or time.time()) - self.started
        return {
            "realm": self.realm,
            "downstream": self.downstream,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "skipped": self.skipped,
            "groups": self.groups,
            "memberships": self.memberships,
            "downstream_listed": self.downstream_listed,
            "rate_per_second": round(self.done / elapsed, 1) if elapsed > 0 else None,
            "elapsed_seconds": round(elapsed, 1),
            "error": self.error,
        }


class Backfills:
    """One backfill per downstream (tenant key) at a time, run in the background; progress kept for the API."""

    def __init__(
        self,
        keycloak: RealmListing,
        producer: Producer,
        topic: str,
        metrics: Metrics,
        page_size: int = PAGE_SIZE,
        *,
        tenants: TenantLookup | None = None,
        downstream: DownstreamSnapshots | None = None,
        retry: RetryPolicy | None = None,
        activity: ActivitySink | None = None,
    ) -> None:
        self._activity = activity
        self._reported: dict[str, float] = {}  # tenant key -> when its progress was last reported
        self._keycloak = keycloak
        self._tenants = tenants  # with `downstream`: list the tenant's downstream first (one request per user)
        self._downstream = downstream
        self._retry = retry or RetryPolicy()
        self._page_size = page_size
        self._producer = producer
        self._topic = topic
        self._metrics = metrics
        self._progress: dict[str, BackfillProgress] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def get(self, key: str) -> BackfillProgress | None:
        return self._progress.get(key)

    def start(self, key: str, *, groups: bool = False) -> BackfillProgress:
        """Starts a backfill of the realm's users (and with `groups`, its groups and memberships) to the
        downstream with tenant key `key`, or returns the progress of the one running."""
        running = self._tasks.get(key)
        if running is not None and not running.done():
            return self._progress[key]
        progress = self._progress[key] = BackfillProgress(*split_tenant_key(key))
        self._tasks[key] = asyncio.create_task(self._run(progress, groups), name=f"backfill-{key}")
        return progress

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, progress: BackfillProgress, groups: bool) -> None:
        realm = progress.realm
        log = _log.bind(tenant=realm, downstream=progress.downstream)
        log.info("backfill.started", groups=groups)
        try:
            progress.total = await self._keycloak.count_users(realm)
            mapping = self._mapping_of(progress.key)
            brief = not any(is_custom(key) for key in mapping.keys)  # a brief user has no `attributes`
            pages = ReadAhead(self._keycloak.iter_user_pages(realm, self._page_size, brief=brief), READ_AHEAD_PAGES)
            try:
                index = await self._listing(progress)  # while the first Keycloak pages are read
                async for page in pages:
                    for rep in page.users:
                        await self._publish(
                            progress, rep, page.read_started_ms, index, whole=not brief, mapping=mapping
                        )
                    log.info("backfill.progress", done=progress.done, total=progress.total)
            finally:
                await pages.aclose()
            if groups:
                await self._publish_groups(progress)
            await self._producer.flush()
            progress.state = "done"
        except Exception as exc:  # reported through the API and the log; a new backfill can be started
            progress.state, progress.error = "failed", str(exc)[:300]
            log.error("backfill.failed", error=progress.error, done=progress.done)
        finally:
            progress.finished = time.time()
            self._report(progress, final=True)
        log.info("backfill.finished", **{k: v for k, v in progress.public().items() if k != "downstream"})

    def _report(self, progress: BackfillProgress, *, final: bool = False) -> None:
        """The progress in the activity log (every replica's console shows it): about once a second while
        it runs, and its end."""
        if self._activity is None:
            return
        now = time.monotonic()
        if not final and now - self._reported.get(progress.key, -math.inf) < REPORT_SECONDS:
            return
        self._reported[progress.key] = now
        self._activity.record(
            ActivityEntry(
                time.time(), progress.realm, progress.downstream, "backfill", progress.state, detail=progress.public()
            )
        )

    def _mapping_of(self, key: str) -> AttributeMapping:
        """The downstream's attribute mapping (`key`: its tenant key): whether users are read whole (it maps
        a user attribute), and which value the listing's userName is compared with."""
        try:
            tenant = self._tenants.get(key) if self._tenants is not None else None
        except TenantUnreadable:
            tenant = None
        return tenant.mapping if tenant is not None else DEFAULT_MAPPING

    async def _listing(self, progress: BackfillProgress) -> DownstreamIndex | None:
        """The tenant's downstream as a complete listing shows it, or None (not configured, not enabled,
        the listing failed or did not add up): the changes then carry no sighting."""
        if self._tenants is None or self._downstream is None:
            return None
        log = _log.bind(tenant=progress.realm, downstream=progress.downstream)
        try:
            tenant = self._tenants.get(progress.key)
        except TenantUnreadable:
            tenant = None
        if tenant is None:
            return None
        try:
            snapshot = await self._downstream.snapshot_users(tenant.downstream, retry=self._retry)
        except ScimError as exc:
            log.warning("backfill.listing.failed", error=str(exc), hint="each user is looked up")
            return None
        if not snapshot.complete:
            log.warning("backfill.listing.incomplete", why=snapshot.why_incomplete, hint="each user is looked up")
            return None
        index = DownstreamIndex(snapshot.accounts)
        progress.downstream_listed = index.size
        log.info("backfill.listing", accounts=index.size)
        return index

    async def _publish(
        self,
        progress: BackfillProgress,
        rep: dict[str, Any],
        read_ms: int,
        index: DownstreamIndex | None = None,
        *,
        whole: bool = False,
        mapping: AttributeMapping = DEFAULT_MAPPING,
    ) -> None:
        user_id = rep.get("id")
        if not isinstance(user_id, str) or not user_id:
            progress.skipped += 1
            return
        attributes = user_attributes(rep)
        change = UserChange(
            progress.realm,
            user_id,
            "upsert",
            read_ms,
            "BACKFILL",
            attributes=attributes,
            source=ChangeSource.BACKFILL,
            sighting=index.sight(user_id, mapping.user_name(attributes)) if index is not None else None,
            **_user_attributes(rep, whole),
            downstream=progress.downstream,
        )
        await self._producer.send(self._topic, key=change.key.encode(), value=change.to_json())
        progress.done += 1
        self._metrics.backfilled.labels(progress.realm, progress.downstream).inc()
        self._report(progress)

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
                    downstream=progress.downstream,
                )
                await self._producer.send(self._topic, key=change.key.encode(), value=change.to_json())
                progress.groups += 1
                self._report(progress)
                await self._publish_members(progress, group["id"])
            _log.info(
                "backfill.progress",
                tenant=realm,
                downstream=progress.downstream,
                groups=progress.groups,
                memberships=progress.memberships,
            )

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
                    downstream=progress.downstream,
                )
                await self._producer.send(self._topic, key=change.key.encode(), value=change.to_json())
                progress.memberships += 1


class ReadAhead(Generic[T]):
    """The items of `source`, fetched from construction on, at most `depth` ahead of the consumer: the
    next Keycloak page is under way while the current one is published, and memory stays bounded."""

    _END: Any = object()

    def __init__(self, source: AsyncIterator[T], depth: int) -> None:
        self._source = source
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=depth)
        self._task = asyncio.create_task(self._fill())

    async def _fill(self) -> None:
        try:
            async for item in self._source:
                await self._queue.put(item)
        except Exception as exc:  # handed to the consumer, raised where it reads
            await self._queue.put(_Failed(exc))
            return
        await self._queue.put(self._END)

    def __aiter__(self) -> ReadAhead[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is self._END:
            raise StopAsyncIteration
        if isinstance(item, _Failed):
            raise item.error
        result: T = item
        return result

    async def aclose(self) -> None:
        """Stop fetching, and close the source (a Keycloak paging generator holds an HTTP response)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        close = getattr(self._source, "aclose", None)
        if close is not None:
            await close()


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


def _user_attributes(rep: dict[str, Any], whole: bool) -> dict[str, Any]:
    """A whole user's attributes, all of them (one it lacks has none); nothing from a brief user."""
    if not whole:
        return {}
    return {"user_attributes": user_attributes_of(rep) or {}, "user_attributes_complete": True}
