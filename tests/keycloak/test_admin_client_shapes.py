"""The Admin API client against the shapes a real Keycloak 26.5.6 answered with (tests/keycloak/recorded/,
recorded through the same calls as test_real_keycloak.py), served by a small aiohttp server that
also scripts failures: token expiry and revocation, 401/403/404/429/5xx, dropped connections, slowness.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from service.errors import ServiceError
from service.keycloak_admin import (
    KeycloakAdminClient,
    KeycloakError,
    KeycloakNotFound,
    KeycloakUnauthorized,
    KeycloakUnavailable,
    error_for_status,
    user_attributes,
)
from service.retry import RetryPolicy

RECORDED = Path(__file__).parent / "recorded"
SECRET = "s3cret"
FAST_RETRY = RetryPolicy(attempts=3, base_seconds=0.01, max_seconds=0.05)


def recorded(name: str) -> Any:
    return json.loads((RECORDED / name).read_text())


ERRORS = recorded("errors.json")
USER = recorded("user.json")
FULL_PAGE = recorded("users-page-full.json")


@dataclass
class FakeKeycloak:
    """Realm `acme` with generated users shaped like the recorded ones, and a script of failures."""

    users: list[dict[str, Any]] = field(default_factory=list)
    expires_in: int = 300
    issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    forbidden: bool = False
    realms: Any = field(default_factory=lambda: recorded("realms-master-admin.json"))
    # path -> list of scripted answers, each consumed once: (status, body, headers) or "drop" / "slow"
    script: dict[str, list[Any]] = field(default_factory=dict)
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def add_users(self, n: int) -> None:
        for i in range(n):
            user = copy.deepcopy(FULL_PAGE[1])
            user.update(id=f"id-{i:03d}", username=f"user{i:03d}", email=f"user{i:03d}@example.com")
            self.users.append(user)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._scripted])
        app.router.add_post("/realms/acme/protocol/openid-connect/token", self._token)
        app.router.add_post("/realms/{realm}/protocol/openid-connect/token", self._token_no_realm)
        app.router.add_get("/admin/realms", self._realms)
        app.router.add_get("/admin/realms/acme/users/count", self._count)
        app.router.add_get("/admin/realms/acme/users", self._list)
        app.router.add_get("/admin/realms/acme/users/{id}", self._user)
        app.router.add_get("/admin/realms/acme/events/config", self._events_config)
        app.router.add_get("/admin/realms/{realm}/users/{id}", self._no_realm)
        return app

    @web.middleware
    async def _scripted(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append((request.method, request.raw_path.split("?")[0], dict(request.query)))
        answers = self.script.get(request.path)
        if answers:
            answer = answers.pop(0)
            if answer == "drop":
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            if answer == "slow":
                await asyncio.sleep(2)
            else:
                status, body, headers = answer
                text = body if isinstance(body, str) else json.dumps(body)
                return web.Response(status=status, text=text, headers=headers, content_type="application/json")
        if request.path.startswith("/admin/"):
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if token not in self.issued or token in self.revoked:
                return web.json_response(ERRORS["bad_token_401"], status=401)
            if self.forbidden:
                return web.json_response(ERRORS["other_realm_403"], status=403)
        response: web.StreamResponse = await handler(request)
        return response

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "client_credentials" or form.get("client_secret") != SECRET:
            return web.json_response(ERRORS["token_bad_secret_401"], status=401)
        self.issued.append(f"token-{len(self.issued) + 1}")
        return web.json_response(
            {**recorded("token.json"), "access_token": self.issued[-1], "expires_in": self.expires_in}
        )

    async def _token_no_realm(self, request: web.Request) -> web.Response:
        return web.json_response(ERRORS["token_no_realm_404"], status=404)

    async def _realms(self, request: web.Request) -> web.Response:
        return web.json_response(self.realms)

    async def _count(self, request: web.Request) -> web.Response:
        return web.json_response(len(self.users))

    async def _list(self, request: web.Request) -> web.Response:
        first, size = int(request.query.get("first", "0")), int(request.query.get("max", "100"))
        page = self.users[first : first + size]
        if request.query.get("briefRepresentation") == "true":
            page = [{k: v for k, v in u.items() if k != "userProfileMetadata"} for u in page]
        return web.json_response(page)

    async def _user(self, request: web.Request) -> web.Response:
        for user in [USER, *self.users]:
            if user["id"] == request.match_info["id"]:
                return web.json_response(user)
        return web.json_response(ERRORS["user_not_found_404"], status=404)

    async def _events_config(self, request: web.Request) -> web.Response:
        return web.json_response(recorded("events-config-default.json"))

    async def _no_realm(self, request: web.Request) -> web.Response:
        return web.json_response(ERRORS["realm_not_found_404"], status=404)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeKeycloak, str]]:
    keycloak = FakeKeycloak()
    server = TestServer(keycloak.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield keycloak, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def client(session: aiohttp.ClientSession, base: str, **kw: Any) -> KeycloakAdminClient:
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("auth_realm", "acme")
    return KeycloakAdminClient(session, base, "outbound", kw.pop("secret", SECRET), **kw)


# -- reading users --------------------------------------------------------------------------------------


async def test_get_user_returns_the_stored_user(fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession) -> None:
    """GET users/{id} gives the UserRepresentation as Keycloak sent it."""
    _, base = fake
    assert await client(session, base).get_user("acme", USER["id"]) == USER


async def test_get_user_404_user_not_found_is_none(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """Keycloak's own "User not found" is the one answer that means the user does not exist."""
    _, base = fake
    assert await client(session, base).get_user("acme", "gone") is None


async def test_get_user_in_a_missing_realm_raises(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """A missing realm is a 404 too, but must never read as "this user was deleted"."""
    _, base = fake
    with pytest.raises(KeycloakNotFound) as caught:
        await client(session, base).get_user("nosuch", "gone")
    assert not caught.value.user_missing
    assert caught.value.detail == "Realm not found."


async def test_get_user_404_from_a_proxy_raises(fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession) -> None:
    """A non-Keycloak 404 (wrong base URL behind a proxy) raises instead of deleting every user."""
    keycloak, base = fake
    keycloak.script[f"/admin/realms/acme/users/{USER['id']}"] = [(404, "<html>Not Found</html>", {})]
    with pytest.raises(KeycloakNotFound):
        await client(session, base).get_user("acme", USER["id"])


async def test_user_ids_are_one_path_segment(fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession) -> None:
    """Opaque ids (federated `f:<component>:<id>`, a '/' from an import) are percent-encoded, not split."""
    keycloak, base = fake
    kc = client(session, base)
    assert await kc.get_user("acme", "f:ldap-1:jdoe") is None
    assert await kc.get_user("acme", "a/b") is None
    paths = [path for method, path, _ in keycloak.seen if method == "GET"]
    assert paths == ["/admin/realms/acme/users/f%3Aldap-1%3Ajdoe", "/admin/realms/acme/users/a%2Fb"]


@pytest.mark.parametrize(("total", "requests"), [(25, 3), (20, 3), (0, 1), (9, 1)])
async def test_iter_users_pages_with_first_and_max(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession, total: int, requests: int
) -> None:
    """Pages of `max` from `first` = 0, 10, 20... until a short page; full representations by default."""
    keycloak, base = fake
    keycloak.add_users(total)
    users = [u async for u in client(session, base).iter_users("acme", page_size=10)]
    assert [u["id"] for u in users] == [u["id"] for u in keycloak.users]
    pages = [query for _, path, query in keycloak.seen if path == "/admin/realms/acme/users"]
    assert len(pages) == requests
    assert [p["first"] for p in pages] == [str(10 * i) for i in range(requests)]
    assert all(p["max"] == "10" and p["briefRepresentation"] == "false" for p in pages)
    assert all("userProfileMetadata" in u for u in users)


async def test_iter_users_brief_is_enough_for_the_attributes(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """The brief representation (recorded) carries every attribute user_attributes() reads."""
    keycloak, base = fake
    keycloak.add_users(3)
    brief = [u async for u in client(session, base).iter_users("acme", brief=True)]
    assert [user_attributes(u) for u in brief] == [user_attributes(u) for u in keycloak.users]
    assert user_attributes(recorded("users-page-brief.json")[1]) == user_attributes(USER)


async def test_each_page_carries_the_time_taken_before_its_request(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """iter_user_pages stamps a page with the wall clock read before the page's request left: here the
    clock reads the number of requests the server had seen (token + earlier pages), in seconds."""
    keycloak, base = fake
    keycloak.add_users(25)
    kc = client(session, base, wall_clock=lambda: float(len(keycloak.seen)))
    pages = [page async for page in kc.iter_user_pages("acme", page_size=10)]
    assert [len(page.users) for page in pages] == [10, 10, 5]
    assert [page.read_started_ms for page in pages] == [0, 2000, 3000]  # page 1 before even the token
    assert [u["id"] for page in pages for u in page.users] == [u["id"] for u in keycloak.users]


async def test_events_config_is_the_realms_event_settings(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """GET events/config gives the recorded RealmEventsConfigRepresentation; without view-events, 403."""
    keycloak, base = fake
    kc = client(session, base)
    config = await kc.events_config("acme")
    assert config == recorded("events-config-default.json")
    assert (config["eventsListeners"], config["adminEventsDetailsEnabled"]) == (["jboss-logging"], False)
    keycloak.forbidden = True
    with pytest.raises(KeycloakUnauthorized) as caught:
        await kc.events_config("acme")
    assert caught.value.status == 403


async def test_count_users(fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession) -> None:
    """users/count is a bare JSON number."""
    keycloak, base = fake
    keycloak.add_users(7)
    assert await client(session, base).count_users("acme") == 7


async def test_realm_names_maps_ids_to_names(fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession) -> None:
    """GET /admin/realms gives realm id -> name, for plugins that send only the realm id."""
    _, base = fake
    assert await client(session, base).realm_names() == {
        "1264387d-30a3-4b76-a6ba-faba2a7585ba": "master",
        "1c4763d9-99a1-4163-a09c-02eeca10a081": "acme",
    }


async def test_realm_names_without_view_realm_are_left_out_and_logged(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """Without view-realm Keycloak lists names only (recorded): nothing to map, and a hint in the log."""
    keycloak, base = fake
    keycloak.realms = recorded("realms-without-view-realm.json")
    with capture_logs() as logs:
        assert await client(session, base).realm_names() == {}
    assert [entry["realms"] for entry in logs if entry["event"] == "keycloak.realms.no_id"] == [["acme"]]


# -- token ----------------------------------------------------------------------------------------------


async def test_token_is_cached_across_calls(fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession) -> None:
    """One client-credentials grant serves many calls, including concurrent ones."""
    keycloak, base = fake
    kc = client(session, base)
    await asyncio.gather(*(kc.get_user("acme", USER["id"]) for _ in range(10)))
    await kc.count_users("acme")
    assert keycloak.issued == ["token-1"]
    assert kc.tokens_fetched == 1
    assert kc.requests_sent == 12


async def test_token_is_refreshed_shortly_before_expiry(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """A 300 s token is used for 270 s, then replaced before it can expire in flight."""
    keycloak, base = fake
    clock = Clock()
    kc = client(session, base, clock=clock)
    await kc.count_users("acme")
    clock.now += 269
    await kc.count_users("acme")
    assert keycloak.issued == ["token-1"]
    clock.now += 2
    await kc.count_users("acme")
    assert keycloak.issued == ["token-1", "token-2"]


async def test_401_fetches_one_fresh_token_and_retries(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """A revoked token (401 before its expiry) is replaced once and the call succeeds."""
    keycloak, base = fake
    kc = client(session, base)
    await kc.count_users("acme")
    keycloak.revoked.add("token-1")
    assert await kc.get_user("acme", USER["id"]) == USER
    assert keycloak.issued == ["token-1", "token-2"]


async def test_401_with_a_fresh_token_is_unauthorized(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """401 again after the one refresh: the credentials are wrong, not stale; no retry loop."""
    keycloak, base = fake
    keycloak.revoked.update({"token-1", "token-2", "token-3"})
    kc = client(session, base)
    with pytest.raises(KeycloakUnauthorized) as caught:
        await kc.count_users("acme")
    assert caught.value.status == 401
    assert not caught.value.retriable
    assert keycloak.issued == ["token-1", "token-2"]


async def test_403_is_unauthorized_without_a_token_refresh(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """403: the service account lacks a role; a new token would not change that."""
    keycloak, base = fake
    keycloak.forbidden = True
    with pytest.raises(KeycloakUnauthorized) as caught:
        await client(session, base).get_user("acme", USER["id"])
    assert (caught.value.status, caught.value.detail) == (403, "HTTP 403 Forbidden")
    assert keycloak.issued == ["token-1"]


async def test_wrong_client_secret_is_unauthorized_and_not_retried(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """The token endpoint's 401 unauthorized_client stops at once, with Keycloak's reason."""
    keycloak, base = fake
    with pytest.raises(KeycloakUnauthorized) as caught:
        await client(session, base, secret="wrong").count_users("acme")
    assert caught.value.detail == "unauthorized_client: Invalid client or Invalid client credentials"
    assert len(keycloak.seen) == 1


async def test_token_realm_missing_is_not_found(fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession) -> None:
    """A client configured in a realm that does not exist: 404 from the token endpoint."""
    _, base = fake
    with pytest.raises(KeycloakNotFound, match="Realm does not exist"):
        await client(session, base, auth_realm="nosuch").count_users("acme")


# -- transient failures -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession, status: int
) -> None:
    """429 and 5xx are retried with backoff; the call then succeeds."""
    keycloak, base = fake
    keycloak.script["/admin/realms/acme/users/count"] = [(status, {"error": "busy"}, {"Retry-After": "0"})]
    kc = client(session, base)
    assert await kc.count_users("acme") == 0
    assert sum(1 for _, path, _ in keycloak.seen if path == "/admin/realms/acme/users/count") == 2


async def test_token_endpoint_outage_is_retried(fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession) -> None:
    """The token request shares the retry budget: a 503 there is transient too."""
    keycloak, base = fake
    keycloak.script["/realms/acme/protocol/openid-connect/token"] = [(503, "", {})]
    assert await client(session, base).count_users("acme") == 0
    assert keycloak.issued == ["token-1"]


async def test_persistent_outage_raises_unavailable(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """After the policy's attempts the last transient error is raised, retriable, with no body in it."""
    keycloak, base = fake
    keycloak.script["/admin/realms/acme/users/count"] = [(503, {"error": "down"}, {})] * 3
    with pytest.raises(KeycloakUnavailable) as caught:
        await client(session, base).count_users("acme")
    assert caught.value.retriable
    assert isinstance(caught.value, ServiceError)
    assert caught.value.status == 503


async def test_dropped_connection_is_retried(fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession) -> None:
    """A connection closed mid-request is transient."""
    keycloak, base = fake
    keycloak.script[f"/admin/realms/acme/users/{USER['id']}"] = ["drop"]
    assert await client(session, base).get_user("acme", USER["id"]) == USER


async def test_slow_answer_times_out_and_is_retried(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """The per-request timeout turns a hung request into a retriable failure."""
    keycloak, base = fake
    keycloak.script["/admin/realms/acme/users/count"] = ["slow"]
    kc = client(session, base, timeout_seconds=0.3)
    assert await kc.count_users("acme") == 0


async def test_unreachable_keycloak_is_unavailable(session: aiohttp.ClientSession) -> None:
    """Nothing listening: connect errors are KeycloakUnavailable."""
    from tests.support import free_port

    with pytest.raises(KeycloakUnavailable) as caught:
        await client(session, f"http://127.0.0.1:{free_port()}").count_users("acme")
    assert caught.value.status is None


async def test_a_200_that_is_not_json_is_an_error(
    fake: tuple[FakeKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """An HTML page with 200 (a login page, a wrong base URL) is not retried and not taken for data."""
    keycloak, base = fake
    keycloak.script["/admin/realms/acme/users/count"] = [(200, "<html></html>", {})]
    with pytest.raises(KeycloakError, match="not JSON") as caught:
        await client(session, base).count_users("acme")
    assert not caught.value.retriable


# -- the pure parts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "retriable"),
    [
        (400, KeycloakError, False),
        (401, KeycloakUnauthorized, False),
        (403, KeycloakUnauthorized, False),
        (404, KeycloakNotFound, False),
        (408, KeycloakUnavailable, True),
        (409, KeycloakError, False),
        (429, KeycloakUnavailable, True),
        (500, KeycloakUnavailable, True),
        (503, KeycloakUnavailable, True),
    ],
)
def test_status_maps_to_the_error_for_the_next_action(status: int, kind: type[KeycloakError], retriable: bool) -> None:
    """Each failing status maps to exactly one error class; only transient ones are retriable."""
    error = error_for_status(status, "GET", "admin/realms/acme/users")
    assert type(error) is kind
    assert error.retriable is retriable
    assert error_for_status(200, "GET", "x") is None


def test_error_keeps_keycloaks_reason_but_not_the_body() -> None:
    """Only `error` / `error_description` reach the message; anything else in the body stays out."""
    error = error_for_status(400, "GET", "p", {"error": "invalid", "email": "jane@example.com"})
    assert error is not None
    assert "jane" not in str(error)
    assert error.detail == "invalid"


def test_retry_after_is_honoured() -> None:
    """Retry-After seconds travel on the error to the backoff."""
    error = error_for_status(429, "GET", "p", None, "7")
    assert isinstance(error, KeycloakUnavailable)
    assert error.retry_after == 7.0


@pytest.mark.parametrize(
    ("rep", "expected"),
    [
        (
            USER,
            {"userName": "jdoe", "givenName": "Jane", "familyName": "Doe", "email": "jane@example.com", "active": True},
        ),
        (
            recorded("users-page-brief.json")[0],
            {"userName": "bare", "givenName": None, "familyName": None, "email": None, "active": False},
        ),
        ({}, {"userName": None, "givenName": None, "familyName": None, "email": None, "active": False}),
        (
            {"username": "x", "firstName": "", "enabled": "true"},
            {"userName": "x", "givenName": None, "familyName": None, "email": None, "active": False},
        ),
    ],
)
def test_user_attributes(rep: dict[str, Any], expected: dict[str, Any]) -> None:
    """Stored user -> SCIM-side attributes: absent or empty is None, only `enabled: true` is active."""
    assert user_attributes(rep) == expected


async def test_repr_shows_no_secret(session: aiohttp.ClientSession) -> None:
    """The client secret never appears in repr() (and so in logs)."""
    assert SECRET not in repr(client(session, "http://127.0.0.1:1"))
