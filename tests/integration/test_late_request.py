"""A request that lands after its client gave up, on the real broker and a real scim2-server: the first
POST of a user is held in the proxy past the client's timeout and delivered only after the retry's create
and the user's deletion went through. It creates an account nobody removes; the orphan check a
reconciliation queues for it removes it, and leaves another realm's account with an unknown id alone."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from service.domain.changes import UserChange
from service.domain.stamps import ChangeSource
from tests import events
from tests.conftest import SCIM_TOKEN
from tests.faults import FaultProxy
from tests.integration.conftest import Pipeline
from tests.support import (
    Api,
    Publisher,
    ScimServer,
    by_external_id,
    create_source_topics,
    downstream_users,
    make_settings,
    running_service,
    wait_until,
)


@pytest.fixture
async def proxy(scim_server: ScimServer) -> AsyncIterator[FaultProxy]:
    held = await FaultProxy(f"http://127.0.0.1:{scim_server.port}").start()
    yield held
    await held.stop()


@pytest.fixture
async def quick(kafka_bootstrap: str, scim_server: ScimServer) -> AsyncIterator[Pipeline]:
    """The service with a 1 s SCIM timeout: a held POST times out quickly."""
    settings = make_settings(kafka_bootstrap, http_timeout_seconds=1.0)
    await create_source_topics(settings)
    async with running_service(settings) as service, Publisher(kafka_bootstrap) as publisher:
        assert service.api_port is not None
        yield Pipeline(settings, service, Api(service.api_port), publisher, scim_server)


async def orphan_check(bootstrap: str, topic: str, realm: str, user_id: str) -> None:
    """Queue what a reconciliation queues for an extra account carrying `user_id` (Reconciler.run)."""
    change = UserChange(
        realm, user_id, "upsert", events.now_ms(), "RECONCILE", source=ChangeSource.RECONCILE, orphan=True
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=change.key.encode(), value=change.to_json())
    finally:
        await producer.stop()


async def test_a_create_that_lands_after_the_deletion_is_removed_by_the_orphan_check(
    quick: Pipeline, proxy: FaultProxy, scim_server: ScimServer, kafka_bootstrap: str
) -> None:
    """POST #1 held past the timeout; the retry looks up (nothing), POSTs #2; the deletion removes it;
    POST #1 then lands and creates an account (userName free again). The orphan check removes that
    account under policy `delete`; an account carrying an id the state never saw stays."""
    realm, space, uid = quick.realm(), uuid.uuid4().hex[:10], str(uuid.uuid4())
    direct = scim_server.base_url(space)
    enable = {"base_url": proxy.base_url(space), "token": SCIM_TOKEN, "delete_policy": "delete", "bulk": "off"}
    status, body = await quick.api.call("PUT", f"/tenants/{realm}", enable)
    assert status == 201, body
    proxy.late_posts = 1

    await quick.admin(events.create_user(realm, uid, "late.lander", email="late.lander@example.com"))

    async def created_by_the_retry() -> bool:
        return len(by_external_id(await downstream_users(direct, SCIM_TOKEN)).get(uid, [])) == 1

    await wait_until(created_by_the_retry, timeout=60, what="the retry's POST created the account")
    assert len(proxy.held) == 1 and proxy.requests["POST /Users"] == 2, proxy.requests
    await quick.admin(events.delete_user(realm, uid))

    async def deleted() -> bool:
        return uid not in by_external_id(await downstream_users(direct, SCIM_TOKEN))

    await wait_until(deleted, timeout=60, what="the deletion removed the account")
    assert await proxy.deliver_late() == [201]  # the first POST lands: the userName is free again
    zombie = by_external_id(await downstream_users(direct, SCIM_TOKEN)).get(uid, [])
    assert len(zombie) == 1, zombie

    stranger = str(uuid.uuid4())  # an account with an id this realm never sent: not provably ours
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{direct}/Users",
            json={"userName": "stranger", "externalId": stranger},
            headers={"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"},
        ) as answer,
    ):
        assert answer.status == 201, await answer.text()
    topic = quick.settings.changes_topic
    await orphan_check(kafka_bootstrap, topic, realm, stranger)
    await orphan_check(kafka_bootstrap, topic, realm, uid)

    await wait_until(deleted, timeout=60, what="the orphan check removed the late account")
    assert stranger in by_external_id(await downstream_users(direct, SCIM_TOKEN))


async def test_a_create_that_lands_while_the_retry_s_account_exists_is_refused_by_the_user_name(
    quick: Pipeline, proxy: FaultProxy, scim_server: ScimServer
) -> None:
    """The other order: POST #1 lands while the retry's account still holds the userName. scim2-server
    keeps userNames unique, so it answers 409 and the user keeps one account: no orphan is made."""
    realm, space, uid = quick.realm(), uuid.uuid4().hex[:10], str(uuid.uuid4())
    direct = scim_server.base_url(space)
    enable = {"base_url": proxy.base_url(space), "token": SCIM_TOKEN, "delete_policy": "delete", "bulk": "off"}
    status, body = await quick.api.call("PUT", f"/tenants/{realm}", enable)
    assert status == 201, body
    proxy.late_posts = 1

    await quick.admin(events.create_user(realm, uid, "early.lander", email="early.lander@example.com"))

    async def created_by_the_retry() -> bool:
        return len(by_external_id(await downstream_users(direct, SCIM_TOKEN)).get(uid, [])) == 1

    await wait_until(created_by_the_retry, timeout=60, what="the retry's POST created the account")
    assert await proxy.deliver_late() == [409]
    assert len(by_external_id(await downstream_users(direct, SCIM_TOKEN))[uid]) == 1
