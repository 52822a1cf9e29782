"""The group applier's verdicts, without Kafka: an in-memory downstream with groups, scripted tenants."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from service.domain.groups import GroupChange, GroupState
from service.domain.plan import DeletePolicy
from service.domain.state import UserState
from service.errors import ScimNotFound, ScimTransient
from service.pipeline.applier import GroupApplied, GroupApplier, SetAside, Skipped
from service.retry import RetryPolicy
from service.scim.client import Downstream
from service.scim.group_executor import GroupResult
from service.tenants.models import Tenant
from tests.pipeline.test_applier import Clock, Tenants
from tests.scim.fake_downstream import FakeDownstream, run

TENANT = Tenant("acme", "https://scim.example.com/v2", "token", DeletePolicy.DELETE, realm_id="id-acme", groups=True)


@dataclass
class States:
    groups: dict[str, GroupState] = field(default_factory=dict)

    def get(self, key: str) -> UserState:
        return UserState()

    def get_group(self, key: str) -> GroupState:
        return self.groups.get(key) or GroupState()


@dataclass
class GroupReader:
    """What Keycloak stores for the group now (None: it does not exist)."""

    group: dict[str, Any] | None

    async def get_group(self, realm: str, group_id: str) -> dict[str, Any] | None:
        return self.group

    async def user_groups(self, realm: str, user_id: str) -> list[dict[str, Any]]:
        return []

    async def get_user(self, realm: str, user_id: str) -> dict[str, Any] | None:
        return None


@dataclass
class NoGroups(FakeDownstream):
    """A downstream that serves users only: /Groups answers 404."""

    async def find_group(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
        raise ScimNotFound(404, "GET", "Groups")

    async def create_group(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        raise ScimNotFound(404, "POST", "Groups")


@dataclass
class Flaky(FakeDownstream):
    failures: int = 0

    async def create_group(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        if self.failures:
            self.failures -= 1
            raise ScimTransient(503, "POST", "Groups")
        return await super().create_group(ds, body)


def create(gid: str = "g-1", name: str = "staff", realm: str = "acme") -> GroupChange:
    return GroupChange(realm, gid, "upsert", 10, "GROUP_CREATE", "e-1", name=name, parent_known=True)


def member(user: str, seq: int, downstream: str | None) -> GroupChange:
    return GroupChange("acme", "g-1", "member", 11, user_id=user, member_id=downstream, seq=seq)


def applier(downstream: FakeDownstream, **kwargs: Any) -> GroupApplier:
    clock = Clock()
    return GroupApplier(
        kwargs.pop("tenants", Tenants(tenant=TENANT)),
        kwargs.pop("states", States()),
        downstream,
        budget_seconds=kwargs.pop("budget_seconds", 60.0),
        backoff=RetryPolicy(1, 1.0, 8.0),
        clock=clock,
        sleep=clock.sleep,
        wall_clock=lambda: 1.0,
        **kwargs,
    )


def test_a_batch_creates_the_group_with_its_members_in_one_verdict() -> None:
    """The group's create and three members in one batch: POST, then one PATCH adding the three."""
    downstream = FakeDownstream()
    for n in range(3):
        downstream.accounts[f"d{n}"] = {"id": f"d{n}", "userName": f"u{n}", "externalId": f"u{n}"}
    batch = [create(), *(member(f"u{n}", 1, f"d{n}") for n in range(3))]
    verdict = run(applier(downstream).apply(batch))
    assert isinstance(verdict, GroupApplied)
    assert (verdict.result, verdict.patches) == (GroupResult.CREATED, 1)
    assert set(downstream.members_of(verdict.state.downstream_id or "")) == {"d0", "d1", "d2"}


def test_a_realm_id_becomes_the_realm_name_and_groups_off_skips() -> None:
    verdict = run(applier(FakeDownstream()).apply([create(realm="id-acme")]))
    assert isinstance(verdict, GroupApplied) and verdict.change.key == "acme/group:g-1"
    off = Tenants(tenant=replace(TENANT, groups=False))
    assert run(applier(FakeDownstream(), tenants=off).apply([create()])) == Skipped(
        "acme", "groups_off", "skipped_groups"
    )


def test_a_downstream_without_groups_dead_letters_the_group() -> None:
    verdict = run(applier(NoGroups()).apply([create()]))
    assert isinstance(verdict, SetAside)
    assert (verdict.park, verdict.reason, verdict.key) == (False, "groups_unsupported", "acme/group:g-1")


def test_transient_failures_are_retried_then_the_group_is_created() -> None:
    verdict = run(applier(Flaky(failures=2)).apply([create()]))
    assert isinstance(verdict, GroupApplied) and verdict.result is GroupResult.CREATED


def test_a_parked_group_holds_its_later_changes() -> None:
    states = States({"acme/group:g-1": GroupState(parked="retries_exhausted")})
    verdict = run(applier(FakeDownstream(), states=states).apply([create()]))
    assert isinstance(verdict, SetAside) and (verdict.park, verdict.reason) == (True, "behind_parked")


def test_a_group_event_without_representation_is_re_read_from_keycloak() -> None:
    """No representation: Keycloak's answer gives the name; a group Keycloak does not have is a deletion."""
    unknown = GroupChange("acme", "g-1", "upsert", 10, "GROUP_UPDATE", "e-1", reread=True)
    downstream = FakeDownstream()
    read = run(
        applier(downstream, keycloak=GroupReader({"id": "g-1", "name": "read", "parent": None})).apply([unknown])
    )
    assert isinstance(read, GroupApplied) and read.state.written_name == "read"
    gone = run(
        applier(downstream, keycloak=GroupReader(None), states=States({"acme/group:g-1": read.state})).apply([unknown])
    )
    assert isinstance(gone, GroupApplied) and gone.result is GroupResult.DELETED
    assert downstream.groups_owned_by("g-1") == []


def crashed_after_adding(downstream: FakeDownstream) -> tuple[States, str]:
    """The state a successor restores after a replica PATCH-added d1 to the group and was killed before
    saving the group's state: saved, the group holds d0 only; downstream, it holds d0 and d1."""
    saved = run(applier(downstream).apply([create(), member("u0", 1, "d0")]))
    assert isinstance(saved, GroupApplied)
    states = States({"acme/group:g-1": saved.state})
    dead = run(applier(downstream, states=states).apply([member("u1", 1, "d1")]))  # its state never saved
    assert isinstance(dead, GroupApplied)
    gid = saved.state.downstream_id or ""
    assert saved.state.written_members == {"d0"}
    assert set(downstream.members_of(gid)) == {"d0", "d1"}
    return states, gid


def test_a_join_and_leave_replayed_after_a_crash_remove_the_member_the_dead_replica_added() -> None:
    """The successor's batch holds d1's join and d1's leave. From the restored 'written' (without d1)
    they cancel out; the downstream holds d1 all the same, so the batch removes it."""
    downstream = FakeDownstream(strict_removals=True)
    states, gid = crashed_after_adding(downstream)
    verdict = run(applier(downstream, states=states).apply([member("u1", 1, "d1"), member("u1", 2, None)]))
    assert isinstance(verdict, GroupApplied)
    assert downstream.members_of(gid) == ["d0"]
    assert verdict.state.written_members == {"d0"}
