"""Reconciliation: make every downstream user match Keycloak, and report the drift found.

Events alone miss changes (the plugin can lose records, federated users and realm imports change
users without events). A reconciliation reads every Keycloak user and every downstream user, compares
them (service.domain.drift), and, unless it is a dry run, feeds a forced change per missing or stale
user into the keyed pipeline, like a backfill: per-user order with live events holds. Each fix carries
the time taken just before the request of the Keycloak page that returned the user: both listings can
take minutes, and a live change Keycloak applied after that read must win over it (service.domain.state).
Downstream users without a Keycloak counterpart are reported; those carrying an externalId (tenants
that look users up by externalId) are also handed to the pipeline as an orphan check: only if the user's
state knows that user deleted does its applier delete (policy `delete`) or deactivate (`deactivate`)
every account carrying the id (service.domain.plan.orphan_plan), which catches an account created by a
request that landed after its client gave up. Any other extra account is never touched.

With groups (the tenant's group options), the realm's groups and their direct members are read too and
compared with the downstream's groups and their members (service.domain.drift.compare_groups): groups
missing, stale (a displayName other than the tenant's: the group's name or its path) or extra (reported,
never deleted), and per group the members Keycloak has that the downstream lacks and the members the
downstream has that Keycloak does not. The fixes: a forced group upsert per missing or stale group and
per group lacking members (forced, its applier writes every member again, whatever it believes it
wrote), and a membership change per missing membership (its user's state may never have heard of it: a
lost event). Extra members are reported only, unless the run is asked to remove them: then their
group's forced upsert carries them (`prune`), and its applier removes those the group, when applied,
neither wants nor (by one read) no longer holds; a live join that came after the listing wins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from service.domain.activity import ActivityEntry, ActivitySink
from service.domain.changes import UserChange
from service.domain.downstreams import split_tenant_key
from service.domain.drift import GroupDrift, compare, compare_groups, orphan_ids, wanted_members
from service.domain.groups import GroupChange, GroupDisplay, GroupOptions, selected
from service.domain.stamps import ChangeSource
from service.keycloak_admin.mapping import user_attributes
from service.metrics import Metrics
from service.pipeline.ports import DownstreamGroups, DownstreamUsers, Producer, RealmListing
from service.retry import RetryPolicy
from service.scim.client import Downstream

log = structlog.get_logger(__name__)
LISTED = 200  # ids listed per category in a report; counts are always complete
PAGE_SIZE = 500
GROUP_KINDS = ("groups_missing", "groups_stale", "groups_extra", "members_missing", "members_extra")


@dataclass
class RealmGroups:
    """A realm's groups as read for a reconciliation, each with the time before the page that returned it."""

    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> group_fields
    read_ms: dict[str, int] = field(default_factory=dict)  # group id -> its page's read time
    members: dict[str, dict[str, int]] = field(default_factory=dict)  # group id -> member id -> read time


class Reconciler:
    def __init__(
        self,
        keycloak: RealmListing,
        scim: DownstreamUsers,
        producer: Producer,
        topic: str,
        metrics: Metrics,
        page_size: int = PAGE_SIZE,
        retry: RetryPolicy | None = None,
        *,
        scim_groups: DownstreamGroups | None = None,
        activity: ActivitySink | None = None,
    ) -> None:
        self._activity = activity
        self._keycloak = keycloak
        self._scim_groups = scim_groups  # lists downstream groups; needed only to reconcile groups
        self._retry = retry or RetryPolicy()  # each downstream page; Keycloak's client retries its own
        self._page_size = page_size
        self._scim = scim
        self._producer = producer
        self._topic = topic
        self._metrics = metrics

    async def run(
        self,
        ds: Downstream,
        dry_run: bool,
        *,
        groups: GroupOptions | None = None,
        remove_extra_members: bool = False,
    ) -> dict[str, Any]:
        """Compare, fix unless `dry_run`, and report. `groups`: the tenant's group options (which groups
        it pushes, their displayName, flattening) to reconcile groups and memberships too; None: users
        only. `remove_extra_members`: the fixes remove members of our groups that Keycloak does not have."""
        scim_groups = self._scim_groups
        if groups is not None and scim_groups is None:
            raise ValueError("reconciling groups needs a reconciler built with scim_groups")
        realm, name = split_tenant_key(ds.tenant)
        started = time.monotonic()
        started_ms = int(time.time() * 1000)
        wanted: dict[str, dict[str, Any]] = {}
        read_ms: dict[str, int] = {}  # user id -> when the page that returned it was requested
        async for page in self._keycloak.iter_user_pages(realm, self._page_size, brief=True):
            for rep in page.users:
                if isinstance(rep.get("id"), str):
                    wanted[rep["id"]] = user_attributes(rep)
                    read_ms[rep["id"]] = page.read_started_ms
        downstream = [resource async for resource in self._scim.list_users(ds, retry=self._retry)]
        drift = compare({k: ds.mapping.as_listed(v) for k, v in wanted.items()}, downstream)
        orphans = orphan_ids(drift.extra) if ds.user_lookup == "externalId" else []
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
                    downstream=name,
                )
                await self._producer.send(self._topic, key=change.key.encode(), value=change.to_json())
            for user_id in orphans:
                change = UserChange(
                    realm,
                    user_id,
                    "upsert",
                    started_ms,
                    "RECONCILE",
                    source=ChangeSource.RECONCILE,
                    orphan=True,
                    downstream=name,
                )
                await self._producer.send(self._topic, key=change.key.encode(), value=change.to_json())
            await self._producer.flush()
        group_report = None
        if groups is not None and scim_groups is not None:
            group_report = await self._groups(ds, groups, scim_groups, downstream, dry_run, remove_extra_members)
        counts = {
            "missing": len(drift.missing),
            "stale": len(drift.stale),
            "extra": len(drift.extra),
            "duplicates": len(drift.duplicates),
        }
        for kind, count in counts.items():
            self._metrics.drift.labels(realm, name, kind).set(count)
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
            "duplicates": {
                "count": len(drift.duplicates),
                "users": [{"id": k, "accounts": v} for k, v in list(drift.duplicates.items())[:LISTED]],
            },
            "fixes_queued": 0 if dry_run else len(drift.to_fix),
            "seconds": round(time.monotonic() - started, 2),
        }
        if group_report is not None:
            report["groups"] = group_report
        else:
            for kind in GROUP_KINDS:  # groups are off (perhaps since the last run): no figure, not a stale one
                self._metrics.drift.remove(realm, name, kind)
        log.info(
            "reconcile.finished",
            tenant=realm,
            downstream=name,
            dry_run=dry_run,
            missing=len(drift.missing),
            stale=len(drift.stale),
            extra=len(drift.extra),
            duplicates=len(drift.duplicates),
            orphan_checks=0 if dry_run else len(orphans),
            seconds=report["seconds"],
        )
        if self._activity is not None:
            counts = drift_counts(report)
            outcome = "drift" if any(v for k, v in counts.items() if k in DRIFT_KINDS) else "clean"
            self._activity.record(ActivityEntry(time.time(), realm, name, "reconcile", outcome, detail=counts))
        return report

    async def _groups(
        self,
        ds: Downstream,
        options: GroupOptions,
        scim_groups: DownstreamGroups,
        downstream_users: list[dict[str, Any]],
        dry_run: bool,
        remove_extra_members: bool,
    ) -> dict[str, Any]:
        """Group and membership drift, the fixes queued unless `dry_run`, and the report's `groups` part."""
        realm, name = split_tenant_key(ds.tenant)
        read = await self._read_groups(realm, options)
        names = {
            gid: (g["path"] if options.display == GroupDisplay.PATH else g["name"]) or ""
            for gid, g in read.groups.items()
            if selected(g["path"] or "", options)
        }
        parents = {gid: g["parent"] for gid, g in read.groups.items()}
        members = wanted_members(read.members, parents, options.flatten)
        found = [g async for g in scim_groups.list_groups(ds, retry=self._retry, members=True)]
        user_ids = {
            u["id"]: u["externalId"]
            for u in downstream_users
            if isinstance(u.get("id"), str) and isinstance(u.get("externalId"), str)
        }
        drift = compare_groups(names, {gid: members[gid] for gid in names}, found, user_ids)
        prune = drift.members_extra if remove_extra_members else {}
        group_fixes, membership_fixes = (
            (0, 0) if dry_run else await self._fix_groups(realm, name, read, drift, options, prune)
        )
        figures = {
            "groups_missing": len(drift.missing),
            "groups_stale": len(drift.stale),
            "groups_extra": len(drift.extra),
            "members_missing": drift.members_missing_count,
            "members_extra": drift.members_extra_count,
        }
        for kind, count in figures.items():
            self._metrics.drift.labels(realm, name, kind).set(count)
        log.info("reconcile.groups", tenant=realm, downstream=name, dry_run=dry_run, **figures)
        return {
            "keycloak_groups": len(names),
            "downstream_groups": len(found),
            "missing": {"count": len(drift.missing), "ids": drift.missing[:LISTED]},
            "stale": {
                "count": len(drift.stale),
                "groups": [
                    {"id": gid, "displayName": have, "wanted": names[gid]}
                    for gid, have in list(drift.stale.items())[:LISTED]
                ],
            },
            "extra": {"count": len(drift.extra), "groups": drift.extra[:LISTED]},
            "members_missing": {
                "count": figures["members_missing"],
                "groups": [{"id": gid, "users": users[:LISTED]} for gid, users in drift.members_missing.items()][
                    :LISTED
                ],
            },
            "members_extra": {
                "count": figures["members_extra"],
                "groups": [{"id": gid, "members": ids[:LISTED]} for gid, ids in drift.members_extra.items()][:LISTED],
            },
            "group_fixes_queued": group_fixes,
            "membership_fixes_queued": membership_fixes,
            "member_removals_queued": 0 if dry_run else sum(len(ids) for ids in prune.values()),
        }

    async def _read_groups(self, realm: str, options: GroupOptions) -> RealmGroups:
        """Every group, and the direct members of those whose members count: the pushed ones, and with
        flattening all (a member of a sub-group that is not pushed is still a member of its ancestors)."""
        read = RealmGroups()
        async for page in self._keycloak.iter_group_pages(realm, self._page_size):
            for group in page.groups:
                read.groups[group["id"]] = group
                read.read_ms[group["id"]] = page.read_started_ms
        for gid, group in read.groups.items():
            if not options.flatten and not selected(group["path"] or "", options):
                continue
            direct = read.members[gid] = {}
            async for members in self._keycloak.iter_group_member_pages(realm, gid, self._page_size):
                for user in members.users:
                    if isinstance(user.get("id"), str) and user["id"]:
                        direct[user["id"]] = members.read_started_ms
        return read

    async def _fix_groups(
        self,
        realm: str,
        name: str,
        read: RealmGroups,
        drift: GroupDrift,
        options: GroupOptions,
        prune: dict[str, list[str]],
    ) -> tuple[int, int]:
        """A forced upsert per group missing, stale, lacking members or holding members to `prune`, and
        a membership change per missing membership: on the group the user is a direct member of (with
        flattening, a member of a sub-group lacking from an ancestor is the sub-group's). Returns (groups,
        memberships) queued."""
        forced = dict.fromkeys([*drift.missing, *drift.stale, *drift.members_missing, *prune])
        for gid in forced:
            group = read.groups[gid]
            change = GroupChange(
                realm,
                gid,
                "upsert",
                read.read_ms[gid],
                "RECONCILE",
                name=group["name"],
                parent=group["parent"],
                parent_known=True,
                force=True,
                source=ChangeSource.RECONCILE,
                prune=tuple(prune.get(gid, ())),
                downstream=name,
            )
            await self._producer.send(self._topic, key=change.key.encode(), value=change.to_json())
        memberships: dict[tuple[str, str], int] = {}  # (user, group it is a direct member of) -> read time
        children: dict[str | None, list[str]] = {}
        for gid, group in read.groups.items():
            children.setdefault(group["parent"], []).append(gid)
        for gid, users in drift.members_missing.items():
            below = _subtree(gid, children) if options.flatten else [gid]
            for user_id in users:
                for holder in below:
                    if user_id in read.members.get(holder, {}):
                        memberships[(user_id, holder)] = read.members[holder][user_id]
        for (user_id, holder), read_ms in memberships.items():
            membership = UserChange(
                realm,
                user_id,
                "membership",
                read_ms,
                "RECONCILE",
                group_id=holder,
                member=True,
                source=ChangeSource.RECONCILE,
                downstream=name,
            )
            await self._producer.send(self._topic, key=membership.key.encode(), value=membership.to_json())
        await self._producer.flush()
        return len(forced), len(memberships)


DRIFT_KINDS = ("missing", "stale", "extra", "duplicates", *GROUP_KINDS)


def drift_counts(report: dict[str, Any]) -> dict[str, Any]:
    """A reconciliation report's figures without its lists (what the activity log keeps of it)."""
    counts: dict[str, Any] = {k: report[k] for k in ("dry_run", "keycloak_users", "downstream_users", "fixes_queued")}
    counts |= {kind: report[kind]["count"] for kind in ("missing", "stale", "extra", "duplicates")}
    groups = report.get("groups")
    if groups is not None:
        counts |= {"keycloak_groups": groups["keycloak_groups"], "downstream_groups": groups["downstream_groups"]}
        counts |= {f"groups_{kind}": groups[kind]["count"] for kind in ("missing", "stale", "extra")}
        counts |= {kind: groups[kind]["count"] for kind in ("members_missing", "members_extra")}
    return counts


def _subtree(group_id: str, children: dict[str | None, list[str]]) -> list[str]:
    """The group and every group below it."""
    found: list[str] = []
    pending = [group_id]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        found.append(current)
        pending.extend(children.get(current, ()))
    return found
