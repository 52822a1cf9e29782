"""Keycloak 26.7's own SCIM API as a real downstream, reached with OAuth2 client credentials.

The session's one Keycloak (26.7.3, started with --features=scim-api) plays both parts: a source realm
sends its admin events through the test Kafka listener and the real broker to the service, and another
realm of the same Keycloak receives the users through its SCIM API (`scimApiEnabled`, a confidential
client whose service account holds manage-users / view-users / query-users, an audience mapper naming the
SCIM base URL). The tenant is enabled with `auth` oauth2_client_credentials and the `keycloak` preset.

What this Keycloak does as a downstream, as observed here: a filter on externalId finds nothing, and
externalId is echoed by the create but answered by no later read (so the preset looks accounts up by
userName); ServiceProviderConfig answers 401 without a token; PATCH answers 200 with the resource.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from devkit.keycloak import ScimDownstreamRealm
from service.app import Service
from tests.conftest import SCIM_TOKEN
from tests.faults import FaultProxy
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, realm_with_listener
from tests.support import (
    Api,
    ScimServer,
    by_external_id,
    downstream_users,
    running_service,
    wait_until,
)

pytestmark = pytest.mark.integration

BOUND = 20.0  # seconds for a change to show in the downstream realm
TOKEN_LIFESPAN = 15  # seconds: the downstream client's access tokens (the realm default is 300)


@dataclass
class KeycloakDownstream:
    """A source realm feeding the service, and a downstream realm reached through its SCIM API."""

    keycloak: RealKeycloak
    admin: MasterAdmin
    http: aiohttp.ClientSession
    source: str
    target: ScimDownstreamRealm
    service: Service
    api: Api

    def oauth2(self, secret: str | None = None) -> dict[str, Any]:
        return {
            "type": "oauth2_client_credentials",
            "token_url": self.target.token_url,
            "client_id": self.target.client_id,
            "client_secret": secret or self.target.client_secret,
        }

    async def enable(self, secret: str | None = None) -> tuple[int, Any]:
        body = {"base_url": self.target.base_url, "auth": self.oauth2(secret), "preset": "keycloak"}
        return await self.api.call("PUT", f"/tenants/{self.source}", body)

    async def token(self) -> str:
        """An access token of the downstream's client, as the service would get one."""
        pair = base64.b64encode(f"{self.target.client_id}:{self.target.client_secret}".encode()).decode()
        async with self.http.post(
            self.target.token_url, data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {pair}"}
        ) as response:
            assert response.status == 200, await response.text()
            return str((await response.json())["access_token"])

    async def scim_status(self, token: str) -> int:
        async with self.http.get(
            f"{self.target.base_url}/Users", params={"count": "1"}, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            return response.status

    async def downstream(self, user_name: str) -> dict[str, Any] | None:
        """The user in the downstream realm, read back through its SCIM API."""
        async with self.http.get(
            f"{self.target.base_url}/Users",
            params={"filter": f'userName eq "{user_name}"'},
            headers={"Authorization": f"Bearer {await self.token()}"},
        ) as response:
            assert response.status == 200, await response.text()
            found = (await response.json()).get("Resources") or []
        assert len(found) <= 1, f"several downstream accounts for {user_name}: {found}"
        return found[0] if found else None

    async def reaches(self, user_name: str, **expected: Any) -> dict[str, Any]:
        """Waits until the downstream account of `user_name` shows every `expected` value."""
        seen: dict[str, dict[str, Any] | None] = {}

        async def shown() -> bool:
            seen["user"] = user = await self.downstream(user_name)
            return user is not None and all(_value(user, k) == v for k, v in expected.items())

        try:
            await wait_until(shown, timeout=BOUND, what=f"{user_name} downstream with {expected}")
        except AssertionError:
            raise AssertionError(f"{user_name}: expected {expected}, last seen {seen.get('user')}") from None
        user = seen["user"]
        assert user is not None
        return user

    def metric(self, name: str, **labels: str) -> float:
        return (
            self.service.metrics.registry.get_sample_value(
                name, {"tenant": self.source, "downstream": "default", **labels}
            )
            or 0.0
        )

    async def tenant_status(self) -> str:
        status, body = await self.api.call("GET", f"/tenants/{self.source}")
        assert status == 200, body
        return str(body["status"])


def _issued_at(token: str) -> int:
    """The `iat` claim of a JWT access token (read, not verified: the test's own token)."""
    payload = token.split(".")[1]
    return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["iat"])


def _value(user: dict[str, Any], key: str) -> Any:
    if key in ("givenName", "familyName"):
        return (user.get("name") or {}).get(key)
    if key == "email":
        emails = user.get("emails") or []
        return emails[0].get("value") if emails else None
    return user.get(key)


@pytest.fixture
async def kc(keycloak: RealKeycloak, kafka_bootstrap: str) -> AsyncIterator[KeycloakDownstream]:
    listener = keycloak.kafka_listener()
    run = uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as http:
        admin = MasterAdmin(http, keycloak.url, keycloak.admin_user, keycloak.admin_password)
        source = f"src-{run}"
        settings = await realm_with_listener(admin, listener, kafka_bootstrap, source, account_roles=None)
        target = await admin.create_scim_downstream(f"scim-{run}", token_lifespan_seconds=TOKEN_LIFESPAN)
        async with running_service(settings) as service:
            assert service.api_port is not None
            yield KeycloakDownstream(keycloak, admin, http, source, target, service, Api(service.api_port))


async def test_a_wrong_client_secret_is_refused_as_unauthorized(kc: KeycloakDownstream) -> None:
    """An enable whose client secret the token URL refuses answers 422 `unauthorized`, names no secret,
    and stores nothing."""
    status, body = await kc.enable(secret="not-the-secret")
    assert status == 422, body
    assert body["error"] == "unauthorized", body
    assert "not-the-secret" not in str(body)
    assert (await kc.api.call("GET", f"/tenants/{kc.source}"))[0] == 404


async def test_interleaved_users_end_right_in_the_keycloak_downstream(kc: KeycloakDownstream) -> None:
    """Creates, updates, disables and enables of two users, interleaved, flow from the source realm
    through the broker into the downstream realm's SCIM API; each user ends as Keycloak last said."""
    status, body = await kc.enable()
    assert status == 201, body
    assert body["auth"] == {
        "type": "oauth2_client_credentials",
        "endpoint": kc.target.token_url,
        "client_id": "outbound-scim",
    }
    assert body["user_lookup"] == "userName" and body["preset"] == "keycloak"
    assert kc.target.client_secret not in str(body)
    admin, realm = kc.admin, kc.source

    ada = await admin.create_user(
        realm,
        {"username": "ada", "firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com", "enabled": True},
    )
    bob = await admin.create_user(
        realm, {"username": "bob", "firstName": "Bob", "lastName": "Byron", "email": "bob@example.com", "enabled": True}
    )
    await admin.ok("PUT", f"/{realm}/users/{ada}", {"lastName": "King", "email": "ada.king@example.com"})
    await admin.ok("PUT", f"/{realm}/users/{bob}", {"enabled": False})
    await admin.ok("PUT", f"/{realm}/users/{ada}", {"enabled": False})
    await admin.ok("PUT", f"/{realm}/users/{bob}", {"firstName": "Robert"})
    await admin.ok("PUT", f"/{realm}/users/{bob}", {"enabled": True})

    ada_downstream = await kc.reaches(
        "ada", givenName="Ada", familyName="King", email="ada.king@example.com", active=False
    )
    bob_downstream = await kc.reaches(
        "bob", givenName="Robert", familyName="Byron", email="bob@example.com", active=True
    )
    # ... as the downstream realm's Admin API sees them too
    ada_user = await admin.ok("GET", f"/{kc.target.realm}/users/{ada_downstream['id']}")
    bob_user = await admin.ok("GET", f"/{kc.target.realm}/users/{bob_downstream['id']}")
    assert (ada_user["username"], ada_user["lastName"], ada_user["enabled"]) == ("ada", "King", False)
    assert (bob_user["username"], bob_user["firstName"], bob_user["enabled"]) == ("bob", "Robert", True)
    assert await kc.tenant_status() == "enabled"
    assert kc.metric("outbound_scim_downstream_tokens_total", result="refused") == 0


async def test_an_expired_token_loses_no_change(kc: KeycloakDownstream) -> None:
    """Tokens live TOKEN_LIFESPAN seconds: a change made after the service's first token expired still
    arrives (a fresh token is fetched), and a change made after every earlier token was revoked (the
    realm's not-before) arrives too (the 401 fetches one fresh token); the tenant stays enabled."""
    status, body = await kc.enable()
    assert status == 201, body
    admin, realm = kc.admin, kc.source
    cyd = await admin.create_user(
        realm, {"username": "cyd", "firstName": "Cyd", "lastName": "One", "email": "cyd@example.com", "enabled": True}
    )
    await kc.reaches("cyd", familyName="One", active=True)
    fetched = kc.metric("outbound_scim_downstream_tokens_total", result="fetched")
    assert fetched >= 1

    # Every token fetched up to now has expired once one fetched after them is refused.
    witness = await kc.token()

    async def witness_expired() -> bool:
        return await kc.scim_status(witness) == 401

    await wait_until(witness_expired, timeout=TOKEN_LIFESPAN * 3, what="the first tokens to expire")
    await admin.ok("PUT", f"/{realm}/users/{cyd}", {"lastName": "Two"})
    await kc.reaches("cyd", familyName="Two", active=True)
    assert kc.metric("outbound_scim_downstream_tokens_total", result="fetched") > fetched

    # Revoked before it expires: the downstream answers 401 to the cached token, once.
    fetched = kc.metric("outbound_scim_downstream_tokens_total", result="fetched")
    refused_before = kc.metric("outbound_scim_scim_requests_total", method="PATCH", status_class="4xx")
    # Not-before one second after a token fetched now: it and every earlier token (the service's cached
    # one) are refused from then on; tokens fetched afterwards are good.
    revoked = await kc.token()
    not_before = _issued_at(revoked) + 1

    async def clock_past_not_before() -> bool:
        return time.time() >= not_before

    await wait_until(clock_past_not_before, timeout=3, what="the not-before second")
    await admin.ok("PUT", f"/{kc.target.realm}", {"realm": kc.target.realm, "notBefore": not_before})

    async def revocation_in_effect() -> bool:
        return await kc.scim_status(revoked) == 401

    await wait_until(revocation_in_effect, timeout=10, what="the not-before revocation")
    await admin.ok("PUT", f"/{realm}/users/{cyd}", {"enabled": False})
    await kc.reaches("cyd", familyName="Two", active=False)
    assert kc.metric("outbound_scim_downstream_tokens_total", result="fetched") > fetched
    assert kc.metric("outbound_scim_scim_requests_total", method="PATCH", status_class="4xx") > refused_before
    assert await kc.tenant_status() == "enabled"
    assert (await kc.api.call("GET", f"/tenants/{realm}/parked"))[1] == {"parked": []}


async def test_a_run_of_several_token_lifetimes_meets_no_401(kc: KeycloakDownstream) -> None:
    """Changes keep coming for four token lifetimes (TOKEN_LIFESPAN each): every one arrives, a token is
    fetched again before each expires (at least one per lifetime), and no request of the service is
    answered 401 or any other 4xx, so nothing reaches the breaker (closed throughout) or parking."""
    status, body = await kc.enable()
    assert status == 201, body
    admin, realm = kc.admin, kc.source
    dee = await admin.create_user(
        realm, {"username": "dee", "firstName": "Dee", "lastName": "v0", "email": "dee@example.com", "enabled": True}
    )
    await kc.reaches("dee", familyName="v0")
    fetched = kc.metric("outbound_scim_downstream_tokens_total", result="fetched")
    started = time.monotonic()
    version = 0
    while time.monotonic() - started < TOKEN_LIFESPAN * 4:
        version += 1
        await admin.ok("PUT", f"/{realm}/users/{dee}", {"lastName": f"v{version}"})
        await kc.reaches("dee", familyName=f"v{version}")
        assert kc.metric("outbound_scim_circuit_state") == 0
    assert version >= 4
    assert kc.metric("outbound_scim_downstream_tokens_total", result="fetched") >= fetched + 4
    assert kc.metric("outbound_scim_downstream_tokens_total", result="refused") == 0
    for method in ("GET", "POST", "PATCH", "PUT"):
        assert kc.metric("outbound_scim_scim_requests_total", method=method, status_class="4xx") == 0, method
    assert await kc.tenant_status() == "enabled"
    assert (await kc.api.call("GET", f"/tenants/{realm}/parked"))[1] == {"parked": []}


async def test_a_realm_reaches_scim2_server_and_keycloak_as_two_downstreams(
    kc: KeycloakDownstream, scim_server: ScimServer
) -> None:
    """The source realm has two downstream apps: `default`, a scim2-server space reached with a bearer token
    (through a proxy that can take it down), and `keycloak`, the other realm's SCIM API reached over OAuth2
    with the keycloak preset. Interleaved changes of two users reach both; with scim2-server down, a
    further change still reaches Keycloak, and scim2-server gets it once it is back; each app's changes
    are counted under its own `downstream` label."""
    proxy = await FaultProxy(f"http://127.0.0.1:{scim_server.port}").start()
    try:
        space = f"{kc.source}-{uuid.uuid4().hex[:6]}"
        status, body = await kc.api.enable(kc.source, proxy.base_url(space), SCIM_TOKEN)
        assert status == 201, body
        app = {"base_url": kc.target.base_url, "auth": kc.oauth2(), "preset": "keycloak"}
        status, body = await kc.api.call("PUT", f"/tenants/{kc.source}/downstreams/keycloak", app)
        assert (status, body["downstream"], body["auth"]["type"]) == (201, "keycloak", "oauth2_client_credentials")
        admin, realm, scim2 = kc.admin, kc.source, scim_server.base_url(space)

        async def at_scim2(user_id: str, **expected: Any) -> None:
            async def shown() -> bool:
                found = by_external_id(await downstream_users(scim2, SCIM_TOKEN)).get(user_id, [])
                assert len(found) <= 1, found
                return bool(found) and all(_value(found[0], k) == v for k, v in expected.items())

            await wait_until(shown, timeout=60, what=f"{user_id} at scim2-server with {expected}")

        # stage 1 (a child process) learns of the second app from the tenants topic: a first user that
        # reaches Keycloak says it has
        probe = await admin.create_user(
            realm,
            {"username": "probe", "firstName": "P", "lastName": "Robe", "email": "probe@example.com", "enabled": True},
        )
        await kc.reaches("probe", active=True)
        await at_scim2(probe, userName="probe")

        ada = await admin.create_user(
            realm,
            {
                "username": "ada",
                "firstName": "Ada",
                "lastName": "Lovelace",
                "email": "ada@example.com",
                "enabled": True,
            },
        )
        bob = await admin.create_user(
            realm,
            {"username": "bob", "firstName": "Bob", "lastName": "Byron", "email": "bob@example.com", "enabled": True},
        )
        await admin.ok("PUT", f"/{realm}/users/{ada}", {"lastName": "King"})
        await admin.ok("PUT", f"/{realm}/users/{bob}", {"enabled": False})
        await admin.ok("PUT", f"/{realm}/users/{bob}", {"firstName": "Robert"})
        await kc.reaches("ada", familyName="King", active=True)
        await kc.reaches("bob", givenName="Robert", active=False)
        await at_scim2(ada, familyName="King", active=True)
        await at_scim2(bob, givenName="Robert", active=False)

        proxy.down = True
        await admin.ok("PUT", f"/{realm}/users/{ada}", {"lastName": "Queen"})
        await kc.reaches("ada", familyName="Queen", active=True)  # scim2-server is down meanwhile
        proxy.down = False
        await at_scim2(ada, familyName="Queen", active=True)
        for downstream in ("default", "keycloak"):  # every change, once under each app, whatever its outcome
            counted = sum(
                sample.value
                for family in kc.service.metrics.changes.collect()
                for sample in family.samples
                if sample.name.endswith("_total")
                and (sample.labels["tenant"], sample.labels["downstream"]) == (realm, downstream)
            )
            assert counted >= 7, downstream  # 3 creates, 4 updates
        assert kc.metric("outbound_scim_downstream_tokens_total", result="refused") == 0
    finally:
        await proxy.stop()
