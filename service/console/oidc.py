"""Signing in to the console with Keycloak: OpenID Connect's authorization code flow with PKCE (S256).

The console calls `start` (the authorize URL to redirect the browser to, and a `PendingLogin` it keeps
in a short-lived signed cookie) and, on the callback, `finish` (an `Identity`, or `OidcRefused`). This
module keeps no per-login state: whatever replica gets the callback can finish the sign-in.

What `finish` checks, in order: the callback's state against the pending one (constant time); the code
exchanged at the token endpoint with the PKCE verifier (and the client secret when the client is
confidential); the ID token's signature by a key of the realm's JWKS, its `iss` (the discovery
document's issuer), `aud` (the client id; `azp` too when present), `exp`, `iat` and `nonce`; then the
access token; then the required role.

Roles are read from the access token (`realm_access.roles`, `resource_access.<client>.roles`), whose
signature, issuer, expiry, `azp` (this client) and subject (the ID token's) are checked the same way.
Not from the userinfo endpoint: Keycloak's role mappers (client scope `roles`) put roles in the access
token by default but not in userinfo, so userinfo would need every operator to change a realm setting,
and would cost a request per sign-in. The access token comes straight from the token endpoint, yet its
signature is still checked: the keys are cached, so it costs nothing, and no roles are believed from an
unsigned or foreign token (a plain-http `keycloak_url`, a proxy on the way).

Discovery (`/realms/<realm>/.well-known/openid-configuration`) is read once and kept; the JWKS is kept
and read again once when a token names a key id it does not list (the realm rotated its keys). Requests
go through `service.jsonhttp` (no redirects followed, bodies capped, one timeout) on the caller's
session: Keycloak is the operator's own service, so that session verifies TLS with the CA bundle and is
not behind the tenants' egress policy, like the Admin API client's.

Refusals (`OidcRefused.reason`), each logged with its detail, never with a code or a token:

    bad_state      the callback's state is not the pending sign-in's, or the pending sign-in is missing
                   or damaged (an old tab, a replayed or forged callback): start again
    denied         Keycloak answered the callback with `error=` (the user cancelled, consent refused);
                   raised by the console, which reads the callback's query
    token_refused  the token endpoint refused the code (expired or used, PKCE or redirect URI mismatch:
                   invalid_grant) or the client (wrong secret: invalid_client)
    invalid_token  a token failed validation: signature, issuer, audience, expiry, nonce, subject
    missing_role   the user signed in but lacks the required role
    unreachable    Keycloak did not answer, or answered discovery, JWKS or token requests with an error
                   (a wrong URL or realm gives 404 here)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
import structlog
from yarl import URL

from service.errors import ConfigError
from service.jsonhttp import NOT_JSON, Answer, JsonHttp, TransportFailure
from service.settings import Settings

__all__ = ["REASONS", "Identity", "OidcLogin", "OidcRefused", "PendingLogin", "oidc_login"]

log = structlog.get_logger(__name__)

REASONS = frozenset({"bad_state", "denied", "token_refused", "invalid_token", "missing_role", "unreachable"})
# Asymmetric signatures only: an HS* token would be checked with a key anyone reading the JWKS has.
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
LEEWAY_SECONDS = 30  # clock skew between this replica and Keycloak, for exp, iat and nbf
MAX_RESPONSE_BYTES = 1024 * 1024  # discovery, JWKS and token answers are a few kB
MAX_PENDING_CHARS = 256  # a PendingLogin value comes back from a cookie: bounded before any use


class OidcRefused(Exception):
    """The sign-in cannot go on; `reason` (one of REASONS) says why, `detail` in words for the operator.
    Neither ever holds a code or a token."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Identity:
    """Who signed in: Keycloak's subject (the user id), the username, and the roles of the access token,
    realm roles by name and client roles as `<client id>:<role>`."""

    subject: str
    username: str
    roles: frozenset[str]


@dataclass(frozen=True)
class PendingLogin:
    """What ties a callback to the `start` that sent the browser away: the state (against forged
    callbacks), the nonce (against a replayed ID token) and the PKCE verifier (against a stolen code)."""

    state: str
    nonce: str
    verifier: str

    def to_dict(self) -> dict[str, str]:
        return {"state": self.state, "nonce": self.nonce, "verifier": self.verifier}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingLogin:
        """Back from the console's cookie; anything but three non-empty, bounded strings is `bad_state`."""
        values: dict[str, str] = {}
        for name in ("state", "nonce", "verifier"):
            value = data.get(name) if isinstance(data, Mapping) else None
            if not isinstance(value, str) or not value or len(value) > MAX_PENDING_CHARS:
                raise OidcRefused("bad_state", "the pending sign-in is missing or damaged: sign in again")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class RequiredRole:
    """`console_role` parsed: a realm role, or a client's role (`<client id>:<role>`, split at the last
    colon: client ids may be URLs, role names seldom hold a colon)."""

    role: str
    client: str | None = None

    @classmethod
    def parse(cls, text: str) -> RequiredRole:
        client, colon, role = text.strip().rpartition(":")
        if not role or (colon and not client):
            raise ConfigError(f"console_role {text!r}: a realm role, or <client id>:<role> for a client role")
        return cls(role, client or None)

    def held_in(self, claims: Mapping[str, Any]) -> bool:
        """Whether the access token's claims grant this role: realm roles and client roles never mix, so
        a realm role named `a:b` is not client a's role b."""
        if self.client is None:
            return self.role in realm_roles(claims)
        return self.role in client_roles(claims).get(self.client, frozenset())

    def __str__(self) -> str:
        return self.role if self.client is None else f"{self.client}:{self.role}"


@dataclass(frozen=True)
class Discovery:
    """The parts of the realm's discovery document the flow uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


class OidcLogin:
    """The console's Keycloak sign-in for one realm client. Safe to share between tasks and requests."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        keycloak_url: str,
        realm: str,
        client_id: str,
        client_secret: str | None,
        required_role: str,
        *,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._http = JsonHttp(session, timeout_seconds=timeout_seconds, max_response_bytes=MAX_RESPONSE_BYTES)
        self._realm_url = f"{keycloak_url.rstrip('/')}/realms/{quote(realm, safe='')}"
        self._realm = realm
        self._client_id = client_id
        self._client_secret = client_secret or None
        self.required_role = RequiredRole.parse(required_role)
        self._discovery: Discovery | None = None
        self._discovery_lock = asyncio.Lock()
        self._keys: dict[str, dict[str, Any]] | None = None  # kid -> JWK, signing keys only
        self._keys_lock = asyncio.Lock()
        self.jwks_reads = 0  # for tests: how often the JWKS was fetched

    def __repr__(self) -> str:  # never the secret
        role = str(self.required_role)
        return f"OidcLogin({self._realm_url!r}, client_id={self._client_id!r}, required_role={role!r})"

    async def start(self, redirect_uri: str) -> tuple[str, PendingLogin]:
        """The authorize URL to send the browser to, and what the console keeps until the callback.
        Raises OidcRefused("unreachable") when the realm's discovery document cannot be read."""
        discovery = await self._discover()
        pending = PendingLogin(
            state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32), verifier=secrets.token_urlsafe(64)
        )
        query = {
            "response_type": "code",
            "client_id": self._client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid",
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": code_challenge(pending.verifier),
            "code_challenge_method": "S256",
        }
        return str(URL(discovery.authorization_endpoint).update_query(query)), pending

    async def finish(self, *, code: str, state: str, redirect_uri: str, pending: PendingLogin) -> Identity:
        """The signed-in user, once every check in the module docstring passed; else OidcRefused (logged
        with its reason and, once the tokens are valid, the subject)."""
        try:
            id_claims, access_claims = await self._validated_tokens(code, state, redirect_uri, pending)
        except OidcRefused as exc:
            log.warning("console.oidc.refused", reason=exc.reason, detail=exc.detail, realm=self._realm)
            raise
        subject = str(id_claims["sub"])
        if not self.required_role.held_in(access_claims):
            refused = OidcRefused("missing_role", f"the user lacks the role {self.required_role}")
            log.warning(
                "console.oidc.refused", reason=refused.reason, detail=refused.detail, subject=subject, realm=self._realm
            )
            raise refused
        username = id_claims.get("preferred_username") or access_claims.get("preferred_username")
        identity = Identity(
            subject=subject,
            username=username if isinstance(username, str) and username else subject,
            roles=all_roles(access_claims),
        )
        log.info("console.oidc.signed_in", subject=subject, realm=self._realm)
        return identity

    # -- the steps of finish ---------------------------------------------------------------------------

    async def _validated_tokens(
        self, code: str, state: str, redirect_uri: str, pending: PendingLogin
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise OidcRefused("bad_state", "the callback does not belong to the sign-in this browser started")
        if not code:
            raise OidcRefused("token_refused", "the callback carries no code")
        discovery = await self._discover()
        id_token, access_token = await self._exchange(discovery, code, redirect_uri, pending.verifier)
        id_claims = await self._decode(id_token, "ID token", discovery.issuer, audience=self._client_id)
        if not hmac.compare_digest(str(id_claims.get("nonce", "")).encode(), pending.nonce.encode()):
            raise OidcRefused("invalid_token", "the ID token's nonce is not this sign-in's (a replayed token?)")
        if "azp" in id_claims and id_claims["azp"] != self._client_id:
            raise OidcRefused("invalid_token", "the ID token was issued to another client (azp)")
        access_claims = await self._decode(access_token, "access token", discovery.issuer, audience=None)
        if access_claims.get("azp") != self._client_id:
            raise OidcRefused("invalid_token", "the access token was issued to another client (azp)")
        if access_claims.get("sub") != id_claims.get("sub"):
            raise OidcRefused("invalid_token", "the access token's subject is not the ID token's")
        return id_claims, access_claims

    async def _exchange(self, discovery: Discovery, code: str, redirect_uri: str, verifier: str) -> tuple[str, str]:
        """The code for (ID token, access token) at the token endpoint."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self._client_id,
            "code_verifier": verifier,
        }
        if self._client_secret is not None:
            form["client_secret"] = self._client_secret  # client_secret_post: Keycloak's default accepts it
        answer = await self._request("POST", discovery.token_endpoint, "token endpoint", form=form)
        if answer.status in (408, 429) or answer.status >= 500:
            raise OidcRefused("unreachable", f"the token endpoint answered {answer.status}")
        if answer.status != 200:
            said = oauth_error(answer.doc)
            detail = f"the token endpoint answered {answer.status}" + (f": {said}" if said else "")
            raise OidcRefused("token_refused", detail)
        doc = answer.doc if isinstance(answer.doc, dict) else {}
        id_token, access_token = doc.get("id_token"), doc.get("access_token")
        if not isinstance(id_token, str) or not id_token or not isinstance(access_token, str) or not access_token:
            raise OidcRefused("invalid_token", "the token response lacks an ID token or an access token")
        return id_token, access_token

    async def _decode(self, token: str, what: str, issuer: str, *, audience: str | None) -> dict[str, Any]:
        """The token's claims once its signature (by a realm key, an asymmetric algorithm), issuer, expiry
        and, for the ID token, audience hold."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise OidcRefused("invalid_token", f"the {what} is not a JWT") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise OidcRefused("invalid_token", f"the {what} is not signed with an accepted algorithm")
        if not isinstance(kid, str) or not kid:
            raise OidcRefused("invalid_token", f"the {what} names no signing key (kid)")
        key = await self._signing_key(kid, alg, what)
        required = ["exp", "iat", "iss", "sub"] + (["aud"] if audience is not None else [])
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": required, "verify_aud": audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise OidcRefused("invalid_token", f"the {what} {why_invalid(exc)}") from exc

    async def _signing_key(self, kid: str, alg: str, what: str) -> jwt.PyJWK:
        """The realm's key `kid` for `alg`; the JWKS is read again once when it does not list `kid`."""
        keys = self._keys if self._keys is not None else await self._read_keys(None)
        if kid not in keys:
            keys = await self._read_keys(keys)
        jwk = keys.get(kid)
        if jwk is None:
            raise OidcRefused("invalid_token", f"the {what} is signed by a key the realm does not publish")
        if jwk.get("alg", alg) != alg:
            raise OidcRefused("invalid_token", f"the {what}'s algorithm is not its key's")
        try:
            return jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError as exc:
            raise OidcRefused("invalid_token", f"the realm's key for the {what} is unusable") from exc

    # -- what the realm publishes ----------------------------------------------------------------------

    async def _discover(self) -> Discovery:
        if self._discovery is not None:
            return self._discovery
        async with self._discovery_lock:  # one read, however many sign-ins start at once
            if self._discovery is None:
                self._discovery = await self._read_discovery()
            return self._discovery

    async def _read_discovery(self) -> Discovery:
        url = f"{self._realm_url}/.well-known/openid-configuration"
        answer = await self._request("GET", url, "discovery")
        if answer.status == 404:
            raise OidcRefused("unreachable", f"no realm {self._realm!r} at keycloak_url (discovery answered 404)")
        doc = self._json_object(answer, "discovery")
        fields = {}
        for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(name)
            if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                raise OidcRefused("unreachable", f"the realm's discovery document has no usable {name}")
            fields[name] = value
        return Discovery(**fields)

    async def _read_keys(self, seen: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
        """The realm's signing keys by kid. `seen` is the set the caller found wanting: when another task
        replaced it meanwhile, that newer set is returned without another read."""
        async with self._keys_lock:
            if self._keys is not None and self._keys is not seen:
                return self._keys
            discovery = await self._discover()
            answer = await self._request("GET", discovery.jwks_uri, "JWKS")
            self.jwks_reads += 1
            doc = self._json_object(answer, "JWKS")
            listed = doc.get("keys")
            keys = {
                jwk["kid"]: jwk
                for jwk in (listed if isinstance(listed, list) else [])
                if isinstance(jwk, dict)
                and isinstance(jwk.get("kid"), str)
                and jwk.get("kty") in KEY_TYPES
                and jwk.get("use", "sig") == "sig"  # Keycloak lists its encryption keys (RSA-OAEP) too
            }
            self._keys = keys
            return keys

    # -- transport -------------------------------------------------------------------------------------

    async def _request(self, method: str, url: str, what: str, *, form: Mapping[str, str] | None = None) -> Answer:
        try:
            return await self._http.request(method, url, headers={"Accept": "application/json"}, form=form)
        except TransportFailure as exc:
            raise OidcRefused("unreachable", f"Keycloak's {what} cannot be reached ({exc.kind}: {exc.detail})") from exc

    @staticmethod
    def _json_object(answer: Answer, what: str) -> dict[str, Any]:
        if answer.status != 200:
            raise OidcRefused("unreachable", f"Keycloak's {what} answered {answer.status}")
        if answer.doc is NOT_JSON or not isinstance(answer.doc, dict):
            raise OidcRefused("unreachable", f"Keycloak's {what} answer is not a JSON object (wrong keycloak_url?)")
        return answer.doc


def oidc_login(settings: Settings, session: aiohttp.ClientSession) -> OidcLogin | None:
    """The console's Keycloak sign-in from the settings; None when `console_oidc_client_id` is not set.
    `session` should verify TLS as the Admin API client's does (`ca_bundle`), outside the tenants' egress
    policy. Raises ConfigError for a client id without `keycloak_url`, or a malformed `console_role`:
    falling back to the admin token then would hide the mistake."""
    if not settings.console_oidc_client_id:
        return None
    if not settings.keycloak_url:
        raise ConfigError("console_oidc_client_id is set but keycloak_url is not: the console cannot reach Keycloak")
    secret = settings.console_oidc_client_secret
    return OidcLogin(
        session,
        settings.keycloak_url,
        settings.console_oidc_realm or settings.keycloak_auth_realm,
        settings.console_oidc_client_id,
        secret.get_secret_value() if secret is not None else None,
        settings.console_role,
        timeout_seconds=settings.http_timeout_seconds,
    )


def code_challenge(verifier: str) -> str:
    """PKCE S256: base64url (unpadded) of the verifier's SHA-256 (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def realm_roles(claims: Mapping[str, Any]) -> frozenset[str]:
    access = claims.get("realm_access")
    roles = access.get("roles") if isinstance(access, dict) else None
    return frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else frozenset()


def client_roles(claims: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    resources = claims.get("resource_access")
    if not isinstance(resources, dict):
        return {}
    found: dict[str, frozenset[str]] = {}
    for client, access in resources.items():
        roles = access.get("roles") if isinstance(access, dict) else None
        if isinstance(client, str) and isinstance(roles, list):
            found[client] = frozenset(r for r in roles if isinstance(r, str))
    return found


def all_roles(claims: Mapping[str, Any]) -> frozenset[str]:
    """Realm roles by name, client roles as `<client id>:<role>`."""
    return realm_roles(claims) | frozenset(
        f"{client}:{role}" for client, roles in client_roles(claims).items() for role in roles
    )


def why_invalid(exc: jwt.PyJWTError) -> str:
    """PyJWT's failure in an operator's words (never the token)."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "has expired (or this replica's clock is ahead)"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "was issued to another client (aud)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "was issued by another issuer than the realm's discovery names (iss)"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "has a bad signature"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"lacks the {exc.claim} claim"
    if isinstance(exc, jwt.ImmatureSignatureError | jwt.InvalidIssuedAtError):
        return "is not valid yet (or this replica's clock is behind)"
    return "is malformed"


def oauth_error(doc: object) -> str:
    """The token endpoint's `error` and `error_description`, short (they never hold the code)."""
    if not isinstance(doc, dict):
        return ""
    return ": ".join(str(doc[key]) for key in ("error", "error_description") if isinstance(doc.get(key), str))[:200]
