"""ETags against the real scim2-server (its default ServiceProviderConfig announces etag.supported): a
user changed downstream by another writer after our last write makes our next write 412; the client
reads the resource again and the write lands once more, with the version read. Counted at a proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from service.domain import scim
from service.metrics import Metrics
from service.scim.client import Downstream, ScimClient
from service.scim.egress import EgressPolicy
from tests.conftest import SCIM_TOKEN
from tests.faults import FaultProxy
from tests.support import ScimServer

LOCAL = EgressPolicy(frozenset({"127.0.0.1"}), allow_private_networks=True)


@pytest.fixture
async def proxy(scim_server: ScimServer) -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy(f"http://127.0.0.1:{scim_server.port}").start()
    yield proxy
    await proxy.stop()


async def test_a_write_over_another_writers_change_is_read_again_and_lands(
    proxy: FaultProxy, scim_server: ScimServer
) -> None:
    """Created (its version kept), changed by someone else downstream, then PATCHed by us: the first
    PATCH is refused 412 (If-Match was sent, with the stale version), one GET, the second PATCH lands.
    The PATCH after that goes with the version the last answer gave, without a read."""
    tenant = scim_server.base_url().rsplit("/", 1)[1]
    ds = Downstream("etags", proxy.base_url(tenant), SCIM_TOKEN)
    direct = scim_server.base_url(tenant)
    async with aiohttp.ClientSession() as http:
        client = ScimClient.over_http(http, Metrics(CollectorRegistry()), timeout_seconds=10, egress=LOCAL)
        created = await client.create_user(ds, scim.user_resource("kc-1", {"userName": "jdoe", "givenName": "J"}))
        user_id = created["id"]
        assert created["meta"]["version"]
        async with http.patch(  # another writer, straight to the server
            f"{direct}/Users/{user_id}",
            json=scim.patch_request([{"op": "replace", "path": "title", "value": "set by hand"}]),
            headers={"Authorization": f"Bearer {SCIM_TOKEN}"},
        ) as answer:
            assert answer.status in (200, 204), await answer.text()
        proxy.requests.clear()
        await client.patch_user(ds, user_id, [{"op": "replace", "path": "active", "value": False}])
        raced = dict(proxy.requests)
        proxy.requests.clear()
        await client.patch_user(ds, user_id, [{"op": "replace", "path": "displayName", "value": "Jay"}])
        async with http.get(f"{direct}/Users/{user_id}", headers={"Authorization": f"Bearer {SCIM_TOKEN}"}) as read:
            account = await read.json(content_type=None)
    assert account["active"] is False
    assert account["title"] == "set by hand"
    # the capabilities are read once, at the first write that needs them
    assert raced == {"GET /ServiceProviderConfig": 1, "PATCH /Users": 2, "GET /Users": 1}
    assert proxy.requests == {"PATCH /Users": 1}  # the version its 204 gave (ETag header): no read
    assert account["displayName"] == "Jay"
