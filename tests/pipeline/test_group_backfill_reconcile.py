"""Backfill and reconciliation with groups, against fakes that satisfy the Keycloak listing and the
downstream listing Protocols (service.pipeline.ports): what is published on the changes topic, with
which read times, and what drift is reported."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.domain.changes import UserChange, decode_change
from service.domain.groups import GroupChange, GroupDisplay, GroupOptions
from service.domain.stamps import ChangeSource
from service.keycloak_admin.client import GroupPage, UserPage
from service.metrics import Metrics
from service.pipeline.backfill import BackfillProgress, Backfills
from service.pipeline.reconcile import Reconciler
from service.retry import RetryPolicy
from service.scim.client import Downstream
from tests.support import wait_until

DS = Downstream("acme", "https://scim.example", "t")


def kc_user(user_id: str) -> dict[str, Any]:
    return {"id": user_id, "username": user_id, "email": f"{user_id}@x.io", "enabled": True}


def group(gid: str, name: str, path: str, parent: str | None) -> dict[str, Any]:
    return {"id": gid, "name": name, "path": path, "parent": parent}


ENG = group("g-eng", "eng", "/eng", None)
BACKEND = group("g-backend", "backend", "/eng/backend", "g-eng")
OPS = group("g-ops", "ops", "/ops", None)


@dataclass
class FakeRealm:
    """A realm's users and groups, served page by page with the read times given: group pages at
    `group_times`, each group's member page at 10,000 + its position in `members`."""

    users: list[dict[str, Any]] = field(default_factory=list)
    group_pages: list[list[dict[str, Any]]] = field(default_factory=list)
    group_times: list[int] = field(default_factory=list)
    members: dict[str, list[str]] = field(default_factory=dict)  # group id -> member user ids
    calls: list[tuple[str, str, int]] = field(default_factory=list)  # (what, group id, page size)

    async def count_users(self, realm: str) -> int:
        return len(self.users)

    async def iter_user_pages(self, realm: str, page_size: int, *, brief: bool = False) -> AsyncIterator[UserPage]:
        self.calls.append(("users", "", page_size))
        yield UserPage(1_000, self.users)

    async def iter_group_pages(self, realm: str, page_size: int) -> AsyncIterator[GroupPage]:
        self.calls.append(("groups", "", page_size))
        for read_ms, groups in zip(self.group_times, self.group_pages, strict=True):
            yield GroupPage(read_ms, groups)

    async def iter_group_member_pages(self, realm: str, group_id: str, page_size: int) -> AsyncIterator[UserPage]:
        self.calls.append(("members", group_id, page_size))
        users = [kc_user(u) for u in self.members.get(group_id, [])]
        yield UserPage(self.member_read_ms(group_id), users)

    def member_read_ms(self, group_id: str) -> int:
        return 10_000 + list(self.members).index(group_id) if group_id in self.members else 9_999


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, UserChange | GroupChange]] = []

    async def send(self, topic: str, *, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, decode_change(value)))

    async def flush(self) -> None:
        return None

    def changes(self) -> list[UserChange | GroupChange]:
        return [change for _, _, change in self.sent]

    def groups(self) -> list[GroupChange]:
        return [c for c in self.changes() if isinstance(c, GroupChange)]

    def memberships(self) -> list[UserChange]:
        return [c for c in self.changes() if isinstance(c, UserChange) and c.op == "membership"]


@dataclass
class FakeDownstream:
    """A downstream's users and groups (SCIM resources), listed in one go."""

    users: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    group_listings: list[bool] = field(default_factory=list)  # the `members` flag of each listing

    async def list_users(
        self, ds: Downstream, page_size: int = 500, *, retry: RetryPolicy | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        for user in self.users:
            yield user

    async def list_groups(
        self, ds: Downstream, page_size: int = 200, *, retry: RetryPolicy | None = None, members: bool = True
    ) -> AsyncIterator[dict[str, Any]]:
        self.group_listings.append(members)
        for resource in self.groups:
            yield resource


def realm() -> FakeRealm:
    """/eng (alice, bob), /eng/backend (carol), /ops (dave); two group pages read at 2,000 and 3,000."""
    return FakeRealm(
        users=[kc_user(u) for u in ("alice", "bob", "carol", "dave", "erin")],
        group_pages=[[ENG, OPS], [BACKEND]],
        group_times=[2_000, 3_000],
        members={"g-eng": ["alice", "bob"], "g-ops": ["dave"], "g-backend": ["carol"]},
    )


async def backfill(keycloak: FakeRealm, groups: bool) -> tuple[BackfillProgress, RecordingProducer]:
    producer = RecordingProducer()
    backfills = Backfills(keycloak, producer, "changes", Metrics(CollectorRegistry()), page_size=7)
    progress = backfills.start("acme", groups=groups)

    async def finished() -> bool:
        return progress.state != "running"

    await wait_until(finished, timeout=5, what="backfill finished")
    assert progress.state == "done", progress.error
    return progress, producer


# -- backfill ---------------------------------------------------------------------------------------------


async def test_backfill_with_groups_publishes_every_group_and_its_direct_members_after_the_users() -> None:
    """After the users: per group an upsert with its name and parent (parent known, BACKFILL), followed by
    a membership change per direct member on the member's key; each keyed as the pipeline keys it."""
    progress, producer = await backfill(realm(), groups=True)
    changes = producer.changes()
    assert [c.user_id for c in changes[:5] if isinstance(c, UserChange)] == ["alice", "bob", "carol", "dave", "erin"]
    assert all(isinstance(c, UserChange) and c.op == "upsert" for c in changes[:5])
    rest = [
        (c.group_id, c.name, c.parent) if isinstance(c, GroupChange) else (c.user_id, c.group_id) for c in changes[5:]
    ]
    assert rest == [
        ("g-eng", "eng", None),
        ("alice", "g-eng"),
        ("bob", "g-eng"),
        ("g-ops", "ops", None),
        ("dave", "g-ops"),
        ("g-backend", "backend", "g-eng"),
        ("carol", "g-backend"),
    ]
    for g in producer.groups():
        assert (g.op, g.event_type, g.source, g.parent_known, g.force) == (
            "upsert",
            "BACKFILL",
            ChangeSource.BACKFILL,
            True,
            False,
        )
    for m in producer.memberships():
        assert (m.event_type, m.source, m.member) == ("BACKFILL", ChangeSource.BACKFILL, True)
    assert [(topic, key) for topic, key, _ in producer.sent[5:7]] == [
        ("changes", b"acme/group:g-eng"),
        ("changes", b"acme/alice"),
    ]
    assert (progress.done, progress.groups, progress.memberships) == (5, 3, 4)
    assert progress.public()["groups"] == 3
    assert progress.public()["memberships"] == 4


async def test_backfill_group_changes_carry_the_read_time_of_their_page() -> None:
    """A group carries its group page's request time, a membership its member page's."""
    keycloak = realm()
    _, producer = await backfill(keycloak, groups=True)
    assert [(g.group_id, g.time_ms) for g in producer.groups()] == [
        ("g-eng", 2_000),
        ("g-ops", 2_000),
        ("g-backend", 3_000),
    ]
    assert {(m.user_id, m.time_ms) for m in producer.memberships()} == {
        ("alice", keycloak.member_read_ms("g-eng")),
        ("bob", keycloak.member_read_ms("g-eng")),
        ("dave", keycloak.member_read_ms("g-ops")),
        ("carol", keycloak.member_read_ms("g-backend")),
    }
    assert {size for _, _, size in keycloak.calls} == {7}  # the backfill's page size, for every listing


async def test_backfill_without_groups_reads_no_group() -> None:
    """Without `groups`, users only: no group listed, nothing but user upserts published."""
    keycloak = realm()
    progress, producer = await backfill(keycloak, groups=False)
    assert [what for what, _, _ in keycloak.calls] == ["users"]
    assert all(isinstance(c, UserChange) and c.op == "upsert" for c in producer.changes())
    assert (progress.done, progress.groups, progress.memberships) == (5, 0, 0)


# -- reconciliation ---------------------------------------------------------------------------------------


def scim_user(user_id: str) -> dict[str, Any]:
    """The downstream copy of Keycloak user `user_id`: downstream id ds-<id>, in step with Keycloak."""
    return {
        "id": f"ds-{user_id}",
        "externalId": user_id,
        "userName": user_id,
        "emails": [{"value": f"{user_id}@x.io", "primary": True}],
        "active": True,
    }


def users_in_step() -> list[dict[str, Any]]:
    return [scim_user(u) for u in ("alice", "bob", "carol", "dave", "erin")]


def scim_group(external_id: str | None, name: str, *members: str, gid: str | None = None) -> dict[str, Any]:
    return {
        "id": gid or f"ds-{external_id}",
        "externalId": external_id,
        "displayName": name,
        "members": [{"value": m, "type": "User"} for m in members],
    }


def downstream() -> FakeDownstream:
    """Every user in step; /eng lacks bob and holds an outsider, /eng/backend is called "old-backend",
    /ops is absent, and a group that is none of Keycloak's."""
    return FakeDownstream(
        users=[*users_in_step(), {"id": "ds-x", "userName": "x"}],
        groups=[
            scim_group("g-eng", "eng", "ds-alice", "ds-x"),
            scim_group("g-backend", "old-backend", "ds-carol"),
            scim_group("not-ours", "legacy", "ds-erin"),
        ],
    )


async def reconcile(
    keycloak: FakeRealm,
    scim: FakeDownstream,
    dry_run: bool,
    options: GroupOptions | None,
    remove_extra_members: bool = False,
) -> tuple[dict[str, Any], RecordingProducer, Metrics]:
    producer, metrics = RecordingProducer(), Metrics(CollectorRegistry())
    reconciler = Reconciler(keycloak, scim, producer, "changes", metrics, page_size=7, scim_groups=scim)
    report = await reconciler.run(DS, dry_run=dry_run, groups=options, remove_extra_members=remove_extra_members)
    return report, producer, metrics


def drift_gauge(metrics: Metrics, kind: str) -> float | None:
    return metrics.registry.get_sample_value(
        "outbound_scim_drift_users", {"tenant": "acme", "downstream": "default", "kind": kind}
    )


async def test_dry_run_reports_group_and_membership_drift_and_queues_nothing() -> None:
    """Missing /ops, stale /eng/backend (its name is wanted), an extra group, bob lacking from /eng and
    dave from the missing /ops, an outsider in /eng: all reported, in the report and the drift gauge;
    nothing published, and the downstream's groups listed with their members."""
    scim = downstream()
    report, producer, metrics = await reconcile(realm(), scim, dry_run=True, options=GroupOptions())
    groups = report["groups"]
    assert (groups["keycloak_groups"], groups["downstream_groups"]) == (3, 3)
    assert groups["missing"] == {"count": 1, "ids": ["g-ops"]}
    assert groups["stale"] == {
        "count": 1,
        "groups": [{"id": "g-backend", "displayName": "old-backend", "wanted": "backend"}],
    }
    assert groups["extra"] == {
        "count": 1,
        "groups": [{"id": "ds-not-ours", "externalId": "not-ours", "displayName": "legacy"}],
    }
    assert groups["members_missing"] == {
        "count": 2,
        "groups": [{"id": "g-eng", "users": ["bob"]}, {"id": "g-ops", "users": ["dave"]}],
    }
    assert groups["members_extra"] == {"count": 1, "groups": [{"id": "g-eng", "members": ["ds-x"]}]}
    assert (groups["group_fixes_queued"], groups["membership_fixes_queued"]) == (0, 0)
    assert producer.sent == []
    assert scim.group_listings == [True]
    assert {k: drift_gauge(metrics, k) for k in ("groups_missing", "groups_stale", "groups_extra")} == {
        "groups_missing": 1.0,
        "groups_stale": 1.0,
        "groups_extra": 1.0,
    }
    assert (drift_gauge(metrics, "members_missing"), drift_gauge(metrics, "members_extra")) == (2.0, 1.0)


async def test_reconcile_queues_a_forced_upsert_per_group_to_fix_and_a_membership_per_missing_one() -> None:
    """Forced upserts (name, parent, RECONCILE) for the missing, the stale and the group lacking members,
    each with its group page's read time; membership changes for bob in /eng and dave in /ops with their
    member page's read time. The extra group and the outsider are left alone."""
    keycloak = realm()
    report, producer, _ = await reconcile(keycloak, downstream(), dry_run=False, options=GroupOptions())
    forced = sorted((g.group_id, g.name, g.parent, g.time_ms) for g in producer.groups())
    assert forced == [
        ("g-backend", "backend", "g-eng", 3_000),
        ("g-eng", "eng", None, 2_000),
        ("g-ops", "ops", None, 2_000),
    ]
    assert all(
        (g.op, g.force, g.parent_known, g.source) == ("upsert", True, True, ChangeSource.RECONCILE)
        for g in producer.groups()
    )
    assert sorted((m.user_id, m.group_id, m.member, m.source, m.time_ms) for m in producer.memberships()) == [
        ("bob", "g-eng", True, ChangeSource.RECONCILE, keycloak.member_read_ms("g-eng")),
        ("dave", "g-ops", True, ChangeSource.RECONCILE, keycloak.member_read_ms("g-ops")),
    ]
    assert (report["groups"]["group_fixes_queued"], report["groups"]["membership_fixes_queued"]) == (3, 2)
    assert report["fixes_queued"] == 0  # every user is in step
    assert {key for _, key, c in producer.sent if isinstance(c, GroupChange)} == {
        b"acme/group:g-eng",
        b"acme/group:g-backend",
        b"acme/group:g-ops",
    }


async def test_extra_members_are_queued_for_removal_only_when_asked() -> None:
    """The outsider in /eng (ds-x) rides on /eng's forced upsert as `prune` when the run is asked to remove
    extra members, and on nothing otherwise; a dry run that is asked queues nothing either."""
    _, plain, _ = await reconcile(realm(), downstream(), dry_run=False, options=GroupOptions())
    assert all(g.prune == () for g in plain.groups())
    report, asked, _ = await reconcile(
        realm(), downstream(), dry_run=False, options=GroupOptions(), remove_extra_members=True
    )
    assert {g.group_id: g.prune for g in asked.groups()} == {"g-eng": ("ds-x",), "g-backend": (), "g-ops": ()}
    assert report["groups"]["member_removals_queued"] == 1
    dry, dry_sent, _ = await reconcile(
        realm(), downstream(), dry_run=True, options=GroupOptions(), remove_extra_members=True
    )
    assert (dry["groups"]["member_removals_queued"], dry_sent.sent) == (0, [])


async def test_a_group_in_step_queues_nothing() -> None:
    """Every group present, named as wanted, with exactly its members: no drift, nothing published."""
    scim = FakeDownstream(
        users=users_in_step(),
        groups=[
            scim_group("g-eng", "eng", "ds-alice", "ds-bob"),
            scim_group("g-backend", "backend", "ds-carol"),
            scim_group("g-ops", "ops", "ds-dave"),
        ],
    )
    report, producer, metrics = await reconcile(realm(), scim, dry_run=False, options=GroupOptions())
    assert [report["groups"][k]["count"] for k in ("missing", "stale", "extra", "members_missing")] == [0, 0, 0, 0]
    assert producer.sent == []
    assert drift_gauge(metrics, "members_missing") == 0.0


async def test_the_wanted_display_name_is_the_path_when_the_tenant_says_so() -> None:
    """display=path: a group named by its name downstream is stale, one named by its path is not."""
    scim = FakeDownstream(
        users=users_in_step(),
        groups=[
            scim_group("g-eng", "/eng", "ds-alice", "ds-bob"),
            scim_group("g-backend", "backend", "ds-carol"),
            scim_group("g-ops", "/ops", "ds-dave"),
        ],
    )
    report, _, _ = await reconcile(realm(), scim, dry_run=True, options=GroupOptions(display=GroupDisplay.PATH))
    assert report["groups"]["stale"]["groups"] == [
        {"id": "g-backend", "displayName": "backend", "wanted": "/eng/backend"}
    ]


async def test_groups_the_tenant_does_not_push_are_not_compared() -> None:
    """With a path filter /eng: /ops is neither missing nor read for members, and its downstream copy
    counts as extra (never removed)."""
    keycloak = realm()
    scim = FakeDownstream(
        users=users_in_step(),
        groups=[
            scim_group("g-eng", "eng", "ds-alice", "ds-bob"),
            scim_group("g-backend", "backend", "ds-carol"),
            scim_group("g-ops", "ops"),
        ],
    )
    options = GroupOptions(path_prefixes=("/eng",))
    report, producer, _ = await reconcile(keycloak, scim, dry_run=False, options=options)
    groups = report["groups"]
    assert groups["keycloak_groups"] == 2
    assert (groups["missing"]["count"], groups["members_missing"]["count"]) == (0, 0)
    assert [g["externalId"] for g in groups["extra"]["groups"]] == ["g-ops"]
    assert {gid for what, gid, _ in keycloak.calls if what == "members"} == {"g-eng", "g-backend"}
    assert producer.sent == []


async def test_with_flattening_a_sub_groups_members_are_wanted_in_its_ancestors() -> None:
    """flatten: /eng should hold carol (of /eng/backend) too. Lacking there, she is reported for /eng and
    fixed through the group she is a direct member of (/eng/backend), with /eng forced."""
    keycloak = realm()
    scim = FakeDownstream(
        users=users_in_step(),
        groups=[
            scim_group("g-eng", "eng", "ds-alice", "ds-bob"),
            scim_group("g-backend", "backend", "ds-carol"),
            scim_group("g-ops", "ops", "ds-dave"),
        ],
    )
    report, producer, _ = await reconcile(keycloak, scim, dry_run=False, options=GroupOptions(flatten=True))
    assert report["groups"]["members_missing"]["groups"] == [{"id": "g-eng", "users": ["carol"]}]
    assert [(m.user_id, m.group_id) for m in producer.memberships()] == [("carol", "g-backend")]
    assert [g.group_id for g in producer.groups()] == ["g-eng"]


async def test_without_groups_no_group_is_read_and_the_group_figures_are_dropped() -> None:
    """groups=None: users only, no `groups` in the report, no group listing either side, and group
    figures of an earlier run with groups leave the drift gauge."""
    keycloak, scim = realm(), downstream()
    producer, metrics = RecordingProducer(), Metrics(CollectorRegistry())
    reconciler = Reconciler(keycloak, scim, producer, "changes", metrics, page_size=7, scim_groups=scim)
    await reconciler.run(DS, dry_run=True, groups=GroupOptions())
    assert drift_gauge(metrics, "groups_missing") == 1.0
    keycloak.calls.clear()
    report = await reconciler.run(DS, dry_run=True)
    assert "groups" not in report
    assert [what for what, _, _ in keycloak.calls] == ["users"]
    assert scim.group_listings == [True]
    assert drift_gauge(metrics, "groups_missing") is None
    assert drift_gauge(metrics, "missing") == 0.0


async def test_groups_need_a_downstream_that_lists_groups() -> None:
    """A reconciler built without scim_groups refuses to reconcile groups instead of reporting nothing."""
    reconciler = Reconciler(realm(), downstream(), RecordingProducer(), "changes", Metrics(CollectorRegistry()))
    with pytest.raises(ValueError, match="scim_groups"):
        await reconciler.run(DS, dry_run=True, groups=GroupOptions())
