"""The console's Keycloak sign-in in a real Chromium, end to end: the real service (console_oidc_* set),
the session's real Keycloak and its own login page. An operator with the console's role lands on the
tenants page signed in under their username; a user without it is sent back to the sign-in page with the
refusal in words, and no session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from playwright.async_api import Page, expect

from service.console.sessions import SESSION_COOKIE
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin
from tests.keycloak.test_console_oidc import PASSWORD, with_password
from tests.support import free_port, make_settings, running_service

CLIENT = "outbound-scim-console"
ROLE = "outbound-scim-operator"


@dataclass(frozen=True)
class Console:
    url: str
    realm: str


@pytest.fixture(scope="module")
async def console(keycloak: RealKeycloak, kafka_bootstrap: str) -> AsyncIterator[Console]:
    """A realm with the console's public PKCE client (redirect URI: this service's callback), its realm
    role, `operator` holding it and `viewer` without it; the service signs in to the console with it."""
    port = free_port()
    async with aiohttp.ClientSession() as session:
        admin = MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)
        realm = f"ui-kc-{uuid.uuid4().hex[:8]}"
        await admin.create_realm(realm)
        await admin.ok(
            "POST",
            f"/{realm}/clients",
            {
                "clientId": CLIENT,
                "publicClient": True,
                "standardFlowEnabled": True,
                "directAccessGrantsEnabled": False,
                "redirectUris": [f"http://127.0.0.1:{port}/ui/login/callback"],
                "attributes": {"pkce.code.challenge.method": "S256"},
            },
        )
        await admin.ok("POST", f"/{realm}/roles", {"name": ROLE})
        role = await admin.ok("GET", f"/{realm}/roles/{ROLE}")
        for username in ("operator", "viewer"):
            user_id = await admin.create_user(realm, with_password(username))
            if username == "operator":
                await admin.ok("POST", f"/{realm}/users/{user_id}/role-mappings/realm", [role])
    settings = make_settings(
        kafka_bootstrap,
        api_port=port,
        keycloak_url=keycloak.url,
        console_oidc_client_id=CLIENT,
        console_oidc_realm=realm,
        console_role=ROLE,
    )
    async with running_service(settings):
        yield Console(f"http://127.0.0.1:{port}", realm)


async def keycloak_sign_in(page: Page, console: Console, username: str) -> None:
    await page.goto(console.url + "/ui/tenants")
    await expect(page).to_have_url(console.url + "/ui/login?next=%2Fui%2Ftenants")
    await expect(page.get_by_label("Admin token")).to_have_count(0)  # Keycloak only: the token is off
    await page.get_by_role("link", name="Sign in with Keycloak").click()
    await page.locator("#username").fill(username)  # Keycloak's own login page
    await page.locator("#password").fill(PASSWORD)
    await page.locator("#kc-login").click()


async def test_an_operator_signs_in_through_keycloak(page: Page, console: Console) -> None:
    await keycloak_sign_in(page, console, "operator")
    await expect(page).to_have_url(console.url + "/ui/tenants")
    await expect(page.get_by_text("Signed in as operator")).to_be_visible()
    assert SESSION_COOKIE in {c["name"] for c in await page.context.cookies()}


async def test_a_user_without_the_role_is_refused_in_words(page: Page, console: Console) -> None:
    await keycloak_sign_in(page, console, "viewer")
    await expect(page.get_by_role("alert")).to_contain_text("lacks the role the console requires")
    assert SESSION_COOKIE not in {c["name"] for c in await page.context.cookies()}
    await page.goto(console.url + "/ui/tenants")
    await expect(page).to_have_url(console.url + "/ui/login?next=%2Fui%2Ftenants")
