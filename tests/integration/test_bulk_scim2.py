"""SCIM /Bulk against the real scim2-server (its default ServiceProviderConfig announces bulk with
maxOperations 1000): the executor's writes of many users at once leave as /Bulk requests through the
coalescer, each user ends right, and a 409 inside a bulk goes through the adoption rules. No broker:
the client, the coalescer and the server, with a counting proxy in front of the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from service.domain.changes import UserChange
from service.domain.plan import DeletePolicy, plan_change
from service.domain.state import UserState
from service.errors import ScimOwnershipConflict
from service.metrics import Metrics
from service.scim.bulk import BulkPort
from service.scim.client import Downstream, ScimClient
from service.scim.egress import EgressPolicy
from service.scim.executor import Outcome, Result, execute
from tests.conftest import SCIM_TOKEN
from tests.counting import CountingProxy
from tests.support import ScimServer, by_external_id, downstream_users

LOCAL = EgressPolicy(frozenset({"127.0.0.1"}), allow_private_networks=True)
USERS = 40


@pytest.fixture
async def proxy(scim_server: ScimServer) -> AsyncIterator[CountingProxy]:
    proxy = await CountingProxy(f"http://127.0.0.1:{scim_server.port}").start()
    yield proxy
    await proxy.stop()


async def create(base_url: str, body: dict[str, Any]) -> str:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {SCIM_TOKEN}"}) as http,
        http.post(f"{base_url}/Users", json=body) as answer,
    ):
        assert answer.status == 201, await answer.text()
        return str((await answer.json(content_type=None))["id"])


def change(i: int) -> UserChange:
    attributes = {"userName": f"u{i}", "givenName": f"G{i}", "familyName": f"F{i}", "email": None, "active": i % 3 != 0}
    return UserChange("bulk", f"kc-{i}", "upsert", 1000, "USER_UPDATE", attributes=attributes)


async def test_writes_of_many_users_go_out_as_bulk_and_a_409_inside_adopts_or_conflicts(
    proxy: CountingProxy, scim_server: ScimServer
) -> None:
    """40 users at once, on a downstream holding u1 (another owner's) and u2 (nobody's): /Bulk requests
    carry the creates; u2's 409 inside a bulk adopts the account, u1's is a conflict and its owner's
    account is left as it was; every other user is created once with its attributes."""
    tenant = scim_server.base_url().rsplit("/", 1)[1]
    base = proxy.base_url(tenant)
    other = await create(base, {"userName": "u1", "externalId": "someone-else", "name": {"familyName": "Theirs"}})
    unowned = await create(base, {"userName": "u2"})
    proxy.counted.clear()
    ds = Downstream("bulk", base, SCIM_TOKEN)
    async with aiohttp.ClientSession() as http:
        client = ScimClient.over_http(http, Metrics(CollectorRegistry()), timeout_seconds=10, egress=LOCAL)
        port = BulkPort(client, Metrics(CollectorRegistry()))

        async def apply(i: int) -> Outcome | BaseException:
            c = change(i)
            try:
                return await execute(plan_change(UserState(), c, DeletePolicy.IGNORE), c, ds, port)
            except ScimOwnershipConflict as exc:
                return exc

        outcomes = await asyncio.gather(*(apply(i) for i in range(USERS)))
    assert proxy.counted["POST /Bulk"] >= 1
    assert proxy.counted["POST /Users"] + proxy.counted["POST /Bulk"] < USERS  # coalesced, not one by one
    conflict = outcomes[1]
    assert isinstance(conflict, ScimOwnershipConflict) and conflict.downstream_id == other
    adopted = outcomes[2]
    assert isinstance(adopted, Outcome) and (adopted.result, adopted.state.downstream_id) == (Result.LINKED, unowned)
    held = by_external_id(await downstream_users(scim_server.base_url(tenant), SCIM_TOKEN))
    assert [(u["id"], u["name"]["familyName"]) for u in held["someone-else"]] == [(other, "Theirs")]
    for i in range(USERS):
        if i == 1:
            continue
        [user] = held[f"kc-{i}"]
        want = change(i).attributes
        assert (user["userName"], user["name"]["familyName"], user["active"]) == (
            want["userName"],
            want["familyName"],
            want["active"],
        )
        outcome = outcomes[i]
        assert isinstance(outcome, Outcome) and outcome.state.downstream_id == user["id"]
