"""Keycloak administration as the master admin (password grant on admin-cli): realms, a service-account
client for the service, users, event settings. For the end-to-end tests and the backfill bench."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from devkit.service import make_settings
from service.settings import Settings

TEST_LISTENER = "outbound-scim-test-kafka"  # scripts/keycloak/listener: writes the SnuK87 format


@dataclass(frozen=True)
class ScimDownstreamRealm:
    """A realm whose SCIM API (Keycloak 26.7+, feature scim-api) is a downstream, and the confidential
    client whose client-credentials tokens it accepts."""

    realm: str
    base_url: str  # {keycloak}/realms/{realm}/scim/v2
    token_url: str
    client_id: str
    client_secret: str
    client_uuid: str


@dataclass(frozen=True)
class ServiceAccount:
    realm: str
    client_id: str
    client_secret: str
    client_uuid: str
    user_id: str


@dataclass(frozen=True)
class KafkaListener:
    """A Keycloak's Kafka event listener: the provider id a realm lists to enable it, and the topics it
    sends user and admin events to (the service's source topics)."""

    provider_id: str
    events_topic: str
    admin_events_topic: str


class MasterAdmin:
    """Just enough of the Admin API to set up tests. Admin-cli tokens live 60 s: refreshed at 30 s."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, user: str, password: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._user = user
        self._password = password
        self._token = ""
        self._token_at = 0.0

    @property
    def url(self) -> str:
        """The Keycloak this admin administers."""
        return self._base

    async def _headers(self) -> dict[str, str]:
        if time.monotonic() - self._token_at > 30:
            async with self._session.post(
                f"{self._base}/realms/master/protocol/openid-connect/token",
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": self._user,
                    "password": self._password,
                },
            ) as response:
                response.raise_for_status()
                self._token = (await response.json())["access_token"]
                self._token_at = time.monotonic()
        return {"Authorization": f"Bearer {self._token}"}

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any, str | None]:
        """(status, JSON body or None, Location header) of one admin call under /admin/realms."""
        async with self._session.request(
            method, f"{self._base}/admin/realms{path}", json=body, params=params, headers=await self._headers()
        ) as response:
            raw = await response.read()
            doc = await response.json(content_type=None) if raw else None
            return response.status, doc, response.headers.get("Location")

    async def ok(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        status, doc, location = await self.call(method, path, body, **params)
        if status >= 300:
            raise AssertionError(f"{method} {path} -> {status} {doc}")
        return location.rsplit("/", 1)[1] if location and doc is None else doc

    async def create_realm(self, name: str) -> str:
        """Creates an enabled realm; returns its internal id (what plugins without realmName send)."""
        await self.ok("POST", "", {"realm": name, "enabled": True})
        return str((await self.ok("GET", f"/{name}"))["id"])

    async def create_service_account(
        self, realm: str, client_id: str, roles: tuple[str, ...] = ("view-users", "query-users")
    ) -> ServiceAccount:
        """A confidential client with a service account holding realm-management roles."""
        secret = f"{client_id}-secret"
        client_uuid = await self.ok(
            "POST",
            f"/{realm}/clients",
            {
                "clientId": client_id,
                "publicClient": False,
                "secret": secret,
                "serviceAccountsEnabled": True,
                "standardFlowEnabled": False,
                "directAccessGrantsEnabled": False,
            },
        )
        user = await self.ok("GET", f"/{realm}/clients/{client_uuid}/service-account-user")
        account = ServiceAccount(realm, client_id, secret, client_uuid, user["id"])
        if roles:
            await self.grant(account, *roles)
        return account

    async def grant(self, account: ServiceAccount, *roles: str) -> None:
        realm = account.realm
        management = (await self.ok("GET", f"/{realm}/clients", clientId="realm-management"))[0]["id"]
        wanted = [r for r in await self.ok("GET", f"/{realm}/clients/{management}/roles") if r["name"] in roles]
        assert len(wanted) == len(roles), f"missing roles among {roles}"
        await self.ok("POST", f"/{realm}/users/{account.user_id}/role-mappings/clients/{management}", wanted)

    async def grant_on_realm(self, account: ServiceAccount, realm: str, *roles: str) -> None:
        """Roles on another realm for an account of the master realm: they live on master's `<realm>-realm`
        client, as for one service account that reads many realms."""
        assert account.realm == "master"
        management = (await self.ok("GET", "/master/clients", clientId=f"{realm}-realm"))[0]["id"]
        wanted = [r for r in await self.ok("GET", f"/master/clients/{management}/roles") if r["name"] in roles]
        assert len(wanted) == len(roles), f"missing roles among {roles}"
        await self.ok("POST", f"/master/users/{account.user_id}/role-mappings/clients/{management}", wanted)

    async def create_scim_downstream(
        self, realm: str, client_id: str = "outbound-scim", *, token_lifespan_seconds: int | None = None
    ) -> ScimDownstreamRealm:
        """A new realm with its SCIM API on (`scimApiEnabled`), and a confidential client with a service
        account holding manage-users, view-users and query-users, whose tokens carry the SCIM base URL as
        their audience (what the SCIM API checks). `token_lifespan_seconds` shortens its access tokens
        (the client attribute access.token.lifespan; the realm's default is 300 s)."""
        await self.create_realm(realm)
        await self.ok("PUT", f"/{realm}", {"realm": realm, "scimApiEnabled": True})
        base_url = f"{self._base}/realms/{realm}/scim/v2"
        account = await self.create_service_account(realm, client_id, ("manage-users", "view-users", "query-users"))
        await self.ok(
            "POST",
            f"/{realm}/clients/{account.client_uuid}/protocol-mappers/models",
            {
                "name": "scim-audience",
                "protocol": "openid-connect",
                "protocolMapper": "oidc-audience-mapper",
                "config": {
                    "included.custom.audience": base_url,
                    "access.token.claim": "true",
                    "id.token.claim": "false",
                    "introspection.token.claim": "true",
                },
            },
        )
        if token_lifespan_seconds is not None:
            await self.set_token_lifespan(realm, account.client_uuid, token_lifespan_seconds)
        token_url = f"{self._base}/realms/{realm}/protocol/openid-connect/token"
        return ScimDownstreamRealm(realm, base_url, token_url, client_id, account.client_secret, account.client_uuid)

    async def set_token_lifespan(self, realm: str, client_uuid: str, seconds: int) -> None:
        """The client's access token lifespan (attribute access.token.lifespan; GET then PUT)."""
        client = await self.ok("GET", f"/{realm}/clients/{client_uuid}")
        client.setdefault("attributes", {})["access.token.lifespan"] = str(seconds)
        await self.ok("PUT", f"/{realm}/clients/{client_uuid}", client)

    async def create_user(self, realm: str, rep: dict[str, Any]) -> str:
        """Creates a user; returns its id."""
        return str(await self.ok("POST", f"/{realm}/users", rep))

    async def enable_listener(
        self, realm: str, listener: str = TEST_LISTENER, *, representation: bool = True
    ) -> tuple[int, Any]:
        """GET then PUT events/config (the PUT replaces the listener list); 204 means it loaded,
        400 "Unknown event listener" that its provider jar did not. `representation` is the realm's
        "Include representation" switch (adminEventsDetailsEnabled)."""
        config = await self.ok("GET", f"/{realm}/events/config")
        listeners = [*config.get("eventsListeners", []), listener]
        config.update(
            eventsListeners=sorted(set(listeners)),
            eventsEnabled=True,
            adminEventsEnabled=True,
            adminEventsDetailsEnabled=representation,
        )
        status, doc, _ = await self.call("PUT", f"/{realm}/events/config", config)
        return status, doc


def keycloak_settings(kafka_bootstrap: str, keycloak_url: str, account: ServiceAccount, **overrides: Any) -> Settings:
    """Service settings (fresh topics) reading Keycloak as `account`, from the realm the account lives in."""
    return make_settings(
        kafka_bootstrap,
        keycloak_url=keycloak_url,
        keycloak_auth_realm=account.realm,
        keycloak_client_id=account.client_id,
        keycloak_client_secret=account.client_secret,
        **overrides,
    )


async def realm_with_listener(
    admin: MasterAdmin,
    listener: KafkaListener,
    kafka_bootstrap: str,
    realm: str,
    *,
    account_roles: tuple[str, ...] | None = ("view-users", "query-users"),
    users: Iterable[dict[str, Any]] = (),
    **overrides: Any,
) -> Settings:
    """Creates `realm` with `listener` enabled (representations included); returns service settings (fresh
    internal topics) whose source topics are the listener's. With `account_roles`, a service account
    `outbound-scim` holding them, which the settings read Keycloak as; with None, no account: event-carried
    mode. `users` are made before the listener is enabled, so none of their creations is an event."""
    await admin.create_realm(realm)
    account = None
    if account_roles is not None:
        account = await admin.create_service_account(realm, "outbound-scim", account_roles)
    for user in users:
        await admin.create_user(realm, user)
    status, doc = await admin.enable_listener(realm, listener.provider_id)
    assert status == 204, f"enabling {listener.provider_id} on {realm}: {status} {doc}"
    topics = {"events_topic": listener.events_topic, "admin_events_topic": listener.admin_events_topic}
    if account is None:
        return make_settings(kafka_bootstrap, **topics, **overrides)
    return keycloak_settings(kafka_bootstrap, admin.url, account, **topics, **overrides)
