"""Attribute mapping: which Keycloak field or user attribute each SCIM attribute of a downstream holds.

Declarative and closed: a mapping is a list of rules `{source, target[, type]}`, where

- `source` is a Keycloak field (`username`, `email`, `firstName`, `lastName`) or a user attribute
  (`attributes.<name>`; a multi-valued attribute contributes its first value);
- `target` is one of the SCIM paths in `TARGETS` (core User attributes and the enterprise extension),
  written as a PATCH path: `title`, `name.givenName`, `emails`,
  `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`;
- `type` (for `emails` and `phoneNumbers` only) is the type of the one value sent (default `work`).

Nothing is evaluated: the targets are a fixed table, so each has one known shape in a POST body, a
PUT body and a PatchOp. `active` always follows Keycloak's `enabled` and is not part of a mapping.

Values travel through the pipeline under their Keycloak-side key (`key_of`): the five built-in ones as
before (userName, givenName, familyName, email, active), user attributes as `attributes.<name>`, so
every downstream of a realm reads the same per-attribute state and applies its own mapping to it.
Pure: the checks against a downstream's /Schemas are here too, on documents already read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CUSTOM_PREFIX = "attributes."

# Keycloak field -> the key its value has in changes and state (names kept from before mappings existed).
BUILT_IN_SOURCES = {"username": "userName", "firstName": "givenName", "lastName": "familyName", "email": "email"}


class Shape(StrEnum):
    """How a target's value is sent."""

    STRING = "string"  # the value itself
    TYPED = "typed"  # a one-element multi-valued list: [{"value": v, "type": t, "primary": true}]
    REFERENCE = "reference"  # a complex attribute holding it as its `value` (enterprise `manager`)


@dataclass(frozen=True, slots=True)
class Target:
    schema: str  # the schema that defines the attribute (core User, or the enterprise extension)
    attribute: str  # its top-level name
    sub: str | None  # its sub-attribute (name.givenName), or None
    shape: Shape

    @property
    def path(self) -> str:
        """The PATCH path (extension attributes URN-qualified, RFC 7644 section 3.5.2)."""
        local = f"{self.attribute}.{self.sub}" if self.sub else self.attribute
        return local if self.schema == CORE_USER else f"{self.schema}:{local}"


def _core(attribute: str, shape: Shape = Shape.STRING, sub: str | None = None) -> Target:
    return Target(CORE_USER, attribute, sub, shape)


def _enterprise(attribute: str, shape: Shape = Shape.STRING) -> Target:
    return Target(ENTERPRISE_USER, attribute, None, shape)


NAME_PARTS = ("givenName", "familyName", "middleName", "honorificPrefix", "honorificSuffix")

# Every target a mapping may name, in the order its values appear in bodies and PatchOps.
TARGETS: dict[str, Target] = {
    t.path: t
    for t in (
        _core("userName"),
        *(_core("name", sub=part) for part in NAME_PARTS),
        _core("emails", Shape.TYPED),
        _core("phoneNumbers", Shape.TYPED),
        _core("nickName"),
        _core("title"),
        _core("userType"),
        _core("preferredLanguage"),
        _core("locale"),
        _core("timezone"),
        _core("profileUrl"),
        _enterprise("employeeNumber"),
        _enterprise("costCenter"),
        _enterprise("organization"),
        _enterprise("division"),
        _enterprise("department"),
        _enterprise("manager", Shape.REFERENCE),
    )
}
TARGET_ORDER = {path: i for i, path in enumerate(TARGETS)}
TYPES = ("work", "home", "mobile", "other", "fax", "pager")  # RFC 7643's canonical types of both


@dataclass(frozen=True, slots=True)
class Rule:
    source: str
    target: str
    type: str | None = None  # TYPED targets only

    @property
    def key(self) -> str:
        """Where the source's value is in changes and state."""
        return BUILT_IN_SOURCES.get(self.source, self.source)

    @property
    def spec(self) -> Target:
        return TARGETS[self.target]

    def public(self) -> dict[str, str]:
        shown = {"source": self.source, "target": self.target}
        return {**shown, "type": self.type} if self.type else shown


class MappingError(ValueError):
    """A mapping that cannot be used; the message names the entry (its index and its target or source)."""


@dataclass(frozen=True, slots=True)
class AttributeMapping:
    rules: tuple[Rule, ...]  # sorted by target order

    @property
    def keys(self) -> frozenset[str]:
        """The state keys this mapping reads (and `active`, always sent)."""
        return frozenset({*(r.key for r in self.rules), "active"})

    @property
    def extensions(self) -> tuple[str, ...]:
        """The schema extensions its targets belong to."""
        return tuple(dict.fromkeys(r.spec.schema for r in self.rules if r.spec.schema != CORE_USER))

    def public(self) -> list[dict[str, str]]:
        return [r.public() for r in self.rules]

    def scim_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """target path -> value, for the targets whose source is in `values` (None: cleared)."""
        return {r.target: values[r.key] for r in self.rules if r.key in values}

    def user_name(self, values: Mapping[str, Any]) -> Any:
        """The value the SCIM userName gets (None when unknown)."""
        return next((values.get(r.key) for r in self.rules if r.target == "userName"), None)

    def type_of(self, target: str) -> str:
        return next((r.type or "work" for r in self.rules if r.target == target), "work")

    def as_listed(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """What a listing of the downstream should show of the five built-in attributes (the shape a
        reconciliation compares): each from the Keycloak field the mapping sends there, None where the
        mapping sends none of them (or a user attribute, which a brief read does not carry)."""
        by_target = {r.target: r.key for r in self.rules}
        shown = {"active": values.get("active")}
        for target, attribute in _LISTED.items():
            key = by_target.get(target)
            shown[attribute] = values.get(key) if key is not None and not is_custom(key) else None
        return shown


_LISTED = {"userName": "userName", "name.givenName": "givenName", "name.familyName": "familyName", "emails": "email"}


def _sorted(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    return tuple(sorted(rules, key=lambda r: TARGET_ORDER[r.target]))


DEFAULT_MAPPING = AttributeMapping(
    _sorted(
        (
            Rule("username", "userName"),
            Rule("firstName", "name.givenName"),
            Rule("lastName", "name.familyName"),
            Rule("email", "emails"),
        )
    )
)


def is_custom(key: str) -> bool:
    return key.startswith(CUSTOM_PREFIX)


def kept_user_attributes(
    attributes: Mapping[str, str | None], complete: bool, mapping: AttributeMapping
) -> tuple[dict[str, str | None], bool]:
    """What of a change's Keycloak user attributes a downstream keeps: only those its mapping sends (the
    rest is personal data it has no use for, and would grow every user's state). A complete listing stays
    complete for the mapped ones (one it omits was removed); a mapping that sends none keeps nothing."""
    mapped = {key.removeprefix(CUSTOM_PREFIX) for key in mapping.keys if is_custom(key)}
    if not mapped:
        return {}, False
    return {name: value for name, value in attributes.items() if name in mapped}, complete


def parse_mapping(doc: object) -> AttributeMapping:
    """A mapping from its JSON form (a list of rules); MappingError naming the first bad entry."""
    if not isinstance(doc, list) or not doc:
        raise MappingError("a mapping is a non-empty list of {source, target} entries")
    rules: list[Rule] = []
    for index, entry in enumerate(doc):
        rules.append(_rule(index, entry))
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        if rule.target in seen:
            raise MappingError(f"entry {index}: target {rule.target} is already mapped by entry {seen[rule.target]}")
        seen[rule.target] = index
    if "userName" not in seen:
        raise MappingError('no entry has target userName: add {"source": "username", "target": "userName"} (or email)')
    return AttributeMapping(_sorted(rules))


def _rule(index: int, entry: object) -> Rule:
    where = f"entry {index}"
    if not isinstance(entry, dict):
        raise MappingError(f"{where}: not an object with source and target")
    unknown = set(entry) - {"source", "target", "type"}
    if unknown:
        raise MappingError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    source, target, kind = entry.get("source"), entry.get("target"), entry.get("type")
    if not isinstance(source, str) or not _valid_source(source):
        raise MappingError(
            f"{where}: source {source!r} is not one of username, email, firstName, lastName, attributes.<name>"
        )
    if not isinstance(target, str) or target not in TARGETS:
        raise MappingError(f"{where}: target {target!r} is not a supported SCIM path (see the operations guide)")
    if kind is not None:
        if TARGETS[target].shape is not Shape.TYPED:
            raise MappingError(f"{where}: type applies to emails and phoneNumbers only, not {target}")
        if kind not in TYPES:
            raise MappingError(f"{where}: type {kind!r} is not one of {', '.join(TYPES)}")
    if target == "userName" and source not in ("username", "email"):
        raise MappingError(f"{where}: userName comes from username or email, not {source}")
    return Rule(source, target, kind)


def _valid_source(source: str) -> bool:
    if source in BUILT_IN_SOURCES:
        return True
    name = source.removeprefix(CUSTOM_PREFIX)
    return source.startswith(CUSTOM_PREFIX) and bool(name) and name.strip() == name and len(name) <= 255


# -- checks against the downstream's own schemas ------------------------------------------------------


def check_against_schemas(mapping: AttributeMapping, schemas: object, resource_types: object) -> None:
    """MappingError naming the first entry whose target the downstream does not declare: in its /Schemas
    (the attribute, its sub-attribute, writable) and, for an extension, in the User resource type's
    schemaExtensions of /ResourceTypes."""
    declared = _schemas_by_id(schemas)
    extensions = _user_extensions(resource_types)
    for rule in mapping.rules:
        spec = rule.spec
        where = f"the entry {rule.source} -> {rule.target}"
        if spec.schema != CORE_USER and spec.schema not in extensions:
            raise MappingError(f"{where}: the downstream's User resource type has no extension {spec.schema}")
        schema = declared.get(spec.schema)
        if schema is None:
            raise MappingError(f"{where}: the downstream's /Schemas has no schema {spec.schema}")
        attribute = _attribute(schema, spec.attribute)
        if attribute is None:
            raise MappingError(f"{where}: the downstream's schema {spec.schema} has no attribute {spec.attribute}")
        if spec.sub is not None:
            attribute = _attribute(attribute, spec.sub, key="subAttributes")
            if attribute is None:
                raise MappingError(f"{where}: the downstream's {spec.attribute} has no sub-attribute {spec.sub}")
        if attribute.get("mutability") in ("readOnly", "immutable"):
            raise MappingError(f"{where}: the downstream declares it {attribute['mutability']}")


def _schemas_by_id(doc: object) -> dict[str, Mapping[str, Any]]:
    """/Schemas answers a ListResponse (RFC 7644 section 4); some servers answer a bare list."""
    listed = doc.get("Resources") if isinstance(doc, dict) else doc
    if not isinstance(listed, list):
        return {}
    return {s["id"]: s for s in listed if isinstance(s, dict) and isinstance(s.get("id"), str)}


def _user_extensions(doc: object) -> frozenset[str]:
    listed = doc.get("Resources") if isinstance(doc, dict) else doc
    found: set[str] = set()
    for resource_type in listed if isinstance(listed, list) else ():
        if not isinstance(resource_type, dict) or resource_type.get("schema") != CORE_USER:
            continue
        for extension in resource_type.get("schemaExtensions") or ():
            if isinstance(extension, dict) and isinstance(extension.get("schema"), str):
                found.add(extension["schema"])
    return frozenset(found)


def _attribute(holder: Mapping[str, Any], name: str, key: str = "attributes") -> Mapping[str, Any] | None:
    """Attribute names are case-insensitive (RFC 7643 section 2.1)."""
    for attribute in holder.get(key) or ():
        if isinstance(attribute, dict) and str(attribute.get("name", "")).casefold() == name.casefold():
            return attribute
    return None
