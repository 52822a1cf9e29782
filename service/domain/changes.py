"""Turn a `KeycloakEvent` into a `UserChange`: the normalized unit the keyed pipeline orders and applies.

A change carries only the attributes its event actually set (a partial admin UPDATE patches only what
it contains). Attribute names are the SCIM-side ones: userName, givenName, familyName, email, active.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

from service.domain.keycloak import KeycloakEvent
from service.errors import PoisonRecord

ATTRIBUTES = ("userName", "givenName", "familyName", "email", "active")

ChangeOp = Literal["upsert", "delete", "link"]


class ChangeSource(StrEnum):
    """Where a change comes from. Only events can be stale or partial: the others were read from
    Keycloak (or declared by an operator) and are never re-read."""

    EVENT = "event"  # a Keycloak event through the plugin
    BACKFILL = "backfill"
    RECONCILE = "reconcile"
    ON_DEMAND = "on_demand"
    OPERATOR = "operator"  # an operator's link


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

    @property
    def key(self) -> str:
        """The Kafka key of the keyed topic: all changes of one user land on one partition."""
        return f"{self.realm}/{self.user_id}"

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
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> UserChange:
        try:
            doc = json.loads(raw)
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
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PoisonRecord("malformed_change", str(exc)[:200]) from exc


# Changes written before `source` existed said it in their event type.
_LEGACY_SOURCES = {"BACKFILL": "backfill", "RECONCILE": "reconcile", "ON_DEMAND": "on_demand", "LINK": "operator"}


@dataclass(frozen=True, slots=True)
class Skip:
    """The event needs no downstream call; `reason` is a short stable label for metrics."""

    reason: str


def change_from_event(event: KeycloakEvent) -> UserChange | Skip:
    """Decide which user change, if any, an event describes."""
    if event.error or event.type.endswith("_ERROR"):
        return Skip("failed_action")
    if event.kind == "admin":
        return _from_admin(event)
    return _from_user_event(event)


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
    if event.operation_type == "CREATE":
        # Keycloak creates a user disabled unless the request says enabled=true.
        attrs.setdefault("active", False)
    return _change(event, "upsert", attrs) if attrs else Skip("no_scim_attributes")


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
    return _change(event, "upsert", attrs) if attrs else Skip("no_scim_attributes")


def _change(event: KeycloakEvent, op: ChangeOp, attrs: dict[str, Any]) -> UserChange:
    assert event.user_id is not None
    return UserChange(
        realm=event.realm,
        user_id=event.user_id,
        op=op,
        time_ms=event.time_ms,
        event_type=event.type,
        event_id=event.event_id,
        attributes=attrs,
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


def clamp_future(change: UserChange, now_ms: int, max_ahead_ms: int) -> tuple[UserChange, bool]:
    """An event time further ahead of our clock than `max_ahead_ms` comes from a Keycloak node with a
    wrong clock; left as is it would win every race for as long as the skew lasts. Returns the change
    with its time clamped to `now_ms + max_ahead_ms`, and whether it was clamped."""
    limit = now_ms + max_ahead_ms
    if change.time_ms <= limit:
        return change, False
    return replace(change, time_ms=limit), True
