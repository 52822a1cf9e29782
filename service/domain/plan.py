"""What a change needs downstream: (known state, change, delete policy) -> `Plan`. Pure.

The state merges every change seen (service.domain.state), so the user the downstream should hold is
a function of the state alone, `desired`, whatever order the changes came in. A plan moves the
downstream from what was last written to that: nothing, a PATCH of what differs, a create (or a link
to an existing account, decided by the executor), or a DELETE. The executor turns it into HTTP calls;
everything decidable without the network is decided here, so it is table-tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from service.domain.changes import UserChange
from service.domain.groups import GroupChange
from service.domain.mapping import DEFAULT_MAPPING
from service.domain.sighting import Seen, Sighting, written_as_seen
from service.domain.state import USER_ATTRIBUTE_PREFIX, UserState, merge


class DeletePolicy(StrEnum):
    IGNORE = "ignore"  # a Keycloak deletion is not propagated
    DEACTIVATE = "deactivate"  # PATCH active=false
    DELETE = "delete"  # DELETE /Users/{id}


class Action(StrEnum):
    NONE = "none"
    SYNC = "sync"  # make the downstream user hold `values` (PATCH `changed` when linked, else resolve / create)
    DELETE = "delete"  # the user must not exist downstream
    LINK = "link"  # an operator declared the downstream id: take that account, write `values`
    CREATE = "create"  # a backfill's listing saw no such account: POST at once (a 409 goes through adoption)
    ADOPT = "adopt"  # a backfill's listing saw the userName held: the adoption rules decide, never a blind POST
    DEACTIVATE = "deactivate"  # an orphan check: every account carrying the user's id as externalId ends inactive


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    state: UserState  # the merged state; the executor fills in downstream_id and written
    values: dict[str, Any] = field(default_factory=dict)  # what the downstream user should hold
    changed: dict[str, Any] = field(default_factory=dict)  # attributes to PATCH on a linked user
    reason: str = ""


def desired(state: UserState, policy: DeletePolicy) -> dict[str, Any] | None:
    """The attributes the downstream user should have, or None when it should not exist.

    | delete policy | after a deletion newer than every other change      | an older change arrives after it |
    |---------------|----------------------------------------------------|----------------------------------|
    | ignore        | unchanged downstream                               | applies                          |
    | deactivate    | active=false, other attributes as last set         | applies; active stays false      |
    | delete        | absent                                             | does not resurrect the user      |

    A change newer than the deletion (a re-create, an enable) wins as any newer change does.
    """
    deleted = state.deleted_ms
    if deleted is None:
        return state.values
    if policy is DeletePolicy.DELETE:
        return None if deleted >= state.newest_ms else state.values
    if policy is DeletePolicy.DEACTIVATE:
        active_since = state.versions.get("active", (-1, ""))[0]
        if deleted >= active_since:  # at equal times the deletion wins, as active=false does
            return {**state.values, "active": False}
    return state.values


def plan_change(
    state: UserState, change: UserChange, policy: DeletePolicy, mapped: frozenset[str] = DEFAULT_MAPPING.keys
) -> Plan:
    """`mapped`: the keys the tenant's attribute mapping sends (service.domain.mapping); a user attribute
    it does not map is neither compared nor written."""
    if change.orphan:
        return orphan_plan(state, policy)
    new_state = merge(state, change)
    if new_state is state and not change.force and change.op != "link":
        return Plan(Action.NONE, state, reason="superseded")  # nothing newer than what was acted on already
    if change.op == "membership":  # the user's groups hear of it from the applier (membership_hops)
        return Plan(Action.NONE, new_state, reason="membership")
    after = _mapped(desired(new_state, policy), mapped)
    if change.op == "link":
        return Plan(Action.LINK, new_state, after or {}, changed=after or {}, reason="operator_link")
    if after is None:
        if state.downstream_id is None and desired(state, policy) is None and not change.force:
            return Plan(Action.NONE, new_state, reason="deleted")  # gone already: nothing older resurrects it
        return Plan(Action.DELETE, new_state)
    if state.downstream_id is None or change.force:
        if not after:
            return Plan(Action.NONE, new_state, reason="nothing_known")
        if state.downstream_id is None and change.sighting is not None:
            return _sighted(new_state, after, change.sighting)
        return Plan(Action.SYNC, new_state, after, changed=after)
    changed = {attr: value for attr, value in after.items() if state.written.get(attr, _MISSING) != value}
    if not changed:
        return Plan(Action.NONE, new_state, after, reason=_why_nothing(change, policy))
    return Plan(Action.SYNC, new_state, after, changed=changed)


def orphan_plan(state: UserState, policy: DeletePolicy) -> Plan:
    """An account downstream carries the user's id as externalId, and Keycloak has no such user (a
    request that landed after its client gave up: a POST that timed out, retried, and created a second
    account after the deletion removed or deactivated the first). The id alone proves nothing (another
    realm sharing the downstream, an account made by hand): the accounts are ours only when the state
    knows this user and its deletion, the newest change. Then the policy says what becomes of every
    account carrying the id (the executor finds them by a verified externalId lookup): `delete` deletes
    each, `deactivate` sets active=false on each still active (nothing else of them changes), `ignore`
    leaves them as they are."""
    if state.deleted_ms is None or state.deleted_ms < state.newest_ms:
        return Plan(Action.NONE, state, reason="orphan_not_known_deleted")
    if policy is DeletePolicy.DELETE:
        return Plan(Action.DELETE, state, reason="orphan")
    if policy is DeletePolicy.DEACTIVATE:
        return Plan(Action.DEACTIVATE, state, changed={"active": False}, reason="orphan")
    return Plan(Action.NONE, state, reason="orphan_delete_ignored")


def _mapped(values: dict[str, Any] | None, mapped: frozenset[str]) -> dict[str, Any] | None:
    if values is None or not any(key.startswith(USER_ATTRIBUTE_PREFIX) and key not in mapped for key in values):
        return values
    return {k: v for k, v in values.items() if k in mapped or not k.startswith(USER_ATTRIBUTE_PREFIX)}


def _sighted(state: UserState, after: dict[str, Any], sighting: Sighting) -> Plan:
    """An unlinked user whose backfill listed the downstream (service.domain.sighting): no lookup. An
    account of ours is linked as the listing saw it, so only the attributes that differ are PATCHed."""
    if sighting.seen is Seen.ABSENT:
        return Plan(Action.CREATE, state, after, changed=after, reason="absent_in_listing")
    if sighting.seen is Seen.HELD:
        return Plan(Action.ADOPT, state, after, changed=after, reason="user_name_held")
    linked = replace(state, downstream_id=sighting.downstream_id, written=written_as_seen(after, sighting.values))
    changed = {attr: value for attr, value in after.items() if linked.written.get(attr, _MISSING) != value}
    if not changed:
        return Plan(Action.NONE, linked, after, reason="unchanged")
    return Plan(Action.SYNC, linked, after, changed=changed)


def _why_nothing(change: UserChange, policy: DeletePolicy) -> str:
    if change.op == "delete" and policy is DeletePolicy.IGNORE:
        return "delete_ignored"
    return "unchanged"


def membership_hops(
    state: UserState, realm: str, user_id: str, now_ms: int
) -> tuple[UserState, tuple[GroupChange, ...]]:
    """What the user's groups must hear after this change: for each group whose view of the user
    changed (a member as this downstream id, or not a member: left, or its account deleted, which not
    every downstream drops from its groups by itself), a `member` hop with the next sequence number."""
    linked = state.downstream_id
    view = {g: linked if member and linked is not None else None for g, (member, _) in state.groups.items()}
    hops: list[GroupChange] = []
    seq = state.emit_seq
    emitted = dict(state.emitted)
    for group_id in sorted(set(view) | set(emitted)):
        member_id = view.get(group_id)
        if emitted.get(group_id) == member_id:
            continue
        seq += 1
        hops.append(
            GroupChange(
                realm,
                group_id,
                "member",
                now_ms,
                user_id=user_id,
                member_id=member_id,
                seq=seq,
            )
        )
        emitted[group_id] = member_id
    if not hops:
        return state, ()
    return replace(state, emitted=emitted, emit_seq=seq), tuple(hops)


_MISSING = object()
