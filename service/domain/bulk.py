"""SCIM /Bulk (RFC 7644 §3.7): the limits a downstream announces, request bodies, and the outcome of each
operation read back from a response. Pure; service.scim.bulk sends them.

Sizes are counted as aiohttp sends the body (json.dumps with its default separators, UTF-8), so a
request built here never exceeds the downstream's maxPayloadSize.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

BULK_REQUEST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
MAX_OPERATIONS = 1000  # our own ceiling, whatever the downstream announces: one answer stays readable
PAYLOAD_MARGIN = 0.95  # of maxPayloadSize: room for a downstream that counts bytes a little differently


@dataclass(frozen=True, slots=True)
class BulkLimits:
    max_operations: int
    max_payload_bytes: int


def bulk_limits(config: object) -> BulkLimits | None:
    """What a ServiceProviderConfig allows: None unless `bulk.supported` is true with a maxOperations of
    at least 2 and a positive maxPayloadSize (a bulk of one is a plain request)."""
    section = config.get("bulk") if isinstance(config, dict) else None
    if not isinstance(section, dict) or section.get("supported") is not True:
        return None
    operations, payload = _positive_int(section.get("maxOperations")), _positive_int(section.get("maxPayloadSize"))
    if operations is None or payload is None or operations < 2:
        return None
    return BulkLimits(min(operations, MAX_OPERATIONS), int(payload * PAYLOAD_MARGIN))


def operation(method: str, path: str, bulk_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """One operation of a request. Every operation carries a bulkId: its outcome is matched by it."""
    return {"method": method, "bulkId": bulk_id, "path": f"/{path.lstrip('/')}", "data": data}


def request(operations: list[dict[str, Any]]) -> dict[str, Any]:
    """A bulk request; failOnErrors is left unset, so every operation is tried and answered for."""
    return {"schemas": [BULK_REQUEST_SCHEMA], "Operations": operations}


def size_of(doc: object) -> int:
    """Bytes of `doc` as sent."""
    return len(json.dumps(doc).encode())


EMPTY_REQUEST_BYTES = size_of(request([]))
SEPARATOR_BYTES = 2  # ", " between two operations


@dataclass(frozen=True, slots=True)
class OperationOutcome:
    status: int
    location: str | None
    response: Any  # an error body, or the resource when the downstream includes it


def outcomes(doc: object) -> dict[str, OperationOutcome]:
    """bulkId -> the outcome of each operation the response answers for. An operation without a readable
    status or bulkId is left out: its caller learns that no outcome came back."""
    answered = doc.get("Operations") if isinstance(doc, dict) else None
    found: dict[str, OperationOutcome] = {}
    for entry in answered if isinstance(answered, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("bulkId"), str):
            continue
        status = _status(entry.get("status"))
        if status is None:
            continue
        location = entry.get("location")
        found[entry["bulkId"]] = OperationOutcome(
            status, location if isinstance(location, str) else None, entry.get("response")
        )
    return found


def created_id(outcome: OperationOutcome) -> object:
    """The id of a resource a POST operation created: from the resource when the response carries it,
    else the last segment of its location (RFC 7644 §3.7.3 gives every successful POST one)."""
    if isinstance(outcome.response, dict) and "id" in outcome.response:
        return outcome.response["id"]
    if outcome.location is None:
        return None
    path = urlsplit(outcome.location).path.rstrip("/")
    return unquote(path.rsplit("/", 1)[-1]) if "/" in path else None


def _status(value: object) -> int | None:
    """RFC 7644 writes the status as a string ("201"); some downstreams send a number or an object."""
    if isinstance(value, dict):  # early drafts: {"code": "201"}
        value = value.get("code")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
