"""Carry out a `Plan` against one downstream: resolve the downstream id, then POST / PATCH / DELETE.

Idempotent by construction: the downstream id comes from the stored state, else from
`GET /Users?filter=externalId eq "<keycloak id>"`, and a 409 on POST adopts the existing record
(found by externalId, then userName) instead of creating a second one. A retried POST whose first
attempt did succeed therefore ends in the same single user.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from service.domain import scim
from service.domain.changes import UserChange
from service.domain.plan import Plan
from service.domain.state import UserState
from service.errors import ScimConflict, ScimNotFound
from service.scim.client import Downstream, ScimClient


@dataclass(frozen=True, slots=True)
class Outcome:
    result: str  # created | linked | updated | deactivated | deleted | unchanged | skipped
    state: UserState
    reason: str = ""


async def execute(plan: Plan, change: UserChange, ds: Downstream, client: ScimClient) -> Outcome:
    if plan.action == "none":
        return Outcome("unchanged" if plan.reason == "unchanged" else "skipped", plan.state, plan.reason)
    if plan.action == "delete":
        return await _delete(plan, change, ds, client)
    if plan.action == "deactivate":
        return await _deactivate(plan, change, ds, client)
    return await _sync(plan, change, ds, client)


async def _sync(plan: Plan, change: UserChange, ds: Downstream, client: ScimClient) -> Outcome:
    downstream_id = plan.state.downstream_id
    if downstream_id is not None:
        try:
            await _patch(client, ds, downstream_id, plan.changed, plan.values)
            return Outcome("updated", plan.state)
        except ScimNotFound:
            pass  # deleted downstream behind our back: resolve again, re-create if we can
    found = await client.find_user(ds, "externalId", change.user_id)
    if found is not None:
        # Known user but no stored link (first change seen, or state lost): make it match all we know.
        await _patch(client, ds, found["id"], plan.values, plan.values)
        return Outcome("updated", replace(plan.state, downstream_id=found["id"]))
    if not plan.values.get("userName"):
        return Outcome("skipped", replace(plan.state, downstream_id=None), "not_in_downstream_without_username")
    try:
        created = await client.create_user(ds, scim.user_resource(change.user_id, plan.values))
        return Outcome("created", replace(plan.state, downstream_id=created["id"]))
    except ScimConflict:
        return await _adopt(plan, change, ds, client)


async def _adopt(plan: Plan, change: UserChange, ds: Downstream, client: ScimClient) -> Outcome:
    """POST said 409: the user exists (a retried POST, or a user made downstream by hand). Link it."""
    found = await client.find_user(ds, "externalId", change.user_id)
    if found is None:
        found = await client.find_user(ds, "userName", plan.values["userName"])
    if found is None:
        raise ScimConflict(409, "POST", "Users", "uniqueness", "conflict but no user matches")
    operations = [{"op": "replace", "path": "externalId", "value": change.user_id}]
    operations += scim.patch_operations(plan.values, plan.values)
    await client.patch_user(ds, found["id"], operations)
    return Outcome("linked", replace(plan.state, downstream_id=found["id"]))


async def _deactivate(plan: Plan, change: UserChange, ds: Downstream, client: ScimClient) -> Outcome:
    downstream_id = await _resolve(plan.state, change, ds, client)
    if downstream_id is None:
        return Outcome("skipped", plan.state, "not_in_downstream")
    try:
        await client.patch_user(ds, downstream_id, scim.patch_operations({"active": False}, plan.values))
    except ScimNotFound:
        return Outcome("skipped", replace(plan.state, downstream_id=None), "not_in_downstream")
    return Outcome("deactivated", replace(plan.state, downstream_id=downstream_id))


async def _delete(plan: Plan, change: UserChange, ds: Downstream, client: ScimClient) -> Outcome:
    gone = replace(plan.state, downstream_id=None)
    downstream_id = await _resolve(plan.state, change, ds, client)
    if downstream_id is None:
        return Outcome("skipped", gone, "not_in_downstream")
    try:
        await client.delete_user(ds, downstream_id)
    except ScimNotFound:
        return Outcome("skipped", gone, "not_in_downstream")
    return Outcome("deleted", gone)


async def _resolve(state: UserState, change: UserChange, ds: Downstream, client: ScimClient) -> str | None:
    if state.downstream_id is not None:
        return state.downstream_id
    found = await client.find_user(ds, "externalId", change.user_id)
    return found["id"] if found else None


async def _patch(
    client: ScimClient, ds: Downstream, downstream_id: str, changed: dict[str, Any], values: dict[str, Any]
) -> None:
    operations = scim.patch_operations(changed, values)
    if operations:
        await client.patch_user(ds, downstream_id, operations)
