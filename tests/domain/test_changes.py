"""change_from_event: which user change (or Skip) each Keycloak event describes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.domain.changes import Skip, UserChange, change_from_event, clamp_future
from service.domain.keycloak import KeycloakEvent, parse_record
from service.domain.stamps import ChangeSource
from service.errors import PoisonRecord

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
UID = "3f6c1a2b-7d4e-4f80-a1b2-c3d4e5f60718"
REALM_ID = "8d1f2a6e-3b4c-4e5f-9a0b-1c2d3e4f5a6b"
ANY = "*"  # expected Skip reason: any reason will do, as long as the event is skipped


def golden(name: str) -> KeycloakEvent:
    return parse_record((FIXTURES / name).read_bytes())


def admin(
    operation: str,
    representation: dict[str, Any] | list[Any] | None = None,
    *,
    resource_type: str = "USER",
    path: str = f"users/{UID}",
    error: str | None = None,
) -> KeycloakEvent:
    """An admin event as the SnuK87 plugin writes it, parsed."""
    doc = {
        "id": "e-1",
        "time": 1000,
        "realmId": REALM_ID,
        "realmName": "acme",
        "authDetails": {
            "realmId": "master-id",
            "realmName": "master",
            "clientId": "admin-cli",
            "userId": "admin-user",
            "ipAddress": "10.0.0.5",
        },
        "resourceType": resource_type,
        "operationType": operation,
        "resourcePath": path,
        "representation": json.dumps(representation) if representation is not None else None,
        "error": error,
        "details": None,
    }
    return parse_record(json.dumps(doc).encode())


def user(event_type: str, details: dict[str, str] | None = None, *, error: str | None = None) -> KeycloakEvent:
    """A user event as the SnuK87 plugin writes it, parsed."""
    doc = {
        "id": "e-2",
        "time": 2000,
        "type": event_type,
        "realmId": REALM_ID,
        "realmName": "acme",
        "clientId": "account-console",
        "userId": UID,
        "sessionId": None,
        "ipAddress": "203.0.113.7",
        "error": error,
        "details": details,
    }
    return parse_record(json.dumps(doc).encode())


FULL_REP = {
    "username": "jdoe",
    "firstName": "Jane",
    "lastName": "Doe",
    "email": "jane.doe@example.com",
    "emailVerified": False,
    "attributes": {"department": ["Engineering"]},
    "enabled": True,
    "requiredActions": [],
    "groups": ["/staff"],
}
FULL_ATTRS = {
    "userName": "jdoe",
    "givenName": "Jane",
    "familyName": "Doe",
    "email": "jane.doe@example.com",
    "active": True,
}

# (id, event, expected): expected is (op, attributes) or Skip(reason); Skip(ANY) accepts any reason.
TABLE: list[tuple[str, KeycloakEvent, tuple[str, dict[str, Any]] | Skip]] = [
    # golden files
    ("golden-admin-create", golden("admin-user-create.json"), ("upsert", FULL_ATTRS)),
    (
        "golden-admin-update-disable",
        golden("admin-user-update-disable.json"),
        ("upsert", {**FULL_ATTRS, "active": False}),
    ),
    ("golden-admin-delete", golden("admin-user-delete.json"), ("delete", {})),
    (
        "golden-update-profile",
        golden("user-update-profile.json"),
        ("upsert", {"givenName": "Janet", "familyName": "Doe-Smith"}),
    ),
    ("golden-register", golden("user-register.json"), ("upsert", FULL_ATTRS)),
    ("golden-playa-partial-update", golden("playa-admin-user-update.json"), ("upsert", {"active": False})),
    (
        "golden-keycloak24-update-email",
        golden("keycloak24-update-email.json"),
        ("upsert", {"email": "janet.doe-smith@example.com"}),
    ),
    # admin USER CREATE
    ("admin-create", admin("CREATE", FULL_REP), ("upsert", FULL_ATTRS)),
    (
        "admin-create-without-enabled-is-disabled",
        admin("CREATE", {"username": "jdoe"}),
        ("upsert", {"userName": "jdoe", "active": False}),
    ),
    (
        "admin-create-enabled-as-string",
        admin("CREATE", {"username": "jdoe", "enabled": "true"}),
        ("upsert", {"userName": "jdoe", "active": True}),
    ),
    # admin USER UPDATE: only what was sent
    (
        "admin-update-full",
        admin("UPDATE", {**FULL_REP, "id": UID, "enabled": False}),
        ("upsert", {**FULL_ATTRS, "active": False}),
    ),
    ("admin-update-only-enabled", admin("UPDATE", {"enabled": False}), ("upsert", {"active": False})),
    ("admin-update-only-first-name", admin("UPDATE", {"firstName": "Janet"}), ("upsert", {"givenName": "Janet"})),
    ("admin-update-clears-email", admin("UPDATE", {"email": ""}), ("upsert", {"email": None})),
    (
        "admin-update-nothing-scim",
        admin("UPDATE", {"emailVerified": True}),
        Skip("no_scim_attributes"),
    ),
    ("admin-update-user-attributes-only", admin("UPDATE", {"attributes": {"x": ["y"]}}), ("upsert", {})),
    ("admin-update-no-representation", admin("UPDATE", None), ("upsert", {})),
    ("admin-create-no-representation", admin("CREATE", None), ("upsert", {})),
    # user events
    (
        "register",
        user(
            "REGISTER",
            {
                "register_method": "form",
                "username": "jdoe",
                "email": "jane.doe@example.com",
                "first_name": "Jane",
                "last_name": "Doe",
            },
        ),
        ("upsert", FULL_ATTRS),
    ),
    (
        "update-profile-first-name",
        user("UPDATE_PROFILE", {"previous_first_name": "Jane", "updated_first_name": "Janet"}),
        ("upsert", {"givenName": "Janet"}),
    ),
    (
        "update-profile-username-and-email",
        user("UPDATE_PROFILE", {"updated_username": "janet", "updated_email": "janet@example.com"}),
        ("upsert", {"userName": "janet", "email": "janet@example.com"}),
    ),
    # Keycloak's EventBuilder.detail() drops empty values: a cleared attribute has previous_<x> and no updated_<x>.
    (
        "update-profile-clears-last-name",
        user("UPDATE_PROFILE", {"context": "ACCOUNT", "previous_last_name": "Doe"}),
        ("upsert", {"familyName": None}),
    ),
    (
        "update-profile-custom-attribute-only",
        user("UPDATE_PROFILE", {"previous_phone": "1", "updated_phone": "2"}),
        ("upsert", {}),
    ),
    (
        "update-email",
        user("UPDATE_EMAIL", {"previous_email": "a@example.com", "updated_email": "b@example.com"}),
        ("upsert", {"email": "b@example.com"}),
    ),
    ("permanent-lockout", user("USER_DISABLED_BY_PERMANENT_LOCKOUT"), ("upsert", {"active": False})),
    ("delete-account", user("DELETE_ACCOUNT"), ("delete", {})),
    # skips
    ("admin-action", admin("ACTION", None, path=f"users/{UID}/reset-password"), Skip("admin_action")),
    ("admin-logout-action", admin("ACTION", None, path=f"users/{UID}/logout"), Skip("admin_action")),
    (
        "group-membership-create",
        admin(
            "CREATE",
            {"id": "g-1", "name": "staff", "path": "/staff"},
            resource_type="GROUP_MEMBERSHIP",
            path=f"users/{UID}/groups/g-1",
        ),
        ("membership", {}),
    ),
    (
        "group-membership-delete",
        admin("DELETE", None, resource_type="GROUP_MEMBERSHIP", path=f"users/{UID}/groups/g-1"),
        ("membership", {}),
    ),
    (
        "realm-role-mapping",
        admin(
            "CREATE",
            [{"id": "r-1", "name": "admin"}],
            resource_type="REALM_ROLE_MAPPING",
            path=f"users/{UID}/role-mappings/realm",
        ),
        Skip("not_a_user_resource"),
    ),
    (
        "client-role-mapping",
        admin(
            "DELETE",
            [{"id": "r-2", "name": "view"}],
            resource_type="CLIENT_ROLE_MAPPING",
            path=f"users/{UID}/role-mappings/clients/c-1",
        ),
        Skip("not_a_user_resource"),
    ),
    ("login-failure-delete", admin("DELETE", None, resource_type="USER_LOGIN_FAILURE"), Skip("not_a_user_resource")),
    ("admin-user-without-id", admin("DELETE", None, path="users/"), Skip("no_user_id")),
    ("admin-error", admin("UPDATE", {"enabled": False}, error="unknown_error"), Skip("failed_action")),
    ("login", user("LOGIN", {"auth_method": "openid-connect"}), Skip("not_a_user_change")),
    ("logout", user("LOGOUT"), Skip("not_a_user_change")),
    (
        "register-error",
        user("REGISTER_ERROR", {"username": "jdoe"}, error="invalid_registration"),
        Skip("failed_action"),
    ),
    ("update-profile-error", user("UPDATE_PROFILE_ERROR", {"updated_first_name": "X"}), Skip("failed_action")),
    ("delete-account-error", user("DELETE_ACCOUNT_ERROR", error="user_not_found"), Skip("failed_action")),
    # UserResource.addFederatedIdentity / removeFederatedIdentity fire resourceType USER with a sub-path:
    # linking or unlinking a social login is not a user creation or deletion.
    (
        "federated-identity-link",
        admin(
            "CREATE",
            {"identityProvider": "google", "userId": "1234", "userName": "jdoe@gmail.com"},
            path=f"users/{UID}/federated-identity/google",
        ),
        Skip(ANY),
    ),
    ("federated-identity-unlink", admin("DELETE", None, path=f"users/{UID}/federated-identity/google"), Skip(ANY)),
]


@pytest.mark.parametrize(("event", "expected"), [pytest.param(e, x, id=i) for i, e, x in TABLE])
def test_event_maps_to_the_expected_change_or_skip(
    event: KeycloakEvent, expected: tuple[str, dict[str, Any]] | Skip
) -> None:
    """Each event yields the expected op with only the attributes it set, or a Skip with a stable reason."""
    result = change_from_event(event)
    if isinstance(expected, Skip):
        assert isinstance(result, Skip), f"expected a skip, got {result}"
        if expected.reason != ANY:
            assert result == expected
        return
    assert isinstance(result, UserChange), f"expected a change, got {result}"
    assert (result.op, dict(result.attributes)) == expected


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
def test_admin_event_without_representation_asks_for_a_re_read(operation: str) -> None:
    """ "Include representation" off: the change carries no attributes (not active=false) and asks for a re-read."""
    change = change_from_event(admin(operation, None))
    assert isinstance(change, UserChange)
    assert (change.op, dict(change.attributes), change.reread) == ("upsert", {}, True)


def test_event_with_a_representation_needs_no_re_read() -> None:
    """A representation says what changed: no re-read is asked for."""
    change = change_from_event(admin("UPDATE", {"enabled": False}))
    assert isinstance(change, UserChange) and change.reread is False


@pytest.mark.parametrize(
    ("time_ms", "expected", "clamped"),
    [(1_000, 1_000, False), (1_300, 1_300, False), (1_301, 1_300, True), (10**15, 1_300, True)],
)
def test_event_times_ahead_of_the_clock_are_clamped(time_ms: int, expected: int, clamped: bool) -> None:
    """An event time more than the bound ahead of our clock (1,000 ms here, bound 300 ms) is clamped to it."""
    change = UserChange("acme", UID, "upsert", time_ms, "USER_UPDATE", "e-1", {"active": False})
    result, was_clamped = clamp_future(change, now_ms=1_000, max_ahead_ms=300)
    assert (result.time_ms, was_clamped) == (expected, clamped)


def test_change_carries_realm_user_time_type_and_event_id() -> None:
    """A change keeps the event's realm, user id, time, type and id, and is keyed realm/user."""
    change = change_from_event(golden("admin-user-create.json"))
    assert change == UserChange(
        realm="acme",
        user_id=UID,
        op="upsert",
        time_ms=1764680000123,
        event_type="USER_CREATE",
        event_id="0b6a4c1e-6f8e-4f5e-9d2a-3c7e1b2a9f10",
        attributes=FULL_ATTRS,
        group_paths=("/staff",),
        user_attributes={"department": "Engineering"},
        user_attributes_complete=True,
    )
    assert change.key == f"acme/{UID}"


def test_user_event_without_user_id_is_skipped() -> None:
    """A user event with userId null (e.g. an unknown user) needs nothing downstream."""
    event = parse_record(
        json.dumps(
            {
                "type": "UPDATE_EMAIL",
                "time": 1,
                "realmId": "r",
                "userId": None,
                "details": {"updated_email": "x@example.com"},
            }
        ).encode()
    )
    assert change_from_event(event) == Skip("no_user_id")


def test_non_boolean_enabled_is_poison() -> None:
    """An enabled value that is not a boolean makes the record poison rather than a guess."""
    with pytest.raises(PoisonRecord) as caught:
        change_from_event(admin("UPDATE", {"enabled": "maybe"}))
    assert caught.value.reason == "wrong_shape"


def test_non_string_name_is_poison() -> None:
    """A name attribute that is not a string makes the record poison."""
    with pytest.raises(PoisonRecord) as caught:
        change_from_event(admin("UPDATE", {"firstName": ["Jane"]}))
    assert caught.value.reason == "wrong_shape"


# -- UserChange JSON ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        UserChange("acme", UID, "upsert", 1764680000123, "USER_CREATE", "e-1", FULL_ATTRS),
        UserChange("acme", "f:comp:jdoe", "upsert", 5, "UPDATE_PROFILE", None, {"email": None}),
        UserChange("8d1f2a6e", UID, "delete", 7, "DELETE_ACCOUNT"),
        UserChange("acme", UID, "upsert", 8, "USER_UPDATE", "e-2", reread=True),
        UserChange("acme", UID, "link", 9, "LINK", link_to="d-42", source=ChangeSource.OPERATOR),
    ],
    ids=["upsert", "no-event-id-cleared-email", "delete", "re-read", "link"],
)
def test_user_change_json_round_trip(change: UserChange) -> None:
    """to_json then from_json gives back an equal change."""
    assert UserChange.from_json(change.to_json()) == change


def test_user_change_from_json_drops_unknown_attributes() -> None:
    """Only the SCIM-side attributes survive decoding."""
    raw = json.dumps(
        {
            "realm": "acme",
            "user_id": UID,
            "op": "upsert",
            "time_ms": 1,
            "event_type": "X",
            "attributes": {"userName": "jdoe", "password": "s3cret"},
        }
    ).encode()
    assert dict(UserChange.from_json(raw).attributes) == {"userName": "jdoe"}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b"null",
        b'{"realm": "acme"}',
        b'{"realm":"a","user_id":"u","op":"upsert","time_ms":"soon","event_type":"X"}',
        b'{"realm":"a","user_id":"u","op":"upsert","time_ms":1,"event_type":"X","attributes":[1]}',
    ],
    ids=["empty", "not-json", "list", "null", "missing-keys", "bad-time", "list-attributes"],
)
def test_user_change_from_malformed_json_is_poison(raw: bytes) -> None:
    """A change record that cannot be decoded raises PoisonRecord malformed_change."""
    with pytest.raises(PoisonRecord) as caught:
        UserChange.from_json(raw)
    assert caught.value.reason == "malformed_change"
