"""Carry out a `GroupPlan` against one downstream: resolve the group, then POST / PATCH / DELETE.

The identity rule of service.scim.executor holds for groups too. A group is written only when it is
provably ours:
- known by its stored downstream id, or
- found by a verified lookup of its externalId (the Keycloak group id), or
- after a 409 on POST, the group holding the displayName when its externalId is empty or ours.
A group of another externalId is never written, not even one a POST is answered with: ScimOwnershipConflict,
for an operator.

Members change by delta only: PATCH `add` on `members` and one `remove` per member by a value filter
(RFC 7644 §3.5.2), at most `per_request` member operations per request, never a replacement of the
member list. A group found rather than created gets every member we want added and none removed: the
members it already holds were not written by us, so they are not provably ours to remove.

A plan's `recheck` ids (members its batch may have written before a crash, see
service.domain.groups._merge_batch) are read before they are removed: one GET of the group's members,
judged by service.domain.groups.confirmed_removals.

Nothing here retries: an error reaches the applier, which runs the whole plan again. That is safe: an
add of a member the group holds is accepted (scim2-server keeps one), and a removal of a member it does
not hold is either accepted (scim2-server, tests/integration/test_scim2_groups.py) or answered 400
`noTarget` by strict servers, which counts as done: the PATCH is sent again one removal per request,
and a `noTarget` for a single removal means the member is already absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from service.domain import scim
from service.domain.groups import GroupAction, GroupPlan, GroupState, confirmed_removals
from service.errors import ANSWERED_WITH_ANOTHERS, ScimConflict, ScimNotFound, ScimOwnershipConflict, ScimRejected
from service.scim.transport import Downstream


class GroupScimPort(Protocol):
    """The group operations the executor needs; ScimClient implements them."""

    async def find_group(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None: ...

    async def create_group(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]: ...

    async def patch_group(self, ds: Downstream, group_id: str, operations: list[dict[str, Any]]) -> None: ...

    async def read_group_members(self, ds: Downstream, group_id: str) -> Any: ...  # the decoded answer, unchecked

    async def delete_group(self, ds: Downstream, group_id: str) -> None: ...


class GroupResult(StrEnum):
    CREATED = "created"
    LINKED = "linked"  # an existing group taken over after a 409 (its externalId was empty or ours)
    UPDATED = "updated"  # renamed or members changed (or found by its externalId and brought up to date)
    DELETED = "deleted"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class GroupOutcome:
    result: GroupResult
    state: GroupState  # the plan's state with what the downstream now holds (id, name, members)
    reason: str = ""
    patches: int = 0  # PATCH requests sent


async def execute_group(
    plan: GroupPlan, realm: str, group_id: str, ds: Downstream, port: GroupScimPort, per_request: int
) -> GroupOutcome:
    """Run `plan` for the Keycloak group `group_id` of `realm` (its externalId downstream is `group_id`);
    `per_request` caps the member operations of one PATCH request."""
    if plan.action is GroupAction.NONE:
        result = GroupResult.UNCHANGED if plan.reason == "unchanged" else GroupResult.SKIPPED
        return GroupOutcome(result, plan.state, plan.reason)
    if plan.action is GroupAction.DELETE:
        return await _delete(plan, group_id, ds, port)
    return await _Sync(plan, group_id, ds, port, per_request).run()


async def _delete(plan: GroupPlan, group_id: str, ds: Downstream, port: GroupScimPort) -> GroupOutcome:
    """Delete by the stored id, else by a verified externalId lookup: the group may predate the link."""
    gone = replace(plan.state, downstream_id=None, written_name=None, written_members=frozenset())
    downstream_id = plan.state.downstream_id
    if downstream_id is None:
        found = await port.find_group(ds, "externalId", group_id)
        downstream_id = found["id"] if found is not None else None
    if downstream_id is None:
        return GroupOutcome(GroupResult.SKIPPED, gone, "not_in_downstream")
    try:
        await port.delete_group(ds, downstream_id)
    except ScimNotFound:
        return GroupOutcome(GroupResult.SKIPPED, gone, "not_in_downstream")  # already gone
    return GroupOutcome(GroupResult.DELETED, gone)


class _Sync:
    """One SYNC plan: its PATCH requests are counted as they are sent."""

    def __init__(self, plan: GroupPlan, group_id: str, ds: Downstream, port: GroupScimPort, per_request: int) -> None:
        assert plan.display_name is not None, "a SYNC plan names the group"
        self.plan = plan
        self.name = plan.display_name
        self.group_id = group_id
        self.ds = ds
        self.port = port
        self.per_request = per_request
        self.patches = 0

    async def run(self) -> GroupOutcome:
        linked = self.plan.state.downstream_id
        if linked is not None:
            try:
                return await self._update(linked)
            except ScimNotFound:
                pass  # deleted downstream behind our back: resolve again, re-create if we must
        members = _wanted(self.plan)
        found = await self.port.find_group(self.ds, "externalId", self.group_id)
        if found is not None:
            # Ours (its externalId is our id) but not linked: name it (unless it has the name), add the members.
            named = found.get("displayName") == self.name
            rename = [] if named else [scim.display_name_replace(self.name)]
            return await self._take(GroupResult.UPDATED, found["id"], rename, members)
        try:
            created = await self.port.create_group(self.ds, scim.group_resource(self.group_id, self.name))
        except ScimConflict:
            return await self._adopt(members)
        owner = created.get("externalId")
        if owner not in (None, "", self.group_id):  # answered with a group it held already: not ours
            raise ScimOwnershipConflict(created["id"], str(owner), resource="Groups", detail=ANSWERED_WITH_ANOTHERS)
        await self._members(created["id"], sorted(members), [])
        return self._outcome(GroupResult.CREATED, created["id"], members)

    async def _update(self, downstream_id: str) -> GroupOutcome:
        """A linked group: rename if asked, then the member changes, batch by batch."""
        if self.plan.rename:
            await self._patch(downstream_id, [scim.display_name_replace(self.name)])
        kept = self.plan.state.written_members - set(self.plan.add) - set(self.plan.remove)
        rechecked = await self._rechecked(downstream_id, kept)
        await self._members(downstream_id, self.plan.add, (*self.plan.remove, *rechecked))
        written = (self.plan.state.written_members | set(self.plan.add)) - set(self.plan.remove)
        result = GroupResult.UPDATED if self.patches else GroupResult.UNCHANGED
        return self._outcome(result, downstream_id, written)

    async def _adopt(self, members: frozenset[str]) -> GroupOutcome:
        """POST said 409: a group holds the displayName (a retried POST of ours, or one made downstream).
        Take it only if its externalId is empty or ours."""
        found = await self.port.find_group(self.ds, "externalId", self.group_id)
        if found is None:
            found = await self.port.find_group(self.ds, "displayName", self.name)
        if found is None:
            raise ScimConflict(409, "POST", "Groups", "uniqueness", "conflict, and no group matches the displayName")
        owner = found.get("externalId")
        if owner not in (None, "", self.group_id):
            raise ScimOwnershipConflict(found["id"], str(owner), resource="Groups")
        claim = [{"op": "replace", "path": "externalId", "value": self.group_id}, scim.display_name_replace(self.name)]
        return await self._take(GroupResult.LINKED, found["id"], claim, members)

    async def _take(
        self, result: GroupResult, downstream_id: str, operations: list[dict[str, Any]], members: frozenset[str]
    ) -> GroupOutcome:
        """A group found downstream: `operations` make it ours and named, then every wanted member is added."""
        if operations:
            await self._patch(downstream_id, operations)
        rechecked = await self._rechecked(downstream_id, frozenset())
        await self._members(downstream_id, sorted(members), rechecked)
        return self._outcome(result, downstream_id, members)

    async def _rechecked(self, downstream_id: str, kept: frozenset[str]) -> tuple[str, ...]:
        """The plan's `recheck` ids the group holds, by one read of its members (none to recheck: no read)."""
        if not self.plan.recheck:
            return ()
        try:
            answer = await self.port.read_group_members(self.ds, downstream_id)
        except ScimRejected as exc:
            if exc.unauthorized:
                raise
            answer = None  # a server that refuses the read proves nothing: the removals are sent
        return confirmed_removals(self.plan.recheck, answer, kept)

    async def _members(self, downstream_id: str, add: Sequence[str], remove: Sequence[str]) -> None:
        """The member changes, at most `per_request` operations per PATCH request. A request refused for a
        removal of a non-member (400 noTarget) is sent again one removal at a time, and the removals the
        group answers so are taken as done: the member is absent, which is what was asked."""
        delta = replace(self.plan, add=tuple(add), remove=tuple(remove))
        for added, removed in delta.batches(self.per_request):
            operations = ([scim.members_add(added)] if added else []) + scim.member_removals(removed)
            try:
                await self._patch(downstream_id, operations)
            except ScimRejected as exc:
                if not (removed and _no_target(exc)):
                    raise
                await self._one_by_one(downstream_id, added, removed)

    async def _one_by_one(self, downstream_id: str, added: Sequence[str], removed: Sequence[str]) -> None:
        if added:
            await self._patch(downstream_id, [scim.members_add(added)])
        for member_id in removed:
            try:
                await self._patch(downstream_id, scim.member_removals([member_id]))
            except ScimRejected as exc:
                if not _no_target(exc):
                    raise

    async def _patch(self, downstream_id: str, operations: list[dict[str, Any]]) -> None:
        self.patches += 1
        await self.port.patch_group(self.ds, downstream_id, operations)

    def _outcome(self, result: GroupResult, downstream_id: str, members: frozenset[str]) -> GroupOutcome:
        state = replace(
            self.plan.state, downstream_id=downstream_id, written_name=self.name, written_members=frozenset(members)
        )
        return GroupOutcome(result, state, patches=self.patches)


def _no_target(exc: ScimRejected) -> bool:
    """A 400 `noTarget`: the operation's path matched nothing (RFC 7644 section 3.12), for a removal: not a member."""
    return exc.status == 400 and (exc.scim_type or "").lower() == "notarget"


def _wanted(plan: GroupPlan) -> frozenset[str]:
    """The members the group should hold: the plan's delta applied to what it says was written (when
    the plan was made for an unlinked group, nothing counts as written and this is `plan.add`)."""
    written = plan.state.written_members if plan.state.downstream_id is not None else frozenset()
    return (written - set(plan.remove)) | set(plan.add)
