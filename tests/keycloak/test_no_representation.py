"""Admin events without a representation, with Keycloak access configured (authoritative mode off):
each is a trigger to re-read the user, and what Keycloak stores reaches the downstream."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests import events as ev
from tests.integration.conftest import Pipeline
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, keycloak_settings
from tests.support import Api, Publisher, ScimServer, create_source_topics, running_service


@pytest.fixture
async def rereading(
    keycloak: RealKeycloak, kafka_bootstrap: str, scim_server: ScimServer
) -> AsyncIterator[tuple[Pipeline, MasterAdmin, str]]:
    async with aiohttp.ClientSession() as session:
        admin = MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)
        realm = f"nr-{uuid.uuid4().hex[:8]}"
        await admin.create_realm(realm)
        account = await admin.create_service_account(realm, "outbound-scim")
        settings = keycloak_settings(kafka_bootstrap, keycloak.url, account, keycloak_authoritative=False)
        await create_source_topics(settings)
        async with running_service(settings) as service, Publisher(kafka_bootstrap) as publisher:
            pipeline = Pipeline(settings, service, Api(service.api_port or 0), publisher, scim_server)
            await pipeline.enable(realm)
            yield pipeline, admin, realm


async def test_representation_less_create_and_update_are_re_read_from_keycloak(
    rereading: tuple[Pipeline, MasterAdmin, str],
) -> None:
    """CREATE and UPDATE events with `representation: null`, as a listener honouring the realm's default
    switch sends them: the user is created as Keycloak stores it, and the later disable reaches it too."""
    pipeline, admin, realm = rereading
    user_id = await admin.create_user(
        realm,
        {
            "username": "reread",
            "firstName": "Stored",
            "lastName": "User",
            "email": "reread@example.com",
            "enabled": True,
        },
    )
    await pipeline.admin(ev.admin_event(realm, user_id, "CREATE", None))
    await pipeline.wait_user(realm, user_id, userName="reread", displayName="Stored User", active=True)

    await admin.ok("PUT", f"/{realm}/users/{user_id}", {"enabled": False, "lastName": "Disabled"})
    await pipeline.admin(ev.admin_event(realm, user_id, "UPDATE", None))
    await pipeline.wait_user(realm, user_id, displayName="Stored Disabled", active=False)
    assert pipeline.counter("outbound_scim_changes_total", tenant=realm, outcome="no_representation") == 0
