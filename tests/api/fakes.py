"""In-memory stand-ins for the tenant service's collaborators; each satisfies its Protocol (checked by the
annotated assignments at the end, which mypy verifies)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from service.api.tenants import Circuit, Downstreams, HeldRecords, KeycloakAccess, TenantRecords
from service.domain.downstreams import split_tenant_key
from service.domain.groups import GroupOptions
from service.errors import EnableRefused, TenantUnreadable
from service.keycloak_admin.realm_check import RealmWarning, WarningCode
from service.pipeline.backfill import BackfillProgress
from service.pipeline.set_aside import HeldRecord
from service.scim.client import Downstream, LookupMode, WritesMode
from service.tenants.models import Tenant


@dataclass
class FakeRecords:
    tenants: dict[str, Tenant] = field(default_factory=dict)
    broken: dict[str, TenantUnreadable] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    writes: list[Tenant] = field(default_factory=list)
    failure: Exception | None = None  # raised by get: a bug somewhere below the API

    def get(self, realm: str) -> Tenant | None:
        if self.failure is not None:
            raise self.failure
        if realm in self.broken:
            raise self.broken[realm]
        return self.tenants.get(realm)

    def all(self) -> list[Tenant]:
        return sorted(self.tenants.values(), key=lambda t: (t.realm, t.name))

    def unreadable(self) -> list[TenantUnreadable]:
        return [self.broken[realm] for realm in sorted(self.broken)]

    def last_generation(self, realm: str) -> int | None:
        return self.generations.get(realm) if realm in self.tenants or realm in self.broken else None

    def next_generation(self, realm: str) -> int:
        return self.generations.get(realm, 0) + 1

    async def put(self, tenant: Tenant) -> None:
        self.writes.append(tenant)
        self.tenants[tenant.key] = tenant
        self.broken.pop(tenant.key, None)
        self.generations[tenant.key] = tenant.generation

    async def remove(self, realm: str) -> None:
        self.tenants.pop(realm, None)
        self.broken.pop(realm, None)


@dataclass
class FakeDownstreams:
    refusal: EnableRefused | None = None
    validated: list[Downstream] = field(default_factory=list)
    circuits: dict[str, Circuit] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=lambda: {"patch": {"supported": True}})

    async def validate(self, downstream: Downstream) -> dict[str, Any]:
        self.validated.append(downstream)
        if self.refusal is not None:
            raise self.refusal
        return self.config

    def circuit(self, realm: str) -> Circuit:
        return self.circuits.get(realm, "closed")

    def lookups(self, realm: str) -> LookupMode:
        return "filter"

    def writes(self, realm: str) -> WritesMode:
        return "patch"


@dataclass
class FakeHeld:
    records: list[HeldRecord] = field(default_factory=list)
    listed: list[str | None] = field(default_factory=list)
    replayed: list[str | None] = field(default_factory=list)
    replay_done: asyncio.Event = field(default_factory=asyncio.Event)

    async def list(self, tenant: str | None) -> Sequence[HeldRecord]:
        self.listed.append(tenant)
        return [r for r in self.records if tenant is None or r.tenant == tenant]

    async def counts(self) -> dict[str, int]:
        self.listed.append("*counts*")
        counted: dict[str, int] = {}
        for record in self.records:
            if record.tenant is not None:
                counted[record.tenant] = counted.get(record.tenant, 0) + 1
        return counted

    async def replay(self, tenant: str | None) -> int:
        self.replayed.append(tenant)
        self.replay_done.set()
        return len([r for r in self.records if tenant is None or r.tenant == tenant])


@dataclass
class FakeKeycloak:
    warnings: list[RealmWarning] = field(
        default_factory=lambda: [RealmWarning(WarningCode.LISTENER_MISSING, "add the listener")]
    )
    backfills: dict[str, BackfillProgress] = field(default_factory=dict)
    reconciled: list[tuple[Downstream, bool, bool]] = field(default_factory=list)  # (ds, dry run, remove extras)
    report: dict[str, Any] = field(default_factory=dict)

    async def realm_warnings(self, realm: str) -> list[RealmWarning]:
        return list(self.warnings)

    def start_backfill(self, realm: str, *, groups: bool = False) -> BackfillProgress:
        progress = self.backfills[realm] = BackfillProgress(*split_tenant_key(realm))
        return progress

    def backfill(self, realm: str) -> BackfillProgress | None:
        return self.backfills.get(realm)

    async def reconcile(
        self,
        downstream: Downstream,
        dry_run: bool,
        *,
        groups: GroupOptions | None = None,
        remove_extra_members: bool = False,
    ) -> dict[str, Any]:
        self.reconciled.append((downstream, dry_run, remove_extra_members))
        return self.report

    async def sync(self, tenant: Tenant, user_id: str) -> dict[str, Any]:
        return self.report


@dataclass
class FakeLinks:
    queued: list[tuple[str, str, str]] = field(default_factory=list)

    async def __call__(self, realm: str, user_id: str, downstream_id: str) -> None:
        self.queued.append((realm, user_id, downstream_id))


def _protocols() -> None:
    """Never called: mypy checks that each fake is what it stands for."""
    _records: TenantRecords = FakeRecords()
    _downstreams: Downstreams = FakeDownstreams()
    _held: HeldRecords = FakeHeld()
    _keycloak: KeycloakAccess = FakeKeycloak()
