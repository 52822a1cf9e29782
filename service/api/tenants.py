"""The tenant service: what the admin API does, without HTTP.

Handlers parse a request model and call one method here; each method answers a response model or raises
an error of service.api.errors (or EnableRefused / TenantUnreadable). The collaborators are Protocols,
so the orchestration (validate the downstream, store, replay on a rotation, start a backfill, read the
realm's event settings, queue a link) is unit-tested with fakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import structlog

from service.api.errors import ActivityOff, KeycloakNotConfigured, NoBackfill, NotEnabled
from service.api.models import (
    ActivityEntryView,
    ActivityList,
    ActivitySummaryView,
    AuthRequest,
    AuthView,
    BackfillProgressView,
    BasicAuthRequest,
    DeadLetterList,
    DisabledTenant,
    DownstreamList,
    EnabledTenant,
    EnableTenant,
    HeldRecordView,
    HeldSource,
    LinkQueued,
    LinkUser,
    MappingEntry,
    NoticeView,
    OAuth2ClientCredentialsRequest,
    ParkedList,
    RealmWarningView,
    Reconcile,
    ReconcileReport,
    Replayed,
    SyncReport,
    TenantList,
    TenantView,
    UnreadableTenant,
)
from service.domain.activity import ActivityEntry, ActivitySink, ActivityView
from service.domain.capabilities import Overrides, effective
from service.domain.downstreams import DEFAULT, split_tenant_key
from service.domain.groups import GroupOptions
from service.domain.mapping import DEFAULT_MAPPING, AttributeMapping, parse_mapping
from service.domain.scim import patch_supported
from service.errors import EnableRefused, TenantUnreadable
from service.keycloak_admin.realm_check import RealmWarning
from service.pipeline.backfill import BackfillProgress
from service.pipeline.set_aside import HeldRecord
from service.scim import presets
from service.scim.client import Downstream, LookupMode, WritesMode
from service.scim.credentials import BasicAuth, ClientCredentials, SecretCredentials
from service.tenants.models import NOTICES, Tenant, auth_view

log = structlog.get_logger(__name__)

Circuit = Literal["closed", "half_open", "open"]
LinkFn = Callable[[str, str, str], Awaitable[None]]  # tenant key, Keycloak user id, downstream id


class TenantRecords(Protocol):
    """The tenant store (service.tenants.store.TenantStore), by tenant key (service.domain.downstreams)."""

    def get(self, key: str) -> Tenant | None:
        """None: not enabled. Raises TenantUnreadable for a record this replica cannot read."""
        ...

    def all(self) -> list[Tenant]: ...

    def unreadable(self) -> list[TenantUnreadable]: ...

    def last_generation(self, key: str) -> int | None: ...

    def next_generation(self, key: str) -> int: ...

    async def put(self, tenant: Tenant) -> None: ...

    async def remove(self, key: str) -> None: ...


class Downstreams(Protocol):
    """The SCIM side: validation before an enable, and what this replica knows of each downstream."""

    async def validate(self, downstream: Downstream) -> dict[str, Any]:
        """Its ServiceProviderConfig; raises EnableRefused (with a reason an operator can act on) unless it
        is a working SCIM API."""
        ...

    def circuit(self, key: str) -> Circuit: ...

    def lookups(self, key: str) -> LookupMode: ...

    def writes(self, key: str) -> WritesMode: ...


class HeldRecords(Protocol):
    """Parked changes or dead letters (service.pipeline.set_aside.HeldTopic and the service's replay)."""

    async def list(self, tenant: str | None) -> Sequence[HeldRecord]:
        """Not replayed yet, oldest first; `tenant` None: every record, with a tenant or without."""
        ...

    async def replay(self, tenant: str | None) -> int:
        """Send them back to the topic they came from; how many were sent."""
        ...

    async def counts(self) -> dict[str, int]:
        """Not replayed yet, per tenant key (one read, whatever the number of tenants)."""
        ...


class KeycloakAccess(Protocol):
    """What needs the OUTBOUND_SCIM_KEYCLOAK_* settings; the service has none of it without them."""

    async def realm_warnings(self, realm: str) -> list[RealmWarning]: ...

    def start_backfill(self, key: str, *, groups: bool = False) -> BackfillProgress: ...

    def backfill(self, key: str) -> BackfillProgress | None: ...

    async def reconcile(
        self,
        downstream: Downstream,
        dry_run: bool,
        *,
        groups: GroupOptions | None = None,
        remove_extra_members: bool = False,
    ) -> dict[str, Any]: ...

    async def sync(self, tenant: Tenant, user_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Enabled:
    tenant: EnabledTenant
    created: bool  # False: a rotation of an enabled realm (or of one whose record this replica cannot read)


API_ACTOR = "admin token (API)"  # who enabled or disabled, in the activity log, when not the console


def _now() -> datetime:
    return datetime.now(UTC)


class TenantService:
    """Every method taking a `key` takes a tenant key (service.domain.downstreams): the realm alone for its
    default downstream (the /tenants/{realm} routes), `<realm>/<name>` for the others."""

    def __init__(
        self,
        records: TenantRecords,
        downstreams: Downstreams,
        parked: HeldRecords,
        dead_letters: HeldRecords,
        link: LinkFn,
        keycloak: KeycloakAccess | None = None,
        clock: Callable[[], datetime] = _now,
        *,
        activity: ActivityView | None = None,
        activity_sink: ActivitySink | None = None,
    ) -> None:
        self._activity = activity
        self._activity_sink = activity_sink  # enables, rotations and disables go to the activity log
        self._records = records
        self._downstreams = downstreams
        self._parked = parked
        self._dead_letters = dead_letters
        self._link = link
        self._keycloak = keycloak
        self._clock = clock
        self._background: set[asyncio.Task[int]] = set()

    def tenants(self) -> TenantList:
        """Readable tenants (without their realm's warnings: that would be a Keycloak call each) and the
        records this replica cannot read, by realm."""
        listed: list[TenantView | UnreadableTenant] = [self._view(t) for t in self._records.all()]
        listed += [_unreadable(e) for e in self._records.unreadable()]
        return TenantList(tenants=sorted(listed, key=lambda t: (t.realm, t.downstream)))

    def downstreams(self, realm: str) -> DownstreamList:
        """One realm's downstreams, readable or not, by name."""
        listed = [t for t in self.tenants().tenants if t.realm == realm]
        return DownstreamList(downstreams=listed)

    async def show(self, key: str) -> TenantView:
        tenant = self._enabled(key)
        return self._view(tenant, await self._warnings(tenant.realm))

    async def enable(self, key: str, request: EnableTenant, *, actor: str = API_ACTOR) -> Enabled:
        """Enable or rotate. Nothing is stored unless the downstream validates; a rotation then replays
        what was parked (a refused token, say, is what it fixes)."""
        if request.backfill and self._keycloak is None:
            raise KeycloakNotConfigured("backfill")
        realm, name = split_tenant_key(key)
        tenant = _tenant(realm, request, self._clock(), name)
        try:
            config = await self._downstreams.validate(tenant.downstream)
        except EnableRefused as exc:
            log.info("tenant.enable.refused", tenant=realm, downstream=name, reason=exc.reason, detail=exc.detail)
            raise
        refused_groups = tenant.groups and patch_supported(effective(config, tenant.capabilities)) is False
        if refused_groups:  # a full member-list PUT is what AWS refuses: no group sync, users still flow
            tenant = replace(tenant, groups=False)
        previous = self._records.last_generation(key)  # also of a record this replica cannot read
        tenant = replace(tenant, generation=self._records.next_generation(key))
        await self._records.put(tenant)
        log.info(
            "tenant.enabled", tenant=realm, downstream=name, base_url=tenant.base_url, rotated=previous is not None
        )
        outcome = "rotated" if previous is not None else "enabled"
        self._record(realm, name, outcome, {"base_url": tenant.base_url, "by": actor})
        if previous is not None:
            self._in_background(self._parked.replay(key))
        warnings = await self._warnings(realm)  # never blocks: the realm may be set up after the enable
        if refused_groups:
            warnings = [*(warnings or []), RealmWarningView(code="groups_refused", detail=GROUPS_REFUSED)]
        for warning in warnings or ():
            log.warning("tenant.enable.warning", tenant=realm, downstream=name, code=warning.code)
        backfill = None
        if request.backfill and self._keycloak is not None:
            backfill = _progress(self._keycloak.start_backfill(key, groups=tenant.groups))
        view = self._view(tenant, warnings)
        return Enabled(EnabledTenant(**dict(view), backfill=backfill), created=previous is None)

    async def disable(self, key: str, *, actor: str = API_ACTOR) -> DisabledTenant:
        if self._records.last_generation(key) is None:  # an unreadable record may be disabled too
            raise NotEnabled(key)
        await self._records.remove(key)
        realm, name = split_tenant_key(key)
        log.info("tenant.disabled", tenant=realm, downstream=name)
        self._record(realm, name, "disabled", {"by": actor})
        return DisabledTenant(realm=realm, downstream=name)

    async def parked(self, key: str) -> ParkedList:
        return ParkedList(parked=[_held(r) for r in await self._parked.list(key)])

    async def parked_counts(self) -> dict[str, int]:
        """Parked changes per tenant key, read once for all of them (the console's tenants page)."""
        return await self._parked.counts()

    async def replay_parked(self, key: str) -> Replayed:
        return Replayed(replayed=await self._parked.replay(key))

    async def dead_letters(self, key: str | None) -> DeadLetterList:
        """A downstream's dead letters, or (None) all of them, those without a realm (poison records) included."""
        return DeadLetterList(dead_letters=[_held(r) for r in await self._dead_letters.list(key)])

    async def replay_dead_letters(self, key: str | None) -> Replayed:
        return Replayed(replayed=await self._dead_letters.replay(key))

    def start_backfill(self, key: str) -> BackfillProgressView:
        keycloak = self._needs_keycloak("backfill")
        tenant = self._enabled(key)
        return _progress(keycloak.start_backfill(key, groups=tenant.groups))

    def backfill(self, key: str) -> BackfillProgressView:
        progress = self._keycloak.backfill(key) if self._keycloak is not None else None
        if progress is None:
            raise NoBackfill(key)
        return _progress(progress)

    async def reconcile(self, key: str, request: Reconcile) -> ReconcileReport:
        """Compare Keycloak with the downstream; queue a fix of what differs unless dry_run; report either way."""
        keycloak = self._needs_keycloak("reconciliation")
        tenant = self._enabled(key)
        groups = tenant.group_options if tenant.groups else None
        return ReconcileReport.model_validate(
            await keycloak.reconcile(
                tenant.downstream, request.dry_run, groups=groups, remove_extra_members=request.remove_extra_members
            )
        )

    async def sync(self, key: str, user_id: str) -> SyncReport:
        """Provision one user now, from Keycloak; the report holds every step."""
        keycloak = self._needs_keycloak("on-demand sync")
        tenant = self._enabled(key)
        return SyncReport.model_validate(await keycloak.sync(tenant, user_id))

    async def link(self, key: str, user_id: str, request: LinkUser) -> LinkQueued:
        """Declare which downstream account is this Keycloak user's (resolving a conflict). Queued on the
        user's keyed partition, so a replay sent afterwards finds the user linked."""
        tenant = self._enabled(key)
        await self._link(key, user_id, request.downstream_id)
        log.info(
            "user.link.queued",
            tenant=tenant.realm,
            downstream=tenant.name,
            user_id=user_id,
            downstream_id=request.downstream_id,
        )
        return LinkQueued(realm=tenant.realm, user_id=user_id, downstream_id=request.downstream_id)

    def activity(self, key: str, user: str | None, limit: int) -> ActivityList:
        """A downstream's recent activity (newest first, `user`: that user's) and its summary, as every
        replica reads them from the activity topic."""
        if self._activity is None:
            raise ActivityOff()
        tenant = self._enabled(key)
        entries = self._activity.recent(tenant.realm, tenant.name, user=user or None, limit=limit)
        summary = self._activity.summary(tenant.realm, tenant.name, self._clock().timestamp())
        failure = summary.last_failure
        return ActivityList(
            realm=tenant.realm,
            downstream=tenant.name,
            entries=[_entry(e) for e in entries],
            summary=ActivitySummaryView(
                last_success=summary.last_success,
                changes_last_hour=summary.changes_last_hour,
                circuit=summary.circuit if summary.circuit in ("open", "half_open", "closed") else None,  # type: ignore[arg-type]
                last_failure=_entry(failure) if failure is not None else None,
                backfill=summary.backfill,
                drift=summary.drift,
            ),
        )

    async def idle(self) -> None:
        """Wait for the replays started in the background (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _enabled(self, key: str) -> Tenant:
        tenant = self._records.get(key)  # raises TenantUnreadable
        if tenant is None:
            raise NotEnabled(key)
        return tenant

    def _record(self, realm: str, name: str, outcome: str, detail: dict[str, Any]) -> None:
        if self._activity_sink is not None:
            when = self._clock().timestamp()
            self._activity_sink.record(ActivityEntry(when, realm, name, "tenant", outcome, detail=detail))

    def _needs_keycloak(self, what: str) -> KeycloakAccess:
        if self._keycloak is None:
            raise KeycloakNotConfigured(what)
        return self._keycloak

    async def _warnings(self, realm: str) -> list[RealmWarningView] | None:
        """What in the realm's event settings keeps its events away, read now; None without Keycloak access."""
        if self._keycloak is None:
            return None
        return [
            RealmWarningView(code=w.code.value, detail=w.detail) for w in await self._keycloak.realm_warnings(realm)
        ]

    def _view(self, tenant: Tenant, warnings: list[RealmWarningView] | None = None) -> TenantView:
        return TenantView(
            realm=tenant.realm,
            downstream=tenant.name,
            status=tenant.status,
            base_url=tenant.base_url,
            delete_policy=tenant.delete_policy,
            max_concurrency=tenant.max_concurrency,
            rate_limit_per_minute=tenant.rate_limit_per_minute,
            realm_id=tenant.realm_id,
            reconcile_interval_minutes=tenant.reconcile_interval_minutes,
            updated_at=tenant.updated_at,
            notices=[
                NoticeView(code=code, since=since, detail=NOTICES.get(code, ""))
                for code, since in sorted(tenant.notices.items())
            ],
            circuit=self._downstreams.circuit(tenant.key),
            lookups=self._downstreams.lookups(tenant.key),
            writes=self._downstreams.writes(tenant.key),
            capabilities=tenant.capabilities.public(),
            groups=tenant.groups,
            group_display=tenant.group_display,
            group_flatten=tenant.group_flatten,
            group_paths=list(tenant.group_paths),
            group_pattern=tenant.group_pattern,
            group_members_per_request=tenant.group_members_per_request,
            bulk=tenant.bulk,
            auth=AuthView.model_validate(auth_view(tenant.auth)),
            preset=tenant.preset,
            user_lookup=tenant.user_lookup,
            mapping=tenant.mapping.public(),
            warnings=warnings,
        )

    def _in_background(self, work: Coroutine[Any, Any, int]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)


GROUPS_REFUSED = (
    "the downstream's ServiceProviderConfig says it does not support PATCH: memberships could only be sent "
    "as whole member lists, which some applications refuse (AWS) and which lose concurrent changes; group "
    "sync stays off for this tenant, its users are provisioned"
)


def _unreadable(exc: TenantUnreadable) -> UnreadableTenant:
    realm, name = split_tenant_key(exc.realm)  # the record's key
    return UnreadableTenant(realm=realm, downstream=name, detail=f"{exc}: {exc.fix}")


def _tenant(realm: str, request: EnableTenant, now: datetime, name: str = DEFAULT) -> Tenant:
    token, auth = _credentials(request.token.get_secret_value() if request.token else None, request.auth)
    return Tenant(
        realm,
        request.base_url.rstrip("/"),
        token,
        request.delete_policy,
        now.isoformat(timespec="seconds"),
        max_concurrency=request.max_concurrency,
        rate_limit_per_minute=request.rate_limit_per_minute,
        realm_id=request.realm_id,
        reconcile_interval_minutes=request.reconcile_interval_minutes,
        groups=request.groups,
        group_display=request.group_display,
        group_flatten=request.group_flatten,
        group_paths=tuple(request.group_paths),
        group_pattern=request.group_pattern,
        group_members_per_request=request.group_members_per_request,
        bulk=request.bulk,
        auth=auth,
        preset=request.preset,
        user_lookup=presets.user_lookup(request.preset, request.user_lookup),
        capabilities=presets.capabilities(
            request.preset, Overrides(**request.capabilities.model_dump()) if request.capabilities else Overrides()
        ),
        mapping=_mapping(request.mapping),
        name=name,
    )


def _mapping(entries: Sequence[MappingEntry] | None) -> AttributeMapping:
    """The request's mapping (validated with the request), or the default."""
    if entries is None:
        return DEFAULT_MAPPING
    return parse_mapping([entry.model_dump(exclude_none=True) for entry in entries])


def _credentials(token: str | None, auth: AuthRequest | None) -> tuple[str, SecretCredentials | None]:
    """(static bearer token, other credentials): the request holds exactly one of `token` and `auth`."""
    if isinstance(auth, OAuth2ClientCredentialsRequest):
        secret = auth.client_secret.get_secret_value()
        return "", ClientCredentials(auth.token_url, auth.client_id, secret, auth.scope, auth.audience)
    if isinstance(auth, BasicAuthRequest):
        return "", BasicAuth(auth.username, auth.password.get_secret_value())
    if auth is not None:
        return auth.token.get_secret_value(), None
    assert token is not None
    return token, None


def _entry(entry: ActivityEntry) -> ActivityEntryView:
    return ActivityEntryView.model_validate(
        {
            "time": entry.time,
            "kind": entry.kind,
            "outcome": entry.outcome,
            "subject": entry.subject,
            "name": entry.name,
            "action": entry.action,
            "reason": entry.reason,
            "sent": [{"method": s.method, "path": s.path, "status": s.status, "answer": s.answer} for s in entry.sent],
            "detail": entry.detail,
        }
    )


def _progress(progress: BackfillProgress) -> BackfillProgressView:
    return BackfillProgressView.model_validate(progress.public())


def _held(record: HeldRecord) -> HeldRecordView:
    """The record's summary, with every field the contract types as text kept only if it is text (a poison
    record's value can hold anything)."""
    doc = record.public()
    source = doc.get("source") or {}
    return HeldRecordView(
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp_ms,
        tenant=record.tenant,
        reason=_text(doc.get("reason")),
        error=_text(doc.get("error")),
        source=HeldSource(
            topic=_text(source.get("topic")),
            partition=_text(source.get("partition")),
            offset=_text(source.get("offset")),
        ),
        replayable=record.replayable,
        downstream_id=_text(doc.get("downstream_id")),
        owner=_text(doc.get("owner")),
        user_id=_text(doc.get("user_id")),
        event_type=_text(doc.get("event_type")),
        event_id=_text(doc.get("event_id")),
        op=_text(doc.get("op")),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("tenant.replay.failed", error=str(exc)[:300])
