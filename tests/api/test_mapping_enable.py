"""The attribute mapping of an enable: checked with the request (400 naming the entry), handed to the
downstream's validation, stored with the tenant and shown in its view."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet
from prometheus_client import CollectorRegistry

from service.api.app import api_app
from service.api.tenants import TenantService
from service.domain.mapping import DEFAULT_MAPPING, ENTERPRISE_USER, parse_mapping
from service.errors import EnableRefused
from service.tenants.models import Tenant, TokenCipher, decode_tenant, encode_tenant
from tests.api.fakes import FakeDownstreams, FakeHeld, FakeLinks, FakeRecords
from tests.api.test_http import ADMIN, Readiness

MAPPING = [
    {"source": "username", "target": "userName"},
    {"source": "attributes.department", "target": f"{ENTERPRISE_USER}:department"},
    {"source": "attributes.phone", "target": "phoneNumbers", "type": "mobile"},
]
REQUEST = {"base_url": "https://x.example/scim", "token": "downstream-secret"}


class Client:
    def __init__(self, client: TestClient[Any, Any], records: FakeRecords, downstreams: FakeDownstreams) -> None:
        self.client, self.records, self.downstreams = client, records, downstreams

    async def put(self, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.client.put("/tenants/acme", json=body, headers=ADMIN) as answer:
            return answer.status, await answer.json()


@pytest.fixture
async def api() -> AsyncIterator[Client]:
    records, downstreams = FakeRecords(), FakeDownstreams()
    tenants = TenantService(records, downstreams, FakeHeld(), FakeHeld(), FakeLinks())
    app = api_app(tenants, "admin-token", Readiness(), CollectorRegistry(), 8192)
    async with TestClient(TestServer(app)) as client:
        yield Client(client, records, downstreams)


async def test_a_mapping_is_validated_stored_and_shown(api: Client) -> None:
    """The downstream's validation receives the mapping; the view shows it (in target order)."""
    status, view = await api.put({**REQUEST, "mapping": MAPPING})
    assert status == 201
    assert api.downstreams.validated[-1].mapping == parse_mapping(MAPPING)
    assert view["mapping"] == parse_mapping(MAPPING).public()


async def test_without_a_mapping_the_default_is_shown(api: Client) -> None:
    """No mapping in the request: the default, shown as its four entries."""
    status, view = await api.put(REQUEST)
    assert (status, view["mapping"]) == (201, DEFAULT_MAPPING.public())
    assert api.downstreams.validated[-1].mapping is DEFAULT_MAPPING


@pytest.mark.parametrize(
    ("mapping", "named"),
    [
        ([{"source": "attributes.department", "target": "title"}], "no entry has target userName"),
        ([*MAPPING, {"source": "attributes.x", "target": "emails.value"}], "entry 3: target 'emails.value'"),
        ([*MAPPING, {"source": "shoeSize", "target": "title"}], "entry 3: source 'shoeSize'"),
        ([{"source": "username"}], "mapping.0.target"),
    ],
)
async def test_a_malformed_mapping_answers_400_naming_the_entry(api: Client, mapping: Any, named: str) -> None:
    """400 invalid_request whose detail names the bad entry; nothing validated or stored."""
    status, problem = await api.put({**REQUEST, "mapping": mapping})
    assert (status, problem["error"]) == (400, "invalid_request")
    assert named in problem["detail"], problem
    assert (api.downstreams.validated, api.records.writes) == ([], [])


async def test_a_mapping_the_downstream_refuses_answers_400(api: Client) -> None:
    """The downstream's /Schemas lacks a target (the validation says invalid_mapping): 400, not 422."""
    api.downstreams.refusal = EnableRefused("invalid_mapping", "the entry x -> title: no attribute title")
    status, problem = await api.put({**REQUEST, "mapping": MAPPING})
    assert (status, problem) == (
        400,
        {"error": "invalid_mapping", "detail": "the entry x -> title: no attribute title"},
    )


def test_the_mapping_survives_the_tenant_record() -> None:
    """Encoded with the tenant, decoded back; a default mapping adds nothing to the record."""
    cipher = TokenCipher(Fernet.generate_key().decode())
    tenant = Tenant("acme", "https://x.example", "t", mapping=parse_mapping(MAPPING))
    assert decode_tenant(encode_tenant(tenant, cipher), cipher, "acme").mapping == tenant.mapping
    plain = Tenant("acme", "https://x.example", "t")
    assert "mapping" not in json.loads(encode_tenant(plain, cipher))
    assert decode_tenant(encode_tenant(plain, cipher), cipher, "acme").mapping is DEFAULT_MAPPING
