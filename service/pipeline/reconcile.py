"""Reconciliation: make every downstream user match Keycloak, and report the drift found.

Events alone miss changes (the plugin can lose records, federated users and realm imports change
users without events). A reconciliation reads every Keycloak user and every downstream user, compares
them (service.domain.drift), and, unless it is a dry run, feeds a forced change per missing or stale
user into the keyed pipeline, like a backfill: per-user order with live events holds. Each fix carries
the time taken just before the request of the Keycloak page that returned the user: both listings can
take minutes, and a live change Keycloak applied after that read must win over it (service.domain.state).
Downstream users without a Keycloak counterpart are reported, never deleted.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from service.domain.changes import UserChange
from service.domain.drift import compare
from service.domain.stamps import ChangeSource
from service.keycloak_admin.mapping import user_attributes
from service.metrics import Metrics
from service.pipeline.ports import DownstreamUsers, Producer, UserListing
from service.retry import RetryPolicy
from service.scim.client import Downstream

log = structlog.get_logger(__name__)
LISTED = 200  # ids listed per category in a report; counts are always complete
PAGE_SIZE = 500


class Reconciler:
    def __init__(
        self,
        keycloak: UserListing,
        scim: DownstreamUsers,
        producer: Producer,
        topic: str,
        metrics: Metrics,
        page_size: int = PAGE_SIZE,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._keycloak = keycloak
        self._retry = retry or RetryPolicy()  # each downstream page; Keycloak's client retries its own
        self._page_size = page_size
        self._scim = scim
        self._producer = producer
        self._topic = topic
        self._metrics = metrics

    async def run(self, ds: Downstream, dry_run: bool) -> dict[str, Any]:
        realm = ds.tenant
        started = time.monotonic()
        wanted: dict[str, dict[str, Any]] = {}
        read_ms: dict[str, int] = {}  # user id -> when the page that returned it was requested
        async for page in self._keycloak.iter_user_pages(realm, self._page_size, brief=True):
            for rep in page.users:
                if isinstance(rep.get("id"), str):
                    wanted[rep["id"]] = user_attributes(rep)
                    read_ms[rep["id"]] = page.read_started_ms
        downstream = [resource async for resource in self._scim.list_users(ds, retry=self._retry)]
        drift = compare(wanted, downstream)
        if not dry_run:
            for user_id in drift.to_fix:
                change = UserChange(
                    realm,
                    user_id,
                    "upsert",
                    read_ms[user_id],
                    "RECONCILE",
                    attributes=wanted[user_id],
                    force=True,
                    source=ChangeSource.RECONCILE,
                )
                await self._producer.send(self._topic, key=change.key.encode(), value=change.to_json())
            await self._producer.flush()
        for kind, count in (("missing", len(drift.missing)), ("stale", len(drift.stale)), ("extra", len(drift.extra))):
            self._metrics.drift.labels(realm, kind).set(count)
        report = {
            "realm": realm,
            "dry_run": dry_run,
            "keycloak_users": len(wanted),
            "downstream_users": len(downstream),
            "missing": {"count": len(drift.missing), "ids": drift.missing[:LISTED]},
            "stale": {
                "count": len(drift.stale),
                "users": [{"id": k, "attributes": v} for k, v in list(drift.stale.items())[:LISTED]],
            },
            "extra": {"count": len(drift.extra), "users": drift.extra[:LISTED]},
            "fixes_queued": 0 if dry_run else len(drift.to_fix),
            "seconds": round(time.monotonic() - started, 2),
        }
        log.info(
            "reconcile.finished",
            tenant=realm,
            dry_run=dry_run,
            missing=len(drift.missing),
            stale=len(drift.stale),
            extra=len(drift.extra),
            seconds=report["seconds"],
        )
        return report
