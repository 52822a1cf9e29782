"""Per-user state, and the merge rule that makes the downstream converge whatever the arrival order.

One user's events reach us in any order: the plugin spreads them over partitions, user and admin
events come on two topics, replays and backfills interleave with live traffic. So the state is a
merge of everything seen, independent of the order it was seen in (a state-based CRDT):

- each attribute keeps its newest value with that value's version (event time, event id); an older
  change still sets the attributes that nothing newer has set, whether or not the user exists
  downstream yet;
- a deletion is a tombstone with a time (`deleted_ms`); it hides nothing: what the downstream should
  hold is decided by `service.domain.plan.desired` from the state and the tenant's delete policy;
- ties in event time are settled by a rule that ignores arrival order: for `active`, false wins; for
  the other attributes, the greater event id, then the greater value.

Keycloak user attributes are attributes like the others, `attributes.<name>`. A change that lists all of
the user's attributes (an admin request's `attributes` map: Keycloak replaces them with it) also says
that each one it omits was removed: at its version, every such attribute held is cleared (None), and
`attributes_cleared` keeps that version so an older value arriving later loses to the removal, as it
would had it arrived first.

Merging is commutative, associative and idempotent, so any permutation of a user's changes, with
duplicates, ends in the same state as applying them in event-time order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from service.domain.changes import UserChange
from service.domain.compact import compact_json
from service.domain.stamps import Version

USER_ATTRIBUTE_PREFIX = "attributes."  # a Keycloak user attribute's key in `values` (service.domain.mapping)


@dataclass(frozen=True, slots=True)
class UserState:
    downstream_id: str | None = None  # the downstream's id of this user, once known
    values: dict[str, Any] = field(default_factory=dict)  # newest known value per attribute
    versions: dict[str, Version] = field(default_factory=dict)  # version of each value in `values`
    deleted_ms: int | None = None  # time of the newest deletion seen
    written: dict[str, Any] = field(default_factory=dict)  # what the linked downstream user holds, as last written
    parked: str | None = None  # why this user's changes go to the parking topic until a replay
    groups: dict[str, tuple[bool, Version]] = field(default_factory=dict)  # group -> (member, version)
    emitted: dict[str, str | None] = field(default_factory=dict)  # group -> the member id it was last told
    emit_seq: int = 0  # the sequence of the user's hops to its groups (docs/decisions/0005)
    attributes_cleared: Version | None = None  # the newest change that listed all the user attributes

    @property
    def newest_ms(self) -> int:
        """Time of the newest change that set an attribute (-1 when none did)."""
        return max((version[0] for version in self.versions.values()), default=-1)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "downstream_id": self.downstream_id,
            "values": self.values,
            "versions": self.versions,
            "deleted_ms": self.deleted_ms,
            "parked": self.parked,
        }
        if self.written != self.values:  # the common case (downstream in step) costs nothing
            doc["written"] = self.written
        if self.groups:
            doc["groups"] = {g: [m, *v] for g, (m, v) in self.groups.items()}
        if self.emitted:
            doc["emitted"] = self.emitted
            doc["emit_seq"] = self.emit_seq
        if self.attributes_cleared is not None:
            doc["attributes_cleared"] = self.attributes_cleared
        return compact_json(doc)

    @classmethod
    def from_json(cls, raw: bytes) -> UserState:
        doc = json.loads(raw)
        values = dict(doc.get("values") or {})
        if "versions" in doc:
            versions = {k: (int(v[0]), str(v[1])) for k, v in (doc.get("versions") or {}).items()}
        else:  # written by a version that kept times only
            versions = {k: (int(v), "") for k, v in (doc.get("times") or {}).items()}
        return cls(
            downstream_id=doc.get("downstream_id"),
            values=values,
            versions=versions,
            deleted_ms=doc.get("deleted_ms"),
            written=dict(doc["written"]) if "written" in doc else values,  # shared when equal: no copy
            parked=doc.get("parked"),
            groups={g: (bool(m), (int(t), str(tag))) for g, (m, t, tag) in (doc.get("groups") or {}).items()},
            emitted=dict(doc.get("emitted") or {}),
            emit_seq=int(doc.get("emit_seq", 0)),
            attributes_cleared=_version(doc.get("attributes_cleared")),
        )


def version_of(change: UserChange) -> Version:
    return (change.time_ms, change.event_id or "")


def wins(attribute: str, value: Any, version: Version, held: Any, held_version: Version) -> bool:
    """Whether `value` at `version` replaces `held` at `held_version`: newer time first; at equal
    times `active=false` beats `active=true`, then the greater event id, then the greater value."""
    if version[0] != held_version[0]:
        return version[0] > held_version[0]
    if attribute == "active" and value is not held:
        return value is False
    if version[1] != held_version[1]:
        return version[1] > held_version[1]
    return _canonical(value) > _canonical(held)


def merge(state: UserState, change: UserChange) -> UserState:
    """`state` with what `change` says that nothing newer has said. The same object when nothing is new."""
    if change.op == "delete":
        if state.deleted_ms is not None and state.deleted_ms >= change.time_ms:
            return state
        return replace(state, deleted_ms=change.time_ms)
    if change.op == "membership" and change.group_id is not None:
        held = state.groups.get(change.group_id)
        if held is not None and not _joins_or_leaves(change.member, version_of(change), held):
            return state
        return replace(state, groups={**state.groups, change.group_id: (change.member, version_of(change))})
    version = version_of(change)
    newer = {
        attribute: value
        for attribute, value in change.attributes.items()
        if attribute not in state.versions
        or wins(attribute, value, version, state.values.get(attribute), state.versions[attribute])
    }
    versions = dict.fromkeys(newer, version)
    cleared = state.attributes_cleared
    if change.user_attributes or change.user_attributes_complete:
        cleared = _merge_user_attributes(state, change, version, newer, versions)
    if not newer and cleared == state.attributes_cleared:
        return state
    # `written` stays: the downstream holds what it held until the executor writes the new values.
    versions = {**state.versions, **versions}
    # Built directly rather than with dataclasses.replace: this runs for every change (bench profile).
    return UserState(
        state.downstream_id,
        {**state.values, **newer},
        versions,
        state.deleted_ms,
        state.written,
        state.parked,
        state.groups,
        state.emitted,
        state.emit_seq,
        cleared,
    )


def _merge_user_attributes(
    state: UserState, change: UserChange, version: Version, newer: dict[str, Any], versions: dict[str, Version]
) -> Version | None:
    """Adds to `newer` / `versions` what the change's user attributes say that nothing newer has said;
    returns the version of the newest complete listing (service docstring)."""
    cleared = state.attributes_cleared
    for name, value in change.user_attributes.items():
        key = USER_ATTRIBUTE_PREFIX + name
        held = state.versions.get(key)
        if held is not None:
            if wins(key, value, version, state.values.get(key), held):
                newer[key], versions[key] = value, version
        elif cleared is None or wins(key, value, version, None, cleared):
            newer[key], versions[key] = value, version
        else:  # removed by a newer complete listing: held as that removal, whatever the arrival order
            newer[key], versions[key] = None, cleared
    if not change.user_attributes_complete or (cleared is not None and version <= cleared):
        return cleared
    for key, held in state.versions.items():
        name = key.removeprefix(USER_ATTRIBUTE_PREFIX)
        if name != key and name not in change.user_attributes and wins(key, None, version, state.values.get(key), held):
            newer[key], versions[key] = None, version
    return version


def _version(raw: object) -> Version | None:
    return (int(raw[0]), str(raw[1])) if isinstance(raw, list | tuple) and len(raw) == 2 else None


def _joins_or_leaves(member: bool, version: Version, held: tuple[bool, Version]) -> bool:
    """A membership replaces the one held when newer; at equal times leaving wins, then the event id."""
    held_member, held_version = held
    if version[0] != held_version[0]:
        return version[0] > held_version[0]
    if member != held_member:
        return not member
    return version[1] > held_version[1]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
