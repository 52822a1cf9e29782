"""A console mounted on the API's application, over a tenant service with fakes behind it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from service.api.app import api_app, problem
from service.api.tenants import TenantService
from service.console.app import ConsoleConfig, console_app
from tests.api.fakes import FakeDownstreams, FakeHeld, FakeKeycloak, FakeLinks, FakeRecords
from tests.api.test_http import Readiness
from tests.console.fakes import FakeActivity, FakeOidc

ADMIN_TOKEN = "admin-token"
NOW = 1_780_000_000.0
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Ui:
    client: TestClient[Any, Any]
    records: FakeRecords
    downstreams: FakeDownstreams
    parked: FakeHeld
    dead: FakeHeld
    activity: FakeActivity
    oidc: FakeOidc
    keycloak: FakeKeycloak

    async def get(self, path: str, **options: Any) -> tuple[int, str, Any]:
        async with self.client.get(path, allow_redirects=False, **options) as answer:
            return answer.status, await answer.text(), answer

    async def post(self, path: str, form: dict[str, str], **options: Any) -> tuple[int, str, Any]:
        async with self.client.post(path, data=form, allow_redirects=False, **options) as answer:
            return answer.status, await answer.text(), answer

    async def sign_in(self, token: str = ADMIN_TOKEN) -> tuple[int, str, Any]:
        _, page, _ = await self.get("/ui/login")
        return await self.post("/ui/login", {"token": token, "csrf": csrf_of(page), "next": "/ui/tenants"})

    async def csrf(self, path: str = "/ui/tenants") -> str:
        status, page, _ = await self.get(path)
        assert status == 200, page
        return csrf_of(page)


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


def build(
    activity: FakeActivity | None,
    oidc: FakeOidc | None,
    keycloak: FakeKeycloak | None,
    config: ConsoleConfig | None = None,
) -> tuple[Any, FakeRecords, FakeDownstreams, FakeHeld, FakeHeld]:
    records, downstreams, parked, dead = FakeRecords(), FakeDownstreams(), FakeHeld(), FakeHeld()
    service = TenantService(records, downstreams, parked, dead, FakeLinks(), keycloak, activity_sink=activity)
    console = console_app(
        service,
        ADMIN_TOKEN,
        config or ConsoleConfig(),
        problem,
        activity=activity,
        oidc=oidc,
        keycloak=keycloak is not None,
        clock=lambda: NOW,
    )
    app = api_app(service, ADMIN_TOKEN, Readiness(), CollectorRegistry(), 64 * 1024, console)
    return app, records, downstreams, parked, dead


@pytest.fixture
async def ui() -> AsyncIterator[Ui]:
    activity, oidc, keycloak = FakeActivity(), FakeOidc(), FakeKeycloak(warnings=[])
    app, records, downstreams, parked, dead = build(activity, oidc, keycloak)
    async with TestClient(TestServer(app)) as client:
        yield Ui(client, records, downstreams, parked, dead, activity, oidc, keycloak)
