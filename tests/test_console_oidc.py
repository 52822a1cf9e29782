"""The console's Keycloak sign-in (service.console.oidc) against a small aiohttp server standing in for a
Keycloak realm: discovery, JWKS, and a token endpoint that checks the PKCE verifier and the redirect URI
the way Keycloak does, and signs the tokens with keys the test picks (rotated, foreign, expired...)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from devkit.service import make_settings
from service.console.oidc import (
    REASONS,
    Identity,
    OidcLogin,
    OidcRefused,
    PendingLogin,
    code_challenge,
    oidc_login,
)
from service.errors import ConfigError

REALM = "acme"
CLIENT = "outbound-scim-console"
REDIRECT = "http://127.0.0.1:8080/ui/login/callback"
USER_ID = "6f1c2a9e-4c1e-4b8e-9f3a-2d7c0b1e5a11"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY_1, KEY_2, FOREIGN = new_key(), new_key(), new_key()


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


@dataclass
class Grant:
    """What the authorize step would have stored in Keycloak for one code."""

    nonce: str
    challenge: str
    redirect_uri: str


@dataclass
class FakeRealm:
    """Keycloak's realm endpoints, scripted. `keys` is what the JWKS lists; `sign_with` (kid, key) signs
    the next tokens; `id_claims` / `access_claims` are merged into them (None deletes a claim)."""

    base: str = ""
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=lambda: {"k1": KEY_1})
    sign_with: tuple[str, rsa.RSAPrivateKey] = ("k1", KEY_1)
    algorithm: str = "RS256"
    realm_roles: list[str] = field(default_factory=lambda: ["outbound-scim-operator", "offline_access"])
    client_roles: dict[str, list[str]] = field(default_factory=lambda: {"account": ["view-profile"]})
    id_claims: dict[str, Any] = field(default_factory=dict)
    access_claims: dict[str, Any] = field(default_factory=dict)
    token_answer: tuple[int, dict[str, Any]] | None = None  # a scripted token endpoint answer instead
    grants: dict[str, Grant] = field(default_factory=dict)
    token_forms: list[dict[str, str]] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=lambda: {"discovery": 0, "jwks": 0, "token": 0})

    @property
    def issuer(self) -> str:
        return f"{self.base}/realms/{REALM}"

    def authorize(self, url: str) -> str:
        """The browser's trip through Keycloak's login: remember what the authorize URL asked, give a code."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        code = secrets.token_urlsafe(16)
        self.grants[code] = Grant(query["nonce"], query["code_challenge"], query["redirect_uri"])
        return code

    def tokens(self, grant: Grant) -> dict[str, Any]:
        now = int(time.time())
        common = {"iss": self.issuer, "sub": USER_ID, "iat": now, "exp": now + 300, "azp": CLIENT}
        id_claims = {**common, "aud": CLIENT, "typ": "ID", "nonce": grant.nonce, "preferred_username": "alice"}
        access_claims = {
            **common,
            "aud": "account",
            "typ": "Bearer",
            "realm_access": {"roles": self.realm_roles},
            "resource_access": {client: {"roles": roles} for client, roles in self.client_roles.items()},
            "preferred_username": "alice",
        }
        kid, key = self.sign_with

        def signed(claims: dict[str, Any], extra: dict[str, Any]) -> str:
            merged = {k: v for k, v in {**claims, **extra}.items() if v is not None}
            return jwt.encode(merged, key, algorithm=self.algorithm, headers={"kid": kid})

        return {
            "access_token": signed(access_claims, self.access_claims),
            "id_token": signed(id_claims, self.id_claims),
            "refresh_token": "not-used",
            "token_type": "Bearer",
            "expires_in": 300,
        }

    def app(self) -> web.Application:
        async def discovery(_: web.Request) -> web.Response:
            self.hits["discovery"] += 1
            oidc = f"{self.issuer}/protocol/openid-connect"
            return web.json_response(
                {
                    "issuer": self.issuer,
                    "authorization_endpoint": f"{oidc}/auth",
                    "token_endpoint": f"{oidc}/token",
                    "jwks_uri": f"{oidc}/certs",
                    "userinfo_endpoint": f"{oidc}/userinfo",
                }
            )

        async def certs(_: web.Request) -> web.Response:
            self.hits["jwks"] += 1
            listed = [public_jwk(key, kid) for kid, key in self.keys.items()]
            encryption = {**public_jwk(KEY_1, "enc-1"), "use": "enc", "alg": "RSA-OAEP"}  # Keycloak lists one
            return web.json_response({"keys": [encryption, *listed]})

        async def token(request: web.Request) -> web.Response:
            self.hits["token"] += 1
            form = {k: str(v) for k, v in (await request.post()).items()}
            self.token_forms.append(form)
            if self.token_answer is not None:
                return web.json_response(self.token_answer[1], status=self.token_answer[0])
            grant = self.grants.pop(form.get("code", ""), None)
            if grant is None:
                return web.json_response({"error": "invalid_grant", "error_description": "Code not valid"}, status=400)
            if form.get("redirect_uri") != grant.redirect_uri:
                return web.json_response(
                    {"error": "invalid_grant", "error_description": "Incorrect redirect_uri"}, status=400
                )
            if code_challenge(form.get("code_verifier", "")) != grant.challenge:
                return web.json_response(
                    {"error": "invalid_grant", "error_description": "PKCE verification failed: Code mismatch"},
                    status=400,
                )
            return web.json_response(self.tokens(grant))

        app = web.Application()
        app.router.add_get(f"/realms/{REALM}/.well-known/openid-configuration", discovery)
        app.router.add_get(f"/realms/{REALM}/protocol/openid-connect/certs", certs)
        app.router.add_post(f"/realms/{REALM}/protocol/openid-connect/token", token)
        return app


@pytest.fixture
async def realm() -> AsyncIterator[FakeRealm]:
    fake = FakeRealm()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.base = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def login_for(
    realm: FakeRealm, session: aiohttp.ClientSession, role: str = "outbound-scim-operator", secret: str | None = None
) -> OidcLogin:
    return OidcLogin(session, realm.base, REALM, CLIENT, secret, role, timeout_seconds=5)


async def sign_in(login: OidcLogin, realm: FakeRealm) -> Identity:
    """start, the browser's trip through Keycloak, and finish with the callback's code and state."""
    url, pending = await login.start(REDIRECT)
    code = realm.authorize(url)
    return await login.finish(code=code, state=pending.state, redirect_uri=REDIRECT, pending=pending)


async def refusal(login: OidcLogin, realm: FakeRealm) -> OidcRefused:
    with pytest.raises(OidcRefused) as caught:
        await sign_in(login, realm)
    return caught.value


# -- start --------------------------------------------------------------------------------------------


async def test_start_asks_for_a_code_with_pkce_s256(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """The authorize URL is the realm's, for this client and redirect URI, scope openid, the pending
    state and nonce, and the S256 challenge of the pending verifier."""
    url, pending = await login_for(realm, session).start(REDIRECT)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{realm.issuer}/protocol/openid-connect/auth"
    assert query == {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": pending.state,
        "nonce": pending.nonce,
        "code_challenge": query["code_challenge"],
        "code_challenge_method": "S256",
    }
    digest = hashlib.sha256(pending.verifier.encode()).digest()
    assert query["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert 43 <= len(pending.verifier) <= 128  # RFC 7636's bounds


async def test_each_start_draws_new_secrets_and_reads_discovery_once(
    realm: FakeRealm, session: aiohttp.ClientSession
) -> None:
    """Two starts: different state, nonce and verifier; the discovery document is read once."""
    login = login_for(realm, session)
    _, first = await login.start(REDIRECT)
    _, second = await login.start(REDIRECT)
    assert {first.state, first.nonce, first.verifier}.isdisjoint({second.state, second.nonce, second.verifier})
    assert realm.hits["discovery"] == 1


def test_pending_login_survives_the_cookie_and_damage_is_bad_state() -> None:
    """to_dict/from_dict round-trip; a missing, empty, non-string or oversized value is bad_state."""
    pending = PendingLogin("s", "n", "v")
    assert PendingLogin.from_dict(pending.to_dict()) == pending
    for damaged in (
        {},
        {"state": "s", "nonce": "n"},
        {"state": "", "nonce": "n", "verifier": "v"},
        {"state": 1, "nonce": "n", "verifier": "v"},
        {"state": "s" * 300, "nonce": "n", "verifier": "v"},
    ):
        with pytest.raises(OidcRefused) as caught:
            PendingLogin.from_dict(damaged)
        assert caught.value.reason == "bad_state"


# -- finish: success ------------------------------------------------------------------------------------


async def test_a_user_with_the_realm_role_signs_in(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """The identity carries the subject, the username and the access token's roles, client roles as
    <client>:<role>; the code went out with the verifier and, for a public client, no secret."""
    identity = await sign_in(login_for(realm, session), realm)
    assert identity == Identity(
        subject=USER_ID,
        username="alice",
        roles=frozenset({"outbound-scim-operator", "offline_access", "account:view-profile"}),
    )
    [form] = realm.token_forms
    assert form["grant_type"] == "authorization_code"
    assert form["client_id"] == CLIENT
    assert "client_secret" not in form


async def test_a_confidential_client_sends_its_secret(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """With a client secret, the token request carries it (client_secret_post)."""
    await sign_in(login_for(realm, session, secret="console-secret"), realm)
    assert realm.token_forms[0]["client_secret"] == "console-secret"


async def test_a_client_role_is_named_client_colon_role(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """console_role `<client>:<role>` is that client's role: held, it signs in; a realm role that merely
    has the same text is not it."""
    realm.realm_roles = ["console:operator"]
    realm.client_roles = {"console": ["operator"]}
    identity = await sign_in(login_for(realm, session, role="console:operator"), realm)
    assert "console:operator" in identity.roles

    realm.client_roles = {"other": ["operator"]}
    assert (await refusal(login_for(realm, session, role="console:operator"), realm)).reason == "missing_role"


def test_a_malformed_role_setting_is_a_config_error(session: aiohttp.ClientSession) -> None:
    """An empty role, or a client or role part missing around the colon, refuses to start."""
    for role in ("", ":operator", "console:"):
        with pytest.raises(ConfigError):
            OidcLogin(session, "http://127.0.0.1:1", REALM, CLIENT, None, role)
    assert str(OidcLogin(session, "http://k", REALM, CLIENT, None, "https://sp.example:op").required_role) == (
        "https://sp.example:op"
    )


# -- finish: refusals -----------------------------------------------------------------------------------


async def test_a_wrong_state_is_refused_before_keycloak_is_asked(
    realm: FakeRealm, session: aiohttp.ClientSession
) -> None:
    """A callback whose state is not the pending one's: bad_state, and the code is never exchanged."""
    login = login_for(realm, session)
    url, pending = await login.start(REDIRECT)
    code = realm.authorize(url)
    for state in ("forged", ""):
        with pytest.raises(OidcRefused) as caught:
            await login.finish(code=code, state=state, redirect_uri=REDIRECT, pending=pending)
        assert caught.value.reason == "bad_state"
    assert realm.hits["token"] == 0


async def test_an_expired_id_token_is_refused(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """An ID token past its exp (beyond the clock-skew leeway): invalid_token, saying so."""
    realm.id_claims = {"exp": int(time.time()) - 120, "iat": int(time.time()) - 420}
    refused = await refusal(login_for(realm, session), realm)
    assert (refused.reason, "expired" in refused.detail) == ("invalid_token", True)


async def test_an_expired_access_token_is_refused(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """The roles' token is held to its expiry too."""
    realm.access_claims = {"exp": int(time.time()) - 120}
    refused = await refusal(login_for(realm, session), realm)
    assert (refused.reason, "access token has expired" in refused.detail) == ("invalid_token", True)


async def test_a_wrong_nonce_is_refused(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """An ID token minted for another sign-in (another nonce, or none): invalid_token."""
    for nonce in ("someone-elses", None):
        realm.id_claims = {"nonce": nonce}
        refused = await refusal(login_for(realm, session), realm)
        assert (refused.reason, "nonce" in refused.detail) == ("invalid_token", True)


async def test_a_wrong_audience_is_refused(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """An ID token for another client (aud), or an access token another client asked for (azp)."""
    realm.id_claims = {"aud": "another-client", "azp": "another-client"}
    refused = await refusal(login_for(realm, session), realm)
    assert (refused.reason, "aud" in refused.detail) == ("invalid_token", True)

    realm.id_claims, realm.access_claims = {}, {"azp": "another-client"}
    refused = await refusal(login_for(realm, session), realm)
    assert (refused.reason, "azp" in refused.detail) == ("invalid_token", True)


async def test_a_wrong_issuer_is_refused(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """A token from another realm (iss) than the discovery document names: invalid_token."""
    realm.id_claims = {"iss": f"{realm.base}/realms/other"}
    refused = await refusal(login_for(realm, session), realm)
    assert (refused.reason, "iss" in refused.detail) == ("invalid_token", True)


async def test_a_bad_signature_is_refused(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """Tokens signed by a key that is not the one the realm publishes under their kid: invalid_token."""
    realm.sign_with = ("k1", FOREIGN)
    refused = await refusal(login_for(realm, session), realm)
    assert (refused.reason, refused.detail) == ("invalid_token", "the ID token has a bad signature")


async def test_a_symmetric_or_unsigned_token_is_refused(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """HS256 (keyed with anything public) and alg none never pass, whatever the JWKS holds."""
    grant = Grant("n", "c", REDIRECT)
    claims = jwt.decode(realm.tokens(grant)["id_token"], options={"verify_signature": False})
    for forged in (
        jwt.encode(claims, "k" * 32, algorithm="HS256", headers={"kid": "k1"}),
        jwt.encode(claims, "", algorithm="none", headers={"kid": "k1"}),
    ):
        realm.token_answer = (200, {"id_token": forged, "access_token": forged})
        refused = await refusal(login_for(realm, session), realm)
        assert (refused.reason, "algorithm" in refused.detail) == ("invalid_token", True)


def other_failures() -> list[Any]:
    """(what the realm does wrong, the words the refusal's detail must contain)."""
    now = int(time.time())

    def id_claims(**claims: Any) -> Callable[[FakeRealm], None]:
        return lambda realm: setattr(realm, "id_claims", claims)

    def access_claims(**claims: Any) -> Callable[[FakeRealm], None]:
        return lambda realm: setattr(realm, "access_claims", claims)

    def answer(doc: dict[str, Any]) -> Callable[[FakeRealm], None]:
        return lambda realm: setattr(realm, "token_answer", (200, doc))

    cases = {
        "access token of another user": (access_claims(sub="someone-else"), "access token's subject"),
        "ID token without sub": (id_claims(sub=None), "ID token lacks the sub claim"),
        "ID token issued in the future": (id_claims(iat=now + 3600), "ID token is not valid yet"),
        "ID token to two clients, azp another": (id_claims(aud=[CLIENT, "other"], azp="other"), "(azp)"),
        "no ID token (scope openid dropped)": (answer({"access_token": "a.b.c"}), "lacks an ID token"),
        "not a JWT": (answer({"id_token": "garbage", "access_token": "garbage"}), "ID token is not a JWT"),
        "no key id": (lambda realm: setattr(realm, "sign_with", ("", KEY_1)), "names no signing key"),
        "algorithm not the key's": (lambda realm: setattr(realm, "algorithm", "PS256"), "not its key's"),
    }
    return [pytest.param(change, words, id=name) for name, (change, words) in cases.items()]


@pytest.mark.parametrize(("change", "words"), other_failures())
async def test_other_token_failures_are_invalid_token(
    realm: FakeRealm, session: aiohttp.ClientSession, change: Callable[[FakeRealm], None], words: str
) -> None:
    """Each way a token answer can be wrong is refused invalid_token, its detail naming what is wrong."""
    change(realm)
    refused = await refusal(login_for(realm, session), realm)
    assert refused.reason == "invalid_token"
    assert words in refused.detail


async def test_a_callback_without_a_code_is_token_refused(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """A callback with the right state and no code: token_refused, nothing sent to the token endpoint."""
    login = login_for(realm, session)
    _, pending = await login.start(REDIRECT)
    with pytest.raises(OidcRefused) as caught:
        await login.finish(code="", state=pending.state, redirect_uri=REDIRECT, pending=pending)
    assert caught.value.reason == "token_refused"
    assert realm.hits["token"] == 0


async def test_a_user_without_the_role_is_refused_and_logged(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """Valid tokens, no required role: missing_role, logged with the subject and the reason."""
    realm.realm_roles = ["offline_access"]
    with capture_logs() as logs:
        refused = await refusal(login_for(realm, session), realm)
    assert refused.reason == "missing_role"
    assert "outbound-scim-operator" in refused.detail
    [entry] = [e for e in logs if e["event"] == "console.oidc.refused"]
    assert (entry["reason"], entry["subject"]) == ("missing_role", USER_ID)


async def test_an_unknown_kid_rereads_the_jwks_once(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """Keys rotated after the JWKS was cached: one more read finds the new key. A kid the realm never
    publishes costs exactly one more read per sign-in, then invalid_token."""
    login = login_for(realm, session)
    await sign_in(login, realm)
    assert realm.hits["jwks"] == 1

    realm.keys["k2"] = KEY_2
    realm.sign_with = ("k2", KEY_2)
    await sign_in(login, realm)
    assert realm.hits["jwks"] == 2

    await sign_in(login, realm)  # k2 is cached now
    assert realm.hits["jwks"] == 2

    realm.sign_with = ("k3", FOREIGN)
    refused = await refusal(login, realm)
    assert (refused.reason, "does not publish" in refused.detail) == ("invalid_token", True)
    assert realm.hits["jwks"] == 3


async def test_concurrent_sign_ins_share_one_jwks_reread(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """Several sign-ins meeting the same new key at once: the JWKS is read again once, not once each."""
    login = login_for(realm, session)
    await sign_in(login, realm)
    realm.keys["k2"] = KEY_2
    realm.sign_with = ("k2", KEY_2)
    identities = await asyncio.gather(*(sign_in(login, realm) for _ in range(5)))
    assert {i.subject for i in identities} == {USER_ID}
    assert realm.hits["jwks"] == 2


async def test_a_refused_code_is_token_refused(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """A code used twice, or a verifier that is not the challenge's: the token endpoint's invalid_grant
    becomes token_refused with Keycloak's words."""
    login = login_for(realm, session)
    url, pending = await login.start(REDIRECT)
    code = realm.authorize(url)
    await login.finish(code=code, state=pending.state, redirect_uri=REDIRECT, pending=pending)
    with pytest.raises(OidcRefused) as caught:
        await login.finish(code=code, state=pending.state, redirect_uri=REDIRECT, pending=pending)
    assert (caught.value.reason, caught.value.detail) == (
        "token_refused",
        "the token endpoint answered 400: invalid_grant: Code not valid",
    )

    url, pending = await login.start(REDIRECT)
    code = realm.authorize(url)
    stolen = PendingLogin(pending.state, pending.nonce, secrets.token_urlsafe(64))
    with pytest.raises(OidcRefused) as caught:
        await login.finish(code=code, state=pending.state, redirect_uri=REDIRECT, pending=stolen)
    assert caught.value.reason == "token_refused"
    assert "PKCE" in caught.value.detail


async def test_keycloak_failing_is_unreachable(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """Nothing listening, a realm that does not exist (404), a 503 from the token endpoint: unreachable."""
    closed = OidcLogin(session, "http://127.0.0.1:9", REALM, CLIENT, None, "r", timeout_seconds=2)
    with pytest.raises(OidcRefused) as caught:
        await closed.start(REDIRECT)
    assert caught.value.reason == "unreachable"

    nowhere = OidcLogin(session, realm.base, "no-such-realm", CLIENT, None, "r")
    with pytest.raises(OidcRefused) as caught:
        await nowhere.start(REDIRECT)
    assert (caught.value.reason, "404" in caught.value.detail) == ("unreachable", True)

    realm.token_answer = (503, {})
    assert (await refusal(login_for(realm, session), realm)).reason == "unreachable"


async def test_no_code_or_token_reaches_a_log(realm: FakeRealm, session: aiohttp.ClientSession) -> None:
    """A sign-in and a refusal log the subject and the reason, never the code, a token or the verifier."""
    login = login_for(realm, session)
    with capture_logs() as logs:
        url, pending = await login.start(REDIRECT)
        code = realm.authorize(url)
        grant = realm.grants[code]
        await login.finish(code=code, state=pending.state, redirect_uri=REDIRECT, pending=pending)
        with pytest.raises(OidcRefused):
            await login.finish(code=code, state=pending.state, redirect_uri=REDIRECT, pending=pending)
    signed_in = [e for e in logs if e["event"] == "console.oidc.signed_in"]
    assert [e["subject"] for e in signed_in] == [USER_ID]
    text = repr(logs)
    issued = realm.tokens(grant)
    for secret in (code, pending.verifier, pending.nonce, issued["id_token"].split(".")[1]):
        assert secret not in text


def test_refusal_reasons_are_the_contracts() -> None:
    """The six reasons the console maps to messages; anything else is a programming error."""
    assert (
        frozenset({"bad_state", "denied", "token_refused", "invalid_token", "missing_role", "unreachable"}) == REASONS
    )
    with pytest.raises(ValueError, match="unknown refusal reason"):
        OidcRefused("nope", "x")


async def test_oidc_login_follows_the_settings(session: aiohttp.ClientSession) -> None:
    """No console client: None. A client without keycloak_url: ConfigError. The realm defaults to the
    service account's."""
    assert oidc_login(make_settings("127.0.0.1:1"), session) is None
    with pytest.raises(ConfigError):
        oidc_login(make_settings("127.0.0.1:1", console_oidc_client_id=CLIENT), session)
    login = oidc_login(
        make_settings(
            "127.0.0.1:1",
            keycloak_url="https://sso.example.com/",
            keycloak_auth_realm="ops",
            console_oidc_client_id=CLIENT,
            console_oidc_client_secret="s3cret",
            console_role="console:operator",
        ),
        session,
    )
    assert login is not None
    assert repr(login) == (
        "OidcLogin('https://sso.example.com/realms/ops', client_id='outbound-scim-console', "
        "required_role='console:operator')"
    )
