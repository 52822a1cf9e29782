"""What the pipeline takes from Keycloak's stored users and groups (UserRepresentation,
GroupRepresentation), in one shape whichever Admin API endpoint answered. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def user_attributes(rep: Mapping[str, Any]) -> dict[str, Any]:
    """The five attributes of service.domain.changes.ATTRIBUTES, from a user read through the Admin API.

    Unlike an admin event's representation (a request body, possibly partial), this is the whole stored
    user and Keycloak omits what is unset: an absent or empty name or email means none (None), and an
    absent `enabled` means disabled (a user created without `enabled` is stored disabled).
    """
    return {
        "userName": _text(rep.get("username")),
        "givenName": _text(rep.get("firstName")),
        "familyName": _text(rep.get("lastName")),
        "email": _text(rep.get("email")),
        "active": rep.get("enabled") is True,
    }


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def group_fields(rep: Mapping[str, Any], parent: str | None = None) -> dict[str, Any] | None:
    """`id`, `name`, `path` and `parent` (the parent group's id, None at the top level) of a group read
    through the Admin API, or None when it carries no id. The endpoints answer in different shapes
    (`access`, `attributes`, `subGroups`... or not): docs/reference/keycloak-group-events.md. A top-level
    group has no `parentId`; `parent` is the id the caller listed the group under, when it knows one."""
    group_id = rep.get("id")
    if not isinstance(group_id, str) or not group_id:
        return None
    parent_id = rep.get("parentId")
    return {
        "id": group_id,
        "name": _text(rep.get("name")),
        "path": _text(rep.get("path")),
        "parent": parent if parent is not None else (parent_id if isinstance(parent_id, str) and parent_id else None),
    }
