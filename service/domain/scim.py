"""SCIM 2.0 payloads (RFC 7643 / 7644) built from our attribute dicts. Pure and small on purpose:
the bench showed plain dicts to be the hot path's cheapest option, and these are the only shapes we send.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from service.domain.mapping import DEFAULT_MAPPING, NAME_PARTS, TARGETS, AttributeMapping, Shape, Target

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


def user_resource(
    external_id: str, values: Mapping[str, Any], mapping: AttributeMapping = DEFAULT_MAPPING
) -> dict[str, Any]:
    """The body of `POST /Users` (and of a PUT): externalId is the Keycloak user id, the other attributes
    are `values` (keyed as in the user's state) sent where `mapping` says."""
    mapped = mapping.scim_values(values)
    body: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "externalId": external_id,
        "userName": mapped["userName"],
        "active": bool(values.get("active", True)),
    }
    name = {part: mapped[f"name.{part}"] for part in NAME_PARTS if mapped.get(f"name.{part}")}
    shown = _shown(mapped)
    if shown:
        name["formatted"] = shown
        body["displayName"] = shown
    if name:
        body["name"] = name
    for target, value in mapped.items():
        spec = TARGETS[target]
        if value and spec.attribute not in ("userName", "name"):
            holder = body if spec.schema == USER_SCHEMA else body.setdefault(spec.schema, {})
            holder[spec.attribute] = _shaped(spec, value, mapping.type_of(target))
    body["schemas"] += [schema for schema in mapping.extensions if schema in body]
    return body


def patch_operations(
    changed: Mapping[str, Any], values: Mapping[str, Any], mapping: AttributeMapping = DEFAULT_MAPPING
) -> list[dict[str, Any]]:
    """PatchOp operations for the `changed` attributes; `values` is the full new state (for derived
    attributes such as displayName). A cleared value is a `remove` of its path."""
    sent = mapping.scim_values(changed)
    ops: list[dict[str, Any]] = []
    if sent.get("userName"):
        ops.append(_replace("userName", sent["userName"]))
    for part in NAME_PARTS:
        path = f"name.{part}"
        if path in sent:
            value = sent[path]
            ops.append(_replace(path, value) if value else _remove(path))
    if "name.givenName" in sent or "name.familyName" in sent:
        shown = _shown(mapping.scim_values(values))
        if shown:
            ops += [_replace("displayName", shown), _replace("name.formatted", shown)]
        else:
            ops += [_remove("displayName"), _remove("name.formatted")]
    for target, value in sent.items():
        spec = TARGETS[target]
        if spec.attribute not in ("userName", "name"):
            shaped = _shaped(spec, value, mapping.type_of(target)) if value else None
            ops.append(_replace(target, shaped) if shaped is not None else _remove(target))
    if "active" in changed:
        ops.append(_replace("active", bool(changed["active"])))
    return ops


def _shown(mapped: Mapping[str, Any]) -> str | None:
    """displayName and name.formatted: derived from the given and family names sent."""
    return display_name({"givenName": mapped.get("name.givenName"), "familyName": mapped.get("name.familyName")})


def _shaped(spec: Target, value: Any, kind: str) -> Any:
    if spec.shape is Shape.TYPED:
        return [{"value": value, "type": kind, "primary": True}]
    if spec.shape is Shape.REFERENCE:
        return {"value": value}
    return value


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


def look_alike(resource: Mapping[str, Any], ours: Mapping[str, Any]) -> bool:
    """Whether an account that shows no owner is someone else's all the same: it lists email addresses
    and none of them is an address we send (`ours`: the resource we would POST), ignoring case. The
    userName alone does not tell two people apart; an address is the person's."""
    theirs = _addresses(resource)
    return bool(theirs) and not theirs & _addresses(ours)


def _addresses(resource: Mapping[str, Any]) -> set[str]:
    emails = resource.get("emails")
    if not isinstance(emails, list):
        return set()
    return {e["value"].casefold() for e in emails if isinstance(e, Mapping) and isinstance(e.get("value"), str)}


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


def _replace(path: str, value: Any) -> dict[str, Any]:
    return {"op": "replace", "path": path, "value": value}


def _remove(path: str) -> dict[str, Any]:
    return {"op": "remove", "path": path}
