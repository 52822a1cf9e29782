"""Keycloak's stored user (UserRepresentation) -> the SCIM-side attributes the pipeline compares. Pure."""

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
