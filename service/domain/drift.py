"""Compare Keycloak's users with a downstream's: what is missing, stale or extra. Pure.

Keycloak is the source of truth; downstream users are matched by externalId (the Keycloak user id).
A downstream user with no Keycloak counterpart is reported as extra and never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.domain.changes import ATTRIBUTES


@dataclass(frozen=True, slots=True)
class Drift:
    missing: list[str] = field(default_factory=list)  # Keycloak user ids absent downstream
    stale: dict[str, list[str]] = field(default_factory=dict)  # Keycloak user id -> attributes that differ
    extra: list[dict[str, Any]] = field(default_factory=list)  # downstream users with no Keycloak user

    @property
    def to_fix(self) -> list[str]:
        return self.missing + list(self.stale)


def downstream_attributes(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The five compared attributes of a SCIM User resource."""
    name = resource.get("name") or {}
    emails = resource.get("emails") or []
    primary = next((e for e in emails if e.get("primary")), emails[0] if emails else {})
    return {
        "userName": resource.get("userName"),
        "givenName": name.get("givenName") or None,
        "familyName": name.get("familyName") or None,
        "email": primary.get("value") or None,
        "active": resource.get("active", True) is True,
    }


def compare(keycloak: Mapping[str, Mapping[str, Any]], downstream: Iterable[Mapping[str, Any]]) -> Drift:
    """`keycloak`: user id -> attributes (service.keycloak_admin.mapping.user_attributes)."""
    seen: dict[str, Mapping[str, Any]] = {}
    drift = Drift()
    for resource in downstream:
        external_id = resource.get("externalId")
        if not external_id or external_id not in keycloak:
            drift.extra.append(
                {"id": resource.get("id"), "externalId": external_id, "userName": resource.get("userName")}
            )
            continue
        seen[external_id] = resource
    for user_id, wanted in keycloak.items():
        found = seen.get(user_id)
        if found is None:
            drift.missing.append(user_id)
            continue
        have = downstream_attributes(found)
        differs = [a for a in ATTRIBUTES if _norm(a, wanted.get(a)) != _norm(a, have.get(a))]
        if differs:
            drift.stale[user_id] = differs
    return drift


def _norm(attribute: str, value: Any) -> Any:
    """userName and email compare case-insensitively (RFC 7643: userName is not caseExact)."""
    return value.lower() if attribute in ("userName", "email") and isinstance(value, str) else value
