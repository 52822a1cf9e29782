"""The running service's parts, seen through the tenant service's Protocols (service.api.tenants)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from service.api.tenants import Circuit
from service.domain.activity import ActivitySink
from service.domain.groups import GroupOptions
from service.keycloak_admin.client import KeycloakAdminClient
from service.keycloak_admin.realm_check import RealmWarning, check_realm
from service.pipeline.backfill import BackfillProgress, Backfills
from service.pipeline.on_demand import provision_now
from service.pipeline.reconcile import Reconciler
from service.pipeline.set_aside import HeldRecord, HeldTopic
from service.scim.breaker import BreakerState
from service.scim.client import Downstream, LookupMode, ScimClient, WritesMode
from service.scim.discovery import validate_downstream
from service.scim.egress import EgressPolicy
from service.tenants.models import Tenant

Replay = Callable[[HeldTopic, str | None], Awaitable[int]]

_CIRCUITS: dict[BreakerState, Circuit] = {
    BreakerState.CLOSED: "closed",
    BreakerState.HALF_OPEN: "half_open",
    BreakerState.OPEN: "open",
}


class ScimDownstreams:
    def __init__(self, scim: ScimClient, egress: EgressPolicy) -> None:
        self._scim = scim
        self._egress = egress

    async def validate(self, downstream: Downstream) -> dict[str, Any]:
        return await validate_downstream(self._scim, downstream, self._egress)

    def circuit(self, realm: str) -> Circuit:
        breaker = self._scim.breakers().get(realm)
        return _CIRCUITS[breaker.state] if breaker else "closed"

    def lookups(self, realm: str) -> LookupMode:
        return self._scim.lookup_mode(realm)

    def writes(self, realm: str) -> WritesMode:
        return self._scim.writes_mode(realm)


class HeldTopicRecords:
    """A held topic, replayed through the service (one replay per tenant at a time, counted)."""

    def __init__(self, topic: HeldTopic, replay: Replay) -> None:
        self._topic = topic
        self._replay = replay

    async def list(self, tenant: str | None) -> Sequence[HeldRecord]:
        return await self._topic.list(tenant)

    async def replay(self, tenant: str | None) -> int:
        return await self._replay(self._topic, tenant)

    async def counts(self) -> dict[str, int]:
        return await self._topic.counts()


class KeycloakSide:
    def __init__(
        self,
        keycloak: KeycloakAdminClient,
        scim: ScimClient,
        backfills: Backfills,
        reconciler: Reconciler,
        listeners: Collection[str],
        activity: ActivitySink | None = None,
    ) -> None:
        self._activity = activity  # hears each on-demand sync
        self._keycloak = keycloak
        self._scim = scim
        self._backfills = backfills
        self._reconciler = reconciler
        self._listeners = listeners

    async def realm_warnings(self, realm: str) -> list[RealmWarning]:
        return await check_realm(self._keycloak, realm, self._listeners)

    def start_backfill(self, realm: str, *, groups: bool = False) -> BackfillProgress:
        return self._backfills.start(realm, groups=groups)

    def backfill(self, realm: str) -> BackfillProgress | None:
        return self._backfills.get(realm)

    async def reconcile(
        self,
        downstream: Downstream,
        dry_run: bool,
        *,
        groups: GroupOptions | None = None,
        remove_extra_members: bool = False,
    ) -> dict[str, Any]:
        return await self._reconciler.run(downstream, dry_run, groups=groups, remove_extra_members=remove_extra_members)

    async def sync(self, tenant: Tenant, user_id: str) -> dict[str, Any]:
        return await provision_now(self._keycloak, self._scim, tenant, user_id, self._activity)
