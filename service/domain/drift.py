"""Compare Keycloak's users and groups with a downstream's: what is missing, stale or extra. Pure.

Keycloak is the source of truth; downstream users and groups are matched by externalId (the Keycloak
user or group id), a group's members by their user's externalId. A downstream user, group or member
with no Keycloak counterpart is reported as extra and never touched. A Keycloak user with more than one
downstream account carrying its id (a create that landed after its client gave up, then a retry) is
reported with every one of them as a duplicate: which one is linked only the user's state knows.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.domain.changes import ATTRIBUTES


@dataclass(frozen=True, slots=True)
class Drift:
    missing: list[str] = field(default_factory=list)  # Keycloak user ids absent downstream
    stale: dict[str, list[str]] = field(default_factory=dict)  # Keycloak user id -> attributes that differ
    extra: list[dict[str, Any]] = field(default_factory=list)  # downstream users with no Keycloak user
    duplicates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # user id -> its 2+ accounts

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
    seen: dict[str, list[Mapping[str, Any]]] = {}
    drift = Drift()
    for resource in downstream:
        external_id = resource.get("externalId")
        if not external_id or external_id not in keycloak:
            drift.extra.append(_account(resource))
            continue
        seen.setdefault(external_id, []).append(resource)
    for user_id, wanted in keycloak.items():
        found = seen.get(user_id)
        if not found:
            drift.missing.append(user_id)
            continue
        if len(found) > 1:
            drift.duplicates[user_id] = [_account(resource) for resource in found]
        # of several, the closest: the linked one, once fixed (the others are reported, and keep differing)
        differs = min((_differs(wanted, downstream_attributes(r)) for r in found), key=len)
        if differs:
            drift.stale[user_id] = differs
    return drift


def _differs(wanted: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    return [a for a in ATTRIBUTES if _norm(a, wanted.get(a)) != _norm(a, have.get(a))]


def _account(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": resource.get("id"), "externalId": resource.get("externalId"), "userName": resource.get("userName")}


def orphan_ids(extra: Iterable[Mapping[str, Any]]) -> list[str]:
    """The externalIds of extra accounts, each once: the users whose state may know them deleted."""
    ids = (e.get("externalId") for e in extra)
    return list(dict.fromkeys(i for i in ids if isinstance(i, str) and i))


def _norm(attribute: str, value: Any) -> Any:
    """userName and email compare case-insensitively (RFC 7643: userName is not caseExact)."""
    return value.lower() if attribute in ("userName", "email") and isinstance(value, str) else value


# -- groups -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupDrift:
    missing: list[str] = field(default_factory=list)  # Keycloak group ids absent downstream
    stale: dict[str, str | None] = field(default_factory=dict)  # Keycloak group id -> the displayName found
    extra: list[dict[str, Any]] = field(default_factory=list)  # downstream groups that are no wanted group
    members_missing: dict[str, list[str]] = field(default_factory=dict)  # group id -> Keycloak user ids lacking
    members_extra: dict[str, list[str]] = field(default_factory=dict)  # group id -> downstream member ids unwanted

    @property
    def members_missing_count(self) -> int:
        return sum(len(users) for users in self.members_missing.values())

    @property
    def members_extra_count(self) -> int:
        return sum(len(members) for members in self.members_extra.values())


def wanted_members(
    direct: Mapping[str, Collection[str]], parents: Mapping[str, str | None], flatten: bool
) -> dict[str, frozenset[str]]:
    """Group id -> the Keycloak user ids the downstream group should hold: its direct members, and with
    flattening every member of every group below it (as service.domain.groups.effective_members)."""
    members = {group: set(direct.get(group, ())) for group in parents}
    if flatten:
        for group, users in direct.items():
            seen: set[str] = set()
            parent = parents.get(group)
            while parent is not None and parent not in seen and parent in members:
                seen.add(parent)
                members[parent] |= set(users)
                parent = parents.get(parent)
    return {group: frozenset(users) for group, users in members.items()}


def compare_groups(
    wanted: Mapping[str, str],
    members: Mapping[str, Collection[str]],
    downstream: Iterable[Mapping[str, Any]],
    user_ids: Mapping[str, str],
) -> GroupDrift:
    """`wanted`: Keycloak group id -> the displayName the tenant wants, for the groups it pushes;
    `members`: Keycloak group id -> the Keycloak user ids it should hold; `downstream`: SCIM Group
    resources with their members; `user_ids`: downstream user id -> its externalId. A downstream group
    is a wanted group's when its externalId is that group's id (the first such one: any other is extra);
    a member is a wanted member when it is the downstream user of one (members of type Group are not
    ours to compare)."""
    drift = GroupDrift()
    found: dict[str, Mapping[str, Any]] = {}
    for resource in downstream:
        external_id = resource.get("externalId")
        if not isinstance(external_id, str) or external_id not in wanted or external_id in found:
            drift.extra.append(
                {"id": resource.get("id"), "externalId": external_id, "displayName": resource.get("displayName")}
            )
            continue
        found[external_id] = resource
    for group_id, display_name in wanted.items():
        want = set(members.get(group_id, ()))
        group = found.get(group_id)
        held: set[str] = set()
        unwanted: list[str] = []
        if group is None:
            drift.missing.append(group_id)
        else:
            if group.get("displayName") != display_name:
                drift.stale[group_id] = group.get("displayName")
            for member in group.get("members") or ():
                if not isinstance(member, Mapping) or str(member.get("type", "User")).lower() == "group":
                    continue
                value = member.get("value")
                user_id = user_ids.get(value) if isinstance(value, str) else None
                if user_id is not None and user_id in want:
                    held.add(user_id)
                elif isinstance(value, str):  # a member without an id names nothing to remove
                    unwanted.append(value)
        if lacking := sorted(want - held):
            drift.members_missing[group_id] = lacking
        if unwanted:
            drift.members_extra[group_id] = sorted(unwanted)
    return drift
