"""Parse the records of Keycloak event-to-Kafka plugins into `KeycloakEvent`.

Lenient by design (Keycloak 24-26 shapes differ): unknown keys are ignored, optional keys may be
missing. Supports SnuK87/keycloak-kafka and ru.playa.keycloak:keycloak-kafka-provider (`@class`,
no event id, no realmName), told apart automatically. Anything unusable raises `PoisonRecord`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from service.errors import PoisonRecord

EventKind = Literal["user", "admin"]


@dataclass(frozen=True, slots=True)
class KeycloakEvent:
    kind: EventKind
    event_id: str | None
    time_ms: int
    realm: str
    type: str  # user events: the event type; admin events: "<resourceType>_<operationType>"
    user_id: str | None
    error: str | None = None
    user_subresource: str | None = None  # admin events on users/<id>/<this>: not the user itself
    details: Mapping[str, str] = field(default_factory=dict)
    representation: Mapping[str, Any] | None = None
    resource_type: str | None = None
    operation_type: str | None = None
    resource_path: str | None = None  # admin events: e.g. groups/<id>/children, users/<id>/groups/<group id>


def parse_record(value: bytes | None) -> KeycloakEvent:
    """Decode one plugin record (the Kafka value) into an event."""
    if value is None:
        raise PoisonRecord("empty_value", "record has no value")
    try:
        doc = json.loads(value, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PoisonRecord("malformed_json", str(exc)[:200]) from exc
    if not isinstance(doc, dict):
        raise PoisonRecord("wrong_shape", f"expected a JSON object, got {type(doc).__name__}")
    if "operationType" in doc or "resourceType" in doc or str(doc.get("@class", "")).endswith("AdminEvent"):
        return _parse_admin(doc)
    if "type" in doc:
        return _parse_user(doc)
    raise PoisonRecord("wrong_shape", "neither a user event (type) nor an admin event (operationType)")


def _parse_user(doc: Mapping[str, Any]) -> KeycloakEvent:
    event_type = _required_str(doc, "type")
    details = doc.get("details") or {}
    if not isinstance(details, dict):
        raise PoisonRecord("wrong_shape", "details is not an object")
    return KeycloakEvent(
        kind="user",
        event_id=_str(doc, "id"),
        time_ms=_time(doc),
        realm=_realm(doc),
        type=event_type,
        user_id=_str(doc, "userId"),
        error=_str(doc, "error"),
        details={str(k): str(v) for k, v in details.items() if v is not None},
    )


def _parse_admin(doc: Mapping[str, Any]) -> KeycloakEvent:
    resource_type = _required_str(doc, "resourceType")
    operation = _required_str(doc, "operationType")
    user_id, subresource = _user_in_path(_str(doc, "resourcePath") or "", _str(doc, "resourceId"))
    return KeycloakEvent(
        kind="admin",
        event_id=_str(doc, "id"),
        time_ms=_time(doc),
        realm=_realm(doc),
        type=f"{resource_type}_{operation}",
        user_id=user_id,
        user_subresource=subresource,
        error=_str(doc, "error"),
        representation=_representation(doc.get("representation")),
        resource_type=resource_type,
        operation_type=operation,
        resource_path=_str(doc, "resourcePath"),
    )


def _user_in_path(path: str, resource_id: str | None) -> tuple[str | None, str | None]:
    """The target user of `users/<id>[/<sub-resource>]`. Keycloak 26 also sends `resourceId`, which
    keeps ids containing a slash whole; older versions only have the path."""
    if not path.startswith("users/"):
        return None, None
    rest = path[len("users/") :]
    if resource_id and (rest == resource_id or rest.startswith(resource_id + "/")):
        return resource_id, rest[len(resource_id) + 1 :] or None
    user_id, _, subresource = rest.partition("/")
    return (user_id or None), (subresource or None) if user_id else None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _representation(raw: object) -> Mapping[str, Any] | None:
    """The admin request body arrives as a JSON string inside the JSON: decode it a second time."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        raise PoisonRecord("wrong_shape", "representation is neither a string nor an object")
    try:
        decoded = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise PoisonRecord("malformed_representation", str(exc)[:200]) from exc
    if not isinstance(decoded, dict):
        return None  # e.g. a list of role mappings: never a user
    return decoded


def _realm(doc: Mapping[str, Any]) -> str:
    realm = _str(doc, "realmName") or _str(doc, "realmId")
    if not realm:
        raise PoisonRecord("missing_realm", "neither realmName nor realmId")
    return realm


def _time(doc: Mapping[str, Any]) -> int:
    value = doc.get("time")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PoisonRecord("wrong_shape", "time is missing or not a number")
    return int(value)


def _required_str(doc: Mapping[str, Any], key: str) -> str:
    value = _str(doc, key)
    if value is None:
        raise PoisonRecord("wrong_shape", f"{key} is missing")
    return value


def _str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PoisonRecord("wrong_shape", f"{key} is not a string")
    return value
