"""Authoritative mode against a real Keycloak: events are triggers, the user as Keycloak stores it is
what reaches the downstream (real broker, real scim2-server)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests import events as ev
from tests.integration.conftest import Pipeline
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, keycloak_settings
from tests.support import Api, Publisher, ScimServer, create_source_topics, running_service, wait_until


@pytest.fixture
async def authoritative(
    keycloak: RealKeycloak, kafka_bootstrap: str, scim_server: ScimServer
) -> AsyncIterator[tuple[Pipeline, MasterAdmin, str]]:
    async with aiohttp.ClientSession() as session:
        admin = MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)
        realm = f"au-{uuid.uuid4().hex[:8]}"
        await admin.create_realm(realm)
        account = await admin.create_service_account(realm, "outbound-scim")
        settings = keycloak_settings(kafka_bootstrap, keycloak.url, account)
        await create_source_topics(settings)
        async with running_service(settings) as service, Publisher(kafka_bootstrap) as publisher:
            pipeline = Pipeline(settings, service, Api(service.api_port or 0), publisher, scim_server)
            await pipeline.enable(realm, delete_policy="delete")
            yield pipeline, admin, realm


async def test_the_stored_user_wins_over_the_event(authoritative: tuple[Pipeline, MasterAdmin, str]) -> None:
    """A CREATE event whose representation is partial and stale still creates the user as stored; a
    partial UPDATE applies the stored state; a DELETE removes the user (policy delete)."""
    pipeline, admin, realm = authoritative
    user_id = await admin.create_user(
        realm,
        {"username": "truth", "firstName": "Real", "lastName": "Name", "email": "truth@example.com", "enabled": True},
    )
    await pipeline.admin(ev.admin_event(realm, user_id, "CREATE", {"username": "truth", "firstName": "Stale"}))
    await pipeline.wait_user(realm, user_id, userName="truth", displayName="Real Name", active=True)

    await admin.ok("PUT", f"/{realm}/users/{user_id}", {"lastName": "Changed", "enabled": False})
    await pipeline.admin(ev.update_user(realm, user_id, enabled=False))  # partial: says nothing of the name
    await pipeline.wait_user(realm, user_id, displayName="Real Changed", active=False)

    await admin.ok("DELETE", f"/{realm}/users/{user_id}")
    await pipeline.admin(ev.delete_user(realm, user_id))

    async def deleted() -> bool:
        return await pipeline.user_by_external_id(realm, user_id) is None

    await wait_until(deleted, what="user deleted downstream")


async def test_a_create_that_never_committed_creates_nothing(authoritative: tuple[Pipeline, MasterAdmin, str]) -> None:
    """An event for a user Keycloak does not have (the transaction rolled back): read again briefly,
    then treated as deleted: nothing is created downstream."""
    pipeline, _, realm = authoritative
    await pipeline.admin(ev.create_user(realm, "rolled-back", "ghost"))

    async def counted() -> bool:
        return pipeline.counter("outbound_scim_changes_total", tenant=realm, outcome="skipped") >= 1

    await wait_until(counted, what="the phantom create skipped")
    assert await pipeline.user_by_external_id(realm, "rolled-back") is None
