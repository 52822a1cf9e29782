"""Carry out a `Plan` against one downstream: resolve the downstream id, then POST / PATCH / DELETE.

Only ever write to an account that is provably ours:
- known by its stored downstream id (we created it, adopted it, or an operator linked it), or
- found by a lookup whose answer is verified (the port returns a resource only when exactly one
  matches the filter exactly: externalId equal to the Keycloak id, or userName equal ignoring case), or
- after a 409 on POST, the account holding the userName when its externalId is ours, or empty and it
  lists no email address other than ours (an account showing no owner but another person's address
  is a look-alike).
An account owned by another externalId, or a look-alike, is never written: that is a conflict, for an
operator to resolve (downstream, or by an explicit link). DELETE and deactivation resolve by externalId only
(with the tenant's user_lookup `userName`: the account holding the userName, unless another user's
externalId is on it).

Reconciliation's orphan check of a user the state knows deleted (service.domain.plan.orphan_plan) acts on
every account a verified lookup finds with the user's id as externalId, exactly (`find_users`; a user
may have several: a request that landed late made one more), and on no other.

A backfill's change may carry what its listing of the downstream saw (service.domain.sighting): the
plan then says CREATE (nothing there: POST without a lookup, a 409 adopts as above) or ADOPT (the
userName is held: the adoption rules decide on live lookups, never a blind POST).

Updates of a linked account are PATCHes of what changed, or, where the downstream takes no PATCH (its
ServiceProviderConfig or the tenant's override says so, or it answered a PATCH with 405), a PUT of the
full user built from the merged state (the attributes a POST sends, externalId ours): a claim or an
operator's link is then that same PUT.

Idempotent by construction: a retried POST whose first attempt did succeed ends in one user (the
externalId lookup or the 409 adoption finds it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from service.domain import scim
from service.domain.capabilities import UserWrites
from service.domain.changes import UserChange
from service.domain.plan import Action, Plan
from service.domain.state import UserState
from service.errors import ANSWERED_WITH_ANOTHERS, ScimConflict, ScimNotFound, ScimOwnershipConflict, ScimRejected
from service.scim.client import Downstream


class ScimPort(Protocol):
    """The user operations the executor needs; ScimClient implements them (and a tracer wraps them)."""

    async def find_user(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None: ...

    async def find_users(self, ds: Downstream, attribute: str, value: str) -> list[dict[str, Any]]: ...

    async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]: ...

    async def patch_user(self, ds: Downstream, user_id: str, operations: list[dict[str, Any]]) -> None: ...

    async def replace_user(self, ds: Downstream, user_id: str, body: dict[str, Any]) -> None: ...

    async def user_writes(self, ds: Downstream) -> UserWrites: ...

    async def delete_user(self, ds: Downstream, user_id: str) -> None: ...


class Result(StrEnum):
    CREATED = "created"
    LINKED = "linked"  # an existing account taken over: adopted after a 409, or linked by an operator
    UPDATED = "updated"
    DEACTIVATED = "deactivated"
    DELETED = "deleted"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    state: UserState
    reason: str = ""


async def execute(plan: Plan, change: UserChange, ds: Downstream, port: ScimPort) -> Outcome:
    if plan.action is Action.NONE:
        return Outcome(Result.UNCHANGED if plan.reason == "unchanged" else Result.SKIPPED, plan.state, plan.reason)
    if plan.action is Action.DEACTIVATE or (plan.action is Action.DELETE and change.orphan):
        return await _orphans(plan, change, ds, port)
    if plan.action is Action.DELETE:
        return await _delete(plan, change, ds, port)
    if plan.action is Action.LINK:
        return await _link(plan, change, ds, port)
    if plan.action is Action.CREATE:
        return await _create(plan, change, ds, port)
    if plan.action is Action.ADOPT:
        return await _adopt(plan, change, ds, port)
    return await _sync(plan, change, ds, port)


async def _sync(plan: Plan, change: UserChange, ds: Downstream, port: ScimPort) -> Outcome:
    values = plan.values
    linked = plan.state.downstream_id
    if linked is not None:
        try:
            await _update(port, ds, linked, change.user_id, plan.changed, values)
            return Outcome(_updated(change, plan.changed), _written(plan.state, linked, values))
        except ScimNotFound:
            pass  # deleted downstream behind our back: resolve again, re-create if we can
    found = await _find_ours(port, ds, change, values)
    if found is not None and ds.user_lookup == "userName" and found.get("externalId") != change.user_id:
        # found by its userName, nobody's and no look-alike: claim it as the 409 adoption would
        return await _claim(plan, change, ds, port, found["id"])
    if found is not None:
        # Ours (its externalId is our id) but not linked yet: make it hold everything we know.
        await _update(port, ds, found["id"], change.user_id, values, values)
        return Outcome(_updated(change, values), _written(plan.state, found["id"], values))
    return await _create(plan, change, ds, port)


async def _create(plan: Plan, change: UserChange, ds: Downstream, port: ScimPort) -> Outcome:
    """POST the user; a 409 (an account holds the userName) goes through the adoption rules. The answer
    is checked like any account found: a downstream that answers a POST with an account it already held
    (another owner's, or a look-alike) gets no link, so nothing later is written to it."""
    values = plan.values
    if not ds.mapping.user_name(values):
        return Outcome(Result.SKIPPED, _unlinked(plan.state), "not_in_downstream_without_username")
    sent = scim.user_resource(change.user_id, values, ds.mapping)
    try:
        created = await port.create_user(ds, sent)
    except ScimConflict:
        return await _adopt(plan, change, ds, port)
    owner = created.get("externalId")
    if owner not in (None, "", change.user_id):
        raise ScimOwnershipConflict(created["id"], str(owner), detail=ANSWERED_WITH_ANOTHERS)
    if owner != change.user_id and scim.look_alike(created, sent):
        raise ScimOwnershipConflict(created["id"], "", look_alike=True, detail=ANSWERED_WITH_ANOTHERS)
    return Outcome(Result.CREATED, _written(plan.state, created["id"], values))


async def _adopt(plan: Plan, change: UserChange, ds: Downstream, port: ScimPort) -> Outcome:
    """POST said 409: an account holds the userName (a retried POST of ours, or one made downstream by
    hand). Take it only if it is ours or nobody's; another owner's account is a conflict."""
    values = plan.values
    found = await port.find_user(ds, "externalId", change.user_id) if ds.user_lookup == "externalId" else None
    if found is None:
        found = await port.find_user(ds, "userName", ds.mapping.user_name(values))
    if found is None:
        raise ScimConflict(409, "POST", "Users", "uniqueness", "conflict, and no account matches the userName")
    owner = found.get("externalId")
    if owner not in (None, "", change.user_id):
        raise ScimOwnershipConflict(found["id"], str(owner))
    if owner != change.user_id and scim.look_alike(found, _resource(change, ds, values)):
        raise ScimOwnershipConflict(found["id"], "", look_alike=True)
    return await _claim(plan, change, ds, port, found["id"])


async def _claim(plan: Plan, change: UserChange, ds: Downstream, port: ScimPort, downstream_id: str) -> Outcome:
    """Take over an account nobody owns: set its externalId to ours and write everything we know."""
    await _update(port, ds, downstream_id, change.user_id, plan.values, plan.values, claim=True)
    return Outcome(Result.LINKED, _written(plan.state, downstream_id, plan.values))


async def _link(plan: Plan, change: UserChange, ds: Downstream, port: ScimPort) -> Outcome:
    """An operator said which account is this user's: claim it (externalId) and write what we know."""
    assert change.link_to is not None
    await _update(port, ds, change.link_to, change.user_id, plan.values, plan.values, claim=True)
    return Outcome(Result.LINKED, _written(plan.state, change.link_to, plan.values), "operator_link")


async def _delete(plan: Plan, change: UserChange, ds: Downstream, port: ScimPort) -> Outcome:
    gone = _unlinked(plan.state)
    downstream_id = await _resolve(plan.state, change, ds, port)
    if downstream_id is None:
        return Outcome(Result.SKIPPED, gone, "not_in_downstream")
    try:
        await port.delete_user(ds, downstream_id)
    except ScimNotFound:
        return Outcome(Result.SKIPPED, gone, "not_in_downstream")
    return Outcome(Result.DELETED, gone)


async def _orphans(plan: Plan, change: UserChange, ds: Downstream, port: ScimPort) -> Outcome:
    """Every account carrying the deleted user's id as externalId (verified again here: the port is not
    trusted either) is deleted, or, under `deactivate`, set to active=false unless it shows active=false
    already. No other account is written, not even one a stored link names (the deletion's own change
    handles that one). The reason counts them."""
    if ds.user_lookup != "externalId":  # only an account with our externalId is an orphan
        return Outcome(Result.SKIPPED, plan.state, "orphan_without_external_id_lookup")
    found = await port.find_users(ds, "externalId", change.user_id)
    ours = {
        account["id"]: account
        for account in found
        if scim.matches(account, "externalId", change.user_id) and scim.valid_resource_id(account.get("id"))
    }
    if plan.action is Action.DELETE:
        deleted = [account_id for account_id in ours if await _deleted(port, ds, account_id)]
        linked = plan.state.downstream_id
        state = _unlinked(plan.state) if linked is None or linked in ours else plan.state
        result = Result.DELETED if deleted else Result.SKIPPED
        return Outcome(result, state, f"orphans: {len(deleted)} deleted of {len(ours)} found")
    inactive = [i for i, account in ours.items() if account.get("active") is False]
    deactivated = []
    for account_id, account in ours.items():
        if account_id in inactive:
            continue
        try:
            await _deactivate(port, ds, account_id, account)
        except ScimNotFound:
            continue  # deleted downstream since the lookup: nothing left to deactivate
        deactivated.append(account_id)
    state = plan.state
    if state.downstream_id in deactivated:
        state = replace(state, written={**state.written, "active": False})
    result = Result.DEACTIVATED if deactivated else (Result.UNCHANGED if ours else Result.SKIPPED)
    reason = f"orphans: {len(deactivated)} deactivated, {len(inactive)} inactive already, of {len(ours)} found"
    return Outcome(result, state, reason)


async def _deactivate(port: ScimPort, ds: Downstream, account_id: str, account: dict[str, Any]) -> None:
    """active=false and nothing else: a PATCH, or where the downstream takes no PATCH, a PUT of the
    account as the lookup found it (not of the user as last known: an orphan may hold another userName,
    one the linked account holds now)."""
    if await port.user_writes(ds) == "patch":
        try:
            await port.patch_user(ds, account_id, scim.patch_operations({"active": False}, {}, ds.mapping))
            return
        except ScimRejected as exc:
            if exc.status != 405:
                raise
    body = {key: value for key, value in account.items() if key not in ("id", "meta")}
    await port.replace_user(ds, account_id, {**body, "active": False})


async def _deleted(port: ScimPort, ds: Downstream, downstream_id: str) -> bool:
    """DELETE the account; False when it was gone already."""
    try:
        await port.delete_user(ds, downstream_id)
    except ScimNotFound:
        return False
    return True


async def _resolve(state: UserState, change: UserChange, ds: Downstream, port: ScimPort) -> str | None:
    if state.downstream_id is not None:
        return state.downstream_id
    found = await _find_ours(port, ds, change, state.values)
    return found["id"] if found else None


async def _find_ours(
    port: ScimPort, ds: Downstream, change: UserChange, values: dict[str, Any]
) -> dict[str, Any] | None:
    """The account that is this user's, by the tenant's lookup: its externalId; or, where an externalId
    filter finds nothing (user_lookup userName: Keycloak 26.7), the one account holding the userName,
    unless it carries another user's externalId or is a look-alike (the adoption rules' tests; Keycloak
    26.7 answers no externalId at all after the create, so there the userName and the email address
    identify the account)."""
    if ds.user_lookup == "externalId":
        return await port.find_user(ds, "externalId", change.user_id)
    user_name = ds.mapping.user_name(values)
    found = await port.find_user(ds, "userName", user_name) if isinstance(user_name, str) and user_name else None
    if found is None or found.get("externalId") == change.user_id:
        return found
    if found.get("externalId") not in (None, "") or scim.look_alike(found, _resource(change, ds, values)):
        return None
    return found


def _resource(change: UserChange, ds: Downstream, values: dict[str, Any]) -> dict[str, Any]:
    """What a POST of the user would send (the adoption rules compare an account with it)."""
    return scim.user_resource(change.user_id, values, ds.mapping)


async def _update(
    port: ScimPort,
    ds: Downstream,
    downstream_id: str,
    external_id: str,
    changed: dict[str, Any],
    values: dict[str, Any],
    *,
    claim: bool = False,
) -> None:
    """Make the account hold `values`: a PATCH of the `changed` attributes (with `claim`, its externalId
    set to ours first), or a PUT of the full user where the downstream takes no PATCH. A 405 to the
    PATCH (the client then switches the tenant to PUT) is resent at once as the PUT."""
    if await port.user_writes(ds) == "patch":
        operations = [{"op": "replace", "path": "externalId", "value": external_id}] if claim else []
        operations += scim.patch_operations(changed, values, ds.mapping)
        if not operations:
            return
        try:
            await port.patch_user(ds, downstream_id, operations)
            return
        except ScimRejected as exc:
            if exc.status != 405:
                raise
    if not ds.mapping.user_name(values):  # a PUT replaces the whole user, and userName is required
        raise ScimRejected(
            None, "PUT", "Users/{id}", detail="the full user has no userName to send", reason="incomplete_user"
        )
    await port.replace_user(ds, downstream_id, scim.user_resource(external_id, values, ds.mapping))


def _updated(change: UserChange, changed: dict[str, Any]) -> Result:
    """A deletion under the deactivate policy shows as what it did downstream."""
    return Result.DEACTIVATED if change.op == "delete" and changed.get("active") is False else Result.UPDATED


def _written(state: UserState, downstream_id: str, values: dict[str, Any]) -> UserState:
    """The state once the downstream account `downstream_id` holds `values`."""
    written = state.values if values == state.values else values  # shared when equal: no second copy
    return replace(state, downstream_id=downstream_id, written=written)


def _unlinked(state: UserState) -> UserState:
    return replace(state, downstream_id=None, written={})
