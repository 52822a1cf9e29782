"""Plugin-format Keycloak events (SnuK87/keycloak-kafka over Keycloak 26.x), for tests, the demo and the benches."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

_clock = itertools.count(int(time.time() * 1000))


def now_ms() -> int:
    """Strictly increasing event times, so tests express order without sleeping."""
    return next(_clock)


def admin_event(
    realm: str,
    user_id: str,
    operation: str,
    representation: dict[str, Any] | None = None,
    *,
    resource_type: str = "USER",
    path_suffix: str = "",
    time_ms: int | None = None,
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "time": time_ms or now_ms(),
        "realmId": f"id-{realm}",
        "realmName": realm,
        "authDetails": {
            "realmId": "master-id",
            "realmName": "master",
            "clientId": "admin-cli",
            "userId": "admin-user",
            "ipAddress": "10.0.0.5",
        },
        "resourceType": resource_type,
        "operationType": operation,
        "resourcePath": f"users/{user_id}{path_suffix}",
        "representation": json.dumps(representation) if representation is not None else None,
        "error": None,
        "details": None,
        "resourceTypeAsString": resource_type,
        "resourceId": user_id,
    }


def create_user(
    realm: str,
    user_id: str,
    username: str,
    first: str = "Jane",
    last: str = "Doe",
    email: str | None = None,
    enabled: bool = True,
    attributes: dict[str, list[str]] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """A CREATE as the admin console sends it; `attributes` are the user attributes (a map of lists)."""
    rep = {
        "username": username,
        "firstName": first,
        "lastName": last,
        "email": email or f"{username}@example.com",
        "emailVerified": False,
        "attributes": {"department": ["Engineering"]} if attributes is None else attributes,
        "enabled": enabled,
        "requiredActions": [],
        "groups": ["/staff"],
    }
    return admin_event(realm, user_id, "CREATE", rep, **kw)


def update_user(realm: str, user_id: str, **fields: Any) -> dict[str, Any]:
    """A partial admin UPDATE: only the given representation keys (username, firstName, enabled ...)."""
    time_ms = fields.pop("time_ms", None)
    return admin_event(realm, user_id, "UPDATE", fields, time_ms=time_ms)


def delete_user(realm: str, user_id: str) -> dict[str, Any]:
    return admin_event(realm, user_id, "DELETE", None)


def user_event(
    realm: str,
    user_id: str,
    event_type: str,
    details: dict[str, str] | None = None,
    error: str | None = None,
    time_ms: int | None = None,
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "time": time_ms or now_ms(),
        "type": event_type,
        "realmId": f"id-{realm}",
        "realmName": realm,
        "clientId": "account-console",
        "userId": user_id,
        "sessionId": None,
        "ipAddress": "203.0.113.7",
        "error": error,
        "details": details,
    }


# -- groups (shapes recorded from Keycloak 26.5: docs/reference/keycloak-group-events.md) -----------------


def group_event(
    realm: str,
    operation: str,
    path: str,
    representation: dict[str, Any] | None,
    *,
    resource_type: str = "GROUP",
    time_ms: int | None = None,
) -> dict[str, Any]:
    """An admin event on `path` (e.g. `groups/<id>`, `groups/<parent>/children`, `users/<u>/groups/<g>`)."""
    event = admin_event(realm, "-", operation, representation, resource_type=resource_type, time_ms=time_ms)
    event["resourcePath"] = path
    event["resourceId"] = path.rsplit("/", 1)[-1]
    return event


def create_group(realm: str, group_id: str, name: str, parent: str | None = None) -> dict[str, Any]:
    """A top-level group (CREATE `groups/<id>`) or a sub-group (CREATE `groups/<parent>/children`)."""
    path = f"groups/{parent}/children" if parent else f"groups/{group_id}"
    return group_event(realm, "CREATE", path, {"id": group_id, "name": name, "subGroups": []})


def rename_group(realm: str, group_id: str, name: str, stale_path: str = "/stale") -> dict[str, Any]:
    """UPDATE `groups/<id>` with the whole group as the console sends it (its path is the stale one)."""
    rep = {"id": group_id, "name": name, "path": stale_path, "subGroupCount": 0, "subGroups": [], "attributes": {}}
    return group_event(realm, "UPDATE", f"groups/{group_id}", rep)


def move_group(realm: str, group_id: str, name: str, parent: str | None) -> dict[str, Any]:
    """UPDATE `groups` (to the top level) or `groups/<parent>/children` (under a parent)."""
    path = f"groups/{parent}/children" if parent else "groups"
    return group_event(realm, "UPDATE", path, {"id": group_id, "name": name, "subGroups": []})


def delete_group(realm: str, group_id: str) -> dict[str, Any]:
    return group_event(realm, "DELETE", f"groups/{group_id}", {"id": group_id, "name": "x", "subGroups": []})


def join_group(realm: str, user_id: str, group_id: str, path: str = "/g", *, leave: bool = False) -> dict[str, Any]:
    """GROUP_MEMBERSHIP CREATE (or DELETE) on `users/<user>/groups/<group>`; the representation is the group."""
    rep = {"id": group_id, "name": path.rsplit("/", 1)[-1], "path": path, "subGroups": [], "attributes": {}}
    return group_event(
        realm,
        "DELETE" if leave else "CREATE",
        f"users/{user_id}/groups/{group_id}",
        rep,
        resource_type="GROUP_MEMBERSHIP",
    )
