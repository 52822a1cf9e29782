"""Turn a `KeycloakEvent` into a `UserChange`: the normalized unit the keyed pipeline orders and applies.

A change carries only the attributes its event actually set (a partial admin UPDATE patches only what
it contains). Attribute names are the SCIM-side ones: userName, givenName, familyName, email, active.
Keycloak user attributes travel beside them in `user_attributes` (name -> first value), whatever a
downstream maps them to (service.domain.mapping); the state holds them as `attributes.<name>`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from service.domain.compact import compact_json
from service.domain.downstreams import DEFAULT, change_key
from service.domain.groups import GroupChange, GroupOp
from service.domain.keycloak import KeycloakEvent
from service.domain.sighting import Sighting
from service.domain.stamps import ChangeSource
from service.errors import PoisonRecord

ATTRIBUTES = ("userName", "givenName", "familyName", "email", "active")

ChangeOp = Literal["upsert", "delete", "link", "membership"]


@dataclass(frozen=True, slots=True)
class UserChange:
    realm: str
    user_id: str
    op: ChangeOp
    time_ms: int
    event_type: str
    event_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    force: bool = False  # write every attribute even if it matches what was last written (reconciliation)
    reread: bool = False  # the event carried no representation: only a re-read from Keycloak says what changed
    link_to: str | None = None  # op "link": the downstream id an operator declared to be this user
    source: ChangeSource = ChangeSource.EVENT
    group_id: str | None = None  # op "membership": the group the user joined (member) or left
    member: bool = True
    group_paths: tuple[str, ...] = ()  # a create's `groups`: paths only (no membership event follows)
    sighting: Sighting | None = None  # a backfill's: what its listing of the downstream saw of the user
    user_attributes: Mapping[str, str | None] = field(default_factory=dict)  # Keycloak's, name -> first value
    user_attributes_complete: bool = False  # `user_attributes` is all the user has: one it omits was removed
    downstream: str = DEFAULT  # which of the realm's downstreams the change is for (service.domain.downstreams)
    # reconciliation saw an account downstream carrying this user's id as externalId, and Keycloak has no
    # such user: the delete policy applies to it only if the state knows the user deleted (plan.orphan_plan)
    orphan: bool = False

    @property
    def key(self) -> str:
        """The Kafka key of the keyed topic: all changes of one user for one downstream land on one partition."""
        return change_key(self.realm, self.downstream, self.user_id)

    def to_json(self) -> bytes:
        # Built by hand: dataclasses.asdict deep-copies, and this runs for every event (bench profile).
        doc = {
            "realm": self.realm,
            "user_id": self.user_id,
            "op": self.op,
            "time_ms": self.time_ms,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "attributes": dict(self.attributes),
            "force": self.force,
        }
        if self.reread:
            doc["reread"] = True
        if self.link_to is not None:
            doc["link_to"] = self.link_to
        if self.source is not ChangeSource.EVENT:
            doc["source"] = self.source.value
        if self.group_id is not None:
            doc["group_id"] = self.group_id
            doc["member"] = self.member
        if self.group_paths:
            doc["group_paths"] = list(self.group_paths)
        if self.sighting is not None:
            doc["sighting"] = self.sighting.to_doc()
        if self.user_attributes or self.user_attributes_complete:
            doc["user_attributes"] = dict(self.user_attributes)
            doc["user_attributes_complete"] = self.user_attributes_complete
        if self.downstream != DEFAULT:
            doc["downstream"] = self.downstream
        if self.orphan:
            doc["orphan"] = True
        return compact_json(doc)

    @classmethod
    def from_json(cls, raw: bytes) -> UserChange:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise PoisonRecord("malformed_change", str(exc)[:200]) from exc
        return cls.from_doc(doc)

    @classmethod
    def from_doc(cls, doc: Any) -> UserChange:
        """The change a decoded record holds (decode_change parses each record once)."""
        try:
            return cls(
                realm=doc["realm"],
                user_id=doc["user_id"],
                op=doc["op"],
                time_ms=int(doc["time_ms"]),
                event_type=doc["event_type"],
                event_id=doc.get("event_id"),
                attributes={k: v for k, v in (doc.get("attributes") or {}).items() if k in ATTRIBUTES},
                force=bool(doc.get("force", False)),
                reread=bool(doc.get("reread", False)),
                link_to=doc.get("link_to"),
                source=ChangeSource(doc.get("source") or _LEGACY_SOURCES.get(doc["event_type"], "event")),
                group_id=doc.get("group_id"),
                member=bool(doc.get("member", True)),
                group_paths=tuple(str(p) for p in doc.get("group_paths") or ()),
                sighting=Sighting.from_doc(doc["sighting"]) if doc.get("sighting") else None,
                user_attributes={str(k): _text_or_none(v) for k, v in (doc.get("user_attributes") or {}).items()},
                user_attributes_complete=bool(doc.get("user_attributes_complete", False)),
                downstream=str(doc.get("downstream") or DEFAULT),
                orphan=bool(doc.get("orphan", False)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PoisonRecord("malformed_change", str(exc)[:200]) from exc


# Changes written before `source` existed said it in their event type.
_LEGACY_SOURCES = {"BACKFILL": "backfill", "RECONCILE": "reconcile", "ON_DEMAND": "on_demand", "LINK": "operator"}


@dataclass(frozen=True, slots=True)
class Skip:
    """The event needs no downstream call; `reason` is a short stable label for metrics."""

    reason: str


def change_from_event(event: KeycloakEvent) -> UserChange | GroupChange | Skip:
    """Decide which user or group change, if any, an event describes."""
    if event.error or event.type.endswith("_ERROR"):
        return Skip("failed_action")
    if event.kind == "admin" and event.resource_type == "GROUP":
        return group_change_from_event(event)
    if event.kind == "admin" and event.resource_type == "GROUP_MEMBERSHIP":
        return _membership(event)
    if event.kind == "admin":
        return _from_admin(event)
    return _from_user_event(event)


def decode_change(raw: bytes) -> UserChange | GroupChange:
    """A record of the changes topic: a user's change, or a group's (its `kind` says)."""
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict) and doc.get("kind") == "group":
            return GroupChange.from_doc(doc)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PoisonRecord("malformed_change", str(exc)[:200]) from exc
    return UserChange.from_doc(doc)


def group_change_from_event(event: KeycloakEvent) -> GroupChange | Skip:
    """A GROUP admin event (shapes recorded in docs/reference/keycloak-group-events.md):

    - CREATE `groups/<id>`: a top-level group (name in the representation);
    - CREATE `groups/<parent>/children`: a sub-group (its id and name only in the representation);
    - UPDATE `groups` or `groups/<parent>/children`: a move to the top level or under `<parent>`;
    - UPDATE `groups/<id>`: a rename or an attribute change (the representation's `path` may be stale);
    - DELETE `groups/<id>`: one event, nothing for the sub-groups or the members.
    """
    parts = (event.resource_path or "").split("/")
    if parts[0] != "groups" or len(parts) > 3 or (len(parts) == 3 and parts[2] != "children"):
        return Skip("group_subresource")  # role mappings, management permissions ...
    rep = event.representation
    op = event.operation_type
    if op == "DELETE" and len(parts) == 2:
        return _group(event, parts[1], "delete")
    if op not in ("CREATE", "UPDATE"):
        return Skip("admin_action")
    own_id = len(parts) == 2  # groups/<id>: the group is in the path; otherwise only in the representation
    group_id = parts[1] if own_id else (rep.get("id") if rep is not None else None)
    if not isinstance(group_id, str) or not group_id:
        return Skip("no_representation" if rep is None else "no_group_id")
    name = rep.get("name") if rep is not None else None
    if name is not None and not isinstance(name, str):
        raise PoisonRecord("wrong_shape", "the group's name is not a string")
    if rep is None:  # "Include representation" is off and the listener honours it: re-read the group
        return replace(_group(event, group_id, "upsert"), reread=True)
    if own_id and op == "UPDATE":
        return replace(_group(event, group_id, "upsert"), name=name)  # rename: the parent is not said
    parent = parts[1] if len(parts) == 3 else None  # groups/<parent>/children, or groups/<id> / groups
    return replace(_group(event, group_id, "upsert"), name=name, parent=parent, parent_known=True)


def _group(event: KeycloakEvent, group_id: str, op: GroupOp) -> GroupChange:
    return GroupChange(event.realm, group_id, op, event.time_ms, event.type, event.event_id)


def _membership(event: KeycloakEvent) -> UserChange | Skip:
    """`users/<user>/groups/<group>`: the user joined (CREATE) or left (DELETE) the group. Keyed by the
    user: its state knows whether and as what the user exists downstream (docs/decisions/0005)."""
    sub = event.user_subresource or ""
    group_id = sub.removeprefix("groups/") if sub.startswith("groups/") else None
    if event.user_id is None or not group_id or "/" in group_id:
        return Skip("no_group_id")
    if event.operation_type not in ("CREATE", "DELETE"):
        return Skip("admin_action")
    change = _change(event, "membership", {})
    return replace(change, group_id=group_id, member=event.operation_type == "CREATE")


def _from_admin(event: KeycloakEvent) -> UserChange | Skip:
    if event.resource_type != "USER":
        return Skip("not_a_user_resource")
    if event.user_id is None:
        return Skip("no_user_id")
    if event.operation_type == "ACTION":
        return Skip("admin_action")
    if event.user_subresource is not None:  # e.g. users/<id>/federated-identity/google
        return Skip("user_subresource")
    if event.operation_type == "DELETE":
        return _change(event, "delete", {})
    if event.operation_type not in ("CREATE", "UPDATE"):
        return Skip("admin_action")
    if event.representation is None:
        # The realm's "Include representation" is off and the listener honours it: the event says
        # that the user changed, not how. A re-read from Keycloak (when configured) tells.
        return replace(_change(event, "upsert", {}), reread=True)
    attrs = _from_representation(event.representation)
    custom = user_attributes_of(event.representation)  # Keycloak replaces them with the map sent
    if event.operation_type == "CREATE":
        # Keycloak creates a user disabled unless the request says enabled=true.
        attrs.setdefault("active", False)
        paths = event.representation.get("groups")
        if isinstance(paths, list) and paths:  # memberships made with the user: no membership event follows
            created = _change(event, "upsert", attrs, custom)
            return replace(created, group_paths=tuple(str(p) for p in paths if isinstance(p, str)))
    if not attrs and custom is None:
        return Skip("no_scim_attributes")
    return _change(event, "upsert", attrs, custom)


_REPRESENTATION_KEYS = {
    "username": "userName",
    "firstName": "givenName",
    "lastName": "familyName",
    "email": "email",
    "enabled": "active",
}


def _from_representation(rep: Mapping[str, Any]) -> dict[str, Any]:
    """Only keys the admin actually sent: an absent key was not sent, it was not cleared."""
    attrs: dict[str, Any] = {}
    for key, attr in _REPRESENTATION_KEYS.items():
        if key in rep:
            attrs[attr] = _clean(attr, rep[key])
    return attrs


def user_attributes_of(rep: Mapping[str, Any]) -> dict[str, str | None] | None:
    """The first value of each user attribute of a representation, None when it has no `attributes` map.
    Keycloak holds every attribute as a list of strings; a multi-valued one contributes its first value
    only, an empty one (or a value that is not text) counts as cleared."""
    raw = rep.get("attributes")
    if not isinstance(raw, dict):
        return None
    return {str(name): _first(values) for name, values in raw.items()}


def _first(values: object) -> str | None:
    return _text_or_none(values[0] if isinstance(values, list) and values else values)


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value != "" else None


_USER_EVENT_DETAILS = {
    "REGISTER": {"username": "userName", "first_name": "givenName", "last_name": "familyName", "email": "email"},
    "UPDATE_PROFILE": {
        "updated_username": "userName",
        "updated_first_name": "givenName",
        "updated_last_name": "familyName",
        "updated_email": "email",
    },
    "UPDATE_EMAIL": {"updated_email": "email"},
}


def _from_user_event(event: KeycloakEvent) -> UserChange | Skip:
    if event.user_id is None:
        return Skip("no_user_id")
    if event.type == "DELETE_ACCOUNT":
        return _change(event, "delete", {})
    if event.type == "USER_DISABLED_BY_PERMANENT_LOCKOUT":
        return _change(event, "upsert", {"active": False})
    mapping = _USER_EVENT_DETAILS.get(event.type)
    if mapping is None:
        return Skip("not_a_user_change")
    attrs = {attr: _clean(attr, event.details[key]) for key, attr in mapping.items() if key in event.details}
    # Keycloak drops empty details: a cleared attribute shows as previous_<x> without updated_<x>.
    for key, attr in mapping.items():
        if key.startswith("updated_") and attr not in attrs and "previous_" + key[8:] in event.details:
            attrs[attr] = None
    if event.type == "REGISTER":
        attrs["active"] = True
    custom = _custom_details(event.details) if event.type == "UPDATE_PROFILE" else {}
    if not attrs and not custom:
        return Skip("no_scim_attributes")
    return replace(_change(event, "upsert", attrs), user_attributes=custom)


_BUILT_IN_DETAILS = frozenset({"username", "first_name", "last_name", "email"})


def _custom_details(details: Mapping[str, str]) -> dict[str, str | None]:
    """UPDATE_PROFILE names each changed user attribute as previous_<name> / updated_<name> (a cleared
    one without updated_<name>); only those, not the user's other attributes."""
    names = {key.partition("_")[2] for key in details if key.startswith(("previous_", "updated_"))}
    return {name: _text_or_none(details.get("updated_" + name)) for name in sorted(names - _BUILT_IN_DETAILS)}


def _change(
    event: KeycloakEvent, op: ChangeOp, attrs: dict[str, Any], custom: dict[str, str | None] | None = None
) -> UserChange:
    """`custom`: all the user attributes of a representation (None: it had no `attributes` map; an empty
    one removes them all)."""
    assert event.user_id is not None
    return UserChange(
        realm=event.realm,
        user_id=event.user_id,
        op=op,
        time_ms=event.time_ms,
        event_type=event.type,
        event_id=event.event_id,
        attributes=attrs,
        user_attributes=custom or {},
        user_attributes_complete=custom is not None,
    )


def _clean(attr: str, value: object) -> Any:
    if attr == "active":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise PoisonRecord("wrong_shape", f"enabled is {type(value).__name__}, not a boolean")
    if value is None or value == "":
        return None  # cleared
    if not isinstance(value, str):
        raise PoisonRecord("wrong_shape", f"{attr} is {type(value).__name__}, not a string")
    return value


def clamp_future(
    change: UserChange | GroupChange, now_ms: int, max_ahead_ms: int
) -> tuple[UserChange | GroupChange, bool]:
    """An event time further ahead of our clock than `max_ahead_ms` comes from a Keycloak node with a
    wrong clock; left as is it would win every race for as long as the skew lasts. Returns the change
    with its time clamped to `now_ms + max_ahead_ms`, and whether it was clamped."""
    limit = now_ms + max_ahead_ms
    if change.time_ms <= limit:
        return change, False
    return replace(change, time_ms=limit), True
