"""The console's Keycloak sign-in (service.console.oidc) against the session's real Keycloak (see
conftest.py): a realm with a public PKCE client and a confidential one, the console's realm role and a
client role, and users with and without them. The browser's part is played by aiohttp alone: the
authorize URL's login page, its form posted with the user's password, and the 302 to the redirect URI
caught (not followed) for its code and state."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from service.console.oidc import Identity, OidcLogin, OidcRefused, PendingLogin
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin

PUBLIC = "outbound-scim-console"
CONFIDENTIAL = "outbound-scim-console-confidential"
SECRET = "console-client-secret"
ROLE = "outbound-scim-operator"
CLIENT_ROLE = "operator"  # a role of the PUBLIC client: required as f"{PUBLIC}:{CLIENT_ROLE}"
REDIRECT = "http://127.0.0.1:8080/ui/login/callback"  # nothing listens: the redirect is caught, not followed
PASSWORD = "Correct-Horse-7"
FORM_ACTION = re.compile(r'<form[^>]*\bid="kc-form-login"[^>]*\baction="([^"]+)"', re.DOTALL)


@dataclass(frozen=True)
class Realm:
    name: str
    users: dict[str, str]  # username -> user id


def with_password(username: str) -> dict[str, Any]:
    """A user who can sign in on Keycloak's login page with PASSWORD."""
    return {
        "username": username,
        "email": f"{username}@example.com",
        "firstName": username.title(),
        "lastName": "Example",
        "emailVerified": True,
        "enabled": True,
        "credentials": [{"type": "password", "value": PASSWORD, "temporary": False}],
    }


@pytest.fixture(scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(scope="module")
async def realm(keycloak: RealKeycloak, session: aiohttp.ClientSession) -> Realm:
    """The set-up docs/operations/console-sign-in.md describes, by the Admin API: the clients, the realm
    role, a client role, and four users: `operator` (realm role), `viewer` (no role), `client-operator`
    (the client role only), `lookalike` (a realm role named like the client role)."""
    admin = MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)
    name = f"console-{uuid.uuid4().hex[:8]}"
    await admin.create_realm(name)
    client = {
        "standardFlowEnabled": True,
        "directAccessGrantsEnabled": False,
        "implicitFlowEnabled": False,
        "redirectUris": [REDIRECT],
        "attributes": {"pkce.code.challenge.method": "S256"},
    }
    public_uuid = await admin.ok("POST", f"/{name}/clients", {**client, "clientId": PUBLIC, "publicClient": True})
    await admin.ok(
        "POST", f"/{name}/clients", {**client, "clientId": CONFIDENTIAL, "publicClient": False, "secret": SECRET}
    )
    await admin.ok("POST", f"/{name}/roles", {"name": ROLE})
    await admin.ok("POST", f"/{name}/roles", {"name": f"{PUBLIC}:{CLIENT_ROLE}"})
    await admin.ok("POST", f"/{name}/clients/{public_uuid}/roles", {"name": CLIENT_ROLE})
    realm_role = await admin.ok("GET", f"/{name}/roles/{ROLE}")
    lookalike_role = await admin.ok("GET", f"/{name}/roles/{PUBLIC}:{CLIENT_ROLE}")
    client_role = await admin.ok("GET", f"/{name}/clients/{public_uuid}/roles/{CLIENT_ROLE}")

    users: dict[str, str] = {}
    for username in ("operator", "viewer", "client-operator", "lookalike"):
        users[username] = await admin.create_user(name, with_password(username))
    await admin.ok("POST", f"/{name}/users/{users['operator']}/role-mappings/realm", [realm_role])
    await admin.ok("POST", f"/{name}/users/{users['lookalike']}/role-mappings/realm", [lookalike_role])
    await admin.ok(
        "POST", f"/{name}/users/{users['client-operator']}/role-mappings/clients/{public_uuid}", [client_role]
    )
    return Realm(name, users)


def console_login(
    keycloak: RealKeycloak,
    session: aiohttp.ClientSession,
    realm: Realm,
    role: str = ROLE,
    *,
    client_id: str = PUBLIC,
    secret: str | None = None,
) -> OidcLogin:
    return OidcLogin(session, keycloak.url, realm.name, client_id, secret, role, timeout_seconds=10)


async def browser_login(authorize_url: str, username: str) -> tuple[str, str]:
    """What a browser does between start and the callback: (code, state) from Keycloak's redirect."""
    # Keycloak's session cookies are Secure (SameSite=None); a browser sends them to http://127.0.0.1 anyway
    origin = f"{urlsplit(authorize_url).scheme}://{urlsplit(authorize_url).netloc}"
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=origin)  # unsafe: cookies of an IP host
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(authorize_url) as page:
            assert page.status == 200, await page.text()
            found = FORM_ACTION.search(await page.text())
        assert found is not None, "Keycloak's login page has no kc-form-login form"
        form = {"username": username, "password": PASSWORD, "credentialId": ""}
        async with browser.post(html.unescape(found.group(1)), data=form, allow_redirects=False) as answer:
            location = answer.headers.get("Location", "")
            body = await answer.text()
            feedback = re.findall(r'kc-feedback-text">([^<]*)<|id="input-error[^"]*"[^>]*>([^<]*)<', body)
            assert answer.status == 302, f"{answer.status}: {feedback or body[-500:]}"
    assert location.startswith(REDIRECT + "?"), location
    query = parse_qs(urlsplit(location).query)
    return query["code"][0], query["state"][0]


async def sign_in(login: OidcLogin, username: str) -> Identity:
    url, pending = await login.start(REDIRECT)
    code, state = await browser_login(url, username)
    return await login.finish(code=code, state=state, redirect_uri=REDIRECT, pending=pending)


async def test_a_user_with_the_realm_role_signs_in(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm
) -> None:
    """The whole flow with a public PKCE client: the identity is Keycloak's user, with the realm role."""
    identity = await sign_in(console_login(keycloak, session, realm), "operator")
    assert (identity.subject, identity.username) == (realm.users["operator"], "operator")
    assert ROLE in identity.roles


async def test_a_user_without_the_role_is_refused(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm
) -> None:
    """Keycloak lets the user sign in; the console refuses missing_role."""
    with pytest.raises(OidcRefused) as caught:
        await sign_in(console_login(keycloak, session, realm), "viewer")
    assert caught.value.reason == "missing_role"


async def test_a_client_role_is_required_as_client_colon_role(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm
) -> None:
    """Required `<client>:<role>`: the client role's holder signs in (the role listed as client:role); a
    user with a realm role of that very name, or with the realm role only, is refused missing_role."""
    login = console_login(keycloak, session, realm, f"{PUBLIC}:{CLIENT_ROLE}")
    identity = await sign_in(login, "client-operator")
    assert f"{PUBLIC}:{CLIENT_ROLE}" in identity.roles
    for username in ("lookalike", "operator"):
        with pytest.raises(OidcRefused) as caught:
            await sign_in(login, username)
        assert caught.value.reason == "missing_role"


async def test_a_confidential_client_signs_in_with_its_secret(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm
) -> None:
    """A confidential client: the secret goes with the code (client_secret_post), and Keycloak takes it."""
    login = console_login(keycloak, session, realm, client_id=CONFIDENTIAL, secret=SECRET)
    assert (await sign_in(login, "operator")).subject == realm.users["operator"]


async def test_keycloak_refuses_a_code_without_its_verifier(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm
) -> None:
    """A code finished with another verifier (a stolen code): Keycloak's PKCE check, token_refused."""
    login = console_login(keycloak, session, realm)
    url, pending = await login.start(REDIRECT)
    code, state = await browser_login(url, "operator")
    thief = PendingLogin(pending.state, pending.nonce, "x" * 64)
    with pytest.raises(OidcRefused) as caught:
        await login.finish(code=code, state=state, redirect_uri=REDIRECT, pending=thief)
    assert caught.value.reason == "token_refused"
    assert "invalid_grant" in caught.value.detail
