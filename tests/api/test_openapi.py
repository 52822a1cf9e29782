"""The OpenAPI document: valid OpenAPI 3.1, the same as the committed docs, the same routes as the
application serves, and no token in any answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import OpenAPIV31SpecValidator
from prometheus_client import CollectorRegistry

from service.api.app import api_app
from service.api.openapi import MARKDOWN, WRITE_COMMAND, openapi_document, rendered, with_routes_table
from service.api.routes import ROUTES
from service.api.tenants import TenantService
from tests.api.fakes import FakeDownstreams, FakeHeld, FakeLinks, FakeRecords

ROOT = Path(__file__).resolve().parents[2]
SECRET_WORDS = ("token", "secret", "password", "credential")


class Ready:
    def unready_reasons(self) -> list[str]:
        return []


def app() -> Any:
    tenants = TenantService(FakeRecords(), FakeDownstreams(), FakeHeld(), FakeHeld(), FakeLinks())
    return api_app(tenants, "admin-token", Ready(), CollectorRegistry(), 1024)


def test_the_document_is_valid_openapi_3_1() -> None:
    """openapi-spec-validator finds no error in the generated document."""
    errors = list(OpenAPIV31SpecValidator(openapi_document()).iter_errors())
    assert errors == []


def test_the_committed_document_is_the_generated_one() -> None:
    """docs/openapi.json is what the code generates (so the published contract cannot drift)."""
    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert committed == rendered(), f"docs/openapi.json is stale: run `{WRITE_COMMAND}`"


def test_the_reference_table_is_the_generated_one() -> None:
    """docs/reference/api.md's routes table lists every route with its status codes, as generated."""
    markdown = (ROOT / MARKDOWN).read_text()
    assert markdown == with_routes_table(markdown), f"{MARKDOWN}'s routes table is stale: run `{WRITE_COMMAND}`"


async def test_the_served_document_is_the_committed_one_and_needs_no_token() -> None:
    """GET /openapi.json without a token answers the document."""
    async with TestClient(TestServer(app())) as client, client.get("/openapi.json") as answer:
        assert answer.status == 200
        assert await answer.json() == json.loads(rendered())


def test_the_application_serves_exactly_the_documented_routes() -> None:
    """Every route registered on the application is in the document and the other way round (HEAD aside)."""
    served = {
        (route.method, route.resource.canonical)
        for route in app().router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {
        (method.upper(), path) for path, operations in openapi_document()["paths"].items() for method in operations
    }
    assert served == documented
    assert len(documented) == len(ROUTES)


def test_no_answer_can_hold_a_token() -> None:
    """No response schema (success or error) has a property named like a token or secret: a token cannot be
    answered because there is nowhere to put it."""
    document = openapi_document()
    schemas = document["components"]["schemas"]
    answered: set[str] = set()
    for operations in document["paths"].values():
        for operation in operations.values():
            for response in operation["responses"].values():
                for content in response["content"].values():
                    answered |= _referenced(content["schema"], schemas)
    assert "Problem" in answered
    assert "TenantView" in answered
    for name in answered:
        for prop in schemas[name].get("properties", {}):
            assert not any(word in prop.lower() for word in SECRET_WORDS), f"{name}.{prop}"


def test_every_operation_documents_its_errors_in_the_one_shape() -> None:
    """Each operation answers 500 in the error shape; behind the token also 401; with a body also 400, 413."""
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            expected = {"500"} | ({"401"} if operation.get("security") != [] else set())
            if "requestBody" in operation:
                expected |= {"400", "413"}
            assert expected <= set(responses), (method, path)
            for status, response in responses.items():
                if int(status) >= 400 and not (path == "/readyz" and status == "503"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, status)


def _referenced(schema: Any, schemas: dict[str, Any], seen: set[str] | None = None) -> set[str]:
    """The names of the component schemas `schema` refers to, transitively."""
    seen = set() if seen is None else seen
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                _referenced(schemas[name], schemas, seen)
        for value in schema.values():
            _referenced(value, schemas, seen)
    elif isinstance(schema, list):
        for value in schema:
            _referenced(value, schemas, seen)
    return seen
