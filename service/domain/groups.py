"""Groups: their changes, their state (a merge, like a user's), and what a group needs downstream. Pure.

A group's records are keyed `<realm>/group:<group id>` and applied one at a time per group, like a
user's. What a group is made of comes from several places, each the single writer of its part:

| part of the state        | written by                                   | how it merges                         |
|--------------------------|----------------------------------------------|---------------------------------------|
| name, parent             | Keycloak group events, backfill, re-reads    | newest version wins (as user attributes) |
| deletion                 | a GROUP DELETE, or the parent's deletion      | a tombstone with a time               |
| member (per user)        | the user's applier (it knows the user's id downstream) | the user's highest sequence wins |
| ancestry (parent's path) | the parent group's applier                   | the parent's highest sequence wins    |
| children, inherited      | each child group's applier                   | the child's highest sequence wins     |

Every part merges whatever the arrival order, so a group converges like a user does. A membership goes
first to the user's partition (the user's state knows whether and as what the user exists downstream),
then, with the user's downstream id, to the group's partition: see docs/decisions/0005-memberships.md.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

from service.domain.compact import compact_json
from service.domain.downstreams import DEFAULT, change_key
from service.domain.stamps import NO_VERSION, ChangeSource, Version

GroupOp = Literal["upsert", "delete", "member", "child", "ancestry", "inherit"]


GROUP_KEY_MARK = "/group:"


def group_key(realm: str, group_id: str, downstream: str = DEFAULT) -> str:
    """The keyed topic's key of a group for one downstream (a user's is `<realm>/<user id>`)."""
    return change_key(realm, downstream, f"{GROUP_KEY_MARK[1:]}{group_id}")


def is_group_key(key: str) -> bool:
    return GROUP_KEY_MARK in key


@dataclass(frozen=True, slots=True)
class GroupChange:
    """One thing that happened to a group, or one message another applier sends it (a hop)."""

    realm: str
    group_id: str
    op: GroupOp
    time_ms: int
    event_type: str = ""
    event_id: str | None = None
    source: ChangeSource = ChangeSource.EVENT
    name: str | None = None  # upsert: the group's name (None: the change does not say)
    parent: str | None = None  # upsert with parent_known: the parent group's id (None: top level)
    parent_known: bool = False
    user_id: str | None = None  # member: the Keycloak user
    member_id: str | None = None  # member: the user's downstream id; None: not a member downstream
    child_id: str | None = None  # child, inherit: the sending sub-group
    present: bool = True  # child: the sender is (True) or no longer is (False) a child of this group
    path: str | None = None  # ancestry: the parent's full path (None: not known yet)
    deleted_ms: int | None = None  # ancestry: when the parent was deleted (its sub-groups went with it)
    members: tuple[str, ...] = ()  # inherit: the downstream ids of the sender's members (flattening)
    seq: int = 0  # hops: the sender's sequence number (the sender is the single writer of its part)
    force: bool = False  # write everything even if it matches what was last written (reconciliation)
    reread: bool = False  # the event carried no representation: only a re-read from Keycloak says what
    prune: tuple[str, ...] = ()  # reconciliation: downstream ids seen held and unwanted; removed unless wanted by then
    downstream: str = DEFAULT  # which of the realm's downstreams the change is for

    @property
    def key(self) -> str:
        return group_key(self.realm, self.group_id, self.downstream)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "kind": "group",
            "realm": self.realm,
            "group_id": self.group_id,
            "op": self.op,
            "time_ms": self.time_ms,
        }
        for name in (
            "event_type",
            "event_id",
            "name",
            "parent",
            "user_id",
            "member_id",
            "child_id",
            "path",
            "deleted_ms",
        ):
            value = getattr(self, name)
            if value not in (None, ""):
                doc[name] = value
        if self.source is not ChangeSource.EVENT:
            doc["source"] = self.source.value
        if self.parent_known:
            doc["parent_known"] = True
        if not self.present:
            doc["present"] = False
        if self.members:
            doc["members"] = list(self.members)
        if self.seq:
            doc["seq"] = self.seq
        if self.force:
            doc["force"] = True
        if self.reread:
            doc["reread"] = True
        if self.prune:
            doc["prune"] = list(self.prune)
        if self.downstream != DEFAULT:
            doc["downstream"] = self.downstream
        return compact_json(doc)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> GroupChange:
        """From a decoded record (service.domain.changes.decode_change checks it is a group's)."""
        return cls(
            realm=str(doc["realm"]),
            group_id=str(doc["group_id"]),
            op=doc["op"],
            time_ms=int(doc["time_ms"]),
            event_type=str(doc.get("event_type", "")),
            event_id=doc.get("event_id"),
            source=ChangeSource(doc.get("source", "event")),
            name=doc.get("name"),
            parent=doc.get("parent"),
            parent_known=bool(doc.get("parent_known", False)),
            user_id=doc.get("user_id"),
            member_id=doc.get("member_id"),
            child_id=doc.get("child_id"),
            present=bool(doc.get("present", True)),
            path=doc.get("path"),
            deleted_ms=doc.get("deleted_ms"),
            members=tuple(str(m) for m in doc.get("members") or ()),
            seq=int(doc.get("seq", 0)),
            force=bool(doc.get("force", False)),
            reread=bool(doc.get("reread", False)),
            prune=tuple(str(m) for m in doc.get("prune") or ()),
            downstream=str(doc.get("downstream") or DEFAULT),
        )


@dataclass(frozen=True, slots=True)
class Ancestry:
    """What the parent said last: its id, full path (None: unknown) and deletion, with its sequence."""

    seq: int
    parent: str
    path: str | None
    deleted_ms: int | None


@dataclass(frozen=True, slots=True)
class Pushed:
    """What this group last told others (so it tells them again only what changed)."""

    parent: str | None = None  # the parent it registered with (None: none)
    inherited: frozenset[str] = frozenset()  # the members it passed to that parent (flattening)
    path: str | None = None  # the path it passed to its children
    deleted_ms: int | None = None  # the deletion it passed to its children
    children: frozenset[str] = frozenset()  # the children that have heard the above


@dataclass(frozen=True, slots=True)
class GroupState:
    downstream_id: str | None = None
    name: str | None = None
    name_version: Version = NO_VERSION
    parent: str | None = None
    parent_version: Version = NO_VERSION  # NO_VERSION: the parent is not known yet
    deleted_ms: int | None = None
    members: dict[str, tuple[int, str | None]] = field(default_factory=dict)  # user -> (seq, downstream id)
    ancestry: Ancestry | None = None
    children: dict[str, tuple[int, bool]] = field(default_factory=dict)  # child -> (seq, present)
    inherited: dict[str, tuple[int, frozenset[str]]] = field(default_factory=dict)  # child -> (seq, ids)
    written_name: str | None = None  # the displayName the downstream group holds
    written_members: frozenset[str] = frozenset()  # the downstream ids it holds as members
    out_seq: int = 0  # the sequence of this group's hops
    pushed: Pushed = field(default_factory=Pushed)
    parked: str | None = None

    @property
    def newest_ms(self) -> int:
        return max(self.name_version[0], self.parent_version[0])

    def to_json(self) -> bytes:
        doc = {
            "kind": "group",
            "downstream_id": self.downstream_id,
            "name": [self.name, *self.name_version],
            "parent": [self.parent, *self.parent_version],
            "deleted_ms": self.deleted_ms,
            "members": {u: [s, d] for u, (s, d) in self.members.items()},
            "ancestry": None
            if self.ancestry is None
            else [self.ancestry.seq, self.ancestry.parent, self.ancestry.path, self.ancestry.deleted_ms],
            "children": {c: [s, p] for c, (s, p) in self.children.items()},
            "inherited": {c: [s, sorted(ids)] for c, (s, ids) in self.inherited.items()},
            "written_name": self.written_name,
            "written_members": sorted(self.written_members),
            "out_seq": self.out_seq,
            "pushed": [
                self.pushed.parent,
                sorted(self.pushed.inherited),
                self.pushed.path,
                self.pushed.deleted_ms,
                sorted(self.pushed.children),
            ],
            "parked": self.parked,
        }
        return compact_json(doc)

    @classmethod
    def from_json(cls, raw: bytes) -> GroupState:
        doc = json.loads(raw)
        name, parent, ancestry, pushed = doc["name"], doc["parent"], doc.get("ancestry"), doc["pushed"]
        return cls(
            downstream_id=doc.get("downstream_id"),
            name=name[0],
            name_version=(int(name[1]), str(name[2])),
            parent=parent[0],
            parent_version=(int(parent[1]), str(parent[2])),
            deleted_ms=doc.get("deleted_ms"),
            members={u: (int(s), d) for u, (s, d) in (doc.get("members") or {}).items()},
            ancestry=None if ancestry is None else Ancestry(int(ancestry[0]), ancestry[1], ancestry[2], ancestry[3]),
            children={c: (int(s), bool(p)) for c, (s, p) in (doc.get("children") or {}).items()},
            inherited={c: (int(s), frozenset(ids)) for c, (s, ids) in (doc.get("inherited") or {}).items()},
            written_name=doc.get("written_name"),
            written_members=frozenset(doc.get("written_members") or ()),
            out_seq=int(doc.get("out_seq", 0)),
            pushed=Pushed(pushed[0], frozenset(pushed[1]), pushed[2], pushed[3], frozenset(pushed[4])),
            parked=doc.get("parked"),
        )


def merge_group(state: GroupState, change: GroupChange) -> GroupState:
    """`state` with what `change` says that nothing newer has said (the same object when nothing is new)."""
    version = (change.time_ms, change.event_id or "")
    if change.op == "upsert":
        new = state
        if change.name is not None and _newer(version, change.name, new.name_version, new.name):
            new = replace(new, name=change.name, name_version=version)
        if change.parent_known and _newer(version, change.parent, new.parent_version, new.parent):
            new = replace(new, parent=change.parent, parent_version=version)
        return new
    if change.op == "delete":
        if state.deleted_ms is not None and state.deleted_ms >= change.time_ms:
            return state
        return replace(state, deleted_ms=change.time_ms)
    if change.op == "member" and change.user_id is not None:
        held = state.members.get(change.user_id)
        if held is not None and held[0] >= change.seq:
            return state
        return replace(state, members={**state.members, change.user_id: (change.seq, change.member_id)})
    if change.op == "ancestry" and change.child_id is None:
        return _merge_ancestry(state, change)
    if change.op == "child" and change.child_id is not None:
        held_child = state.children.get(change.child_id)
        if held_child is not None and held_child[0] >= change.seq:
            return state
        return replace(state, children={**state.children, change.child_id: (change.seq, change.present)})
    if change.op == "inherit" and change.child_id is not None:
        held_inherit = state.inherited.get(change.child_id)
        if held_inherit is not None and held_inherit[0] >= change.seq:
            return state
        ids = frozenset(change.members)
        return replace(state, inherited={**state.inherited, change.child_id: (change.seq, ids)})
    return state


def _merge_ancestry(state: GroupState, change: GroupChange) -> GroupState:
    """The parent's word on its path and deletion; a previous parent's word stops counting after a move."""
    sender = change.parent
    if sender is None:
        return state
    held = state.ancestry
    if held is not None and held.parent == sender and held.seq >= change.seq:
        return state
    return replace(state, ancestry=Ancestry(change.seq, sender, change.path, change.deleted_ms))


def _newer(version: Version, value: object, held_version: Version, held: object) -> bool:
    if version[0] != held_version[0]:
        return version[0] > held_version[0]
    if version[1] != held_version[1]:
        return version[1] > held_version[1]
    return json.dumps(value) > json.dumps(held)


# -- what the downstream should hold ----------------------------------------------------------------------


class GroupDisplay(StrEnum):
    NAME = "name"  # displayName is the group's name
    PATH = "path"  # displayName is its full path, e.g. /eng/backend


@dataclass(frozen=True, slots=True)
class GroupOptions:
    """A tenant's group settings (service.tenants.models.Tenant)."""

    display: GroupDisplay = GroupDisplay.NAME
    flatten: bool = False  # a member of /eng/backend is also a member of /eng
    path_prefixes: tuple[str, ...] = ()  # push only groups whose path starts with one (empty: all)
    path_pattern: str | None = None  # ... or matches this regular expression (re.search)
    delete: bool = False  # the tenant's delete policy is `delete` (else a deleted group stays downstream)
    members_per_request: int = 100


def path_of(state: GroupState) -> str | None:
    """The group's full path, once its name and its parent's path are known."""
    if state.name is None or state.parent_version == NO_VERSION:
        return None
    if state.parent is None:
        return "/" + state.name
    ancestry = state.ancestry
    if ancestry is None or ancestry.parent != state.parent or ancestry.path is None:
        return None
    return f"{ancestry.path}/{state.name}"


def deleted(state: GroupState) -> int | None:
    """When the group was deleted (its own DELETE, or its parent's: sub-groups go with the parent)."""
    own = state.deleted_ms if state.deleted_ms is not None and state.deleted_ms >= state.newest_ms else None
    ancestry = state.ancestry
    inherited = ancestry.deleted_ms if ancestry is not None and ancestry.parent == state.parent else None
    times = [t for t in (own, inherited) if t is not None]
    return max(times) if times else None


def selected(path: str, options: GroupOptions) -> bool:
    """Whether the tenant pushes the group at `path` (its prefix list, or its pattern)."""
    if not options.path_prefixes and options.path_pattern is None:
        return True
    if any(path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in options.path_prefixes):
        return True
    return options.path_pattern is not None and re.search(options.path_pattern, path) is not None


def direct_members(state: GroupState) -> frozenset[str]:
    """The downstream ids of the users that are members of this group (and exist downstream)."""
    return frozenset(d for _, d in state.members.values() if d is not None)


def effective_members(state: GroupState, options: GroupOptions) -> frozenset[str]:
    """Direct members, plus with flattening every member of every sub-group (passed up by them)."""
    members = direct_members(state)
    if options.flatten:
        for child, (_, ids) in state.inherited.items():
            if state.children.get(child, (0, False))[1]:
                members |= ids
    return members


@dataclass(frozen=True, slots=True)
class DesiredGroup:
    display_name: str
    members: frozenset[str]


def desired_group(state: GroupState, options: GroupOptions) -> DesiredGroup | None:
    """The group the downstream should hold, or None: not (yet) known, not selected, or deleted
    (under the delete policy `delete`; otherwise a deleted group stays as it was)."""
    path = path_of(state)
    if path is None or not selected(path, options):
        return None
    if deleted(state) is not None:
        return None
    name = path if options.display is GroupDisplay.PATH else state.name
    assert name is not None
    return DesiredGroup(name, effective_members(state, options))


# -- the plan ---------------------------------------------------------------------------------------------


class GroupAction(StrEnum):
    NONE = "none"
    SYNC = "sync"  # create (when unlinked) or rename, then member changes
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class GroupPlan:
    action: GroupAction
    state: GroupState  # merged, with this plan's hops counted; the executor fills in what it wrote
    display_name: str | None = None
    rename: bool = False  # a linked group's displayName differs from what was written
    add: tuple[str, ...] = ()  # downstream user ids to add, in a stable order
    remove: tuple[str, ...] = ()  # ... and to remove
    hops: tuple[GroupChange, ...] = ()  # to other groups' keys, once the plan is carried out
    reason: str = ""
    recheck: tuple[str, ...] = ()  # unwanted ids the downstream may hold all the same: removed if it does

    def batches(self, per_request: int) -> list[tuple[list[str], list[str]]]:
        """Member changes cut into requests of at most `per_request` operations each."""
        ops: list[tuple[str, str]] = [("add", d) for d in self.add] + [("remove", d) for d in self.remove]
        chunks = [ops[i : i + per_request] for i in range(0, len(ops), max(1, per_request))]
        return [([d for o, d in c if o == "add"], [d for o, d in c if o == "remove"]) for c in chunks]


def plan_group(state: GroupState, changes: Sequence[GroupChange], options: GroupOptions, now_ms: int) -> GroupPlan:
    """Merge a batch of one group's changes, then decide the downstream calls and the hops to send."""
    first = changes[0]
    new_state, unsure = _merge_batch(state, changes, options)
    force = any(c.force for c in changes)
    new_state, hops = _hops(first.realm, first.group_id, new_state, options, now_ms)
    want = desired_group(new_state, options)
    if want is None:
        if deleted(new_state) is not None and options.delete:
            if new_state.downstream_id is not None or deleted(state) is None:
                return GroupPlan(GroupAction.DELETE, new_state, hops=hops)  # unlinked: it may predate us
            return GroupPlan(GroupAction.NONE, new_state, hops=hops, reason="deleted")
        return GroupPlan(GroupAction.NONE, new_state, hops=hops, reason="not_wanted")
    written = frozenset() if new_state.downstream_id is None or force else new_state.written_members
    add = tuple(sorted((want.members - written) | (unsure & want.members)))  # an add of a held member is harmless
    remove = tuple(sorted(written - want.members))
    # `prune`: seen held by a reconciliation's listing, perhaps long ago; whether it still is, only a read tells
    prune = frozenset(member for c in changes for member in c.prune)
    recheck = tuple(sorted((unsure | prune) - want.members - written))
    rename = new_state.downstream_id is not None and (force or new_state.written_name != want.display_name)
    if new_state.downstream_id is not None and not (add or remove or rename or recheck):
        return GroupPlan(GroupAction.NONE, new_state, want.display_name, hops=hops, reason="unchanged")
    return GroupPlan(GroupAction.SYNC, new_state, want.display_name, rename, add, remove, hops, recheck=recheck)


def _merge_batch(
    state: GroupState, changes: Sequence[GroupChange], options: GroupOptions
) -> tuple[GroupState, frozenset[str]]:
    """The batch merged into `state`, and the member ids it is unsure of: those whose membership, at a
    point inside the batch, differed from the one it ends with.

    A replica may have written the batch's first changes downstream and died before saving the state:
    the downstream then holds the membership of such a point while the restored state says what was
    written before it. Where the batch ends as it began (a join and a leave), the delta from "last
    written" is empty, yet the downstream may hold the intermediate. Every other id is either changed by
    the delta or, if the downstream holds an intermediate, holds one of a later batch that changes it."""
    holders = _Holders(state, options)
    seen: dict[str, set[bool]] = {}
    new_state = state
    for n, change in enumerate(changes):
        merged = merge_group(new_state, change)
        if merged is not new_state:
            moved = holders.move(new_state, merged, change)
            if n < len(changes) - 1:  # a point inside the batch: a dead replica's write may have ended here
                for member_id in moved:
                    seen.setdefault(member_id, set()).add(holders.holds(member_id))
        new_state = merged
    unsure = frozenset(m for m, held in seen.items() if held != {holders.holds(m)})
    return new_state, unsure


class _Holders:
    """How many sources make each downstream id a member of the group (its users and, flattening, its
    present sub-groups), kept up to date change by change: a batch of thousands of hops stays linear."""

    def __init__(self, state: GroupState, options: GroupOptions) -> None:
        self.flatten = options.flatten
        self.count: Counter[str] = Counter(d for _, d in state.members.values() if d is not None)
        if self.flatten:
            for child, (_, ids) in state.inherited.items():
                if state.children.get(child, (0, False))[1]:
                    self.count.update(ids)

    def holds(self, member_id: str) -> bool:
        return self.count[member_id] > 0

    def move(self, before: GroupState, after: GroupState, change: GroupChange) -> frozenset[str]:
        """Count what `change` changed from `before` to `after`; the ids whose count changed."""
        gone: frozenset[str] = frozenset()
        came: frozenset[str] = frozenset()
        if change.op == "member" and change.user_id is not None:
            gone = _ids(before.members.get(change.user_id, (0, None))[1])
            came = _ids(after.members.get(change.user_id, (0, None))[1])
        elif self.flatten and change.op in ("child", "inherit") and change.child_id is not None:
            gone = _inherited(before, change.child_id)
            came = _inherited(after, change.child_id)
        self.count.subtract(gone)
        self.count.update(came)
        return gone ^ came


def _ids(member_id: str | None) -> frozenset[str]:
    return frozenset() if member_id is None else frozenset((member_id,))


def _inherited(state: GroupState, child: str) -> frozenset[str]:
    """The ids a sub-group passes up to this group (none while it is not a present child)."""
    if not state.children.get(child, (0, False))[1]:
        return frozenset()
    return state.inherited.get(child, (0, frozenset()))[1]


def confirmed_removals(recheck: Sequence[str], resource: object, kept: Collection[str]) -> tuple[str, ...]:
    """Which of the plan's `recheck` ids to remove, given the group as the downstream answered a read.

    Never trusted as it comes: only ids of `recheck` are acted on. The answer proves an id absent only
    when it lists members as a list and lists every id of `kept` (the members we wrote and keep); a
    server that omits members, truncates the list, or answers in another shape proves nothing, and every
    `recheck` id is removed (a removal of a non-member is then taken as "already absent")."""
    members = resource.get("members") if isinstance(resource, Mapping) else None
    if not isinstance(members, list):
        return tuple(recheck)
    listed = {m.get("value") for m in members if isinstance(m, Mapping) and isinstance(m.get("value"), str)}
    if not set(kept) <= listed:
        return tuple(recheck)
    return tuple(m for m in recheck if m in listed)


def _hops(
    realm: str, group_id: str, state: GroupState, options: GroupOptions, now_ms: int
) -> tuple[GroupState, tuple[GroupChange, ...]]:
    """What this group must tell others after the merge: its path and deletion to its children (every
    child that has not heard the latest), its membership in a parent (and, flattening, its members) to
    the parent, and its leaving to a previous parent."""
    hops: list[GroupChange] = []
    seq = state.out_seq
    pushed = state.pushed

    def hop(target: str, op: GroupOp, **fields: Any) -> None:
        nonlocal seq
        seq += 1
        hops.append(GroupChange(realm, target, op, now_ms, seq=seq, **fields))

    # to the children: my path and my deletion, to every present child that has not heard them
    path, gone = path_of(state), deleted(state)
    children = frozenset(c for c, (_, present) in state.children.items() if present)
    stale = (path, gone) != (pushed.path, pushed.deleted_ms)
    for child in sorted(children if stale else children - pushed.children):
        hop(child, "ancestry", parent=group_id, path=path, deleted_ms=gone)
    pushed = replace(pushed, path=path, deleted_ms=gone, children=children)

    # to the parent: that I am its child (and, flattening, my members); to a previous parent: that I left
    parent = state.parent if state.parent_version != NO_VERSION and gone is None else None
    members = effective_members(state, options) if options.flatten else frozenset()
    if pushed.parent is not None and pushed.parent != parent:
        hop(pushed.parent, "child", child_id=group_id, present=False)
        if pushed.inherited:
            hop(pushed.parent, "inherit", child_id=group_id)
        pushed = replace(pushed, parent=None, inherited=frozenset())
    if parent is not None and pushed.parent != parent:
        hop(parent, "child", child_id=group_id, present=True)
        pushed = replace(pushed, parent=parent)
    if parent is not None and members != pushed.inherited:
        hop(parent, "inherit", child_id=group_id, members=tuple(sorted(members)))
        pushed = replace(pushed, inherited=members)
    if not hops and pushed == state.pushed:
        return state, ()
    return replace(state, out_seq=seq, pushed=pushed), tuple(hops)
