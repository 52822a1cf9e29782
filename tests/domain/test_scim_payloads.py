"""SCIM 2.0 payloads built from attribute dicts: POST bodies, PatchOp operations, filters, resource paths,
and the verification of lookup answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.domain.scim import (
    GROUP_SCHEMA,
    PATCH_SCHEMA,
    USER_SCHEMA,
    display_name,
    display_name_replace,
    eq_filter,
    group_path,
    group_resource,
    is_service_provider_config,
    matches,
    member_removals,
    members_add,
    patch_operations,
    patch_request,
    user_path,
    user_resource,
    valid_resource_id,
    verify_lookup,
)

UID = "3f6c1a2b-7d4e-4f80-a1b2-c3d4e5f60718"
ALL = {"userName": "jdoe", "givenName": "Jane", "familyName": "Doe", "email": "jane.doe@example.com", "active": True}


def replace(path: str, value: Any) -> dict[str, Any]:
    return {"op": "replace", "path": path, "value": value}


def remove(path: str) -> dict[str, Any]:
    return {"op": "remove", "path": path}


# -- user_resource ----------------------------------------------------------------------------------


def test_user_resource_with_all_attributes() -> None:
    """The POST body has externalId = Keycloak id, name parts, displayName, one work email and active."""
    assert user_resource(UID, ALL) == {
        "schemas": [USER_SCHEMA],
        "externalId": UID,
        "userName": "jdoe",
        "active": True,
        "name": {"givenName": "Jane", "familyName": "Doe", "formatted": "Jane Doe"},
        "displayName": "Jane Doe",
        "emails": [{"value": "jane.doe@example.com", "type": "work", "primary": True}],
    }


def test_user_resource_with_only_a_user_name() -> None:
    """Without name or email, those keys are left out and active defaults to true."""
    assert user_resource(UID, {"userName": "jdoe"}) == {
        "schemas": [USER_SCHEMA],
        "externalId": UID,
        "userName": "jdoe",
        "active": True,
    }


def test_user_resource_disabled_user_is_inactive() -> None:
    """active=false is sent as the boolean false."""
    assert user_resource(UID, {**ALL, "active": False})["active"] is False


def test_user_resource_with_one_name_part_and_cleared_email() -> None:
    """A single name part still gives a displayName; a cleared (None) email and name part are omitted."""
    body = user_resource(UID, {"userName": "jdoe", "givenName": None, "familyName": "Doe", "email": None})
    assert body["name"] == {"familyName": "Doe", "formatted": "Doe"}
    assert body["displayName"] == "Doe"
    assert "emails" not in body


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        ({"givenName": "Jane", "familyName": "Doe"}, "Jane Doe"),
        ({"givenName": "Jane"}, "Jane"),
        ({"familyName": "Doe", "givenName": ""}, "Doe"),
        ({}, None),
        ({"givenName": None, "familyName": None}, None),
    ],
)
def test_display_name(values: dict[str, Any], shown: str | None) -> None:
    """displayName joins the non-empty name parts, or is None."""
    assert display_name(values) == shown


# -- patch_operations -------------------------------------------------------------------------------


def test_patch_only_changed_attributes() -> None:
    """Only the changed attributes become operations."""
    assert patch_operations({"active": False}, {**ALL, "active": False}) == [replace("active", False)]
    assert patch_operations({"userName": "janet"}, {**ALL, "userName": "janet"}) == [replace("userName", "janet")]
    assert patch_operations({}, ALL) == []


def test_patch_name_change_recomputes_display_name_and_formatted() -> None:
    """A name part change also replaces displayName and name.formatted from the full new values."""
    values = {**ALL, "givenName": "Janet"}
    assert patch_operations({"givenName": "Janet"}, values) == [
        replace("name.givenName", "Janet"),
        replace("displayName", "Janet Doe"),
        replace("name.formatted", "Janet Doe"),
    ]


def test_patch_cleared_name_part_is_removed() -> None:
    """A cleared name part is removed; displayName falls back to the remaining part."""
    values = {**ALL, "familyName": None}
    assert patch_operations({"familyName": None}, values) == [
        remove("name.familyName"),
        replace("displayName", "Jane"),
        replace("name.formatted", "Jane"),
    ]


def test_patch_both_name_parts_cleared_removes_display_name() -> None:
    """With no name left, displayName and name.formatted are removed."""
    values = {**ALL, "givenName": "", "familyName": None}
    assert patch_operations({"givenName": "", "familyName": None}, values) == [
        remove("name.givenName"),
        remove("name.familyName"),
        remove("displayName"),
        remove("name.formatted"),
    ]


def test_patch_email_replace_and_remove() -> None:
    """A new email replaces the emails list; a cleared email removes it."""
    assert patch_operations({"email": "b@example.com"}, ALL) == [
        replace("emails", [{"value": "b@example.com", "type": "work", "primary": True}])
    ]
    assert patch_operations({"email": None}, ALL) == [remove("emails")]


@pytest.mark.parametrize(("value", "sent"), [(True, True), (False, False), (1, True), (0, False)])
def test_patch_active_is_a_boolean(value: object, sent: bool) -> None:
    """active is always sent as a JSON boolean."""
    assert patch_operations({"active": value}, ALL) == [replace("active", sent)]
    assert type(patch_operations({"active": value}, ALL)[0]["value"]) is bool


def test_patch_empty_user_name_is_never_sent() -> None:
    """userName is required downstream: an empty or None userName is not patched."""
    assert patch_operations({"userName": None}, ALL) == []
    assert patch_operations({"userName": ""}, ALL) == []


def test_patch_all_attributes_in_a_stable_order() -> None:
    """Every attribute at once: userName, name parts, derived names, emails, active."""
    assert [op["path"] for op in patch_operations(ALL, ALL)] == [
        "userName",
        "name.givenName",
        "name.familyName",
        "displayName",
        "name.formatted",
        "emails",
        "active",
    ]


def test_patch_request_wraps_operations() -> None:
    """The PATCH body carries the PatchOp schema and the operations."""
    ops = [replace("active", False)]
    assert patch_request(ops) == {"schemas": [PATCH_SCHEMA], "Operations": ops}


# -- filters and discovery --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("jdoe", 'userName eq "jdoe"'),
        ('ja"ne', 'userName eq "ja\\"ne"'),
        ("dom\\jdoe", 'userName eq "dom\\\\jdoe"'),
        ('a\\"b', 'userName eq "a\\\\\\"b"'),
        ("", 'userName eq ""'),
    ],
    ids=["plain", "quote", "backslash", "backslash-then-quote", "empty"],
)
def test_eq_filter_escapes_quotes_and_backslashes(value: str, expected: str) -> None:
    """Backslashes are escaped before quotes, so the value stays one JSON string."""
    assert eq_filter("userName", value) == expected
    assert json.loads(expected.removeprefix("userName eq ")) == value


def test_is_service_provider_config() -> None:
    """Only an object listing the ServiceProviderConfig schema counts."""
    assert is_service_provider_config({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]})
    assert not is_service_provider_config({"schemas": [USER_SCHEMA]})
    assert not is_service_provider_config({"schemas": None})
    assert not is_service_provider_config([])


@pytest.mark.parametrize(
    "value",
    ["2819c223-7f76-453a-919d-413861904646", "a b", "jane@example.com", "x:y;z", "%2F", "é", "..."],
)
def test_valid_resource_id_keeps_a_single_segment(value: str) -> None:
    """Any non-empty string that stays one path segment once encoded is a usable downstream id."""
    assert valid_resource_id(value) == value


@pytest.mark.parametrize(
    "value",
    [None, 42, ["a"], "", ".", "..", "a b/c", "a?b", "a#b", "a\x00b", "a\nb", "a\x1fb", "a\x7fb", "a\x85b", "a\x9fb"],
)
def test_valid_resource_id_refuses_what_would_leave_the_segment(value: object) -> None:
    """Non-strings, empty, dot segments, "/", "?", "#" and control characters (C0, DEL, C1) are refused."""
    assert valid_resource_id(value) is None


@pytest.mark.parametrize(
    ("resource_id", "path"),
    [
        ("a b", "Users/a%20b"),
        ("abc-123", "Users/abc-123"),
        ("x:y@z", "Users/x%3Ay%40z"),
        ("50%", "Users/50%25"),
        ("é", "Users/%C3%A9"),
    ],
)
def test_user_path_percent_encodes_the_id_as_one_segment(resource_id: str, path: str) -> None:
    """The id is percent-encoded whole, so nothing in it can reach another path or the query."""
    assert user_path(resource_id) == path


# -- groups -----------------------------------------------------------------------------------------

GID = "9b1f2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"


def test_group_resource_has_display_name_and_external_id_and_no_members() -> None:
    """The POST /Groups body: the Group schema, externalId = Keycloak group id, displayName; no members."""
    assert group_resource(GID, "Engineering") == {
        "schemas": [GROUP_SCHEMA],
        "externalId": GID,
        "displayName": "Engineering",
    }


@pytest.mark.parametrize(
    ("resource_id", "path"),
    [("abc-123", "Groups/abc-123"), ("a b", "Groups/a%20b"), ("x:y@z", "Groups/x%3Ay%40z"), ("50%", "Groups/50%25")],
)
def test_group_path_percent_encodes_the_id_as_one_segment(resource_id: str, path: str) -> None:
    """As for users, the id is percent-encoded whole."""
    assert group_path(resource_id) == path


def test_members_add_is_one_operation_naming_each_id_once() -> None:
    """One add operation on `members`, in the given order, with a repeated id named once."""
    assert members_add(["u2", "u1", "u2"]) == {
        "op": "add",
        "path": "members",
        "value": [{"value": "u2"}, {"value": "u1"}],
    }


def test_member_removals_are_one_value_filter_per_id() -> None:
    """Each removal names one member by `members[value eq "<id>"]`; a repeated id is removed once."""
    assert member_removals(["u1", "u2", "u1"]) == [
        remove('members[value eq "u1"]'),
        remove('members[value eq "u2"]'),
    ]


def test_member_removals_quote_the_id_as_eq_filter_does() -> None:
    """Quotes and backslashes in an id are escaped, so the filter names exactly that id."""
    odd = 'a"b\\c'
    [operation] = member_removals([odd])
    assert operation["path"] == "members[" + eq_filter("value", odd) + "]"
    quoted = operation["path"].removeprefix("members[value eq ").removesuffix("]")
    assert json.loads(quoted) == odd


def test_display_name_replace() -> None:
    """A rename replaces displayName."""
    assert display_name_replace("Eng") == replace("displayName", "Eng")


@pytest.mark.parametrize(
    ("attribute", "held", "value", "expected"),
    [
        ("displayName", "Engineering", "engineering", True),
        ("displayName", "ENGINEERING", "Engineering", True),
        ("displayName", "Engineering", "Engineers", False),
        ("externalId", GID, GID, True),
        ("externalId", GID, GID.upper(), False),
        ("userName", "JDoe", "jdoe", True),
    ],
)
def test_matches_display_name_ignoring_case_and_external_id_exactly(
    attribute: str, held: str, value: str, expected: bool
) -> None:
    """A group's displayName is not caseExact (RFC 7643 §4.2); externalId is."""
    assert matches({attribute: held}, attribute, value) is expected


def test_verify_lookup_of_a_group_by_display_name() -> None:
    """One group whose displayName equals the value ignoring case is the match; a group of another name
    in the answer means the filter was not honoured."""
    ours = {"id": "g1", "displayName": "Eng", "externalId": GID}
    assert verify_lookup({"Resources": [ours]}, "displayName", "ENG").match == ours
    other = {"id": "g2", "displayName": "Sales"}
    answer = verify_lookup({"Resources": [ours, other]}, "displayName", "eng")
    assert answer.match == ours
    assert not answer.honoured


def test_verify_lookup_of_two_groups_of_one_name_is_no_match() -> None:
    """Two groups whose names differ only by case both match: neither is provably the one."""
    twins = [{"id": "g1", "displayName": "Eng"}, {"id": "g2", "displayName": "ENG"}]
    answer = verify_lookup({"Resources": twins}, "displayName", "eng")
    assert answer.match is None
    assert answer.honoured
