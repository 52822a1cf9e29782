"""What "converged" means, for the property tests and the integration tests alike.

`reference` applies one user's changes in event-time order, one after the other, as a downstream
would see them if nothing were ever reordered: the answer the pipeline must reach from any arrival
order. It is written as a sequential fold on purpose, independently of the merge in
service.domain.state (which never sorts).

`changes_strategy` generates one user's changes the way production produces them: full and partial
updates, self-service edits, lockouts, deletes and re-creates, with event times from a small range so
that ties happen, some events without an id (the playa plugin), and `arrivals_strategy` turns them
into an arrival order: any permutation, with duplicates (replays, the plugin's at-least-once sends).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from hypothesis import strategies as st

from service.domain.changes import ATTRIBUTES, UserChange
from service.domain.plan import DeletePolicy

UID = "kc-user-1"
POOLS: dict[str, list[Any]] = {
    "userName": ["jdoe", "jane.doe", "JDoe"],
    "givenName": ["Jane", "Janet", None],
    "familyName": ["Doe", "Doe-Smith", None],
    "email": ["jane@example.com", "janet@example.com", None],
    "active": [True, False],
}


def reference(changes: Iterable[UserChange], policy: DeletePolicy) -> dict[str, Any] | None:
    """The attributes the downstream user ends with (None: it must not exist), applying each distinct
    change once, in event-time order. At equal times: active=false beats true, a deletion comes after
    the other changes, then the greater event id, then the greater value."""
    distinct = {(c.op, c.time_ms, c.event_id, json.dumps(dict(c.attributes), sort_keys=True)): c for c in changes}
    ordered = sorted(distinct.values(), key=lambda c: (c.time_ms, c.op == "delete", c.event_id or ""))
    values: dict[str, Any] = {}
    held: dict[str, tuple[int, str]] = {}
    newest_upsert, deleted = -1, None
    for change in ordered:
        if change.op == "delete":
            deleted = change.time_ms
            continue
        newest_upsert = change.time_ms
        version = (change.time_ms, change.event_id or "")
        for attribute, value in change.attributes.items():
            if attribute == "active" and held.get(attribute, (-1, ""))[0] == change.time_ms:
                values["active"] = values["active"] and value  # equal times: active=false wins
                continue
            if held.get(attribute) == version and _canonical(value) < _canonical(values[attribute]):
                continue  # equal time and event id (the playa plugin sends none): the greater value stays
            values[attribute], held[attribute] = value, version
    if deleted is not None:
        if policy is DeletePolicy.DELETE and deleted >= newest_upsert:
            return None
        if policy is DeletePolicy.DEACTIVATE and deleted >= held.get("active", (-1, ""))[0]:
            values["active"] = False
    return values


def downstream_view(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a SCIM server holds for `values` once created (active defaults to true), or None when a
    user without a userName could never be created."""
    if values is None or not values.get("userName"):
        return None
    return {**{a: None for a in ATTRIBUTES}, "active": True, **values}


@st.composite
def changes_strategy(draw: st.DrawFn, max_changes: int = 8) -> list[UserChange]:
    """Up to `max_changes` distinct changes of one user, as the plugin and the service's own sources emit them."""
    count = draw(st.integers(1, max_changes))
    changes = []
    for n in range(count):
        time_ms = draw(st.integers(0, 6))  # a narrow range: equal times are common
        event_id = draw(st.sampled_from([f"e-{n:02d}", f"e-{n:02d}", ""]))  # "" as the playa plugin sends
        kind = draw(st.sampled_from(["create", "console_save", "partial", "self_service", "lockout", "delete"]))
        if kind == "delete":
            changes.append(UserChange("acme", UID, "delete", time_ms, "USER_DELETE", event_id or None))
            continue
        if kind in ("create", "console_save"):
            attributes = {a: draw(st.sampled_from(POOLS[a])) for a in ATTRIBUTES}
        elif kind == "lockout":
            attributes = {"active": False}
        else:
            names = ["givenName", "familyName", "email"] + (["active", "userName"] if kind == "partial" else [])
            chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
            attributes = {a: draw(st.sampled_from(POOLS[a])) for a in chosen}
        event_type = {
            "create": "USER_CREATE",
            "console_save": "USER_UPDATE",
            "partial": "USER_UPDATE",
            "self_service": "UPDATE_PROFILE",
            "lockout": "USER_DISABLED_BY_PERMANENT_LOCKOUT",
        }[kind]
        changes.append(UserChange("acme", UID, "upsert", time_ms, event_type, event_id or None, attributes))
    return changes


@st.composite
def arrivals_strategy(draw: st.DrawFn, changes: Sequence[UserChange]) -> list[UserChange]:
    """Any arrival order of `changes`, each at least once, some twice."""
    repeated = draw(st.lists(st.sampled_from(list(changes)), max_size=3))
    return draw(st.permutations([*changes, *repeated]))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
