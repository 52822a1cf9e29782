"""Attribute mappings: parsing, the payloads they shape, the checks against a downstream's /Schemas."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.mapping import (
    DEFAULT_MAPPING,
    ENTERPRISE_USER,
    MappingError,
    check_against_schemas,
    parse_mapping,
)
from service.domain.scim import patch_operations, user_resource

UID = "kc-1"
E = ENTERPRISE_USER
HR = [
    {"source": "username", "target": "userName"},
    {"source": "email", "target": "emails"},
    {"source": "attributes.department", "target": f"{E}:department"},
    {"source": "attributes.employeeNumber", "target": f"{E}:employeeNumber"},
    {"source": "attributes.manager", "target": f"{E}:manager"},
    {"source": "attributes.phone", "target": "phoneNumbers", "type": "mobile"},
    {"source": "attributes.title", "target": "title"},
    {"source": "attributes.locale", "target": "locale"},
    {"source": "attributes.lang", "target": "preferredLanguage"},
]
VALUES = {
    "userName": "jdoe",
    "email": "jane@example.com",
    "active": True,
    "attributes.department": "Sales",
    "attributes.employeeNumber": "701",
    "attributes.manager": "boss-1",
    "attributes.phone": "+15550100",
    "attributes.title": "Rep",
    "attributes.locale": "en-US",
    "attributes.lang": "en",
}


def test_default_mapping_is_the_four_built_in_attributes() -> None:
    """The default maps username, firstName, lastName, email as before mappings existed."""
    assert DEFAULT_MAPPING.public() == [
        {"source": "username", "target": "userName"},
        {"source": "firstName", "target": "name.givenName"},
        {"source": "lastName", "target": "name.familyName"},
        {"source": "email", "target": "emails"},
    ]
    assert parse_mapping(DEFAULT_MAPPING.public()) == DEFAULT_MAPPING  # in any order, it is the default
    assert parse_mapping(list(reversed(DEFAULT_MAPPING.public()))) == DEFAULT_MAPPING


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ([], "non-empty list"),
        ({"source": "username", "target": "userName"}, "non-empty list"),
        ([{"source": "username", "target": "userName"}, "x"], "entry 1: not an object"),
        ([{"source": "username", "target": "userName"}, {"source": "nick", "target": "nickName"}], "entry 1: source"),
        ([{"source": "attributes.", "target": "userName"}], "entry 0: source"),
        ([{"source": "username", "target": "userName"}, {"source": "email", "target": "emails.value"}], "entry 1"),
        ([{"source": "username", "target": "userName"}, {"source": "email", "target": "userName"}], "entry 1"),
        ([{"source": "attributes.x", "target": "title"}], "no entry has target userName"),
        ([{"source": "firstName", "target": "userName"}], "entry 0: userName comes from username or email"),
        ([{"source": "username", "target": "userName", "type": "work"}], "entry 0: type applies"),
        ([{"source": "username", "target": "userName"}, {"source": "email", "target": "emails", "type": "x"}], "1"),
        ([{"source": "username", "target": "userName", "expr": "1+1"}], "entry 0: unknown field(s) expr"),
        ([{"source": "username", "target": "userName"}, {"source": "email", "target": f"{E}:secret"}], "entry 1"),
    ],
)
def test_a_bad_mapping_is_refused_naming_its_entry(doc: Any, named: str) -> None:
    """Each malformed mapping raises MappingError whose message names the entry at fault."""
    with pytest.raises(MappingError) as caught:
        parse_mapping(doc)
    assert named in str(caught.value)


def test_create_carries_the_mapped_attributes_and_the_extension_urn() -> None:
    """A POST body holds each mapped value in its shape, enterprise ones under the extension, its URN in schemas."""
    body = user_resource(UID, VALUES, parse_mapping(HR))
    assert body == {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", E],
        "externalId": UID,
        "userName": "jdoe",
        "active": True,
        "emails": [{"value": "jane@example.com", "type": "work", "primary": True}],
        "phoneNumbers": [{"value": "+15550100", "type": "mobile", "primary": True}],
        "title": "Rep",
        "preferredLanguage": "en",
        "locale": "en-US",
        E: {"employeeNumber": "701", "department": "Sales", "manager": {"value": "boss-1"}},
    }


def test_create_without_extension_values_names_no_extension() -> None:
    """A user without any enterprise value is created with the core schema only."""
    body = user_resource(UID, {"userName": "jdoe", "attributes.department": None}, parse_mapping(HR))
    assert body["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:User"]
    assert E not in body


def test_user_name_from_email() -> None:
    """userName may come from the email: the POST sends it, a PATCH replaces it when the email changes."""
    mapping = parse_mapping([{"source": "email", "target": "userName"}, {"source": "email", "target": "emails"}])
    values = {"userName": "jdoe", "email": "jane@example.com"}
    assert user_resource(UID, values, mapping)["userName"] == "jane@example.com"
    assert mapping.user_name(values) == "jane@example.com"
    assert patch_operations({"email": "j@example.org"}, {**values, "email": "j@example.org"}, mapping) == [
        {"op": "replace", "path": "userName", "value": "j@example.org"},
        {"op": "replace", "path": "emails", "value": [{"value": "j@example.org", "type": "work", "primary": True}]},
    ]
    assert patch_operations({"userName": "other"}, values, mapping) == []  # the username is not sent


def test_patch_uses_urn_qualified_paths_and_removes_cleared_values() -> None:
    """Enterprise attributes are PATCHed at their URN-qualified path; manager as {value}; a cleared one is removed."""
    mapping = parse_mapping(HR)
    changed = {"attributes.department": "Ops", "attributes.manager": "boss-2", "attributes.title": None}
    assert patch_operations(changed, {**VALUES, **changed}, mapping) == [
        {"op": "remove", "path": "title"},
        {"op": "replace", "path": f"{E}:department", "value": "Ops"},
        {"op": "replace", "path": f"{E}:manager", "value": {"value": "boss-2"}},
    ]


def test_unmapped_values_are_not_sent() -> None:
    """A user attribute the mapping does not name is in neither the POST nor the PATCH."""
    values = {**VALUES, "attributes.shoeSize": "44"}
    assert "44" not in str(user_resource(UID, values, parse_mapping(HR)))
    assert patch_operations({"attributes.shoeSize": "45"}, values, parse_mapping(HR)) == []
    assert patch_operations({"attributes.department": "x"}, values) == []  # the default maps none


# -- /Schemas and /ResourceTypes ------------------------------------------------------------------


def _schemas(enterprise_attributes: list[str], *, core: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    core_attributes = core or [
        {"name": "userName", "mutability": "readWrite"},
        {"name": "name", "subAttributes": [{"name": "givenName"}, {"name": "familyName"}]},
        {"name": "emails"},
        {"name": "phoneNumbers"},
        {"name": "title"},
        {"name": "locale"},
        {"name": "preferredLanguage"},
        {"name": "id", "mutability": "readOnly"},
    ]
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "Resources": [
            {"id": "urn:ietf:params:scim:schemas:core:2.0:User", "attributes": core_attributes},
            {"id": E, "attributes": [{"name": n} for n in enterprise_attributes]},
        ],
    }


RESOURCE_TYPES = {
    "Resources": [
        {"id": "User", "schema": "urn:ietf:params:scim:schemas:core:2.0:User", "schemaExtensions": [{"schema": E}]}
    ]
}
ALL_ENTERPRISE = ["employeeNumber", "department", "manager"]


def test_a_mapping_the_schemas_declare_passes() -> None:
    """Every target declared (attribute names compared ignoring case): no error."""
    check_against_schemas(parse_mapping(HR), _schemas(["EmployeeNumber", "department", "manager"]), RESOURCE_TYPES)
    check_against_schemas(DEFAULT_MAPPING, _schemas([]), {"Resources": []})  # a bare list works too


@pytest.mark.parametrize(
    ("schemas", "resource_types", "named"),
    [
        (_schemas(["department", "manager"]), RESOURCE_TYPES, f"attributes.employeeNumber -> {E}:employeeNumber"),
        (_schemas(ALL_ENTERPRISE), {"Resources": [{"schema": "urn:ietf:params:scim:schemas:core:2.0:User"}]}, "no ext"),
        ({"Resources": _schemas(ALL_ENTERPRISE)["Resources"][:1]}, RESOURCE_TYPES, "has no schema"),
        (_schemas(ALL_ENTERPRISE, core=[{"name": "userName"}, {"name": "emails"}]), RESOURCE_TYPES, "phoneNumbers"),
        (_schemas(ALL_ENTERPRISE, core=[{"name": "userName", "mutability": "readOnly"}]), RESOURCE_TYPES, "readOnly"),
    ],
)
def test_a_target_the_downstream_lacks_is_named(schemas: Any, resource_types: Any, named: str) -> None:
    """A target missing from /Schemas (or an extension missing from the User resource type) names its entry."""
    with pytest.raises(MappingError) as caught:
        check_against_schemas(parse_mapping(HR), schemas, resource_types)
    assert named in str(caught.value)


def test_a_missing_sub_attribute_is_named() -> None:
    """name.middleName needs the downstream's name to declare middleName."""
    mapping = parse_mapping(
        [{"source": "username", "target": "userName"}, {"source": "attributes.mid", "target": "name.middleName"}]
    )
    with pytest.raises(MappingError, match=r"attributes\.mid -> name\.middleName: .* no sub-attribute middleName"):
        check_against_schemas(mapping, _schemas([]), RESOURCE_TYPES)


def test_a_reconciliation_compares_what_the_mapping_sends() -> None:
    """The listed view: the default is the values themselves; userName from email shows the email, a
    name part from a user attribute (not in a brief read) or unmapped shows none."""
    values = {"userName": "jdoe", "givenName": "Jane", "familyName": "Doe", "email": "j@x.example", "active": True}
    assert DEFAULT_MAPPING.as_listed(values) == values
    mapping = parse_mapping(
        [{"source": "email", "target": "userName"}, {"source": "attributes.nick", "target": "name.givenName"}]
    )
    assert mapping.as_listed(values) == {
        "userName": "j@x.example",
        "givenName": None,
        "familyName": None,
        "email": None,
        "active": True,
    }
