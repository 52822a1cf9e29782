"""One conformance suite, run against each real SCIM server the service is proven on.

The servers (docs/operations/downstream-compatibility.md):
- scim2-server: the session's, a static bearer token, no preset;
- Keycloak 26.7's SCIM API: a realm of the session's one Keycloak (--features=scim-api), OAuth2 client
  credentials with TOKEN_LIFESPAN-second access tokens, preset `keycloak`;
- django-scim2 0.23: a Django project of ours (scripts/django_scim), a static bearer token, preset
  `django-scim2`.

Every case runs through the real service and the real broker: the changes are published as the Keycloak
event plugin publishes them (tests/events.py) and the test reads the result back from the server's own
SCIM API. Where a server does something else, the case asserts what it does and says why. It lives
under tests/keycloak/ for the session's one Keycloak (the `keycloak` fixture is this folder's).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from devkit.keycloak import ScimDownstreamRealm
from service.app import Service
from service.domain import scim
from service.domain.mapping import ENTERPRISE_USER
from service.settings import Settings
from tests import events as ev
from tests.conftest import SCIM_TOKEN
from tests.django_scim import DjangoScim
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin
from tests.support import Api, Publisher, ScimServer, create_source_topics, make_settings, running_service, wait_until

pytestmark = pytest.mark.integration

SERVERS = ("scim2-server", "keycloak", "django-scim2")
OAUTH2_SERVERS = ("keycloak",)  # the servers reached with OAuth2 client credentials: the only tokens that expire
TOKEN_LIFESPAN = 15  # seconds: the Keycloak downstream client's access tokens
BOUND = 30.0  # seconds for a change to show downstream
ENTERPRISE_ATTRIBUTES = ("employeeNumber", "department", "organization", "manager")

E = ENTERPRISE_USER
# Keycloak user attributes mapped to the enterprise extension, with the built-in four (the list is the
# tenant's whole mapping). `manager` is sent as {"value": ...}.
ENTERPRISE_MAPPING = [
    {"source": "username", "target": "userName"},
    {"source": "email", "target": "emails"},
    {"source": "firstName", "target": "name.givenName"},
    {"source": "lastName", "target": "name.familyName"},
    *({"source": f"attributes.{name}", "target": f"{E}:{name}"} for name in ENTERPRISE_ATTRIBUTES),
]


@dataclass
class Downstream:
    """One server under test: how a tenant is enabled towards it and how its accounts are read back."""

    name: str
    base_url: str
    auth: dict[str, Any]
    preset: str | None
    bearer: Callable[[], Awaitable[str]]  # a token of the test's own, to read the server back
    http: aiohttp.ClientSession
    answers_external_id: bool = True  # whether reads answer the externalId a create stored
    admin_members: Callable[[str], Awaitable[list[str]]] | None = None  # members by the app's own API
    lacks_enterprise: str | None = None  # why an enable mapping to the enterprise extension is refused

    async def request(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {await self.bearer()}"}
        url = f"{self.base_url}/{path}"
        async with self.http.request(method, url, json=body, params=params, headers=headers) as response:
            return response.status, await response.json(content_type=None) if response.status != 204 else None

    async def account(self, user_name: str) -> dict[str, Any] | None:
        """The one account whose userName is `user_name` (each case uses names of its own)."""
        status, doc = await self.request("GET", "Users", filter=scim.eq_filter("userName", user_name))
        assert status == 200, doc
        found = [r for r in doc.get("Resources") or [] if str(r.get("userName")).casefold() == user_name.casefold()]
        assert len(found) <= 1, f"{self.name}: several accounts named {user_name}: {found}"
        return found[0] if found else None

    async def create(self, user_name: str, external_id: str, family_name: str, email: str) -> dict[str, Any]:
        """An account made directly on the server, as another client or an earlier run would have."""
        values = {"userName": user_name, "givenName": "Pre", "familyName": family_name, "email": email}
        body = scim.user_resource(external_id, values)  # with an email: Keycloak's SCIM API requires one
        status, doc = await self.request("POST", "Users", body)
        assert status == 201, doc
        return dict(doc)


@dataclass
class Suite:
    settings: Settings
    service: Service
    api: Api
    publisher: Publisher

    async def enable(self, downstream: Downstream, delete_policy: str = "ignore") -> str:
        """A tenant of its own towards `downstream`; returns its realm."""
        realm, _ = await self.enabled(downstream, delete_policy=delete_policy)
        return realm

    async def enabled(self, downstream: Downstream, **options: Any) -> tuple[str, dict[str, Any]]:
        """A tenant of its own towards `downstream` with `options`; returns its realm and the answer."""
        realm = f"conf-{uuid.uuid4().hex[:8]}"
        body: dict[str, Any] = {"base_url": downstream.base_url, "auth": downstream.auth, **options}
        if downstream.preset:
            body["preset"] = downstream.preset
        status, answer = await self.api.call("PUT", f"/tenants/{realm}", body)
        assert status == 201, answer
        return realm, answer

    async def send(self, *events: dict[str, Any]) -> None:
        await self.publisher.send_all(self.settings.admin_events_topic, events)

    def counter(self, name: str, **labels: str) -> float:
        """A metric's value; a `tenant` label alone means the realm's `default` downstream app."""
        if "tenant" in labels:
            labels.setdefault("downstream", "default")
        return self.service.metrics.registry.get_sample_value(name, labels) or 0.0


def _value(user: dict[str, Any], key: str) -> Any:
    if key in ("givenName", "familyName"):
        return (user.get("name") or {}).get(key)
    if key == "email":
        emails = user.get("emails") or []
        return emails[0].get("value") if emails else None
    return user.get(key)


async def reaches(downstream: Downstream, user_name: str, **expected: Any) -> dict[str, Any]:
    """Waits until the account of `user_name` shows every `expected` value; returns it."""
    seen: dict[str, dict[str, Any] | None] = {}

    async def shown() -> bool:
        seen["user"] = user = await downstream.account(user_name)
        return user is not None and all(_value(user, k) == v for k, v in expected.items())

    try:
        await wait_until(shown, timeout=BOUND, what=f"{user_name} on {downstream.name} with {expected}")
    except AssertionError:
        raise AssertionError(
            f"{downstream.name}: {user_name} expected {expected}, last seen {seen.get('user')}"
        ) from None
    user = seen["user"]
    assert user is not None
    return user


@pytest.fixture(scope="module")
async def suite(kafka_bootstrap: str) -> AsyncIterator[Suite]:
    """One service for the module; each case enables a tenant of its own."""
    settings = make_settings(kafka_bootstrap)
    await create_source_topics(settings)
    async with running_service(settings) as service, Publisher(kafka_bootstrap) as publisher:
        assert service.api_port is not None
        yield Suite(settings, service, Api(service.api_port), publisher)


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="module")
async def keycloak_admin(keycloak: RealKeycloak, http: aiohttp.ClientSession) -> MasterAdmin:
    return MasterAdmin(http, keycloak.url, keycloak.admin_user, keycloak.admin_password)


@pytest.fixture(scope="module")
async def keycloak_target(keycloak_admin: MasterAdmin) -> ScimDownstreamRealm:
    """A realm of the session's Keycloak with its SCIM API on, reached with short-lived OAuth2 tokens."""
    name = f"conf-{uuid.uuid4().hex[:8]}"
    return await keycloak_admin.create_scim_downstream(name, token_lifespan_seconds=TOKEN_LIFESPAN)


async def _client_credentials(http: aiohttp.ClientSession, target: ScimDownstreamRealm) -> str:
    pair = base64.b64encode(f"{target.client_id}:{target.client_secret}".encode()).decode()
    headers = {"Authorization": f"Basic {pair}"}
    async with http.post(target.token_url, data={"grant_type": "client_credentials"}, headers=headers) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["access_token"])


@pytest.fixture(params=SERVERS)
def downstream(request: pytest.FixtureRequest, http: aiohttp.ClientSession) -> Downstream:
    name: str = request.param
    if name == "scim2-server":
        server: ScimServer = request.getfixturevalue("scim_server")

        async def static() -> str:
            return SCIM_TOKEN

        base = server.base_url(f"conf-{uuid.uuid4().hex[:8]}")
        return Downstream(name, base, {"type": "bearer", "token": SCIM_TOKEN}, None, static, http)
    if name == "django-scim2":
        django: DjangoScim = request.getfixturevalue("django_scim")

        async def django_token() -> str:
            return django.token

        auth = {"type": "bearer", "token": django.token}
        # django-scim2 0.23's /Schemas lists the enterprise schema, its User resource type no extension.
        lacks = f"the downstream's User resource type has no extension {E}"
        return Downstream(name, django.scim_url, auth, "django-scim2", django_token, http, lacks_enterprise=lacks)
    target: ScimDownstreamRealm = request.getfixturevalue("keycloak_target")
    admin: MasterAdmin = request.getfixturevalue("keycloak_admin")

    async def fresh() -> str:
        return await _client_credentials(http, target)

    auth = {
        "type": "oauth2_client_credentials",
        "token_url": target.token_url,
        "client_id": target.client_id,
        "client_secret": target.client_secret,
    }

    # Keycloak 26.7.3 stores externalId but answers it only to the create: reads never show it.
    async def members(group_id: str) -> list[str]:
        """The group's members as the downstream realm's Admin API lists them (by SCIM id)."""
        return [str(u["id"]) for u in await admin.ok("GET", f"/{target.realm}/groups/{group_id}/members")]

    # Keycloak 26.7.3's User resource type lists the enterprise extension, its /Schemas not the schema.
    return Downstream(
        name,
        target.base_url,
        auth,
        "keycloak",
        fresh,
        http,
        answers_external_id=False,
        admin_members=members,
        lacks_enterprise=f"the downstream's /Schemas has no schema {E}",
    )


def _names(prefix: str) -> tuple[str, str]:
    """(Keycloak user id, username), unique to the case: the servers other than scim2-server are shared."""
    tag = uuid.uuid4().hex[:8]
    return f"kc-{prefix}-{tag}", f"{prefix}.{tag}"


async def test_create(suite: Suite, downstream: Downstream) -> None:
    """A created Keycloak user arrives with its userName, name, email and active; its externalId is the
    Keycloak id where the server answers externalId at all (Keycloak 26.7.3 answers it to no read)."""
    realm = await suite.enable(downstream)
    user_id, name = _names("ada")
    await suite.send(ev.create_user(realm, user_id, name, "Ada", "Lovelace", email=f"{name}@example.com"))
    user = await reaches(
        downstream, name, givenName="Ada", familyName="Lovelace", email=f"{name}@example.com", active=True
    )
    if downstream.answers_external_id:
        assert user["externalId"] == user_id
    else:
        assert not user.get("externalId"), user


async def test_rename(suite: Suite, downstream: Downstream) -> None:
    """A new last name reaches the account, as a PATCH, or as a PUT of the full user on django-scim2 (its
    preset: it answers 501 to the PATCH of a rename)."""
    realm = await suite.enable(downstream)
    user_id, name = _names("bob")
    await suite.send(ev.create_user(realm, user_id, name, "Bob", "Byron"))
    await reaches(downstream, name, familyName="Byron")
    await suite.send(ev.update_user(realm, user_id, lastName="King"))
    user = await reaches(downstream, name, givenName="Bob", familyName="King")
    status, tenant = await suite.api.call("GET", f"/tenants/{realm}")
    assert status == 200, tenant
    assert tenant["writes"] == ("put" if downstream.name == "django-scim2" else "patch"), tenant
    if downstream.name != "keycloak":  # Keycloak's SCIM API answers no displayName
        assert user["displayName"] == "Bob King"


async def test_email_change(suite: Suite, downstream: Downstream) -> None:
    """A changed email replaces the account's one email."""
    realm = await suite.enable(downstream)
    user_id, name = _names("cyd")
    await suite.send(ev.create_user(realm, user_id, name, "Cyd", "One", email=f"{name}@example.com"))
    await reaches(downstream, name, email=f"{name}@example.com")
    await suite.send(ev.update_user(realm, user_id, email=f"{name}@example.org"))
    user = await reaches(downstream, name, email=f"{name}@example.org")
    assert len(user["emails"]) == 1, user


async def test_disable_and_enable(suite: Suite, downstream: Downstream) -> None:
    """Disabling the Keycloak user makes the account inactive; enabling it again makes it active."""
    realm = await suite.enable(downstream)
    user_id, name = _names("dee")
    await suite.send(ev.create_user(realm, user_id, name, "Dee", "Two"))
    await reaches(downstream, name, active=True)
    await suite.send(ev.update_user(realm, user_id, enabled=False))
    await reaches(downstream, name, active=False)
    await suite.send(ev.update_user(realm, user_id, enabled=True))
    await reaches(downstream, name, active=True, familyName="Two")


@pytest.mark.parametrize("policy", ["ignore", "deactivate", "delete"])
async def test_delete_policy(suite: Suite, downstream: Downstream, policy: str) -> None:
    """A Keycloak deletion: `ignore` leaves the account active, `deactivate` makes it inactive, `delete`
    removes it."""
    realm = await suite.enable(downstream, delete_policy=policy)
    user_id, name = _names(f"del-{policy}")
    await suite.send(ev.create_user(realm, user_id, name, "Eve", "Three"))
    await reaches(downstream, name, active=True)
    await suite.send(ev.delete_user(realm, user_id))
    if policy == "ignore":

        async def skipped() -> bool:
            return suite.counter("outbound_scim_changes_total", tenant=realm, outcome="skipped") >= 1

        await wait_until(skipped, timeout=BOUND, what="the ignored delete counted")
        await reaches(downstream, name, active=True)
    elif policy == "deactivate":
        await reaches(downstream, name, active=False, familyName="Three")
    else:

        async def gone() -> bool:
            return await downstream.account(name) is None

        await wait_until(gone, timeout=BOUND, what=f"{name} deleted from {downstream.name}")


async def test_an_account_with_our_external_id_is_adopted(suite: Suite, downstream: Downstream) -> None:
    """An account already holding the user's userName, email address and the Keycloak id as externalId
    (an earlier run's) is taken over: updated in place, no second account. (On Keycloak, which answers
    no externalId, the userName and the address are what identify it.)"""
    realm = await suite.enable(downstream)
    user_id, name = _names("fay")
    existing = await downstream.create(name, user_id, "Before", f"{name}@example.com")
    await suite.send(ev.create_user(realm, user_id, name, "Fay", "After"))
    user = await reaches(downstream, name, givenName="Fay", familyName="After")
    assert user["id"] == existing["id"]


async def test_a_look_alike_owned_by_another_is_never_written_over(suite: Suite, downstream: Downstream) -> None:
    """An account holding the userName under another client's externalId and another person's address is
    not ours: the create is dead-lettered as a conflict and the account keeps its attributes. Keycloak
    26.7.3 answers no externalId to any read; there the address tells the look-alike apart."""
    realm = await suite.enable(downstream)
    user_id, name = _names("gus")
    other = await downstream.create(name, f"someone-else-{user_id}", "Theirs", f"{name}@elsewhere.test")
    await suite.send(ev.create_user(realm, user_id, name, "Gus", "Ours"))

    async def conflict() -> bool:
        return suite.counter("outbound_scim_conflicts_total", tenant=realm) >= 1

    await wait_until(conflict, timeout=BOUND, what="the conflict counted")
    status, body = await suite.api.call("GET", f"/tenants/{realm}/dead-letters")
    assert status == 200, body
    assert [d["reason"] for d in body["dead_letters"]] == ["conflict"], body
    kept = await downstream.account(name)
    assert kept is not None and kept["id"] == other["id"]
    assert _value(kept, "familyName") == "Theirs"
    if downstream.answers_external_id:
        assert kept["externalId"] == f"someone-else-{user_id}"


async def test_group_sync(suite: Suite, downstream: Downstream) -> None:
    """With group sync asked for, a Keycloak group and a member's join reach the server's /Groups (on
    Keycloak, whose SCIM API answers no group members, the join is read from its Admin API); on
    django-scim2 the enable turns group sync off and says why (its preset sends no PATCH, and it answers
    501 to a member removal by value filter), and its users still flow."""
    realm, answer = await suite.enabled(downstream, groups=True)
    user_id, name = _names("ivy")
    group_id, group = f"g-{user_id}", f"team-{user_id}"
    await suite.send(
        ev.create_group(realm, group_id, group),
        ev.create_user(realm, user_id, name, "Ivy", "Four"),
        ev.join_group(realm, user_id, group_id, f"/{group}"),
    )
    account = await reaches(downstream, name, familyName="Four")
    if downstream.name == "django-scim2":
        assert answer["groups"] is False, answer
        assert "groups_refused" in [w["code"] for w in answer["warnings"] or []], answer
        return
    assert answer["groups"] is True, answer
    seen: dict[str, Any] = {}

    async def member() -> bool:
        status, doc = await downstream.request("GET", "Groups", filter=scim.eq_filter("displayName", group))
        seen["answer"] = (status, doc)
        assert status == 200, doc
        found = [g for g in doc.get("Resources") or [] if g.get("displayName") == group]
        if len(found) != 1:
            return False
        status, seen["group"] = await downstream.request("GET", scim.group_path(found[0]["id"]))
        assert status == 200, seen
        listed = [m.get("value") for m in seen["group"].get("members") or []]
        if downstream.admin_members is not None:
            # Keycloak 26.7.3's SCIM API applies the member add but answers no `members` on a group:
            # its Admin API shows them.
            seen["admin"] = await downstream.admin_members(found[0]["id"])
            return seen["admin"] == [account["id"]] and listed == []
        return listed == [account["id"]]

    try:
        await wait_until(member, timeout=BOUND, what=f"{group} on {downstream.name} with {name}")
    except AssertionError:
        raise AssertionError(f"{downstream.name}: {group} with {account['id']}, last seen {seen}") from None


@pytest.mark.parametrize("downstream", OAUTH2_SERVERS, indirect=True)
async def test_a_token_expiring_mid_run_loses_no_change(suite: Suite, downstream: Downstream) -> None:
    """Only the OAuth2 servers' tokens expire (the others take a static bearer token): a change sent after
    the service's first access token expired arrives with a fresh one, and the tenant stays enabled."""
    realm = await suite.enable(downstream)
    user_id, name = _names("hal")
    await suite.send(ev.create_user(realm, user_id, name, "Hal", "One"))
    await reaches(downstream, name, familyName="One")
    fetched = suite.counter("outbound_scim_downstream_tokens_total", tenant=realm, result="fetched")
    assert fetched >= 1
    witness = await downstream.bearer()  # fetched after the service's first: it expires after that one

    async def witness_expired() -> bool:
        status, _ = await _status(downstream, witness)
        return status == 401

    await wait_until(witness_expired, timeout=TOKEN_LIFESPAN * 3, what="the first tokens to expire")
    await suite.send(ev.update_user(realm, user_id, lastName="Two"))
    await reaches(downstream, name, familyName="Two")
    assert suite.counter("outbound_scim_downstream_tokens_total", tenant=realm, result="fetched") > fetched
    status, body = await suite.api.call("GET", f"/tenants/{realm}")
    assert status == 200 and body["status"] == "enabled", body


async def _status(downstream: Downstream, token: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with downstream.http.get(f"{downstream.base_url}/Users", params={"count": "1"}, headers=headers) as r:
        return r.status, await r.text()


def _enterprise(user: dict[str, Any]) -> dict[str, Any]:
    """The account's enterprise attributes that hold a value; `manager` as the value it refers to."""
    shown = {k: v for k, v in (user.get(E) or {}).items() if v not in (None, {}, "")}
    if isinstance(shown.get("manager"), dict):
        shown["manager"] = shown["manager"].get("value")
    return shown


async def test_mapping_of_enterprise_attributes(suite: Suite, downstream: Downstream) -> None:
    """Keycloak user attributes mapped to employeeNumber, department, organization and manager arrive
    with the create, follow an update, and one the update's attribute map leaves out is removed; read
    back from the server's own SCIM API. A server whose description lacks the enterprise extension
    (django-scim2 0.23: not in its User resource type; Keycloak 26.7.3: not in its /Schemas) has the
    enable answer 400 invalid_mapping naming the first enterprise entry, and nothing is stored: it has
    nowhere to keep the values. Its users still flow under the same mapping without those entries."""
    user_id, name = _names("mia")
    first = {"employeeNumber": ["1001"], "department": ["Sales"], "organization": ["Acme"], "manager": ["m-1"]}
    if downstream.lacks_enterprise is not None:
        realm = f"conf-{uuid.uuid4().hex[:8]}"
        body = {"base_url": downstream.base_url, "auth": downstream.auth, "mapping": ENTERPRISE_MAPPING}
        status, problem = await suite.api.call("PUT", f"/tenants/{realm}", {**body, "preset": downstream.preset})
        assert (status, problem["error"]) == (400, "invalid_mapping"), problem
        assert f"the entry attributes.employeeNumber -> {E}:employeeNumber" in problem["detail"], problem
        assert downstream.lacks_enterprise in problem["detail"], problem
        assert (await suite.api.call("GET", f"/tenants/{realm}"))[0] == 404
        realm, _ = await suite.enabled(downstream, mapping=ENTERPRISE_MAPPING[:4])
        await suite.send(ev.create_user(realm, user_id, name, "Mia", "Five", attributes=first))
        user = await reaches(downstream, name, givenName="Mia", familyName="Five", email=f"{name}@example.com")
        assert _enterprise(user) == {}, user
        return
    realm, answer = await suite.enabled(downstream, mapping=ENTERPRISE_MAPPING)
    assert sorted(answer["mapping"], key=str) == sorted(ENTERPRISE_MAPPING, key=str), answer
    await suite.send(ev.create_user(realm, user_id, name, "Mia", "Five", attributes=first))
    created = {"employeeNumber": "1001", "department": "Sales", "organization": "Acme", "manager": "m-1"}
    await reaches_enterprise(downstream, name, created)
    later = {"department": ["Ops"], "organization": ["Acme"], "manager": ["m-2"]}  # employeeNumber left out
    await suite.send(ev.update_user(realm, user_id, attributes=later))
    user = await reaches_enterprise(downstream, name, {"department": "Ops", "organization": "Acme", "manager": "m-2"})
    assert E in user["schemas"], user
    assert _value(user, "familyName") == "Five" and _value(user, "email") == f"{name}@example.com", user


async def reaches_enterprise(downstream: Downstream, user_name: str, expected: dict[str, Any]) -> dict[str, Any]:
    """Waits until the account of `user_name` holds exactly the `expected` enterprise attributes."""
    seen: dict[str, Any] = {}

    async def shown() -> bool:
        seen["user"] = user = await downstream.account(user_name)
        return user is not None and _enterprise(user) == expected

    try:
        await wait_until(shown, timeout=BOUND, what=f"{user_name} on {downstream.name} with {expected}")
    except AssertionError:
        raise AssertionError(
            f"{downstream.name}: {user_name} expected {expected}, last seen {seen.get('user')}"
        ) from None
    return dict(seen["user"])
