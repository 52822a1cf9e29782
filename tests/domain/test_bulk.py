"""SCIM /Bulk limits, request sizes and per-operation outcomes (service.domain.bulk)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.domain import bulk


@pytest.mark.parametrize(
    ("section", "limits"),
    [
        ({"supported": True, "maxOperations": 50, "maxPayloadSize": 100_000}, bulk.BulkLimits(50, 95_000)),
        ({"supported": True, "maxOperations": 5000, "maxPayloadSize": 1000}, bulk.BulkLimits(1000, 950)),
        ({"supported": False, "maxOperations": 50, "maxPayloadSize": 100_000}, None),
        ({"supported": True, "maxOperations": 1, "maxPayloadSize": 100_000}, None),  # a bulk of one is a request
        ({"supported": True, "maxOperations": 50}, None),  # no payload limit: not announced properly
        ({"supported": "true", "maxOperations": 50, "maxPayloadSize": 100_000}, None),
        (None, None),
    ],
)
def test_bulk_is_used_only_when_announced_with_its_limits(section: Any, limits: bulk.BulkLimits | None) -> None:
    assert bulk.bulk_limits({"bulk": section} if section is not None else {}) == limits


def test_sizes_add_up_to_the_body_as_sent() -> None:
    """The empty request plus each operation plus the separators is exactly what aiohttp sends."""
    ops = [bulk.operation("POST", "Users", f"op-{i:06d}", {"userName": f"ü{i}"}) for i in range(3)]
    counted = bulk.EMPTY_REQUEST_BYTES + sum(bulk.size_of(op) for op in ops) + 2 * bulk.SEPARATOR_BYTES
    assert counted == len(json.dumps(bulk.request(ops)).encode())
    assert "failOnErrors" not in bulk.request(ops)


def test_outcomes_are_matched_by_bulkid_whatever_shape_the_status_has() -> None:
    doc = {
        "Operations": [
            {"bulkId": "b", "status": 409, "response": {"scimType": "uniqueness"}},
            {"bulkId": "a", "status": "201", "location": "https://x/v2/Users/abc%20d"},
            {"bulkId": "c", "status": {"code": "200"}},
            {"bulkId": "d"},  # no status: left out, its caller hears "no outcome"
            {"status": "201"},  # no bulkId
        ]
    }
    found = bulk.outcomes(doc)
    assert sorted(found) == ["a", "b", "c"]
    assert (found["a"].status, found["b"].status, found["c"].status) == (201, 409, 200)
    assert bulk.created_id(found["a"]) == "abc d"


def test_a_created_id_comes_from_the_resource_when_the_response_carries_it() -> None:
    outcome = bulk.OperationOutcome(201, "https://x/v2/Users/from-location", {"id": "from-body"})
    assert bulk.created_id(outcome) == "from-body"
    assert bulk.created_id(bulk.OperationOutcome(201, None, None)) is None
