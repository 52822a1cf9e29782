"""The Admin API client's group reads against the answers a real Keycloak 26.5.6 gave
(tests/fixtures/keycloak-groups/api-*.json, docs/reference/keycloak-group-events.md), replayed by a small
aiohttp server that pages them the way Keycloak did: `first`/`max`, and without `max` at most 10
children and 100 members (all top-level groups).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from service.keycloak_admin import KeycloakAdminClient, KeycloakNotFound, KeycloakUnavailable, group_fields
from service.retry import RetryPolicy

FIXTURES = Path(__file__).parent.parent / "fixtures" / "keycloak-groups"
RECORDED = Path(__file__).parent / "recorded"
REALM = "groups-b72842"  # the realm of the recording: the answers' ids are that run's
SECRET = "s3cret"
FAST_RETRY = RetryPolicy(attempts=3, base_seconds=0.01, max_seconds=0.05)
DEFAULT_MAX = {"children": 10, "members": 100}  # what Keycloak answered without `max` (api-07)


def answers(name: str) -> list[dict[str, Any]]:
    """The recorded calls of one fixture file: request, params, status, answer."""
    calls: list[dict[str, Any]] = json.loads((FIXTURES / name).read_text())["calls"]
    return calls


def answer(name: str, path_end: str, params: dict[str, str] | None = None) -> Any:
    """The recorded answer of the call whose request path ends with `path_end`, with exactly `params`."""
    [found] = [c for c in answers(name) if c["request"].endswith(path_end) and (c.get("params") or None) == params]
    return found["answer"]


IDS: dict[str, str] = {
    **json.loads((FIXTURES / "api-05-user-groups.json").read_text())["ids"],
    **json.loads((FIXTURES / "api-07-default-page-sizes.json").read_text())["ids"],
}
OPS, SALES, SUPPORT, TIER1 = IDS["/operations"], IDS["/sales"], IDS["/support"], IDS["/support/tier1"]
BULK, BOB, FRANK = IDS["/bulk"], IDS["user:bob"], IDS["user:frank"]
PLATFORM = IDS["/operations/platform"]
NOT_FOUND = {"error": "Could not find group by id"}  # Keycloak's answer, asserted in test_groups_backfill.py
ERRORS = json.loads((RECORDED / "errors.json").read_text())


def recorded_tree() -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The realm as the recording left it: 13 top-level groups (api-07) and the recorded children answers
    of every group with sub-groups (/sales 10 + 1 from api-07, /support and /support/tier1 from api-03,
    /operations/platform as GET answered it in 10-rename-parent-group)."""
    top = answer("api-07-default-page-sizes.json", "/groups")
    children = {
        SALES: answer("api-07-default-page-sizes.json", f"/{SALES}/children")
        + answer("api-07-default-page-sizes.json", f"/{SALES}/children", {"first": "10"}),
        SUPPORT: answer("api-03-children.json", f"/{SUPPORT}/children"),
        TIER1: answer("api-03-children.json", f"/{TIER1}/children"),
        OPS: [answer("10-rename-parent-group.json", f"/groups/{PLATFORM}")],
    }
    return top, children


def recorded_members() -> dict[str, list[dict[str, Any]]]:
    brief = {"briefRepresentation": "true"}
    return {
        SUPPORT: answer("api-04-members.json", f"/{SUPPORT}/members"),
        TIER1: answer("api-04-members.json", f"/{TIER1}/members", brief),
        IDS["/support/tier2"]: answer("api-04-members.json", f"/{IDS['/support/tier2']}/members", brief),
        BULK: answer("api-07-default-page-sizes.json", f"/{BULK}/members", {**brief, "max": "-1"}),
    }


def recorded_user_groups() -> dict[str, list[dict[str, Any]]]:
    return {
        BOB: answer("api-05-user-groups.json", f"/users/{BOB}/groups"),
        FRANK: answer("api-05-user-groups.json", f"/users/{FRANK}/groups"),
    }


@dataclass
class ReplayedKeycloak:
    """Serves the recorded group answers of realm REALM, paged as Keycloak pages them."""

    top: list[dict[str, Any]] = field(default_factory=list)
    children: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    members: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    user_groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    script: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)  # path -> answers, each used once
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (raw path, query) of admin calls

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._scripted])
        app.router.add_post("/realms/master/protocol/openid-connect/token", self._token)
        base = f"/admin/realms/{REALM}"
        app.router.add_get(f"{base}/groups", self._top)
        app.router.add_get(f"{base}/groups/{{id}}", self._group)
        app.router.add_get(f"{base}/groups/{{id}}/children", self._children)
        app.router.add_get(f"{base}/groups/{{id}}/members", self._members)
        app.router.add_get(f"{base}/users/{{id}}/groups", self._user_groups)
        app.router.add_get("/admin/realms/{realm}/groups/{id}", self._no_realm)
        return app

    @web.middleware
    async def _scripted(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/admin/"):
            self.seen.append((request.raw_path.split("?")[0], dict(request.query)))
        scripted = self.script.get(request.path)
        if scripted:
            status, body = scripted.pop(0)
            return web.json_response(body, status=status)
        response: web.StreamResponse = await handler(request)
        return response

    async def _token(self, request: web.Request) -> web.Response:
        return web.json_response({**json.loads((RECORDED / "token.json").read_text()), "access_token": "t"})

    async def _top(self, request: web.Request) -> web.Response:
        return web.json_response(_page(request, self.top, None))

    def _all(self) -> list[dict[str, Any]]:
        return [*self.top, *(g for groups in self.children.values() for g in groups)]

    async def _group(self, request: web.Request) -> web.Response:
        for group in self._all():
            if group["id"] == request.match_info["id"]:
                return web.json_response(group)
        return web.json_response(NOT_FOUND, status=404)

    async def _children(self, request: web.Request) -> web.Response:
        if not any(g["id"] == request.match_info["id"] for g in self._all()):
            return web.json_response(NOT_FOUND, status=404)
        groups = self.children.get(request.match_info["id"], [])
        return web.json_response(_page(request, groups, DEFAULT_MAX["children"]))

    async def _members(self, request: web.Request) -> web.Response:
        users = self.members.get(request.match_info["id"], [])
        return web.json_response(_page(request, users, DEFAULT_MAX["members"]))

    async def _user_groups(self, request: web.Request) -> web.Response:
        groups = self.user_groups.get(request.match_info["id"])
        if groups is None:
            return web.json_response(ERRORS["user_not_found_404"], status=404)
        return web.json_response(_page(request, groups, 100))

    async def _no_realm(self, request: web.Request) -> web.Response:
        return web.json_response(ERRORS["realm_not_found_404"], status=404)


def _page(request: web.Request, items: list[dict[str, Any]], default_max: int | None) -> list[dict[str, Any]]:
    first = int(request.query.get("first", "0"))
    size = int(request.query["max"]) if "max" in request.query else default_max
    return items[first:] if size is None or size < 0 else items[first : first + size]


@pytest.fixture
async def replayed() -> AsyncIterator[tuple[ReplayedKeycloak, str]]:
    top, children = recorded_tree()
    keycloak = ReplayedKeycloak(top, children, recorded_members(), recorded_user_groups())
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
    return KeycloakAdminClient(session, base, "outbound", SECRET, auth_realm="master", **kw)


def children_requests(keycloak: ReplayedKeycloak, group_id: str) -> list[dict[str, str]]:
    return [query for path, query in keycloak.seen if path == f"/admin/realms/{REALM}/groups/{group_id}/children"]


# -- the tree ---------------------------------------------------------------------------------------------


async def test_iter_group_pages_walks_the_whole_tree_parents_first(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """Top-level groups, then every sub-group at any depth, each with its path and its parent's id
    (None at the top level), a parent always before its children."""
    keycloak, base = replayed
    groups = [g async for page in client(session, base).iter_group_pages(REALM, 100) for g in page.groups]
    recorded = [*keycloak.top, *(g for gs in keycloak.children.values() for g in gs)]
    assert len(groups) == len(recorded) == 13 + 11 + 3 + 1 + 1
    assert sorted(g["path"] for g in groups) == sorted(g["path"] for g in recorded)
    by_path = {g["path"]: g for g in groups}
    assert by_path["/support/tier1/night"] == {
        "id": IDS["/support/tier1/night"],
        "name": "night",
        "path": "/support/tier1/night",
        "parent": TIER1,
    }
    assert by_path["/support"] == {"id": SUPPORT, "name": "support", "path": "/support", "parent": None}
    assert by_path["/operations/platform"]["parent"] == OPS
    position = {g["id"]: i for i, g in enumerate(groups)}
    assert all(position[g["parent"]] < position[g["id"]] for g in groups if g["parent"] is not None)


async def test_children_are_paged_with_an_explicit_max_past_keycloaks_cap_of_ten(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """/sales has 11 children and Keycloak answers 10 without `max`: every children request names
    `first` and `max`, so pages of 10 give 10 + 1 and a page size of 100 all 11 at once."""
    keycloak, base = replayed
    kc = client(session, base)
    sales = [g async for page in kc.iter_group_pages(REALM, 10) for g in page.groups if g["parent"] == SALES]
    assert sorted(g["name"] for g in sales) == [f"r{i:02d}" for i in range(1, 12)]
    assert children_requests(keycloak, SALES) == [
        {"briefRepresentation": "true", "first": "0", "max": "10"},
        {"briefRepresentation": "true", "first": "10", "max": "10"},
    ]
    top = [q for path, q in keycloak.seen if path == f"/admin/realms/{REALM}/groups"]
    assert [(q["first"], q["max"]) for q in top] == [("0", "10"), ("10", "10")]  # 13 top-level groups
    keycloak.seen.clear()
    sales = [g async for page in kc.iter_group_pages(REALM, 100) for g in page.groups if g["parent"] == SALES]
    assert len(sales) == 11
    assert children_requests(keycloak, SALES) == [{"briefRepresentation": "true", "first": "0", "max": "100"}]


async def test_groups_without_sub_groups_are_not_asked_for_children(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """Only the groups whose subGroupCount is above 0 cost a children request; one without the count
    (Keycloak's `subGroupsCount=false` shape) is asked."""
    keycloak, base = replayed
    keycloak.top = answer("api-01-groups.json", "/groups", {"subGroupsCount": "false"})  # no subGroupCount
    [_ async for _ in client(session, base).iter_group_pages(REALM, 100)]
    asked = {path.split("/")[-2] for path, _ in keycloak.seen if path.endswith("/children")}
    assert asked == {OPS, SALES, SUPPORT, TIER1}  # not the 11 /sales/rNN, tier2, tier3, night


async def test_each_group_page_carries_the_time_taken_before_its_request(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """The wall clock here reads the number of admin requests seen so far, in seconds: each page's
    stamp is the count before its own request."""
    keycloak, base = replayed
    kc = client(session, base, wall_clock=lambda: float(len(keycloak.seen)))
    pages = [page async for page in kc.iter_group_pages(REALM, 100)]
    assert [page.read_started_ms for page in pages] == [1000 * i for i in range(len(pages))]
    assert len(pages) == len(keycloak.seen) == 1 + 4  # top level, then /operations /sales /support /tier1


async def test_a_listing_page_is_retried_while_keycloak_is_unavailable(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """A 503 on one children page is retried (outside the pipeline nobody else would) and the walk
    completes."""
    keycloak, base = replayed
    keycloak.script[f"/admin/realms/{REALM}/groups/{SALES}/children"] = [(503, {"error": "busy"})]
    groups = [g async for page in client(session, base).iter_group_pages(REALM, 100) for g in page.groups]
    assert len(groups) == 29
    assert len(children_requests(keycloak, SALES)) == 2


# -- members ----------------------------------------------------------------------------------------------


async def test_members_are_paged_with_an_explicit_max_past_keycloaks_cap_of_a_hundred(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """/bulk has 101 members and Keycloak answers 100 without `max`: pages of 100 give 100 + 1, brief."""
    keycloak, base = replayed
    pages = [p async for p in client(session, base).iter_group_member_pages(REALM, BULK, 100)]
    assert [len(p.users) for p in pages] == [100, 1]
    assert [u["username"] for p in pages for u in p.users] == [f"bulk{i:03d}" for i in range(1, 102)]
    assert [q for path, q in keycloak.seen if path.endswith("/members")] == [
        {"briefRepresentation": "true", "first": "0", "max": "100"},
        {"briefRepresentation": "true", "first": "100", "max": "100"},
    ]


async def test_members_are_the_groups_direct_members_page_by_page(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """Pages of 2 of /support's five members, as recorded (api-04); tier1's member bob is tier1's only."""
    _, base = replayed
    kc = client(session, base)
    pages = [[u["username"] for u in p.users] async for p in kc.iter_group_member_pages(REALM, SUPPORT, 2)]
    assert pages == [["alice", "bob"], ["carol", "dave"], ["erin"]]
    assert [[u["id"] for u in p.users] async for p in kc.iter_group_member_pages(REALM, TIER1, 2)] == [[BOB]]
    assert [p.users async for p in kc.iter_group_member_pages(REALM, SALES, 2)] == [[]]


# -- single reads (the applier's) ---------------------------------------------------------------------


async def test_get_group_gives_the_groups_fields(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """GET groups/{id} (recorded, api-02) as id, name, path and parent id."""
    _, base = replayed
    kc = client(session, base)
    assert await kc.get_group(REALM, TIER1) == {
        "id": TIER1,
        "name": "tier1",
        "path": "/support/tier1",
        "parent": SUPPORT,
    }
    assert await kc.get_group(REALM, SUPPORT) == {"id": SUPPORT, "name": "support", "path": "/support", "parent": None}


async def test_get_group_is_none_only_for_keycloaks_group_not_found(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """Keycloak's "Could not find group by id" is None; a missing realm and a proxy's 404 raise, so
    that neither ever reads as "this group was deleted"."""
    keycloak, base = replayed
    kc = client(session, base)
    assert await kc.get_group(REALM, "no-such-group") is None
    with pytest.raises(KeycloakNotFound) as caught:
        await kc.get_group("nosuch", SUPPORT)
    assert (caught.value.group_missing, caught.value.detail) == (False, "Realm not found.")
    keycloak.script[f"/admin/realms/{REALM}/groups/{SUPPORT}"] = [(404, {"error": "Not Found"})]
    with pytest.raises(KeycloakNotFound):
        await kc.get_group(REALM, SUPPORT)


async def test_user_groups_are_the_direct_memberships_every_page_read(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """GET users/{id}/groups (recorded, api-05): bob's five groups with their parents, requested with
    `first` and `max`; an unknown user raises KeycloakNotFound with user_missing."""
    keycloak, base = replayed
    kc = client(session, base)
    groups = await kc.user_groups(REALM, BOB)
    assert sorted((g["path"], g["parent"]) for g in groups) == [
        ("/operations", None),
        ("/operations/platform", OPS),
        ("/support", None),
        ("/support/tier1", SUPPORT),
        ("/support/tier1/night", TIER1),
    ]
    assert await kc.user_groups(REALM, FRANK) == [
        {"id": IDS["/support/tier2"], "name": "tier2", "path": "/support/tier2", "parent": SUPPORT}
    ]
    assert [q for path, q in keycloak.seen if path.endswith(f"/users/{BOB}/groups")] == [
        {"briefRepresentation": "true", "first": "0", "max": "100"}
    ]
    with pytest.raises(KeycloakNotFound) as caught:
        await kc.user_groups(REALM, "no-such-user")
    assert caught.value.user_missing


async def test_user_groups_reads_past_one_page(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """A user in more groups than one page holds: every page is read."""
    keycloak, base = replayed
    many = [dict(g, id=f"g{i:03d}") for i, g in enumerate(keycloak.top * 20)][:250]
    keycloak.user_groups["many"] = many
    assert [g["id"] for g in await client(session, base).user_groups(REALM, "many")] == [g["id"] for g in many]
    assert [q["first"] for path, q in keycloak.seen if path.endswith("/users/many/groups")] == ["0", "100", "200"]


@pytest.mark.parametrize("call", ["get_group", "user_groups"])
async def test_single_reads_are_sent_once(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession, call: str
) -> None:
    """get_group and user_groups do not retry: the pipeline's applier retries the whole change."""
    keycloak, base = replayed
    path = (
        f"/admin/realms/{REALM}/groups/{SUPPORT}"
        if call == "get_group"
        else f"/admin/realms/{REALM}/users/{BOB}/groups"
    )
    keycloak.script[path] = [(503, {"error": "busy"})]
    kc = client(session, base)
    with pytest.raises(KeycloakUnavailable):
        await (kc.get_group(REALM, SUPPORT) if call == "get_group" else kc.user_groups(REALM, BOB))
    assert [p for p, _ in keycloak.seen] == [path]


async def test_group_ids_are_one_path_segment(
    replayed: tuple[ReplayedKeycloak, str], session: aiohttp.ClientSession
) -> None:
    """An id with '/' or ':' is percent-encoded, never split into path segments."""
    keycloak, base = replayed
    assert await client(session, base).get_group(REALM, "a/b:c") is None
    assert [p for p, _ in keycloak.seen] == [f"/admin/realms/{REALM}/groups/a%2Fb%3Ac"]


def test_group_fields_from_each_recorded_shape() -> None:
    """Brief top-level (api-01), full children (api-03), GET (api-02) and a user's groups (api-05) all
    give the same four fields; a representation without an id gives None."""
    shapes = [
        answer("api-01-groups.json", "/groups")[2],
        answer("api-02-group.json", f"/groups/{SUPPORT}"),
        answer("api-05-user-groups.json", f"/users/{BOB}/groups")[3],
    ]
    assert [group_fields(rep) for rep in shapes] == [
        {"id": SUPPORT, "name": "support", "path": "/support", "parent": None}
    ] * 3
    child = answer("api-03-children.json", f"/{SUPPORT}/children")[0]
    assert group_fields(child) == {"id": TIER1, "name": "tier1", "path": "/support/tier1", "parent": SUPPORT}
    assert group_fields({"name": "x"}) is None
