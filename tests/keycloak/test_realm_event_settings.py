"""Enabling a tenant checks the realm's event settings in a real Keycloak and says what to switch on.

One service account of the master realm reads every realm here (roles on master's `<realm>-realm`
clients, as a service serving many realms holds them). Realms: one whose listeners lack the test
listener, one with it but without "Include representation", one set up correctly, one whose event
settings the account may not read. Warnings never block the enable; GET /tenants/{realm} reads them anew.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.conftest import SCIM_TOKEN
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, ServiceAccount, keycloak_settings
from tests.support import Api, ScimServer, running_service

pytestmark = pytest.mark.integration

READ = ("view-users", "query-users", "view-events")


@dataclass
class Setup:
    api: Api
    admin: MasterAdmin
    account: ServiceAccount  # of the master realm
    listener: str
    scim: ScimServer

    async def realm(self, roles: tuple[str, ...] = READ) -> str:
        """A fresh realm (Keycloak's default event settings) the service account holds `roles` on."""
        realm = f"ev-{uuid.uuid4().hex[:8]}"
        await self.admin.create_realm(realm)
        await self.admin.grant_on_realm(self.account, realm, *roles)
        return realm

    async def enable(self, realm: str) -> list[dict[str, Any]]:
        """Enable the tenant (it must succeed, warnings or not); the warnings of its answer."""
        status, body = await self.api.call(
            "PUT", f"/tenants/{realm}", {"base_url": self.scim.base_url(realm), "token": SCIM_TOKEN}
        )
        assert status == 201, body
        return list(body["warnings"])


def codes(warnings: list[dict[str, Any]]) -> list[str]:
    return [w["code"] for w in warnings]


@pytest.fixture
async def setup(keycloak: RealKeycloak, kafka_bootstrap: str, scim_server: ScimServer) -> AsyncIterator[Setup]:
    if keycloak.listener is None:
        pytest.skip("KEYCLOAK_URL names a Keycloak of its own: the test listener is not installed there")
    async with aiohttp.ClientSession() as session:
        admin = MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)
        account = await admin.create_service_account("master", f"outbound-scim-{uuid.uuid4().hex[:8]}", ())
        settings = keycloak_settings(kafka_bootstrap, keycloak.url, account, keycloak_event_listeners=keycloak.listener)
        async with running_service(settings) as service:
            yield Setup(Api(service.api_port or 0), admin, account, keycloak.listener, scim_server)


async def test_a_realm_without_the_listener_is_told_to_add_it(setup: Setup) -> None:
    """Keycloak's defaults (jboss-logging only, representation off): listener_missing naming the
    configured listener id and where to add it, and representation_off; once the realm is fixed,
    GET /tenants/{realm} has no warning left."""
    started = time.monotonic()
    realm = await setup.realm()
    warnings = await setup.enable(realm)
    assert codes(warnings) == ["listener_missing", "representation_off"]
    assert setup.listener in warnings[0]["detail"] and "Event listeners" in warnings[0]["detail"]

    status, doc = await setup.admin.enable_listener(realm, setup.listener)
    assert status == 204, doc
    status, body = await setup.api.call("GET", f"/tenants/{realm}")
    assert (status, body["warnings"]) == (200, [])
    print(f"\nFIGURES realm check, listener missing then fixed: {time.monotonic() - started:.1f}s")


async def test_a_realm_with_the_listener_but_without_representations(setup: Setup) -> None:
    """Listener listed, "Include representation" off: representation_off only, naming the switch."""
    realm = await setup.realm()
    status, doc = await setup.admin.enable_listener(realm, setup.listener, representation=False)
    assert status == 204, doc
    warnings = await setup.enable(realm)
    assert codes(warnings) == ["representation_off"]
    assert "Include representation" in warnings[0]["detail"]


async def test_a_realm_set_up_correctly_has_no_warning(setup: Setup) -> None:
    """Listener listed and representations included: an empty warnings list."""
    realm = await setup.realm()
    status, doc = await setup.admin.enable_listener(realm, setup.listener)
    assert status == 204, doc
    assert await setup.enable(realm) == []


async def test_settings_the_account_may_not_read_ask_for_view_events(setup: Setup) -> None:
    """Without view-events Keycloak answers 403: events_config_unreadable asks for the role, and the
    tenant is enabled all the same."""
    realm = await setup.realm(("view-users", "query-users"))
    status, doc = await setup.admin.enable_listener(realm, setup.listener)
    assert status == 204, doc
    warnings = await setup.enable(realm)
    assert codes(warnings) == ["events_config_unreadable"]
    assert "view-events" in warnings[0]["detail"]
    status, body = await setup.api.call("GET", f"/tenants/{realm}")
    assert (status, body["status"], codes(body["warnings"])) == (200, "enabled", ["events_config_unreadable"])
