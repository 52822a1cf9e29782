"""parse_record: plugin-format Kafka values -> KeycloakEvent, or PoisonRecord with a stable reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.changes import Skip, UserChange, change_from_event
from service.domain.groups import GroupChange
from service.domain.keycloak import KeycloakEvent, parse_record
from service.errors import PoisonRecord
from tests.properties import examples

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
USER_ID = "3f6c1a2b-7d4e-4f80-a1b2-c3d4e5f60718"
REALM_ID = "8d1f2a6e-3b4c-4e5f-9a0b-1c2d3e4f5a6b"


def golden(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def golden_doc(name: str) -> dict[str, Any]:
    doc = json.loads(golden(name))
    assert isinstance(doc, dict), f"{name}: a plugin record is a JSON object"
    return doc


def encode(doc: object) -> bytes:
    return json.dumps(doc).encode()


# -- golden files ----------------------------------------------------------------------------------


def test_admin_create_golden_file_parses_to_an_admin_event() -> None:
    """The SnuK87 admin CREATE example becomes an admin USER_CREATE event for the user in the path."""
    event = parse_record(golden("admin-user-create.json"))
    assert event == KeycloakEvent(
        kind="admin",
        event_id="0b6a4c1e-6f8e-4f5e-9d2a-3c7e1b2a9f10",
        time_ms=1764680000123,
        realm="acme",
        type="USER_CREATE",
        user_id=USER_ID,
        error=None,
        details={},
        representation={
            "username": "jdoe",
            "firstName": "Jane",
            "lastName": "Doe",
            "email": "jane.doe@example.com",
            "emailVerified": False,
            "attributes": {"department": ["Engineering"]},
            "enabled": True,
            "requiredActions": [],
            "groups": ["/staff"],
        },
        resource_type="USER",
        operation_type="CREATE",
        resource_path="users/3f6c1a2b-7d4e-4f80-a1b2-c3d4e5f60718",
    )


def test_admin_update_golden_file_keeps_the_full_representation() -> None:
    """The admin console's full-user UPDATE keeps every representation key, enabled=false included."""
    event = parse_record(golden("admin-user-update-disable.json"))
    assert event.type == "USER_UPDATE"
    assert event.operation_type == "UPDATE"
    assert event.user_id == USER_ID
    assert event.representation is not None
    assert event.representation["enabled"] is False
    assert event.representation["createdTimestamp"] == 1764680000100


def test_admin_delete_golden_file_has_no_representation() -> None:
    """An admin DELETE carries representation null, which parses to None."""
    event = parse_record(golden("admin-user-delete.json"))
    assert event.type == "USER_DELETE"
    assert event.user_id == USER_ID
    assert event.representation is None


def test_update_profile_golden_file_parses_to_a_user_event_with_details() -> None:
    """A user event keeps its type, user id and string details."""
    event = parse_record(golden("user-update-profile.json"))
    assert event == KeycloakEvent(
        kind="user",
        event_id="4c5d6e7f-8091-4a2b-b3c4-d5e6f7081920",
        time_ms=1764680500222,
        realm="acme",
        type="UPDATE_PROFILE",
        user_id=USER_ID,
        error=None,
        details={
            "context": "ACCOUNT",
            "previous_first_name": "Jane",
            "updated_first_name": "Janet",
            "previous_last_name": "Doe",
            "updated_last_name": "Doe-Smith",
        },
    )


def test_register_golden_file_parses_to_a_user_event() -> None:
    """REGISTER keeps username, email and name details."""
    event = parse_record(golden("user-register.json"))
    assert event.kind == "user"
    assert event.type == "REGISTER"
    assert event.details["username"] == "jdoe"
    assert event.details["first_name"] == "Jane"
    assert event.representation is None


def test_playa_admin_event_parses_without_id_and_realm_name() -> None:
    """The playa format (@class, id null, no realmName) is an admin event keyed by realmId."""
    event = parse_record(golden("playa-admin-user-update.json"))
    assert event.kind == "admin"
    assert event.event_id is None
    assert event.realm == REALM_ID
    assert event.type == "USER_UPDATE"
    assert event.user_id == USER_ID
    assert event.representation == {"enabled": False}


def test_keycloak24_event_without_realm_name_falls_back_to_realm_id() -> None:
    """A Keycloak 24 event has no realmName: the realm is the realmId."""
    event = parse_record(golden("keycloak24-update-email.json"))
    assert event.realm == REALM_ID
    assert event.type == "UPDATE_EMAIL"
    assert event.details == {
        "previous_email": "jane.doe@example.com",
        "updated_email": "janet.doe-smith@example.com",
    }


# -- rules -----------------------------------------------------------------------------------------


def test_representation_is_decoded_a_second_time() -> None:
    """The representation arrives as a JSON string inside the JSON and comes out as a mapping."""
    doc = golden_doc("admin-user-create.json")
    assert isinstance(doc["representation"], str)
    event = parse_record(encode(doc))
    assert isinstance(event.representation, dict)
    assert event.representation["username"] == "jdoe"


def test_representation_already_an_object_is_kept() -> None:
    """A plugin that embeds the representation as an object instead of a string is accepted."""
    doc = golden_doc("admin-user-create.json")
    doc["representation"] = {"enabled": False}
    assert parse_record(encode(doc)).representation == {"enabled": False}


def test_representation_that_is_a_json_list_is_dropped() -> None:
    """A list representation (role mappings) is never a user: it parses to None."""
    doc = golden_doc("admin-user-create.json")
    doc["representation"] = json.dumps([{"id": "r1", "name": "admin"}])
    assert parse_record(encode(doc)).representation is None


@pytest.mark.parametrize(
    ("path", "user_id"),
    [
        ("users/3f6c1a2b-7d4e-4f80-a1b2-c3d4e5f60718", USER_ID),
        ("users/3f6c1a2b-7d4e-4f80-a1b2-c3d4e5f60718/groups/g-1", USER_ID),
        ("users/f:0a1b2c3d:jdoe", "f:0a1b2c3d:jdoe"),
        ("users/", None),
        ("groups/g-1", None),
        ("", None),
        (None, None),
    ],
)
def test_user_id_comes_from_the_resource_path(path: str | None, user_id: str | None) -> None:
    """The target user is the second segment of resourcePath, never the acting admin."""
    doc = golden_doc("admin-user-create.json")
    doc["resourcePath"] = path
    doc["resourceId"] = "something-else"
    event = parse_record(encode(doc))
    assert event.user_id == user_id
    assert event.user_id != doc["authDetails"]["userId"]


def test_realm_name_is_preferred_over_realm_id() -> None:
    """realmName wins when present; realmId is used only without it."""
    doc = golden_doc("user-register.json")
    assert parse_record(encode(doc)).realm == "acme"
    doc["realmName"] = None
    assert parse_record(encode(doc)).realm == REALM_ID
    del doc["realmName"]
    assert parse_record(encode(doc)).realm == REALM_ID


def test_unknown_keys_are_ignored() -> None:
    """Keys a newer Keycloak or plugin adds do not break parsing."""
    doc = golden_doc("user-update-profile.json")
    expected = parse_record(encode(doc))
    doc.update({"futureKey": {"nested": [1, 2]}, "resourceTypeAsString": "X", "@class": "ru.playa.X.KeycloakEvent"})
    assert parse_record(encode(doc)) == expected


def test_missing_optional_keys_are_tolerated() -> None:
    """A minimal user event (no id, details, clientId, error) parses."""
    event = parse_record(encode({"type": "LOGIN", "time": 5, "realmId": "r", "userId": "u"}))
    assert event == KeycloakEvent(kind="user", event_id=None, time_ms=5, realm="r", type="LOGIN", user_id="u")


def test_null_detail_values_are_dropped() -> None:
    """Details with null values are left out rather than turned into the string 'None'."""
    doc = golden_doc("user-register.json")
    doc["details"]["email"] = None
    assert "email" not in parse_record(encode(doc)).details


def test_user_event_error_is_kept() -> None:
    """A failed action's error is kept on the event."""
    doc = golden_doc("user-register.json")
    doc.update(type="REGISTER_ERROR", error="invalid_registration")
    event = parse_record(encode(doc))
    assert (event.type, event.error) == ("REGISTER_ERROR", "invalid_registration")


# -- poison ----------------------------------------------------------------------------------------


def _with(name: str, **changes: Any) -> bytes:
    doc = golden_doc(name)
    for key, value in changes.items():
        if value is _DELETE:
            del doc[key]
        else:
            doc[key] = value
    return encode(doc)


_DELETE = object()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param(None, "empty_value", id="null-value"),
        pytest.param(b"not json at all", "malformed_json", id="not-json"),
        pytest.param(b"", "malformed_json", id="empty-bytes"),
        pytest.param(b'{"type": "LOGIN", "time": 1, "realmId": "r"', "malformed_json", id="truncated"),
        pytest.param(b'{"type":"LOGIN","time":1,"realmId":"r","userId":"\xff\xfe"}', "malformed_json", id="bad-utf8"),
        pytest.param(b'[{"type": "LOGIN"}]', "wrong_shape", id="json-list"),
        pytest.param(b'"LOGIN"', "wrong_shape", id="json-string"),
        pytest.param(b'{"time": 1, "realmId": "r"}', "wrong_shape", id="no-type-no-operation"),
        pytest.param(_with("user-register.json", time=_DELETE), "wrong_shape", id="missing-time"),
        pytest.param(_with("user-register.json", time=None), "wrong_shape", id="null-time"),
        pytest.param(_with("user-register.json", time="1764680400111"), "wrong_shape", id="string-time"),
        pytest.param(_with("user-register.json", time=True), "wrong_shape", id="bool-time"),
        pytest.param(_with("user-register.json", type=7), "wrong_shape", id="int-type"),
        pytest.param(_with("user-register.json", userId=["u"]), "wrong_shape", id="list-user-id"),
        pytest.param(_with("user-register.json", details=["a"]), "wrong_shape", id="list-details"),
        pytest.param(_with("user-register.json", realmName=42), "wrong_shape", id="int-realm-name"),
        pytest.param(_with("user-register.json", realmName=_DELETE, realmId=_DELETE), "missing_realm", id="no-realm"),
        pytest.param(_with("admin-user-create.json", resourceType=None), "wrong_shape", id="admin-no-resource-type"),
        pytest.param(_with("admin-user-create.json", operationType=_DELETE), "wrong_shape", id="admin-no-operation"),
        pytest.param(_with("admin-user-create.json", resourcePath=3), "wrong_shape", id="int-resource-path"),
        pytest.param(_with("admin-user-create.json", representation=12), "wrong_shape", id="int-representation"),
        pytest.param(
            _with("admin-user-create.json", representation='{"username": "jdoe"'),
            "malformed_representation",
            id="bad-representation-string",
        ),
        pytest.param(b'{"type":"LOGIN","time":NaN,"realmId":"r","userId":"u"}', "malformed_json", id="nan-time"),
        pytest.param(
            b'{"type":"LOGIN","time":Infinity,"realmId":"r","userId":"u"}', "malformed_json", id="infinite-time"
        ),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "malformed_json", id="deeply-nested"),
    ],
)
def test_unusable_records_raise_poison_with_a_stable_reason(value: bytes | None, reason: str) -> None:
    """Anything unusable raises PoisonRecord (never another exception) with a short stable reason."""
    with pytest.raises(PoisonRecord) as caught:
        parse_record(value)
    assert caught.value.reason == reason


def test_poison_detail_is_bounded() -> None:
    """The poison detail is cut to 200 characters so a huge record never floods the logs."""
    with pytest.raises(PoisonRecord) as caught:
        parse_record(b"{" + b"x" * 10_000)
    assert len(caught.value.detail) <= 200


# -- parsing as a property ------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
PLUGIN_KEYS = [
    "id",
    "time",
    "type",
    "realmId",
    "realmName",
    "userId",
    "error",
    "details",
    "operationType",
    "resourceType",
    "resourcePath",
    "representation",
    "resourceId",
    "@class",
    "authDetails",
]


@st.composite
def plugin_like_records(draw: st.DrawFn) -> bytes:
    """JSON objects shaped like plugin records with any value in any key, and raw bytes now and then."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    doc = draw(st.dictionaries(st.sampled_from(PLUGIN_KEYS), JSON_VALUES, max_size=len(PLUGIN_KEYS)))
    if draw(st.booleans()) and "representation" in doc:
        doc["representation"] = json.dumps(doc["representation"])  # the JSON-in-JSON of real records
    return json.dumps(doc).encode()


@settings(max_examples=examples(1500), deadline=None)
@given(plugin_like_records())
def test_any_record_parses_to_a_change_a_skip_or_poison(raw: bytes) -> None:
    """Whatever a record holds, parsing and mapping end in a change, a skip, or PoisonRecord: never another error."""
    try:
        result: UserChange | GroupChange | Skip | PoisonRecord = change_from_event(parse_record(raw))
    except PoisonRecord as exc:
        result = exc
    assert isinstance(result, UserChange | GroupChange | Skip | PoisonRecord)
    assert not isinstance(result, PoisonRecord) or result.reason
