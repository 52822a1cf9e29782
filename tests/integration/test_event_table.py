"""Every row of the core table: which Keycloak change becomes which SCIM call (real broker, real scim2-server)."""

from __future__ import annotations

import pytest

from tests import events as ev
from tests.conftest import SCIM_TOKEN
from tests.integration.conftest import Pipeline
from tests.support import wait_until


async def test_admin_create_posts_the_user(pipeline: Pipeline) -> None:
    """Admin CREATE USER -> POST /Users with userName, externalId, name, displayName, work email, active."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    await pipeline.admin(ev.create_user(realm, "u-1", "jdoe", "Jane", "Doe", "jane@example.com"))
    user = await pipeline.wait_user(realm, "u-1", userName="jdoe")
    assert user["name"]["givenName"] == "Jane"
    assert user["name"]["familyName"] == "Doe"
    assert user["displayName"] == "Jane Doe"
    assert user["emails"] == [{"value": "jane@example.com", "type": "work", "primary": True}]
    assert user["active"] is True


async def test_register_event_posts_the_user(pipeline: Pipeline) -> None:
    """User event REGISTER -> POST /Users from the event details."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    details = {
        "username": "selfie",
        "email": "self@example.com",
        "first_name": "Sam",
        "last_name": "Elf",
        "register_method": "form",
    }
    await pipeline.user(ev.user_event(realm, "u-2", "REGISTER", details))
    user = await pipeline.wait_user(realm, "u-2", userName="selfie", active=True, displayName="Sam Elf")
    assert user["emails"][0]["value"] == "self@example.com"


async def test_admin_update_patches_only_what_changed(pipeline: Pipeline) -> None:
    """Admin UPDATE of name, email and username -> PATCH; a partial representation leaves the rest alone."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    await pipeline.admin(ev.create_user(realm, "u-3", "old", "Ann", "Lee", "ann@example.com"))
    await pipeline.wait_user(realm, "u-3", userName="old")
    await pipeline.admin(ev.update_user(realm, "u-3", username="new", firstName="Anna", email="anna@example.com"))
    user = await pipeline.wait_user(realm, "u-3", userName="new", displayName="Anna Lee")
    assert user["name"] == {"givenName": "Anna", "familyName": "Lee", "formatted": "Anna Lee"}
    assert user["emails"][0]["value"] == "anna@example.com"
    assert user["active"] is True


async def test_update_profile_and_update_email_events_patch(pipeline: Pipeline) -> None:
    """UPDATE_PROFILE (updated_first_name / last_name) and UPDATE_EMAIL -> PATCH of those attributes."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    await pipeline.admin(ev.create_user(realm, "u-4", "pat", "Pat", "Old"))
    await pipeline.wait_user(realm, "u-4", userName="pat")
    await pipeline.user(
        ev.user_event(realm, "u-4", "UPDATE_PROFILE", {"previous_last_name": "Old", "updated_last_name": "New"}),
        ev.user_event(realm, "u-4", "UPDATE_EMAIL", {"previous_email": "x", "updated_email": "pat@new.example"}),
    )
    user = await pipeline.wait_user(realm, "u-4", displayName="Pat New")
    await pipeline.wait_user(realm, "u-4", emails=[{"value": "pat@new.example", "type": "work", "primary": True}])
    assert user["userName"] == "pat"


async def test_disable_and_enable(pipeline: Pipeline) -> None:
    """UPDATE enabled=false -> PATCH active=false; enabled=true -> active=true; lockout -> active=false."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    await pipeline.admin(ev.create_user(realm, "u-5", "lock"))
    await pipeline.wait_user(realm, "u-5", active=True)
    await pipeline.admin(ev.update_user(realm, "u-5", enabled=False))
    await pipeline.wait_user(realm, "u-5", active=False)
    await pipeline.admin(ev.update_user(realm, "u-5", enabled=True))
    await pipeline.wait_user(realm, "u-5", active=True)
    await pipeline.user(ev.user_event(realm, "u-5", "USER_DISABLED_BY_PERMANENT_LOCKOUT"))
    user = await pipeline.wait_user(realm, "u-5", active=False)
    assert user["userName"] == "lock"


@pytest.mark.parametrize("source", ["admin", "user"])
async def test_delete_policy_delete_removes_the_user(pipeline: Pipeline, source: str) -> None:
    """Policy `delete`: admin DELETE USER / DELETE_ACCOUNT -> DELETE /Users/{id}."""
    realm = pipeline.realm()
    await pipeline.enable(realm, delete_policy="delete")
    await pipeline.admin(ev.create_user(realm, "u-6", "gone"))
    await pipeline.wait_user(realm, "u-6", userName="gone")
    if source == "admin":
        await pipeline.admin(ev.delete_user(realm, "u-6"))
    else:
        await pipeline.user(ev.user_event(realm, "u-6", "DELETE_ACCOUNT"))

    async def deleted() -> bool:
        return await pipeline.user_by_external_id(realm, "u-6") is None

    await wait_until(deleted, what="user deleted downstream")


@pytest.mark.parametrize("source", ["admin", "user"])
async def test_delete_policy_deactivate_patches_active_false(pipeline: Pipeline, source: str) -> None:
    """Policy `deactivate`: a Keycloak deletion -> PATCH active=false, the user stays."""
    realm = pipeline.realm()
    await pipeline.enable(realm, delete_policy="deactivate")
    await pipeline.admin(ev.create_user(realm, "u-7", "soft"))
    await pipeline.wait_user(realm, "u-7", active=True)
    if source == "admin":
        await pipeline.admin(ev.delete_user(realm, "u-7"))
    else:
        await pipeline.user(ev.user_event(realm, "u-7", "DELETE_ACCOUNT"))
    await pipeline.wait_user(realm, "u-7", active=False, userName="soft")


async def test_delete_policy_ignore_keeps_the_user(pipeline: Pipeline) -> None:
    """Policy `ignore` (default): a deletion is not propagated; later changes still flow."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    await pipeline.admin(ev.create_user(realm, "u-8", "stays"))
    await pipeline.wait_user(realm, "u-8", userName="stays")
    await pipeline.admin(ev.delete_user(realm, "u-8"))

    async def delete_seen() -> bool:
        return pipeline.counter("outbound_scim_changes_total", tenant=realm, outcome="skipped") >= 1

    await wait_until(delete_seen, what="the ignored delete counted")
    user = await pipeline.user_by_external_id(realm, "u-8")
    assert user is not None and user["active"] is True


async def test_irrelevant_events_are_skipped_and_counted(pipeline: Pipeline) -> None:
    """ACTION, role mappings, LOGIN, *_ERROR -> no downstream call, counted as skipped; a membership of a user
    the downstream does not know (and a tenant without group sync) -> forwarded, and nothing is written."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    await pipeline.admin(
        ev.admin_event(realm, "u-9", "ACTION", None, path_suffix="/reset-password"),
        ev.admin_event(
            realm,
            "u-9",
            "CREATE",
            {"id": "r1", "name": "admin"},
            resource_type="REALM_ROLE_MAPPING",
            path_suffix="/role-mappings/realm",
        ),
        ev.admin_event(
            realm,
            "u-9",
            "CREATE",
            {"id": "g1", "name": "staff"},
            resource_type="GROUP_MEMBERSHIP",
            path_suffix="/groups/g1",
        ),
        ev.admin_event(realm, "u-9", "DELETE", None, resource_type="USER_LOGIN_FAILURE"),
    )
    await pipeline.user(
        ev.user_event(realm, "u-9", "LOGIN", {"username": "x"}),
        ev.user_event(realm, "u-9", "UPDATE_PROFILE_ERROR", {"updated_first_name": "Z"}, error="invalid"),
        ev.user_event(realm, "u-9", "REGISTER_ERROR", {"username": "x"}, error="username_in_use"),
    )

    async def all_skipped() -> bool:
        m = pipeline.counter
        return (
            m("outbound_scim_events_total", type="USER_ACTION", outcome="admin_action") == 1
            and m("outbound_scim_events_total", type="REALM_ROLE_MAPPING_CREATE", outcome="not_a_user_resource") == 1
            and m("outbound_scim_events_total", type="GROUP_MEMBERSHIP_CREATE", outcome="forwarded") == 1
            and m("outbound_scim_events_total", type="other", outcome="not_a_user_resource") == 1
            and m("outbound_scim_events_total", type="LOGIN", outcome="not_a_user_change") == 1
            and m("outbound_scim_events_total", type="other", outcome="failed_action") == 2
        )

    await wait_until(all_skipped, what="seven skipped events counted")
    assert await pipeline.users(realm) == []


async def test_playa_plugin_format_reaches_the_tenant_by_realm_id(pipeline: Pipeline) -> None:
    """ru.playa.keycloak's format (`@class`, no id, no realmName) is detected; the tenant is found by the
    realm id it declared at enable time."""
    realm = pipeline.realm()
    realm_id = f"id-{realm}"
    base = pipeline.scim.base_url()
    pipeline.bases[realm] = base
    status, body = await pipeline.api.call(
        "PUT", f"/tenants/{realm}", {"base_url": base, "token": SCIM_TOKEN, "realm_id": realm_id}
    )
    assert (status, body["realm_id"]) == (201, realm_id)
    event = ev.create_user(realm, "p-1", "playa-user", "Pla", "Ya")
    event.update(
        {"@class": "ru.playa.keycloak.kafka.KeycloakAdminEvent", "id": None, "realmName": None, "realmId": realm_id}
    )
    await pipeline.admin(event)
    user = await pipeline.wait_user(realm, "p-1", userName="playa-user", displayName="Pla Ya")
    assert user["active"] is True
