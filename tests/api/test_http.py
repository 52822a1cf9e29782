"""The HTTP layer over a tenant service with fakes behind it: the token, the one error shape for every
error (whoever raises it), and the status codes the contract documents."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from service.api.app import STATUS_OF, api_app
from service.api.errors import ApiError
from service.api.tenants import TenantService
from service.errors import EnableRefused
from tests.api.fakes import FakeDownstreams, FakeHeld, FakeLinks, FakeRecords

ADMIN = {"Authorization": "Bearer admin-token"}
TOKEN = "downstream-secret"
MAX_BODY = 2048


@dataclass
class Readiness:
    reasons: list[str] = field(default_factory=list)

    def unready_reasons(self) -> list[str]:
        return list(self.reasons)


@dataclass
class Api:
    client: TestClient[Any, Any]
    records: FakeRecords
    downstreams: FakeDownstreams
    readiness: Readiness

    async def call(self, method: str, path: str, body: Any = None, **options: Any) -> tuple[int, Any]:
        headers = options.pop("headers", ADMIN)
        async with self.client.request(method, path, json=body, headers=headers, **options) as answer:
            text = await answer.text()
            return answer.status, json.loads(text) if answer.content_type == "application/json" else text


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    records, downstreams, readiness = FakeRecords(), FakeDownstreams(), Readiness()
    tenants = TenantService(records, downstreams, FakeHeld(), FakeHeld(), FakeLinks())
    app = api_app(tenants, "admin-token", readiness, CollectorRegistry(), MAX_BODY)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, records, downstreams, readiness)


def is_problem(body: Any, code: str) -> bool:
    """The one error shape: exactly error and detail, both text."""
    return (
        isinstance(body, dict) and set(body) == {"error", "detail"} and body["error"] == code and bool(body["detail"])
    )


async def test_without_the_token_every_route_but_the_open_ones_answers_401(api: Api) -> None:
    """A missing or wrong token: 401 in the error shape, for known and unknown routes alike (no route is
    revealed); health, readiness, metrics and the OpenAPI document stay open."""
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        for method, path in (("GET", "/tenants"), ("PUT", "/tenants/acme"), ("GET", "/no/such/route")):
            status, body = await api.call(method, path, headers=headers)
            assert (status, is_problem(body, "unauthorized")) == (401, True), (method, path)
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await api.call("GET", path, headers={}))[0] == 200, path


async def test_unknown_routes_and_methods_answer_the_error_shape(api: Api) -> None:
    """404 not_found for an unknown route, 405 method_not_allowed (with Allow) for a known one."""
    status, body = await api.call("GET", "/nope")
    assert (status, is_problem(body, "not_found")) == (404, True)
    async with api.client.request("PATCH", "/tenants/acme", headers=ADMIN) as answer:
        assert answer.status == 405
        assert is_problem(await answer.json(), "method_not_allowed")
        assert set(answer.headers["Allow"].split(",")) >= {"GET", "PUT", "DELETE"}


async def test_malformed_and_invalid_bodies_answer_400_naming_the_field_not_the_token(api: Api) -> None:
    """Not JSON, not an object, a missing or mistyped field: 400 invalid_request; the detail names the
    fields and never repeats a value sent (a token could be among them); nothing is validated or stored."""
    cases: list[tuple[Any, str]] = [
        ("{broken", "not valid JSON"),
        ([1, 2], "must be a JSON object"),
        ({"token": TOKEN}, "base_url"),
        ({"base_url": "https://x.example", "token": TOKEN, "max_concurrency": "5"}, "max_concurrency"),
        ({"base_url": "https://x.example", "token": TOKEN, "delete_policy": "purge"}, "delete_policy"),
        ({"base_url": "https://x.example", "token": TOKEN, "reconcile_interval_minutes": 0}, "reconcile"),
        ({"base_url": "https://x.example", "token": 12}, "token"),
    ]
    for body, named in cases:
        raw = body if isinstance(body, str) else json.dumps(body)
        status, answer = await api.call("PUT", "/tenants/acme", data=raw.encode())
        assert (status, is_problem(answer, "invalid_request")) == (400, True), body
        assert named in answer["detail"], (body, answer)
        assert TOKEN not in answer["detail"]
    assert (api.downstreams.validated, api.records.writes) == ([], [])


async def test_an_empty_body_is_refused_where_required_and_defaulted_where_optional(api: Api) -> None:
    """PUT without a body: 400. POST /dead-letters/replay without one: the defaults (replay all)."""
    status, body = await api.call("PUT", "/tenants/acme")
    assert (status, is_problem(body, "invalid_request")) == (400, True)
    assert await api.call("POST", "/dead-letters/replay") == (200, {"replayed": 0})


async def test_a_body_over_the_limit_answers_413(api: Api) -> None:
    """Over API_MAX_BODY_BYTES: 413 too_large in the error shape, nothing stored."""
    status, body = await api.call("PUT", "/tenants/acme", {"base_url": "https://x.example", "token": "x" * MAX_BODY})
    assert (status, is_problem(body, "too_large")) == (413, True)
    assert api.records.writes == []


async def test_enable_answers_201_then_200_and_refusals_400_or_422(api: Api) -> None:
    """Enable: 201; again (a rotation): 200; never the token. A refused URL: 400, a failing downstream: 422,
    each with the refusal's reason as the error code."""
    request = {"base_url": "https://x.example/scim", "token": TOKEN}
    created = await api.call("PUT", "/tenants/acme", request)
    rotated = await api.call("PUT", "/tenants/acme", request)
    assert (created[0], rotated[0]) == (201, 200)
    assert TOKEN not in json.dumps([created, rotated, await api.call("GET", "/tenants")])
    for reason, status in (("forbidden_address", 400), ("not_scim", 422)):
        api.downstreams.refusal = EnableRefused(reason, "because")
        answer = await api.call("PUT", "/tenants/beta", request)
        assert (answer[0], is_problem(answer[1], reason)) == (status, True)


async def test_service_errors_map_to_their_status(api: Api) -> None:
    """not_enabled 404, keycloak_not_configured 409, no_backfill 404, a link id that is not one segment 400."""
    assert (await api.call("GET", "/tenants/acme"))[0] == 404
    assert (await api.call("DELETE", "/tenants/acme"))[0] == 404
    status, body = await api.call("POST", "/tenants/acme/backfill")
    assert (status, is_problem(body, "keycloak_not_configured")) == (409, True)
    status, body = await api.call("GET", "/tenants/acme/backfill")
    assert (status, is_problem(body, "no_backfill")) == (404, True)
    status, body = await api.call("POST", "/tenants/acme/users/u1/link", {"downstream_id": "a/b"})
    assert (status, is_problem(body, "invalid_request")) == (400, True)
    assert "downstream_id" in body["detail"]


async def test_the_old_tenant_filter_of_dead_letters_says_where_it_went(api: Api) -> None:
    """GET /dead-letters?tenant= and a replay body naming a tenant: 400 naming the tenant's own route,
    instead of silently listing or replaying every realm's."""
    status, body = await api.call("GET", "/dead-letters?tenant=acme")
    assert (status, is_problem(body, "invalid_request")) == (400, True)
    assert "/tenants/{realm}/dead-letters" in body["detail"]
    status, body = await api.call("POST", "/dead-letters/replay", {"tenant": "acme"})
    assert (status, is_problem(body, "invalid_request")) == (400, True)
    assert "/tenants/{realm}/dead-letters/replay" in body["detail"]
    assert await api.call("POST", "/dead-letters/replay", {"tenant": None}) == (200, {"replayed": 0})


async def test_an_unexpected_exception_answers_500_generic_and_is_logged(api: Api) -> None:
    """A bug: 500 internal_error with a generic detail (nothing of the exception), and an
    api.request.failed log line naming the route template."""
    api.records.failure = RuntimeError("secret internals")
    with capture_logs() as logs:
        status, body = await api.call("GET", "/tenants/acme")
    assert (status, is_problem(body, "internal_error")) == (500, True)
    assert "secret internals" not in body["detail"]
    [failed] = [entry for entry in logs if entry["event"] == "api.request.failed"]
    assert (failed["method"], failed["route"]) == ("GET", "/tenants/{realm}")


async def test_readiness_answers_503_with_its_reasons(api: Api) -> None:
    """Not ready: 503 with the reasons (a probe answer, not an error); ready: 200 and no reasons."""
    assert await api.call("GET", "/readyz") == (200, {"ready": True, "reasons": []})
    api.readiness.reasons = ["the tenant store is still loading"]
    assert await api.call("GET", "/readyz") == (503, {"ready": False, "reasons": ["the tenant store is still loading"]})


def test_every_api_error_has_a_status() -> None:
    """Each error the service objects raise has its status in the one table (else it would answer 500)."""
    kinds = set(ApiError.__subclasses__())
    assert kinds == set(STATUS_OF)


async def test_a_realm_holds_several_downstreams_each_managed_on_its_own(api: Api) -> None:
    """PUT /tenants/acme/downstreams/crm enables a second app of the realm next to the one of
    PUT /tenants/acme (named default): each is validated and stored under its own key, shown and listed
    with its name, never with its token; disabling one leaves the other."""
    request = {"base_url": "https://x.example/scim", "token": TOKEN}
    assert (await api.call("PUT", "/tenants/acme", request))[0] == 201
    status, crm = await api.call("PUT", "/tenants/acme/downstreams/crm", {**request, "base_url": "https://crm.example"})
    assert (status, crm["realm"], crm["downstream"], crm["base_url"]) == (201, "acme", "crm", "https://crm.example")
    assert [d.tenant for d in api.downstreams.validated] == ["acme", "acme/crm"]
    status, listed = await api.call("GET", "/tenants/acme/downstreams")
    assert (status, [d["downstream"] for d in listed["downstreams"]]) == (200, ["crm", "default"])
    assert (await api.call("GET", "/tenants/acme/downstreams/default"))[1]["base_url"] == "https://x.example/scim"
    assert TOKEN not in json.dumps([crm, listed])
    assert await api.call("DELETE", "/tenants/acme/downstreams/crm") == (
        200,
        {"realm": "acme", "downstream": "crm", "status": "disabled"},
    )
    assert (await api.call("GET", "/tenants/acme/downstreams/crm"))[0] == 404
    assert (await api.call("GET", "/tenants/acme"))[1]["downstream"] == "default"


async def test_a_downstream_name_that_does_not_match_the_pattern_answers_400(api: Api) -> None:
    """Upper case, a leading dash, over 40 characters: 400 naming the pattern, before any validation."""
    for name in ("CRM", "-crm", "x" * 41):
        status, body = await api.call(
            "PUT", f"/tenants/acme/downstreams/{name}", {"base_url": "https://x", "token": "t"}
        )
        assert (status, is_problem(body, "invalid_request")) == (400, True), name
        assert "[a-z0-9]" in body["detail"]
    assert api.downstreams.validated == []
