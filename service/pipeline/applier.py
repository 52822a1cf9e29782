"""Apply one user change and say what became of it: a `Verdict`.

The applier decides: which tenant, which state, whether the change may go now, the authoritative
re-read, the plan, the SCIM calls and their retries. The consumer (service.pipeline.apply) acts on the
verdict: it saves the state, sets the change aside (parking or dead-letter topic), counts and logs. The
applier never touches Kafka, so every decision is unit-tested with fakes (tests/pipeline/test_applier.py).

    Applied   the downstream holds what the change asks (or needed nothing); the new state to save
    Skipped   nothing to do for this realm (not enabled), or nothing knowable (no representation)
    SetAside  park (replayable, the user's later changes queue behind it) or dead-letter, with a reason
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import structlog

from service.domain.changes import UserChange
from service.domain.downstreams import split_tenant_key, tenant_key
from service.domain.groups import GroupChange, GroupState, plan_group
from service.domain.mapping import kept_user_attributes
from service.domain.plan import membership_hops, plan_change
from service.domain.stamps import ChangeSource
from service.domain.state import USER_ATTRIBUTE_PREFIX, UserState, merge
from service.errors import (
    CircuitOpen,
    Parked,
    ScimError,
    ScimNotFound,
    ScimOwnershipConflict,
    ScimRejected,
    ScimTransient,
    TenantUnreadable,
)
from service.keycloak_admin.errors import KeycloakError, KeycloakNotFound, KeycloakUnavailable
from service.metrics import Metrics
from service.pipeline.authoritative import read_truth
from service.pipeline.ports import GroupReader, KeycloakReader
from service.pipeline.set_aside import DOWNSTREAM_ID, OWNER
from service.retry import RetryPolicy
from service.scim.executor import Result, ScimPort, execute
from service.scim.group_executor import GroupResult, GroupScimPort, execute_group
from service.tenants.models import Tenant

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Applied:
    change: UserChange  # as applied: the realm's name, the user as Keycloak stores it in authoritative mode
    result: Result
    reason: str
    state: UserState  # to save under change.key
    hops: tuple[GroupChange, ...] = ()  # to the user's groups (memberships), sent before the state is saved


@dataclass(frozen=True, slots=True)
class Skipped:
    realm: str | None  # the tenant key (service.domain.downstreams); None: no enabled tenant knows this realm
    reason: str  # no_enabled_tenant | no_representation
    outcome: str  # the changes_total outcome: skipped_no_tenant | no_representation


@dataclass(frozen=True, slots=True)
class SetAside:
    park: bool  # True: the parking topic (replayed in order; the user's later changes queue behind it)
    reason: str  # a stable label: retries_exhausted, circuit_open, unauthorized, conflict, redirect ...
    error: BaseException
    realm: str  # the tenant key (service.domain.downstreams): the realm, for its default downstream
    key: str  # the user's state key: parking marks the user parked
    outcome: str  # the changes_total outcome: parked, rejected, conflict, failed
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GroupApplied:
    change: GroupChange  # the batch's first change, with the realm's name
    result: GroupResult
    reason: str
    state: GroupState  # to save under change.key
    hops: tuple[GroupChange, ...] = ()  # to parent and child groups, sent before the state is saved
    patches: int = 0


Verdict = Applied | GroupApplied | Skipped | SetAside


class TenantDirectory(Protocol):
    """The tenants this replica knows (service.tenants.store.TenantStore)."""

    def get(self, key: str) -> Tenant | None: ...  # by tenant key; raises TenantUnreadable for a record it cannot read

    async def mark_unauthorized(self, seen: Tenant) -> None: ...

    async def note(self, key: str, code: str) -> None: ...


class StateView(Protocol):
    """Per-user and per-group state of the partitions this replica owns."""

    def get(self, key: str) -> UserState: ...

    def get_group(self, key: str) -> GroupState: ...


@dataclass
class Applier:
    tenants: TenantDirectory
    states: StateView
    scim: ScimPort
    keycloak: KeycloakReader | None = None  # re-reads users whose event carried no representation
    authoritative: bool = False  # ... and, if set, every user
    budget_seconds: float = 300.0  # how long one change may keep retrying before it is parked
    backoff: RetryPolicy = field(default_factory=RetryPolicy)
    metrics: Metrics | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    wall_clock: Callable[[], float] = time.time  # the time of the hops this applier sends
    _warned: set[str] = field(default_factory=set)

    @property
    def rereads_all(self) -> bool:
        """Whether every change is re-read from Keycloak (authoritative mode, with Keycloak access)."""
        return self.keycloak is not None and self.authoritative

    async def apply(self, change: UserChange, *, replay: bool = False) -> Verdict:
        deadline = self.clock() + self.budget_seconds
        try:
            tenant = await self._tenant(change, deadline)
        except TenantUnreadable as exc:
            return _park(exc.label, exc, _named(change, exc))
        if tenant is None:
            return Skipped(None, "no_enabled_tenant", "skipped_no_tenant")
        change = _for_tenant(change, tenant)  # a realm id (playa plugin) becomes the realm's name
        if replay and change.sighting is not None:  # what a backfill's listing saw is old news by now
            change = replace(change, sighting=None)
        if self.states.get(change.key).parked and not replay:
            reason = self.states.get(change.key).parked
            return _park("behind_parked", Parked(f"an earlier change is parked ({reason})"), change)
        if tenant.status == "unauthorized":
            return _park("unauthorized", Parked("the downstream refuses the tenant's token"), change)
        return await self._apply(change, tenant, deadline)

    async def apply_queued(self, changes: list[UserChange]) -> list[Verdict]:
        """A user's changes queued behind each other, in order, applied as one downstream write: the
        state merges them all (as it would one by one) and the plan moves the downstream from what was
        last written to that, so a user who changed ten times while queued costs one PATCH, not ten.
        Only `foldable` changes come here. One verdict per change: those whose values the write carries
        share its result, those that added nothing are superseded, a failure sets every one aside."""
        if len(changes) == 1:
            return [await self.apply(changes[0])]
        deadline = self.clock() + self.budget_seconds
        first = changes[0]
        try:
            tenant = await self._tenant(first, deadline)
        except TenantUnreadable as exc:
            return [_park(exc.label, exc, _named(c, exc)) for c in changes]
        if tenant is None:
            return [Skipped(None, "no_enabled_tenant", "skipped_no_tenant") for _ in changes]
        changes = [_for_tenant(c, tenant) for c in changes]
        state = self.states.get(first.key)
        if state.parked:
            return [_park("behind_parked", Parked(f"an earlier change is parked ({state.parked})"), c) for c in changes]
        if tenant.status == "unauthorized":
            return [_park("unauthorized", Parked("the downstream refuses the tenant's token"), c) for c in changes]
        adds = []
        for change in changes:
            merged = merge(state, change)
            adds.append(merged is not state)
            state = merged
        if not any(adds):
            return [await self._apply(change, tenant, deadline) for change in changes]  # each superseded
        last = max(i for i, added in enumerate(adds) if added)  # what follows it added nothing
        verdict = await self._apply(changes[last], tenant, deadline, folded=tuple(changes[:last]))
        if not isinstance(verdict, Applied):
            return [verdict for _ in changes]
        verdicts: list[Verdict] = []
        for i, (change, added) in enumerate(zip(changes, adds, strict=True)):
            if i == last:
                shared = replace(verdict, hops=())
            elif added:
                shared = replace(verdict, change=change, reason="coalesced", hops=())
            else:
                shared = replace(verdict, change=change, result=Result.SKIPPED, reason="superseded", hops=())
            # The hops go with the first verdict acted on: out before the state is first saved.
            verdicts.append(replace(shared, hops=verdict.hops) if i == 0 else shared)
        return verdicts

    async def _apply(
        self, change: UserChange, tenant: Tenant, deadline: float, folded: tuple[UserChange, ...] = ()
    ) -> Verdict:
        """Plan and execute until it goes through, fails for good, or the retry budget is spent.
        `folded`: earlier queued changes of the user, merged into its state first (apply_queued)."""
        bound = log.bind(
            tenant=change.realm, downstream=change.downstream, user_id=change.user_id, event_id=change.event_id
        )
        attempt = 0
        while True:
            attempt += 1
            try:
                effective = await self._effective(change)
                if effective is None:
                    await self._no_representation(change)
                    return Skipped(tenant.key, "no_representation", "no_representation")
                effective = _for_tenant(effective, tenant)  # a re-read from Keycloak holds every attribute
                state = self.states.get(change.key)
                for earlier in folded:
                    state = merge(state, earlier)
                if folded:
                    state = _unsure_of(state, folded)
                if attempt > 1 and effective.sighting is not None:  # a failed POST may have created it
                    effective = replace(effective, sighting=None)
                if effective.group_paths and tenant.groups:
                    state = await self._memberships_of_new_user(state, effective)
                plan = plan_change(state, effective, tenant.delete_policy, tenant.mapping.keys)
                outcome = await execute(plan, effective, tenant.downstream, self.scim)
                new_state = outcome.state if outcome.state.parked is None else replace(outcome.state, parked=None)
                hops: tuple[GroupChange, ...] = ()
                if tenant.groups:
                    new_state, hops = membership_hops(
                        new_state, change.realm, change.user_id, int(self.wall_clock() * 1000)
                    )
                    hops = tuple(replace(hop, downstream=change.downstream) for hop in hops)
                return Applied(effective, outcome.result, outcome.reason, new_state, hops)
            except (ScimTransient, KeycloakUnavailable) as exc:
                if isinstance(exc, CircuitOpen):
                    return _park("circuit_open", exc, change)
                delay = self.backoff.delay(min(attempt, 10), exc.retry_after)
                if self.clock() + delay > deadline:
                    return _park("retries_exhausted", exc, change)
                bound.warning("change.retry", error=str(exc), attempt=attempt, delay=round(delay, 2))
                if self.metrics is not None:
                    self.metrics.retries.labels(tenant.realm, tenant.name).inc()
                await self.sleep(delay)
                try:
                    refreshed = await self._tenant(change, deadline)
                except TenantUnreadable as unreadable:
                    return _park(unreadable.label, unreadable, change)
                if refreshed is None:  # disabled meanwhile
                    return Skipped(None, "no_enabled_tenant", "skipped_no_tenant")
                tenant = refreshed
            except KeycloakError as exc:  # refused credentials or roles: fix, then replay
                return _park("keycloak_refused", exc, change)
            except ScimRejected as exc:
                if exc.unauthorized:
                    await self.tenants.mark_unauthorized(tenant)
                    return _park("unauthorized", exc, change)
                return SetAside(False, exc.reason, exc, tenant.key, change.key, "rejected")
            except ScimOwnershipConflict as exc:  # never written: an operator resolves or links
                headers = {DOWNSTREAM_ID: exc.downstream_id, OWNER: exc.owner}
                return SetAside(False, "conflict", exc, tenant.key, change.key, "conflict", headers)
            except ScimNotFound as exc:  # only an operator's link reaches here: the account is not there
                return SetAside(False, "link_target_missing", exc, tenant.key, change.key, "failed")
            except ScimError as exc:  # a 409 with no account to adopt
                return SetAside(False, "conflict", exc, tenant.key, change.key, "conflict")

    async def _tenant(self, change: UserChange, deadline: float) -> Tenant | None:
        """The change's tenant (None: not enabled). A record this replica cannot read is a transient
        failure, never "no tenant": wait with backoff until `deadline`, then raise TenantUnreadable."""
        attempt = 0
        while True:
            try:
                return self.tenants.get(tenant_key(change.realm, change.downstream))
            except TenantUnreadable as exc:
                attempt += 1
                delay = self.backoff.delay(min(attempt, 10))
                if self.clock() + delay > deadline:
                    raise
                if attempt == 1:
                    log.warning(
                        "change.waiting",
                        reason=exc.label,
                        tenant=exc.realm,
                        user_id=change.user_id,
                        event_id=change.event_id,
                        error=str(exc),
                        fix=exc.fix,
                    )
                await self.sleep(delay)

    async def _effective(self, change: UserChange) -> UserChange | None:
        """The change to apply: the user as Keycloak stores it (authoritative mode, or an event without
        a representation), else the change itself. None: nothing says what changed."""
        if change.op == "link":
            return change
        if self.keycloak is not None and (self.authoritative or change.reread):
            return await read_truth(self.keycloak, change)
        return None if change.reread else change

    async def _memberships_of_new_user(self, state: UserState, change: UserChange) -> UserState:
        """A user created with `groups` fires no membership event: Keycloak's answer says which groups
        (merged as memberships at the create's time); without Keycloak access the tenant is told."""
        if self.keycloak is None:
            await self.tenants.note(tenant_key(change.realm, change.downstream), "groups_by_path")
            return state
        try:
            groups = await self.keycloak.user_groups(change.realm, change.user_id)
        except KeycloakNotFound as exc:
            if not exc.user_missing:
                raise
            return state  # deleted since: its deletion follows
        for group in groups:
            if isinstance(group.get("id"), str):
                joined = replace(change, op="membership", group_id=group["id"], member=True, attributes={})
                state = merge(state, joined)
        return state

    async def _no_representation(self, change: UserChange) -> None:
        """Warned once per realm with the fix, and noted on the tenant for every replica to show."""
        if change.realm not in self._warned:
            self._warned.add(change.realm)
            log.warning(
                "change.no_representation",
                tenant=change.realm,
                type=change.event_type,
                hint="turn on the realm's Admin events > Include representation, "
                "or configure Keycloak access (OUTBOUND_SCIM_KEYCLOAK_*) so users are re-read",
            )
        await self.tenants.note(tenant_key(change.realm, change.downstream), "no_representation")


def _unsure_of(state: UserState, folded: tuple[UserChange, ...]) -> UserState:
    """The state with what was last written of the folded changes' attributes forgotten, so the shared
    write sends their newest values. A replica that died after writing one of them downstream and before
    saving the state left `written` behind the downstream: applied one by one, the re-read change would
    write it again; folded into a later one that restores the old value, nothing would."""
    touched = {attr for earlier in folded for attr in earlier.attributes}
    touched |= {USER_ATTRIBUTE_PREFIX + name for earlier in folded for name in earlier.user_attributes}
    if any(earlier.user_attributes_complete for earlier in folded):  # it may have removed any of them
        touched |= {key for key in state.written if key.startswith(USER_ATTRIBUTE_PREFIX)}
    if not touched & state.written.keys():
        return state
    return replace(state, written={k: v for k, v in state.written.items() if k not in touched})


def foldable(change: UserChange, *, authoritative: bool) -> bool:
    """Whether the change may share one downstream write with the user's changes queued next to it:
    a plain update or create carrying its values. Anything whose meaning depends on being applied on
    its own (a deletion, a link, a forced write, a re-read from Keycloak, a membership, a replayed
    change, a create with groups) is applied alone. `authoritative`: every change is re-read
    (Applier.rereads_all)."""
    return (
        change.op == "upsert"
        and not authoritative
        and not change.force
        and not change.reread
        and not change.group_paths
        and change.link_to is None
        and change.source is ChangeSource.EVENT
    )


def _in_realm(change: UserChange, realm: str) -> UserChange:
    """`change` named for `realm`: itself when it already is (dataclasses.replace per change costs)."""
    return change if change.realm == realm else replace(change, realm=realm)


def _for_tenant(change: UserChange, tenant: Tenant) -> UserChange:
    """`change` named for the tenant's realm, holding only the user attributes its mapping sends."""
    change = _in_realm(change, tenant.realm)
    if not (change.user_attributes or change.user_attributes_complete):
        return change
    kept, complete = kept_user_attributes(change.user_attributes, change.user_attributes_complete, tenant.mapping)
    return replace(change, user_attributes=kept, user_attributes_complete=complete)


def _park(reason: str, error: BaseException, change: UserChange | GroupChange) -> SetAside:
    return SetAside(True, reason, error, tenant_key(change.realm, change.downstream), change.key, "parked")


def _named(change: UserChange | GroupChange, unreadable: TenantUnreadable) -> UserChange | GroupChange:
    """The change with its realm as the unreadable record names it (a realm id becomes the name)."""
    return replace(change, realm=split_tenant_key(unreadable.realm)[0])


@dataclass
class GroupApplier:
    """A group's batch of changes (its own events, and hops from its users, parent and sub-groups)
    -> one plan -> the downstream calls -> a verdict. Same tenants, retries and set-aside vocabulary as
    the user applier; a group's failure parks or dead-letters that group only, users keep flowing."""

    tenants: TenantDirectory
    states: StateView
    scim: GroupScimPort
    keycloak: GroupReader | None = None  # re-reads groups whose event carried no representation
    authoritative: bool = False
    budget_seconds: float = 300.0
    backoff: RetryPolicy = field(default_factory=RetryPolicy)
    metrics: Metrics | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    wall_clock: Callable[[], float] = time.time

    async def apply(self, changes: list[GroupChange], *, replay: bool = False) -> Verdict:
        first = changes[0]
        deadline = self.clock() + self.budget_seconds
        try:
            tenant = self.tenants.get(tenant_key(first.realm, first.downstream))
        except TenantUnreadable as exc:  # the user applier waits for the record first; a group parks
            return _park(exc.label, exc, _named(first, exc))
        if tenant is None:
            return Skipped(None, "no_enabled_tenant", "skipped_no_tenant")
        if not tenant.groups:
            return Skipped(tenant.key, "groups_off", "skipped_groups")
        changes = [replace(c, realm=tenant.realm) for c in changes]
        key = changes[0].key
        if self.states.get_group(key).parked and not replay:
            return _park("behind_parked", Parked("an earlier change of the group is parked"), changes[0])
        if tenant.status == "unauthorized":
            return _park("unauthorized", Parked("the downstream refuses the tenant's token"), changes[0])
        bound = log.bind(
            tenant=tenant.realm, downstream=tenant.name, group_id=changes[0].group_id, changes=len(changes)
        )
        attempt = 0
        while True:
            attempt += 1
            try:
                effective = [await self._effective(c) for c in changes]
                plan = plan_group(
                    self.states.get_group(key), effective, tenant.group_options, int(self.wall_clock() * 1000)
                )
                outcome = await execute_group(
                    plan,
                    tenant.realm,
                    changes[0].group_id,
                    tenant.downstream,
                    self.scim,
                    tenant.group_members_per_request,
                )
                state = outcome.state if outcome.state.parked is None else replace(outcome.state, parked=None)
                hops = tuple(replace(hop, downstream=tenant.name) for hop in plan.hops)
                return GroupApplied(changes[0], outcome.result, outcome.reason, state, hops, outcome.patches)
            except (ScimTransient, KeycloakUnavailable) as exc:
                if isinstance(exc, CircuitOpen):
                    return _park("circuit_open", exc, changes[0])
                delay = self.backoff.delay(min(attempt, 10), exc.retry_after)
                if self.clock() + delay > deadline:
                    return _park("retries_exhausted", exc, changes[0])
                bound.warning("change.retry", error=str(exc), attempt=attempt, delay=round(delay, 2))
                if self.metrics is not None:
                    self.metrics.retries.labels(tenant.realm, tenant.name).inc()
                await self.sleep(delay)
            except KeycloakError as exc:
                return _park("keycloak_refused", exc, changes[0])
            except ScimRejected as exc:
                if exc.unauthorized:
                    await self.tenants.mark_unauthorized(tenant)
                    return _park("unauthorized", exc, changes[0])
                return SetAside(False, exc.reason, exc, tenant.key, key, "rejected")
            except ScimOwnershipConflict as exc:
                headers = {DOWNSTREAM_ID: exc.downstream_id, OWNER: exc.owner}
                return SetAside(False, "conflict", exc, tenant.key, key, "conflict", headers)
            except ScimNotFound as exc:  # POST /Groups answered 404: the downstream serves no groups
                return SetAside(False, "groups_unsupported", exc, tenant.key, key, "failed")
            except ScimError as exc:
                return SetAside(False, "conflict", exc, tenant.key, key, "conflict")

    async def _effective(self, change: GroupChange) -> GroupChange:
        """A group event as Keycloak stores the group now (authoritative mode, or no representation):
        its name and parent, or its deletion. Hops from other appliers are taken as they are."""
        if change.op != "upsert" or self.keycloak is None or not (self.authoritative or change.reread):
            return change
        if change.source is not ChangeSource.EVENT:
            return change
        read_at = max(int(self.wall_clock() * 1000), change.time_ms)
        group = await self.keycloak.get_group(change.realm, change.group_id)
        if group is None:
            return replace(change, op="delete", time_ms=read_at)
        return replace(
            change, time_ms=read_at, name=group.get("name"), parent=group.get("parent"), parent_known=True, reread=False
        )
