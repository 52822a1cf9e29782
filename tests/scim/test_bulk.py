"""The /Bulk coalescer (service.scim.bulk.BulkPort) over a ScimClient with a scripted transport: which
requests leave, and what each caller hears."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from service.domain import scim
from service.errors import ScimConflict, ScimNotFound, ScimRejected, ScimTransient
from service.metrics import Metrics
from service.scim.bulk import BulkPort
from service.scim.client import Downstream, ScimClient
from service.scim.transport import Request, error_for_status

DS = Downstream("acme", "http://scim.invalid/v2", "token-1")
BULK = {"supported": True, "maxOperations": 100, "maxPayloadSize": 1_000_000}


class Scripted:
    """A Transport: the ServiceProviderConfig announces `bulk`; /Bulk operations are answered by
    `per_operation(op) -> (status, response)`; a whole /Bulk can be failed with `bulk_status`."""

    def __init__(self, bulk: dict[str, Any] | None = None) -> None:
        self.bulk = BULK if bulk is None else bulk
        self.requests: list[Request] = []
        self.bulk_status: int | None = None
        self.per_operation: Callable[[dict[str, Any]], tuple[int, Any]] = lambda op: (
            (201, None) if op["method"] == "POST" else (204, None)
        )
        self.created = 0

    async def send(self, request: Request) -> Any:
        self.requests.append(request)
        if request.path == "ServiceProviderConfig":
            return {"schemas": [scim.SPC_SCHEMA], "bulk": self.bulk}
        if request.path == "Bulk":
            if self.bulk_status is not None:
                raise error_for_status(self.bulk_status, "POST", "Bulk") or AssertionError()
            assert request.body is not None and "failOnErrors" not in request.body
            answers = []
            for op in request.body["Operations"]:
                status, response = self.per_operation(op)
                answer: dict[str, Any] = {"method": op["method"], "bulkId": op["bulkId"], "status": str(status)}
                if status < 300:
                    answer["location"] = f"{DS.base_url}/Users/{self._id(op)}"
                else:
                    answer["response"] = response
                answers.append(answer)
            return {"Operations": answers}
        if request.method == "POST":
            return {"id": self._id({"method": "POST"})}
        return None

    def _id(self, op: dict[str, Any]) -> str:
        if op["method"] != "POST":
            return str(op["path"]).rsplit("/", 1)[1]
        self.created += 1
        return f"new-{self.created}"

    def sent(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests if r.path != "ServiceProviderConfig"]


def port(transport: Scripted, **kwargs: Any) -> BulkPort:
    return BulkPort(ScimClient(transport, Metrics()), Metrics(), **kwargs)


def user(i: int) -> dict[str, Any]:
    return scim.user_resource(f"kc-{i}", {"userName": f"u{i}", "active": True})


async def test_concurrent_creates_leave_as_one_bulk_and_each_caller_gets_its_own_id() -> None:
    transport = Scripted()
    bulk = port(transport)
    created = await asyncio.gather(*(bulk.create_user(DS, user(i)) for i in range(3)))
    assert transport.sent() == [("POST", "Bulk")]
    assert sorted(c["id"] for c in created) == ["new-1", "new-2", "new-3"]
    body = transport.requests[-1].body
    assert body is not None
    assert [op["data"]["userName"] for op in body["Operations"]] == ["u0", "u1", "u2"]
    assert len({op["bulkId"] for op in body["Operations"]}) == 3


async def test_each_operation_maps_its_own_status_as_a_single_request_would() -> None:
    """409 -> conflict (adoption path), 404 -> not found, 503 -> transient: for that caller only."""
    transport = Scripted()
    statuses = {"u1": 409, "u2": 503, "u3": 400}

    def answer(op: dict[str, Any]) -> tuple[int, Any]:
        if op["method"] == "PATCH":
            return 404, {"detail": "gone"}
        status = statuses.get(op["data"]["userName"], 201)
        return status, {"scimType": "uniqueness"} if status == 409 else {}

    transport.per_operation = answer
    bulk = port(transport)
    results = await asyncio.gather(
        *(bulk.create_user(DS, user(i)) for i in range(4)),
        bulk.patch_user(DS, "acc-9", [{"op": "replace", "path": "active", "value": False}]),
        return_exceptions=True,
    )
    assert transport.sent() == [("POST", "Bulk")]
    ok, conflict, transient, rejected, gone = results
    assert isinstance(ok, dict) and ok["id"] == "new-1"
    assert isinstance(conflict, ScimConflict) and conflict.scim_type == "uniqueness"
    assert isinstance(transient, ScimTransient)
    assert isinstance(rejected, ScimRejected)
    assert isinstance(gone, ScimNotFound)


async def test_a_whole_bulk_that_fails_transiently_fails_each_operation_transiently() -> None:
    transport = Scripted()
    transport.bulk_status = 503
    bulk = port(transport)
    results = await asyncio.gather(*(bulk.create_user(DS, user(i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ScimTransient) for r in results)
    assert transport.sent() == [("POST", "Bulk")]


async def test_a_downstream_refusing_the_bulk_itself_gets_each_operation_alone_from_then_on() -> None:
    """A 501 on /Bulk (announced, not served): the gathered writes go one by one now, and later ones too."""
    transport = Scripted()
    transport.bulk_status = 501
    bulk = port(transport)
    created = await asyncio.gather(*(bulk.create_user(DS, user(i)) for i in range(2)))
    assert sorted(c["id"] for c in created) == ["new-1", "new-2"]
    await asyncio.gather(*(bulk.create_user(DS, user(i)) for i in range(2, 4)))
    assert transport.sent() == [("POST", "Bulk")] + [("POST", "Users")] * 4


async def test_a_token_refused_on_the_bulk_is_refused_for_each_operation() -> None:
    transport = Scripted()
    transport.bulk_status = 401
    bulk = port(transport)
    results = await asyncio.gather(*(bulk.create_user(DS, user(i)) for i in range(2)), return_exceptions=True)
    assert all(isinstance(r, ScimRejected) and r.unauthorized for r in results)


async def test_max_operations_is_respected() -> None:
    transport = Scripted({"supported": True, "maxOperations": 2, "maxPayloadSize": 1_000_000})
    bulk = port(transport)
    await asyncio.gather(*(bulk.create_user(DS, user(i)) for i in range(5)))
    sizes = [len(r.body["Operations"]) if r.path == "Bulk" and r.body else 1 for r in transport.requests[1:]]
    assert sorted(sizes) == [1, 2, 2]  # the last one alone: a plain POST /Users


async def test_max_payload_size_is_respected() -> None:
    """Each request stays under maxPayloadSize as sent (with our margin)."""
    transport = Scripted({"supported": True, "maxOperations": 100, "maxPayloadSize": 1200})
    bulk = port(transport)
    await asyncio.gather(*(bulk.create_user(DS, user(i)) for i in range(12)))
    bulks = [r for r in transport.requests if r.path == "Bulk"]
    assert len(bulks) >= 2
    assert all(len(json.dumps(r.body).encode()) <= 1200 for r in bulks)
    assert sum(len(r.body["Operations"]) for r in bulks if r.body) + len(transport.sent()) - len(bulks) == 12


@pytest.mark.parametrize(
    ("bulk_section", "ds"),
    [
        (BULK, Downstream("acme", "http://scim.invalid/v2", "token-1", bulk=False)),  # the tenant's bulk: off
        ({"supported": False}, DS),  # not announced
    ],
)
async def test_without_bulk_every_write_is_a_plain_request(bulk_section: dict[str, Any], ds: Downstream) -> None:
    transport = Scripted(bulk_section)
    bulk = port(transport)
    await asyncio.gather(*(bulk.create_user(ds, user(i)) for i in range(3)))
    assert transport.sent() == [("POST", "Users")] * 3


async def test_a_lone_write_goes_out_as_the_plain_request() -> None:
    transport = Scripted()
    bulk = port(transport)
    await bulk.patch_user(DS, "acc-1", [{"op": "replace", "path": "active", "value": False}])
    assert transport.sent() == [("PATCH", "Users/acc-1")]


async def test_a_405_to_a_patch_inside_a_bulk_switches_the_tenant_to_put() -> None:
    """A PATCH operation answered 405 inside a /Bulk reaches its caller as the 405 (the executor resends
    it as a PUT), and the tenant's users are PUT from then on, as after a 405 to a single PATCH."""
    transport = Scripted()
    transport.per_operation = lambda op: (405, {"detail": "PATCH not allowed"})
    bulk = port(transport)
    assert await bulk.user_writes(DS) == "patch"
    ops = [{"op": "replace", "path": "active", "value": False}]
    refused = await asyncio.gather(*(bulk.patch_user(DS, f"acc-{i}", ops) for i in range(2)), return_exceptions=True)
    assert transport.sent() == [("POST", "Bulk")]
    assert [getattr(r, "status", None) for r in refused] == [405, 405]
    assert await bulk.user_writes(DS) == "put"
