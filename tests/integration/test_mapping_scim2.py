"""Attribute mapping on the real broker and a real scim2-server: Keycloak user attributes sent as
enterprise-extension attributes, converging whatever order their events arrive in (a removal included),
and an enable whose mapping names an attribute the server does not declare refused with a 400."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from scim2_server.utils import load_json_resource

from service.domain.mapping import ENTERPRISE_USER
from tests import events as ev
from tests.conftest import SCIM_TOKEN
from tests.integration.conftest import Pipeline
from tests.support import ScimServer, start_scim_server, wait_until

E = ENTERPRISE_USER
USERS = 6
MAPPING = [
    {"source": "username", "target": "userName"},
    {"source": "email", "target": "emails"},
    {"source": "attributes.department", "target": f"{E}:department"},
    {"source": "attributes.employeeNumber", "target": f"{E}:employeeNumber"},
]


def life(realm: str, user_id: str, i: int, t0: int) -> list[dict[str, Any]]:
    """Created in Sales as employee 100<i>; moved to Ops with a new number; then (even users) the
    console saves the user without employeeNumber (removed), (odd users) moves them to Legal."""
    created = {
        "username": f"map{i}",
        "email": f"map{i}@example.com",
        "enabled": True,
        "attributes": {"department": ["Sales", "Extra"], "employeeNumber": [f"100{i}"]},
    }
    last = {"department": ["Ops"]} if i % 2 == 0 else {"department": ["Legal"], "employeeNumber": [f"200{i}"]}
    return [
        ev.admin_event(realm, user_id, "CREATE", created, time_ms=t0 + 1),
        ev.update_user(
            realm, user_id, attributes={"department": ["Ops"], "employeeNumber": [f"200{i}"]}, time_ms=t0 + 2
        ),
        ev.update_user(realm, user_id, attributes=last, time_ms=t0 + 3),
    ]


async def test_user_attributes_reach_the_enterprise_extension_in_any_arrival_order(pipeline: Pipeline) -> None:
    """Six users' creates and attribute updates, shuffled over partitions (later events often first):
    each account ends with the last department, and employeeNumber removed where the last save dropped it."""
    realm = pipeline.realm()
    base = pipeline.bases.setdefault(realm, pipeline.scim.base_url(realm + uuid.uuid4().hex[:6]))
    status, view = await pipeline.api.call(
        "PUT", f"/tenants/{realm}", {"base_url": base, "token": SCIM_TOKEN, "mapping": MAPPING}
    )
    assert status == 201, view
    assert sorted(view["mapping"], key=str) == sorted(MAPPING, key=str)  # shown in target order
    users = [str(uuid.uuid4()) for _ in range(USERS)]
    timeline = [e for i, uid in enumerate(users) for e in life(realm, uid, i, ev.now_ms() + 10 * i)]
    random.Random(13).shuffle(timeline)
    await pipeline.admin(*timeline, partitions=3)

    wanted = {
        uid: {"department": "Ops"} if i % 2 == 0 else {"department": "Legal", "employeeNumber": f"200{i}"}
        for i, uid in enumerate(users)
    }
    seen: dict[str, Any] = {}

    async def converged() -> bool:
        for uid, expected in wanted.items():
            account = await pipeline.user_by_external_id(realm, uid)
            seen[uid] = account and {k: v for k, v in (account.get(E) or {}).items() if v is not None}
            if seen[uid] != expected:
                return False
        return True

    await wait_until(converged, timeout=45, what=lambda: f"enterprise attributes as wanted; seen {seen}")
    account = await pipeline.user_by_external_id(realm, users[1])
    assert account is not None and E in account["schemas"]
    assert account["userName"] == "map1"


@pytest.fixture(scope="module")
def no_employee_number_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScimServer]:
    """scim2-server whose enterprise extension declares no employeeNumber."""
    schemas: list[dict[str, Any]] = load_json_resource("default-schemas.json")
    for schema in schemas:
        if schema["id"] == E:
            schema["attributes"] = [a for a in schema["attributes"] if a["name"] != "employeeNumber"]
    path = tmp_path_factory.mktemp("scim2") / "schemas.json"
    path.write_text(json.dumps(schemas))
    server = start_scim_server(SCIM_TOKEN, schema=path)
    yield server
    server.stop()


async def test_a_mapping_to_an_attribute_the_server_lacks_is_refused(
    pipeline: Pipeline, no_employee_number_server: ScimServer
) -> None:
    """The server's /Schemas has no employeeNumber: the enable answers 400 invalid_mapping naming the
    entry, and nothing is stored; the same mapping without that entry is accepted."""
    realm = pipeline.realm()
    request = {"base_url": no_employee_number_server.base_url(), "token": SCIM_TOKEN, "mapping": MAPPING}
    status, problem = await pipeline.api.call("PUT", f"/tenants/{realm}", request)
    assert (status, problem["error"]) == (400, "invalid_mapping"), problem
    assert f"attributes.employeeNumber -> {E}:employeeNumber" in problem["detail"]
    assert "no attribute employeeNumber" in problem["detail"]
    assert (await pipeline.api.call("GET", f"/tenants/{realm}"))[0] == 404
    status, view = await pipeline.api.call("PUT", f"/tenants/{realm}", {**request, "mapping": MAPPING[:3]})
    assert status == 201, view
