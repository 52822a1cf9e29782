"""The applier's verdicts, without Kafka: an in-memory downstream, scripted tenants and failures, a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from service.domain.changes import UserChange
from service.domain.plan import DeletePolicy
from service.domain.sighting import ABSENT, Sighting
from service.domain.stamps import ChangeSource
from service.domain.state import UserState
from service.errors import CircuitOpen, ScimError, ScimRejected, ScimTransient, TenantUnreadable
from service.pipeline.applier import Applied, Applier, SetAside, Skipped, foldable
from service.retry import RetryPolicy
from service.scim.client import Downstream
from service.scim.executor import Result
from service.tenants.models import Tenant
from tests.scim.fake_downstream import FakeDownstream, run

UID = "kc-1"
ALL = {"userName": "jdoe", "givenName": "Jane", "familyName": "Doe", "email": "jane@example.com", "active": True}
TENANT = Tenant("acme", "https://scim.example.com/v2", "token", DeletePolicy.IGNORE, realm_id="id-acme")


def change(**attributes: Any) -> UserChange:
    return UserChange("acme", UID, "upsert", 10, "USER_UPDATE", "e-1", attributes or ALL)


@dataclass
class Tenants:
    """A TenantDirectory: one tenant (found by name or realm id), or an unreadable record for a while."""

    tenant: Tenant | None = TENANT
    unreadable_for: int = 0  # lookups that raise TenantUnreadable first
    marked: list[Tenant] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def get(self, realm: str) -> Tenant | None:
        if self.unreadable_for:
            self.unreadable_for -= 1
            raise TenantUnreadable(realm, "does not decrypt", "add the key")
        if self.tenant is None or realm not in (self.tenant.realm, self.tenant.realm_id):
            return None
        return self.tenant

    async def mark_unauthorized(self, seen: Tenant) -> None:
        self.marked.append(seen)

    async def note(self, realm: str, code: str) -> None:
        self.notes.append((realm, code))


@dataclass
class States:
    by_key: dict[str, UserState] = field(default_factory=dict)

    def get(self, key: str) -> UserState:
        return self.by_key.get(key) or UserState()


@dataclass
class Failing(FakeDownstream):
    """The in-memory downstream, whose writes first raise the scripted errors."""

    errors: list[ScimError] = field(default_factory=list)

    async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        if self.errors:
            raise self.errors.pop(0)
        return await super().create_user(ds, body)


@dataclass
class Reader:
    """A UserReader: the user as Keycloak stores it."""

    stored: dict[str, Any] | None

    async def get_user(self, realm: str, user_id: str) -> dict[str, Any] | None:
        return self.stored


class Clock:
    """A clock that sleeping advances: retries and budgets without real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def applier(downstream: FakeDownstream | None = None, **kwargs: Any) -> tuple[Applier, Clock]:
    clock = Clock()
    made = Applier(
        kwargs.pop("tenants", Tenants()),
        kwargs.pop("states", States()),
        downstream or FakeDownstream(),
        budget_seconds=kwargs.pop("budget_seconds", 60.0),
        backoff=RetryPolicy(1, 1.0, 8.0),
        clock=clock,
        sleep=clock.sleep,
        **kwargs,
    )
    return made, clock


def test_a_new_user_is_created_and_the_state_to_save_holds_its_link() -> None:
    """A create on an empty downstream: Applied(created), with the downstream id in the state to save."""
    downstream = FakeDownstream()
    verdict = run(applier(downstream)[0].apply(change()))
    assert isinstance(verdict, Applied)
    assert verdict.result is Result.CREATED
    assert verdict.state.downstream_id in downstream.accounts


def test_a_realm_id_becomes_the_realm_name() -> None:
    """The playa plugin sends the realm's internal id: the change is applied (and keyed) under the name."""
    verdict = run(applier()[0].apply(replace(change(), realm="id-acme")))
    assert isinstance(verdict, Applied)
    assert verdict.change.key == f"acme/{UID}"


def test_a_realm_without_tenant_is_skipped() -> None:
    verdict = run(applier(tenants=Tenants(tenant=None))[0].apply(change()))
    assert verdict == Skipped(None, "no_enabled_tenant", "skipped_no_tenant")


def test_a_parked_user_holds_its_later_changes_until_a_replay() -> None:
    """A user marked parked: a live change is parked behind; a replayed one goes through and unparks."""
    states = States({f"acme/{UID}": UserState(parked="retries_exhausted")})
    held = run(applier(states=states)[0].apply(change()))
    assert isinstance(held, SetAside) and (held.park, held.reason) == (True, "behind_parked")
    replayed = run(applier(states=states)[0].apply(change(), replay=True))
    assert isinstance(replayed, Applied) and replayed.state.parked is None


def test_an_unauthorized_tenant_parks_without_a_request() -> None:
    downstream = FakeDownstream()
    verdict = run(
        applier(downstream, tenants=Tenants(tenant=replace(TENANT, status="unauthorized")))[0].apply(change())
    )
    assert isinstance(verdict, SetAside) and (verdict.park, verdict.reason) == (True, "unauthorized")
    assert downstream.writes == []


def test_transient_failures_are_retried_with_backoff_then_applied() -> None:
    """Two 503s, then success: Applied, after two backoff sleeps (no real time passes)."""
    downstream = Failing(errors=[ScimTransient(503, "POST", "Users"), ScimTransient(503, "POST", "Users")])
    made, clock = applier(downstream)
    verdict = run(made.apply(change()))
    assert isinstance(verdict, Applied) and verdict.result is Result.CREATED
    assert len(clock.slept) == 2


def test_a_change_failing_past_its_budget_is_parked() -> None:
    """Transient failures until the budget is spent: parked as retries_exhausted, never dropped."""
    downstream = Failing(errors=[ScimTransient(503, "POST", "Users")] * 100)
    made, clock = applier(downstream, budget_seconds=20.0)
    verdict = run(made.apply(change()))
    assert isinstance(verdict, SetAside) and (verdict.park, verdict.reason) == (True, "retries_exhausted")
    assert clock.now <= 20.0


def test_an_open_circuit_parks_at_once() -> None:
    downstream = Failing(errors=[CircuitOpen(None, "POST", "Users", detail="circuit_open")])
    made, clock = applier(downstream)
    verdict = run(made.apply(change()))
    assert isinstance(verdict, SetAside) and verdict.reason == "circuit_open"
    assert clock.slept == []


def test_a_refused_token_marks_the_tenant_and_parks() -> None:
    tenants = Tenants()
    downstream = Failing(errors=[ScimRejected(401, "POST", "Users")])
    verdict = run(applier(downstream, tenants=tenants)[0].apply(change()))
    assert isinstance(verdict, SetAside) and (verdict.park, verdict.reason) == (True, "unauthorized")
    assert tenants.marked == [TENANT]


def test_a_rejection_is_dead_lettered_under_its_typed_reason() -> None:
    downstream = Failing(errors=[ScimRejected(307, "POST", "Users", reason="redirect")])
    verdict = run(applier(downstream)[0].apply(change()))
    assert isinstance(verdict, SetAside)
    assert (verdict.park, verdict.reason, verdict.outcome) == (False, "redirect", "rejected")


def test_an_account_of_another_owner_is_a_conflict_naming_it() -> None:
    """The userName is held by another externalId's account: dead-lettered as conflict with account and owner."""
    downstream = FakeDownstream()
    other = downstream.add("jdoe", "kc-leaver")
    verdict = run(applier(downstream)[0].apply(change()))
    assert isinstance(verdict, SetAside)
    assert (verdict.park, verdict.reason, verdict.outcome) == (False, "conflict", "conflict")
    assert verdict.headers == {"outbound_scim.downstream_id": other, "outbound_scim.owner": "kc-leaver"}
    assert downstream.writes == []


def test_without_keycloak_a_change_without_representation_is_skipped_and_noted_once_per_realm() -> None:
    tenants = Tenants()
    made, _ = applier(tenants=tenants)
    for _ in range(2):
        verdict = run(made.apply(replace(change(), attributes={}, reread=True)))
        assert verdict == Skipped("acme", "no_representation", "no_representation")
    assert tenants.notes == [("acme", "no_representation")] * 2  # the store writes the notice once


def test_with_keycloak_a_change_without_representation_applies_the_stored_user() -> None:
    stored = {"id": UID, "username": "jdoe", "firstName": "Stored", "lastName": "User", "enabled": False}
    downstream = FakeDownstream()
    verdict = run(applier(downstream, keycloak=Reader(stored))[0].apply(replace(change(), attributes={}, reread=True)))
    assert isinstance(verdict, Applied) and verdict.result is Result.CREATED
    account = downstream.accounts[verdict.state.downstream_id or ""]
    assert (account["name"]["givenName"], account["active"]) == ("Stored", False)


def test_an_unreadable_tenant_record_waits_then_parks() -> None:
    """The record does not decrypt here: never skipped; waited on, then parked as tenant_unreadable."""
    made, clock = applier(tenants=Tenants(unreadable_for=1000), budget_seconds=10.0)
    verdict = run(made.apply(change()))
    assert isinstance(verdict, SetAside) and (verdict.park, verdict.reason) == (True, "tenant_unreadable")
    assert clock.slept


def test_an_unreadable_tenant_record_that_becomes_readable_is_applied() -> None:
    verdict = run(applier(tenants=Tenants(unreadable_for=2))[0].apply(change()))
    assert isinstance(verdict, Applied)


def queued(*families: tuple[int, str]) -> list[UserChange]:
    """A user's changes queued in order: (event time, lastName) each."""
    return [
        UserChange("acme", UID, "upsert", t, "USER_UPDATE", f"e-{t}", {"familyName": family}) for t, family in families
    ]


def test_queued_changes_of_a_linked_user_become_one_patch_with_the_newest_values() -> None:
    """Three updates queued behind each other: one PATCH carrying the last lastName, and three verdicts
    that share its result (the first two as coalesced into it)."""
    downstream = FakeDownstream()
    linked = downstream.add("jdoe", UID, name={"familyName": "Doe"})
    states = States({f"acme/{UID}": UserState(downstream_id=linked, values=dict(ALL), written=dict(ALL))})
    verdicts = run(applier(downstream, states=states)[0].apply_queued(queued((20, "A"), (30, "B"), (40, "C"))))
    assert downstream.writes == [("PATCH", linked)]
    assert downstream.accounts[linked]["name"]["familyName"] == "C"
    assert [(v.result, v.reason) for v in verdicts if isinstance(v, Applied)] == [
        (Result.UPDATED, "coalesced"),
        (Result.UPDATED, "coalesced"),
        (Result.UPDATED, ""),
    ]
    assert all(isinstance(v, Applied) and v.state.written["familyName"] == "C" for v in verdicts)


def test_queued_changes_rewrite_what_an_earlier_one_may_have_written_before_a_crash() -> None:
    """A replica wrote a disable downstream and died before saving the state; its successor finds the
    disable and the enable that followed queued together. The restored state says active was last
    written true, but the downstream holds false: the shared write must still send active=true."""
    downstream = FakeDownstream()
    linked = downstream.add("jdoe", UID, active=False)  # the dead replica's write
    states = States({f"acme/{UID}": UserState(downstream_id=linked, values=dict(ALL), written=dict(ALL))})
    disable = UserChange("acme", UID, "upsert", 20, "USER_DISABLE", "e-20", {"active": False})
    enable = UserChange("acme", UID, "upsert", 30, "USER_ENABLE", "e-30", {"active": True})
    verdicts = run(applier(downstream, states=states)[0].apply_queued([disable, enable]))
    assert downstream.writes == [("PATCH", linked)]
    assert downstream.accounts[linked]["active"] is True
    assert all(isinstance(v, Applied) and v.state.written["active"] is True for v in verdicts)


def test_a_queued_change_older_than_the_rest_is_superseded_and_the_write_keeps_the_newest() -> None:
    """The last queued change is older than the first: the first is written, the last is superseded."""
    downstream = FakeDownstream()
    linked = downstream.add("jdoe", UID)
    states = States({f"acme/{UID}": UserState(downstream_id=linked, values=dict(ALL), written=dict(ALL))})
    verdicts = run(applier(downstream, states=states)[0].apply_queued(queued((40, "New"), (30, "Old"))))
    assert downstream.writes == [("PATCH", linked)]
    assert downstream.accounts[linked]["name"]["familyName"] == "New"
    assert [(v.result, v.reason) for v in verdicts if isinstance(v, Applied)] == [
        (Result.UPDATED, ""),
        (Result.SKIPPED, "superseded"),
    ]


def test_a_new_users_queued_changes_create_it_once_with_everything_known() -> None:
    """A create and two updates queued: one POST holding the newest lastName, no PATCH after it."""
    downstream = FakeDownstream()
    changes = [change(), *queued((20, "B"), (30, "C"))]
    verdicts = run(applier(downstream)[0].apply_queued(changes))
    assert [method for method, _ in downstream.writes] == ["POST"]
    assert next(iter(downstream.accounts.values()))["name"]["familyName"] == "C"
    assert [v.result for v in verdicts if isinstance(v, Applied)] == [Result.CREATED] * 3


def test_a_failed_shared_write_sets_every_queued_change_aside() -> None:
    """The shared write fails past its budget: each queued change is parked (none is dropped)."""
    downstream = Failing(errors=[ScimTransient(503, "POST", "Users")] * 100)
    verdicts = run(applier(downstream, budget_seconds=5.0)[0].apply_queued([change(), *queued((20, "B"))]))
    assert len(verdicts) == 2
    assert all(isinstance(v, SetAside) and (v.park, v.reason) == (True, "retries_exhausted") for v in verdicts)


def test_queued_changes_of_a_parked_user_are_held_behind_it() -> None:
    states = States({f"acme/{UID}": UserState(parked="retries_exhausted")})
    downstream = FakeDownstream()
    verdicts = run(applier(downstream, states=states)[0].apply_queued(queued((20, "A"), (30, "B"))))
    assert all(isinstance(v, SetAside) and v.reason == "behind_parked" for v in verdicts)
    assert downstream.writes == []


def test_only_plain_updates_are_foldable() -> None:
    """Deletions, links, forced writes, re-reads, memberships and authoritative mode go alone."""
    plain = change()
    assert foldable(plain, authoritative=False)
    assert not foldable(plain, authoritative=True)
    for other in (
        replace(plain, op="delete"),
        replace(plain, op="link", link_to="d-1"),
        replace(plain, force=True),
        replace(plain, reread=True),
        replace(plain, op="membership", group_id="g"),
        replace(plain, group_paths=("/g",)),
        replace(plain, source=ChangeSource.BACKFILL),
    ):
        assert not foldable(other, authoritative=False), other


def test_every_change_is_reread_only_in_authoritative_mode_with_keycloak_access() -> None:
    """rereads_all (which keeps changes from being folded) needs both the mode and a Keycloak reader."""
    assert not applier(authoritative=True)[0].rereads_all
    assert not applier(keycloak=Reader(None))[0].rereads_all
    assert applier(keycloak=Reader(None), authoritative=True)[0].rereads_all


def backfilled(sighting: Sighting) -> UserChange:
    return UserChange(
        "acme", UID, "upsert", 10, "BACKFILL", attributes=ALL, source=ChangeSource.BACKFILL, sighting=sighting
    )


def test_a_backfill_sighting_absent_is_one_post() -> None:
    """The listing saw no account: the POST goes at once, no lookup."""
    downstream = FakeDownstream()
    verdict = run(applier(downstream)[0].apply(backfilled(ABSENT)))
    assert isinstance(verdict, Applied) and verdict.result is Result.CREATED
    assert [method for method, _ in downstream.writes] == ["POST"]


def test_a_retried_backfill_change_looks_the_user_up_again() -> None:
    """A POST that failed transiently may have created the account: the retry drops the sighting and
    finds it by externalId (no second POST, even where the downstream would take one)."""

    class CreatedThenFailed(FakeDownstream):
        async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
            created = await super().create_user(ds, body)
            if len(self.writes) == 1:
                raise ScimTransient(None, "POST", "Users", detail="timeout")
            return created

    downstream = CreatedThenFailed()
    verdict = run(applier(downstream)[0].apply(backfilled(ABSENT)))
    assert isinstance(verdict, Applied) and verdict.result is Result.UPDATED
    assert [method for method, _ in downstream.writes] == ["POST", "PATCH"]
    assert len(downstream.owned_by(UID)) == 1


def test_a_replayed_backfill_change_ignores_its_old_sighting() -> None:
    """A replay comes long after the listing: the user is looked up again (found by externalId and
    updated) rather than POSTed on the listing's word."""
    downstream = FakeDownstream()
    mine = downstream.add("jdoe", UID)
    verdict = run(applier(downstream)[0].apply(backfilled(ABSENT), replay=True))
    assert isinstance(verdict, Applied) and (verdict.result, verdict.state.downstream_id) == (Result.UPDATED, mine)
    assert [method for method, _ in downstream.writes] == ["PATCH"]
