"""The Admin API client against a real Keycloak (see conftest.py): a realm of 25 users read through a
service account holding realm-management view-users and query-users, as the service will run."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from service.keycloak_admin import KeycloakAdminClient, KeycloakNotFound, KeycloakUnauthorized, user_attributes
from service.retry import RetryPolicy
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, ServiceAccount

USERS = 25
RETRY = RetryPolicy(attempts=3, base_seconds=0.1, max_seconds=1.0)


@dataclass
class Realm:
    name: str
    id: str
    account: ServiceAccount
    users: dict[str, dict[str, object]]  # user id -> the attributes it was created with


@pytest.fixture(scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(scope="module")
async def admin(keycloak: RealKeycloak, session: aiohttp.ClientSession) -> MasterAdmin:
    return MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)


@pytest.fixture(scope="module")
async def realm(admin: MasterAdmin) -> Realm:
    name = f"kc-{uuid.uuid4().hex[:8]}"
    realm_id = await admin.create_realm(name)
    account = await admin.create_service_account(name, "outbound-scim")
    users: dict[str, dict[str, object]] = {}

    async def create(i: int) -> None:
        attrs: dict[str, object] = {
            "userName": f"user{i:02d}",
            "givenName": f"Given{i:02d}",
            "familyName": None if i % 5 == 0 else f"Family{i:02d}",
            "email": f"user{i:02d}@example.com",
            "active": i % 4 != 0,
        }
        rep = {
            "username": attrs["userName"],
            "firstName": attrs["givenName"],
            "email": attrs["email"],
            "enabled": attrs["active"],
        }
        if attrs["familyName"]:
            rep["lastName"] = attrs["familyName"]
        users[await admin.create_user(name, rep)] = attrs

    await asyncio.gather(*(create(i) for i in range(USERS)))
    return Realm(name, realm_id, account, users)


def reader(
    keycloak: RealKeycloak,
    session: aiohttp.ClientSession,
    realm: Realm,
    clock: Callable[[], float] = time.monotonic,
) -> KeycloakAdminClient:
    return KeycloakAdminClient(
        session,
        keycloak.url,
        realm.account.client_id,
        realm.account.client_secret,
        auth_realm=realm.name,
        retry=RETRY,
        clock=clock,
    )


async def test_get_user(keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm) -> None:
    """Each created user reads back, and maps to the attributes it was created with."""
    kc = reader(keycloak, session, realm)
    for user_id, attrs in realm.users.items():
        rep = await kc.get_user(realm.name, user_id)
        assert rep is not None
        assert rep["id"] == user_id
        assert user_attributes(rep) == attrs


async def test_iter_users_pages_through_all_25(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm
) -> None:
    """Page size 10 over 25 users: pages of 10, 10, 5, every user once, the service account not among them."""
    kc = reader(keycloak, session, realm)
    users = [u async for u in kc.iter_users(realm.name, page_size=10)]
    assert sorted(u["id"] for u in users) == sorted(realm.users)
    assert {u["id"]: user_attributes(u) for u in users} == realm.users
    assert kc.requests_sent == 1 + 3  # the token, then three pages
    brief = [u async for u in kc.iter_users(realm.name, page_size=10, brief=True)]
    assert {u["id"]: user_attributes(u) for u in brief} == realm.users


async def test_count_users(keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm) -> None:
    """users/count counts the realm's users, not the service account."""
    assert await reader(keycloak, session, realm).count_users(realm.name) == USERS


async def test_absent_user_is_none(keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm) -> None:
    """A user id Keycloak does not know, including federated-looking and slash-carrying ids, is None."""
    kc = reader(keycloak, session, realm)
    for user_id in (str(uuid.uuid4()), "f:ldap-1:jdoe", "a/b"):
        assert await kc.get_user(realm.name, user_id) is None


async def test_absent_realm_raises_not_none(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm
) -> None:
    """A realm that does not exist is an error, never "the user is gone"."""
    with pytest.raises(KeycloakNotFound) as caught:
        await reader(keycloak, session, realm).get_user("no-such-realm", str(uuid.uuid4()))
    assert not caught.value.user_missing


async def test_another_realm_is_forbidden(keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm) -> None:
    """The service account's roles stop at its realm: 403 -> KeycloakUnauthorized."""
    with pytest.raises(KeycloakUnauthorized) as caught:
        await reader(keycloak, session, realm).count_users("master")
    assert caught.value.status == 403


async def test_wrong_secret_is_unauthorized(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm
) -> None:
    """The token endpoint refuses a wrong secret; not retried."""
    kc = KeycloakAdminClient(
        session, keycloak.url, realm.account.client_id, "wrong", auth_realm=realm.name, retry=RETRY
    )
    with pytest.raises(KeycloakUnauthorized, match="unauthorized_client"):
        await kc.count_users(realm.name)
    assert kc.requests_sent == 1


async def test_realm_names(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm, admin: MasterAdmin
) -> None:
    """Without view-realm Keycloak lists only names (nothing to map); with it, realm id -> name."""
    account = await admin.create_service_account(realm.name, "realm-reader", roles=("view-users",))
    kc = KeycloakAdminClient(session, keycloak.url, account.client_id, account.client_secret, auth_realm=realm.name)
    assert await kc.realm_names() == {}
    await admin.grant(account, "view-realm")
    fresh = KeycloakAdminClient(session, keycloak.url, account.client_id, account.client_secret, auth_realm=realm.name)
    assert await fresh.realm_names() == {realm.id: realm.name}


class Clock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


async def test_token_is_cached_then_refreshed_before_expiry(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm
) -> None:
    """Keycloak's 300 s token serves every call until shortly before expiry, then a new grant."""
    clock = Clock()
    kc = reader(keycloak, session, realm, clock=clock)
    for _ in range(5):
        await kc.count_users(realm.name)
    assert kc.tokens_fetched == 1
    clock.now += 299
    assert await kc.count_users(realm.name) == USERS
    assert kc.tokens_fetched == 2


async def test_revoked_token_is_replaced_once(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, realm: Realm, admin: MasterAdmin
) -> None:
    """Tokens issued before the realm's not-before are refused (401): one new grant, and the call succeeds."""
    kc = reader(keycloak, session, realm)
    assert await kc.count_users(realm.name) == USERS
    await asyncio.sleep(1.01 - time.time() % 1)  # not-before has 1 s resolution: past the token's iat
    await admin.ok("PUT", f"/{realm.name}", {"notBefore": int(time.time())})
    assert await kc.count_users(realm.name) == USERS
    assert kc.tokens_fetched == 2
    assert kc.requests_sent == 2 + 3  # token, count; 401, token, count
