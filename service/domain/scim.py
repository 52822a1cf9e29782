"""SCIM 2.0 payloads (RFC 7643 / 7644) built from our attribute dicts. Pure and small on purpose:
the bench showed plain dicts to be the hot path's cheapest option, and these are the only shapes we send.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
CONTENT_TYPE = "application/scim+json"

# What a downstream id may not hold: it goes into a URL path as one segment, and into logs.
_NOT_IN_ID = re.compile(r"[/?#\x00-\x1f\x7f-\x9f]")


def display_name(values: Mapping[str, Any]) -> str | None:
    parts = [values.get("givenName"), values.get("familyName")]
    text = " ".join(p for p in parts if p)
    return text or None


def user_resource(external_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The body of `POST /Users`: externalId is the Keycloak user id."""
    body: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "externalId": external_id,
        "userName": values["userName"],
        "active": bool(values.get("active", True)),
    }
    name = {k: values[k] for k in ("givenName", "familyName") if values.get(k)}
    shown = display_name(values)
    if shown:
        name["formatted"] = shown
        body["displayName"] = shown
    if name:
        body["name"] = name
    if values.get("email"):
        body["emails"] = [_work_email(values["email"])]
    return body


def patch_operations(changed: Mapping[str, Any], values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """PatchOp operations for the `changed` attributes; `values` is the full new state (for derived
    attributes such as displayName)."""
    ops: list[dict[str, Any]] = []
    if changed.get("userName"):
        ops.append(_replace("userName", changed["userName"]))
    for attr in ("givenName", "familyName"):
        if attr in changed:
            value = changed[attr]
            ops.append(_replace(f"name.{attr}", value) if value else _remove(f"name.{attr}"))
    if "givenName" in changed or "familyName" in changed:
        shown = display_name(values)
        if shown:
            ops += [_replace("displayName", shown), _replace("name.formatted", shown)]
        else:
            ops += [_remove("displayName"), _remove("name.formatted")]
    if "email" in changed:
        email = changed["email"]
        ops.append(_replace("emails", [_work_email(email)]) if email else _remove("emails"))
    if "active" in changed:
        ops.append(_replace("active", bool(changed["active"])))
    return ops


def patch_request(operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": operations}


def eq_filter(attribute: str, value: str) -> str:
    """`attribute eq "value"` with the value quoted as RFC 7644 section 3.4.2.2 asks."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{attribute} eq "{escaped}"'


@dataclass(frozen=True, slots=True)
class Lookup:
    """A lookup answer, verified: `match` is the one resource that satisfies the filter (None when none
    or several do); `honoured` is False when the answer held resources that do not satisfy the filter,
    i.e. the downstream ignores or mis-evaluates filters and its "no match" proves nothing."""

    match: dict[str, Any] | None
    honoured: bool


# Lookup attributes RFC 7643 does not declare caseExact (User.userName, Group.displayName).
_CASE_INSENSITIVE = frozenset({"userName", "displayName"})


def matches(resource: Mapping[str, Any], attribute: str, value: str) -> bool:
    """`attribute eq value` as RFC 7643 defines it for our lookup attributes: externalId is
    case-exact, userName and a group's displayName are not."""
    held = resource.get(attribute)
    if not isinstance(held, str):
        return False
    if attribute in _CASE_INSENSITIVE:
        return held.casefold() == value.casefold()
    return held == value


def verify_lookup(doc: object, attribute: str, value: str) -> Lookup:
    """Never trust what comes back: keep only resources that satisfy the filter and carry a usable id."""
    resources = doc.get("Resources") if isinstance(doc, dict) else None
    if not isinstance(resources, list):
        return Lookup(None, True)
    found = [r for r in resources if isinstance(r, dict) and matches(r, attribute, value)]
    honoured = len(found) == len(resources)
    usable = [r for r in found if valid_resource_id(r.get("id")) is not None]
    return Lookup(usable[0] if len(found) == 1 and usable else None, honoured)


def patch_supported(config: object) -> bool | None:
    """What a ServiceProviderConfig says of `patch.supported` (None: it does not say)."""
    section = config.get("patch") if isinstance(config, dict) else None
    supported = section.get("supported") if isinstance(section, dict) else None
    return supported if isinstance(supported, bool) else None


def filter_supported(config: object) -> bool | None:
    """What a ServiceProviderConfig says of `filter.supported` (None: it does not say)."""
    section = config.get("filter") if isinstance(config, dict) else None
    supported = section.get("supported") if isinstance(section, dict) else None
    return supported if isinstance(supported, bool) else None


def max_results(config: object) -> int | None:
    """What a ServiceProviderConfig says of `filter.maxResults` (None: it does not say). Some downstreams
    cap every page at it, listings included."""
    section = config.get("filter") if isinstance(config, dict) else None
    value = section.get("maxResults") if isinstance(section, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def valid_resource_id(value: object) -> str | None:
    """The downstream id if it can be sent back as one path segment, else None.

    A non-empty string without "/", "?", "#" or control characters (C0, DEL, C1), and not "." or ".."
    (URL normalisation would turn those into another resource's path, even percent-encoded)."""
    if not isinstance(value, str) or value in ("", ".", "..") or _NOT_IN_ID.search(value):
        return None
    return value


def user_path(resource_id: str) -> str:
    """`Users/<id>` with the id percent-encoded as a single segment (a space is sent as %20)."""
    return f"Users/{quote(resource_id, safe='')}"


def group_resource(external_id: str, display_name: str) -> dict[str, Any]:
    """The body of `POST /Groups`: externalId is the Keycloak group id. Members follow in PATCH
    requests of a bounded size, never in the create."""
    return {"schemas": [GROUP_SCHEMA], "externalId": external_id, "displayName": display_name}


def group_path(resource_id: str) -> str:
    """`Groups/<id>` with the id percent-encoded as a single segment."""
    return f"Groups/{quote(resource_id, safe='')}"


def members_add(ids: Sequence[str]) -> dict[str, Any]:
    """One PatchOp operation adding `ids` as members. Each id is named once: scim2-server ignores an
    add of a member it already holds, but stores an id twice when one request names it twice."""
    return {"op": "add", "path": "members", "value": [{"value": i} for i in _once(ids)]}


def member_removals(ids: Iterable[str]) -> list[dict[str, Any]]:
    """One PatchOp operation per id, each removing that member by a value filter (RFC 7644 §3.5.2.2):
    never a replacement of the whole member list, which some downstreams refuse."""
    return [_remove(f"members[{eq_filter('value', i)}]") for i in _once(ids)]


def display_name_replace(name: str) -> dict[str, Any]:
    return _replace("displayName", name)


def is_service_provider_config(doc: object) -> bool:
    return isinstance(doc, dict) and SPC_SCHEMA in (doc.get("schemas") or [])


def _once(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _work_email(address: str) -> dict[str, Any]:
    return {"value": address, "type": "work", "primary": True}


def _replace(path: str, value: Any) -> dict[str, Any]:
    return {"op": "replace", "path": path, "value": value}


def _remove(path: str) -> dict[str, Any]:
    return {"op": "remove", "path": path}
