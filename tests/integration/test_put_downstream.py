"""A downstream without PATCH, for real: scim2-server started with a ServiceProviderConfig announcing
`patch.supported: false` (and no bulk), a proxy in front counting what reaches it. Users created,
updated, disabled and enabled, interleaved, converge through PUTs of the full user; no PATCH is sent.
No broker: the client, the executor and the server, as the service stacks them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from service.domain import scim
from service.domain.changes import UserChange
from service.domain.plan import DeletePolicy, plan_change
from service.domain.state import UserState
from service.metrics import Metrics
from service.scim.bulk import BulkPort
from service.scim.client import Downstream, ScimClient
from service.scim.egress import EgressPolicy
from service.scim.executor import Result, execute
from tests.conftest import SCIM_TOKEN
from tests.faults import FaultProxy
from tests.support import ScimServer, by_external_id, downstream_users, start_scim_server

LOCAL = EgressPolicy(frozenset({"127.0.0.1"}), allow_private_networks=True)
USERS = 6
NO_PATCH = {
    "schemas": [scim.SPC_SCHEMA],
    "patch": {"supported": False},
    "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
    "filter": {"supported": True, "maxResults": 100},
    "changePassword": {"supported": False},
    "sort": {"supported": False},
    "etag": {"supported": False},
    "authenticationSchemes": [],
}


@pytest.fixture(scope="module")
def no_patch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScimServer]:
    config = tmp_path_factory.mktemp("spc") / "no-patch.json"
    config.write_text(json.dumps(NO_PATCH))
    server = start_scim_server(SCIM_TOKEN, service_provider_config=config)
    yield server
    server.stop()


@pytest.fixture
async def proxy(no_patch_server: ScimServer) -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy(f"http://127.0.0.1:{no_patch_server.port}").start()
    yield proxy
    await proxy.stop()


def steps(i: int) -> list[UserChange]:
    """User i's life: created, renamed and given a new address, disabled, enabled again."""
    uid, name = f"kc-{i}", f"user{i}"
    first = {"userName": name, "givenName": f"G{i}", "familyName": f"F{i}", "email": f"{name}@example.com"}
    return [
        UserChange("put", uid, "upsert", 1000, "USER_CREATE", f"{i}-1", {**first, "active": True}),
        UserChange("put", uid, "upsert", 2000, "USER_UPDATE", f"{i}-2", {"familyName": f"R{i}", "email": None}),
        UserChange("put", uid, "upsert", 3000, "USER_UPDATE", f"{i}-3", {"active": False}),
        UserChange("put", uid, "upsert", 4000, "USER_UPDATE", f"{i}-4", {"active": i % 2 == 0}),
    ]


async def test_users_converge_through_puts_and_no_patch_reaches_the_downstream(
    proxy: FaultProxy, no_patch_server: ScimServer
) -> None:
    """Six users, each created, updated, disabled and (every other one) enabled, concurrently:
    each downstream account ends holding the user's last values, written by PUT; not one PATCH arrived."""
    tenant = no_patch_server.base_url().rsplit("/", 1)[1]
    ds = Downstream("put", proxy.base_url(tenant), SCIM_TOKEN)
    states = [UserState() for _ in range(USERS)]
    results: list[Result] = []
    async with aiohttp.ClientSession() as http:
        client = ScimClient.over_http(http, Metrics(CollectorRegistry()), timeout_seconds=10, egress=LOCAL)
        port = BulkPort(client, Metrics(CollectorRegistry()))

        async def life(i: int) -> None:
            for c in steps(i):  # in order per user, as the pipeline's per-key queue runs them
                outcome = await execute(plan_change(states[i], c, DeletePolicy.IGNORE), c, ds, port)
                states[i] = outcome.state
                results.append(outcome.result)

        await asyncio.gather(*(life(i) for i in range(USERS)))  # the users' requests interleave
        assert client.writes_mode("put") == "put"
    accounts = by_external_id(await downstream_users(no_patch_server.base_url(tenant), SCIM_TOKEN))
    for i in range(USERS):
        [account] = accounts[f"kc-{i}"]
        assert account["userName"] == f"user{i}"
        assert account["name"]["givenName"] == f"G{i}"
        assert account["name"]["familyName"] == f"R{i}"
        assert not account.get("emails")  # cleared by the update: a PUT without emails drops them
        assert account["active"] is (i % 2 == 0)
    assert results.count(Result.CREATED) == USERS
    assert proxy.requests["PATCH /Users"] == 0
    assert proxy.requests["POST /Users"] == USERS
    # rename, disable, enable: one PUT each; the odd users' last step changes nothing and sends nothing
    assert proxy.requests["PUT /Users"] == results.count(Result.UPDATED) == 3 * USERS - USERS // 2
