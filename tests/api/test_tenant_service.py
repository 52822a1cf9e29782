"""The tenant service without HTTP: what an enable, a rotation, a disable and the other operations do, and
the typed errors they raise instead."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from service.api.errors import KeycloakNotConfigured, NoBackfill, NotEnabled
from service.api.models import EnableTenant, LinkUser, Reconcile
from service.api.tenants import TenantService
from service.domain.activity import ActivityEntry
from service.domain.capabilities import Overrides
from service.domain.plan import DeletePolicy
from service.errors import EnableRefused, TenantUnreadable
from service.pipeline.set_aside import HeldRecord
from service.tenants.models import Tenant
from tests.api.fakes import FakeDownstreams, FakeHeld, FakeKeycloak, FakeLinks, FakeRecords

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "downstream-secret"


@dataclass
class World:
    records: FakeRecords = field(default_factory=FakeRecords)
    downstreams: FakeDownstreams = field(default_factory=FakeDownstreams)
    parked: FakeHeld = field(default_factory=FakeHeld)
    dead_letters: FakeHeld = field(default_factory=FakeHeld)
    links: FakeLinks = field(default_factory=FakeLinks)
    keycloak: FakeKeycloak | None = None
    activity: list[ActivityEntry] = field(default_factory=list)

    def service(self) -> TenantService:
        return TenantService(
            self.records,
            self.downstreams,
            self.parked,
            self.dead_letters,
            self.links,
            self.keycloak,
            clock=lambda: NOW,
            activity_sink=Sink(self.activity),
        )


@dataclass
class Sink:
    """The activity log's sink: what the service recorded, in order."""

    entries: list[ActivityEntry]

    def record(self, entry: ActivityEntry) -> None:
        self.entries.append(entry)


def enable_request(**fields: object) -> EnableTenant:
    return EnableTenant.model_validate_json(
        json.dumps({"base_url": "https://scim.example/v2/", "token": TOKEN, **fields})
    )


def stored(realm: str = "acme", generation: int = 1) -> Tenant:
    return Tenant(realm, "https://scim.example/v2", TOKEN, DeletePolicy.IGNORE, "2025-01-01", generation=generation)


def held(partition: int, tenant: str | None, value: bytes | None = b"{}") -> HeldRecord:
    headers = {"outbound_scim.tenant": tenant} if tenant else {}
    return HeldRecord(partition, 0, 0, None, value, headers)


async def test_enable_validates_then_stores_and_answers_created() -> None:
    """A new realm: the downstream is validated with the request's URL and token, the tenant stored with
    the next generation, and the answer says created (no replay: nothing was parked for it)."""
    world = World()
    enabled = await world.service().enable("acme", enable_request(delete_policy="deactivate", max_concurrency=4))
    assert enabled.created
    [validated] = world.downstreams.validated
    assert (validated.base_url, validated.token) == ("https://scim.example/v2", TOKEN)
    [tenant] = world.records.writes
    assert (tenant.generation, tenant.delete_policy, tenant.max_concurrency) == (1, DeletePolicy.DEACTIVATE, 4)
    assert tenant.updated_at == "2025-03-01T12:00:00+00:00"
    assert (enabled.tenant.realm, enabled.tenant.status, enabled.tenant.circuit) == ("acme", "enabled", "closed")
    assert enabled.tenant.warnings is None
    assert enabled.tenant.backfill is None
    assert world.parked.replayed == []


async def test_a_refused_downstream_stores_nothing() -> None:
    """Validation fails: the refusal propagates as it is and nothing is written."""
    world = World(downstreams=FakeDownstreams(refusal=EnableRefused("unauthorized", "the token was refused")))
    with pytest.raises(EnableRefused, match="unauthorized"):
        await world.service().enable("acme", enable_request())
    assert world.records.writes == []


async def test_a_rotation_answers_not_created_and_replays_what_was_parked() -> None:
    """Enabling an enabled realm bumps the generation, answers created=False, and replays its parked
    changes in the background."""
    world = World(records=FakeRecords({"acme": stored()}, generations={"acme": 1}))
    service = world.service()
    enabled = await service.enable("acme", enable_request(token="new-token"))
    assert not enabled.created
    assert world.records.writes[-1].generation == 2
    await asyncio.wait_for(world.parked.replay_done.wait(), 5)
    await service.idle()
    assert world.parked.replayed == ["acme"]


async def test_enabling_over_an_unreadable_record_is_a_rotation() -> None:
    """A record this replica cannot read still counts as enabled: enabling again replaces it (a rotation)."""
    broken = TenantUnreadable("acme", "does not decrypt", "add the key")
    world = World(records=FakeRecords(broken={"acme": broken}, generations={"acme": 3}))
    enabled = await world.service().enable("acme", enable_request())
    assert (enabled.created, world.records.writes[-1].generation) == (False, 4)


async def test_backfill_without_keycloak_is_refused_before_anything_else() -> None:
    """backfill=true without Keycloak access: KeycloakNotConfigured, no validation request, nothing stored."""
    world = World()
    with pytest.raises(KeycloakNotConfigured):
        await world.service().enable("acme", enable_request(backfill=True))
    assert (world.downstreams.validated, world.records.writes) == ([], [])


async def test_with_keycloak_the_answer_has_warnings_and_the_backfill() -> None:
    """With Keycloak access an enable reads the realm's event settings (warnings) and starts the backfill."""
    world = World(keycloak=FakeKeycloak())
    enabled = await world.service().enable("acme", enable_request(backfill=True))
    assert [(w.code, w.detail) for w in enabled.tenant.warnings or []] == [("listener_missing", "add the listener")]
    assert enabled.tenant.backfill is not None
    assert (enabled.tenant.backfill.realm, enabled.tenant.backfill.state) == ("acme", "running")


async def test_show_reads_warnings_and_raises_for_unknown_or_unreadable() -> None:
    """show: the tenant with its warnings; NotEnabled for an unknown realm; TenantUnreadable passes through."""
    broken = TenantUnreadable("gone", "does not decrypt", "add the key")
    world = World(records=FakeRecords({"acme": stored()}, broken={"gone": broken}), keycloak=FakeKeycloak())
    service = world.service()
    shown = await service.show("acme")
    assert shown.warnings is not None
    assert [w.code for w in shown.warnings] == ["listener_missing"]
    with pytest.raises(NotEnabled):
        await service.show("nope")
    with pytest.raises(TenantUnreadable):
        await service.show("gone")


def test_the_listing_holds_readable_and_unreadable_records_by_realm() -> None:
    """Readable tenants (no warnings: that would be a Keycloak call each) and unreadable ones, by realm."""
    broken = TenantUnreadable("beta", "does not decrypt", "add the key")
    world = World(records=FakeRecords({"acme": stored(), "zeta": stored("zeta")}, broken={"beta": broken}))
    listed = world.service().tenants().tenants
    assert [(t.realm, t.status) for t in listed] == [("acme", "enabled"), ("beta", "unreadable"), ("zeta", "enabled")]
    assert all(getattr(t, "warnings", None) is None for t in listed)


async def test_disable_removes_readable_and_unreadable_records() -> None:
    """An unreadable record can be disabled too; an unknown realm is NotEnabled."""
    broken = TenantUnreadable("gone", "does not decrypt", "add the key")
    world = World(records=FakeRecords({"acme": stored()}, broken={"gone": broken}, generations={"acme": 1, "gone": 1}))
    service = world.service()
    assert (await service.disable("acme")).status == "disabled"
    assert (await service.disable("gone")).realm == "gone"
    with pytest.raises(NotEnabled):
        await service.disable("acme")


async def test_dead_letters_of_a_realm_and_of_all() -> None:
    """A realm's dead letters are its own; all of them include records without a realm (poison records)."""
    world = World(dead_letters=FakeHeld([held(0, "acme"), held(1, None), held(2, "other")]))
    service = world.service()
    assert [r.partition for r in (await service.dead_letters("acme")).dead_letters] == [0]
    assert [r.tenant for r in (await service.dead_letters(None)).dead_letters] == ["acme", None, "other"]
    assert (await service.replay_dead_letters("acme")).replayed == 1
    assert (await service.replay_dead_letters(None)).replayed == 3
    assert world.dead_letters.replayed == ["acme", None]


async def test_a_held_record_summary_keeps_only_text_where_text_is_promised() -> None:
    """A poison record's value may hold anything: non-text summary fields answer null, never a 500."""
    value = json.dumps({"user_id": 42, "event_type": ["x"], "event_id": "e-1", "op": None}).encode()
    world = World(parked=FakeHeld([held(0, "acme", value), held(1, "acme", b"not json"), held(2, "acme", None)]))
    parked = (await world.service().parked("acme")).parked
    assert [(r.user_id, r.event_type, r.event_id, r.op) for r in parked[:1]] == [(None, None, "e-1", None)]
    assert [r.replayable for r in parked] == [False, False, False]  # no replay_to header in these


async def test_keycloak_operations_need_keycloak_access() -> None:
    """Without Keycloak access: backfill, reconcile and sync raise KeycloakNotConfigured; no backfill to show."""
    world = World(records=FakeRecords({"acme": stored()}))
    service = world.service()
    with pytest.raises(KeycloakNotConfigured):
        service.start_backfill("acme")
    with pytest.raises(KeycloakNotConfigured):
        await service.reconcile("acme", Reconcile())
    with pytest.raises(KeycloakNotConfigured):
        await service.sync("acme", "u1")
    with pytest.raises(NoBackfill):
        service.backfill("acme")


async def test_keycloak_operations_need_an_enabled_realm() -> None:
    """With Keycloak access, an unknown realm is NotEnabled for backfill, reconcile and sync."""
    world = World(keycloak=FakeKeycloak())
    service = world.service()
    with pytest.raises(NotEnabled):
        service.start_backfill("nope")
    with pytest.raises(NotEnabled):
        await service.reconcile("nope", Reconcile())
    with pytest.raises(NotEnabled):
        await service.sync("nope", "u1")


async def test_reconcile_passes_dry_run_and_answers_the_report() -> None:
    """The reconciler gets the tenant's downstream, dry_run and remove_extra_members; its report becomes
    the typed answer."""
    report = {
        "realm": "acme",
        "dry_run": True,
        "keycloak_users": 2,
        "downstream_users": 2,
        "missing": {"count": 1, "ids": ["u2"]},
        "stale": {"count": 1, "users": [{"id": "u1", "attributes": ["email"]}]},
        "extra": {"count": 1, "users": [{"id": "d9", "externalId": None, "userName": "x"}]},
        "duplicates": {"count": 0, "users": []},
        "fixes_queued": 0,
        "seconds": 0.1,
    }
    world = World(records=FakeRecords({"acme": stored()}), keycloak=FakeKeycloak(report=report))
    answer = await world.service().reconcile("acme", Reconcile(dry_run=True))
    assert answer.model_dump(mode="json") == report
    await world.service().reconcile("acme", Reconcile(remove_extra_members=True))
    assert world.keycloak is not None
    assert [(ds.tenant, dry, extra) for ds, dry, extra in world.keycloak.reconciled] == [
        ("acme", True, False),
        ("acme", False, True),
    ]


async def test_link_queues_for_an_enabled_realm_only() -> None:
    """A link is queued with the realm, user and account; an unknown realm is NotEnabled and queues nothing."""
    world = World(records=FakeRecords({"acme": stored()}))
    service = world.service()
    answer = await service.link("acme", "kc-1", LinkUser(downstream_id="d-7"))
    assert (answer.queued, world.links.queued) == (True, [("acme", "kc-1", "d-7")])
    with pytest.raises(NotEnabled):
        await service.link("nope", "kc-1", LinkUser(downstream_id="d-7"))
    assert len(world.links.queued) == 1


def test_the_token_goes_in_but_never_out() -> None:
    """The request holds the token as a secret (hidden in its repr); no answer of an enable carries it."""
    request = enable_request()
    assert isinstance(request.token, SecretStr)
    assert TOKEN not in repr(request)


async def test_group_sync_is_refused_for_a_downstream_that_cannot_patch() -> None:
    """ServiceProviderConfig says patch is unsupported: enabled without group sync, with a warning saying
    why (a member-list PUT is what AWS refuses); the users still flow."""
    world = World()
    world.downstreams.config = {"patch": {"supported": False}}
    enabled = await world.service().enable("acme", enable_request(groups=True))
    assert enabled.tenant.groups is False
    assert [w.code for w in enabled.tenant.warnings or []] == ["groups_refused"]
    assert world.records.writes[-1].groups is False


async def test_a_patch_override_refuses_group_sync_and_is_stored() -> None:
    """`capabilities: {"patch": false}` on a downstream announcing PATCH: group sync is refused as for one
    announcing none, the override is stored, reaches the downstream and is shown (only the keys set)."""
    world = World()
    enabled = await world.service().enable("acme", enable_request(groups=True, capabilities={"patch": False}))
    assert enabled.tenant.groups is False
    assert [w.code for w in enabled.tenant.warnings or []] == ["groups_refused"]
    assert enabled.tenant.capabilities == {"patch": False}
    assert world.records.writes[-1].capabilities == Overrides(patch=False)
    assert world.records.writes[-1].downstream.capabilities == Overrides(patch=False)


async def test_group_settings_are_stored_as_asked() -> None:
    world = World()
    request = enable_request(
        groups=True,
        group_display="path",
        group_flatten=True,
        group_paths=["/eng"],
        group_pattern="^/ops/",
        group_members_per_request=50,
    )
    enabled = await world.service().enable("acme", request)
    tenant = world.records.writes[-1]
    assert (
        tenant.groups,
        tenant.group_display,
        tenant.group_flatten,
        tenant.group_paths,
        tenant.group_pattern,
        tenant.group_members_per_request,
    ) == (True, "path", True, ("/eng",), "^/ops/", 50)
    assert enabled.tenant.warnings is None


def test_a_group_pattern_that_does_not_compile_is_refused() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        enable_request(groups=True, group_pattern="([")


async def test_a_named_downstream_is_a_tenant_of_its_own() -> None:
    """Enabling `acme/crm` validates and stores a tenant named crm under its own key (the realm's default
    untouched), starts its own backfill, lists it under the realm; parked records, links and a disable
    address that downstream only."""
    world = World(keycloak=FakeKeycloak())
    world.records.tenants["acme"] = stored()
    service = world.service()
    enabled = await service.enable("acme/crm", enable_request(base_url="https://crm.example", backfill=True))
    assert (enabled.created, enabled.tenant.realm, enabled.tenant.downstream) == (True, "acme", "crm")
    assert enabled.tenant.backfill is not None
    assert (enabled.tenant.backfill.realm, enabled.tenant.backfill.downstream) == ("acme", "crm")
    [crm] = world.records.writes
    assert (crm.realm, crm.name, crm.key, crm.downstream.tenant) == ("acme", "crm", "acme/crm", "acme/crm")
    assert world.records.tenants["acme"] == stored()
    assert [d.downstream for d in service.downstreams("acme").downstreams] == ["crm", "default"]
    assert service.downstreams("other").downstreams == []
    await service.parked("acme/crm")
    assert world.parked.listed == ["acme/crm"]
    await service.link("acme/crm", "u-1", LinkUser(downstream_id="ds-1"))
    assert world.links.queued == [("acme/crm", "u-1", "ds-1")]
    disabled = await service.disable("acme/crm")
    assert (disabled.realm, disabled.downstream) == ("acme", "crm")
    assert list(world.records.tenants) == ["acme"]


async def test_enables_rotations_and_disables_go_to_the_activity_log() -> None:
    """The console lists a disabled downstream and shows when it changed hands: each enable, rotation and
    disable is an activity entry (kind tenant), never with the token."""
    world = World()
    service = world.service()
    await service.enable("acme", enable_request())
    await service.enable("acme", enable_request())
    await service.disable("acme")
    assert [(e.realm, e.downstream, e.kind, e.outcome) for e in world.activity] == [
        ("acme", "default", "tenant", "enabled"),
        ("acme", "default", "tenant", "rotated"),
        ("acme", "default", "tenant", "disabled"),
    ]
    assert world.activity[0].time == NOW.timestamp()
    assert {e.detail["by"] for e in world.activity} == {"admin token (API)"}
    assert TOKEN not in repr(world.activity)
