"""A downstream that redirects writes to another address: the service never follows, it dead-letters."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests import events
from tests.conftest import SCIM_TOKEN
from tests.hostile import HostileProxy, Recorder
from tests.integration.conftest import Pipeline
from tests.support import ScimServer, downstream_users, wait_until


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    listener = await Recorder().start()
    yield listener
    await listener.stop()


@pytest.fixture
async def redirecting(scim_server: ScimServer, recorder: Recorder) -> AsyncIterator[HostileProxy]:
    proxy = await HostileProxy(
        f"http://127.0.0.1:{scim_server.port}", mode="redirect_writes", redirect_to=recorder.url
    ).start()
    yield proxy
    await proxy.stop()


async def test_a_redirected_create_is_dead_lettered_and_sent_nowhere(
    pipeline: Pipeline, redirecting: HostileProxy, recorder: Recorder
) -> None:
    """Writes answered 307 to a second listener: the create is dead-lettered with reason "redirect" (in
    GET /tenants/{realm}/dead-letters and outbound_scim_dead_letters_total{reason="redirect"}), the POST was asked once,
    and no request ever reaches the second listener; nothing is written behind the proxy either."""
    realm = pipeline.realm()
    space = f"{realm}-{uuid.uuid4().hex[:6]}"
    status, body = await pipeline.api.enable(realm, redirecting.base_url(space), SCIM_TOKEN)
    assert status == 201, body
    user_id = str(uuid.uuid4())
    await pipeline.admin(events.create_user(realm, user_id, "redirected.jane"))

    letters: list[dict[str, Any]] = []

    async def dead_lettered() -> bool:
        status, body = await pipeline.api.call("GET", f"/tenants/{realm}/dead-letters")
        assert status == 200, body
        letters[:] = [d for d in body["dead_letters"] if d.get("user_id") == user_id]
        return bool(letters)

    await wait_until(dead_lettered, timeout=30, what=f"a dead letter for {user_id}")
    assert [letter["reason"] for letter in letters] == ["redirect"]
    assert pipeline.counter("outbound_scim_dead_letters_total", reason="redirect") == 1
    assert redirecting.misbehaved["redirect_writes"] == 1, "the POST is refused, not retried"
    assert recorder.received == []
    assert await downstream_users(redirecting.upstream_url(space), SCIM_TOKEN) == []
