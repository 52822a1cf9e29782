"""Production-shaped traffic on the real broker (tests/lives.py): users' lives interleaved in time,
spread record by record over partitions and both topics, to a downstream that fails now and then.
Every user ends downstream as event-time order says, for every delete policy."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.domain.plan import DeletePolicy
from tests import events, lives
from tests.conftest import SCIM_TOKEN
from tests.faults import FaultMix, FaultProxy
from tests.integration.conftest import Pipeline
from tests.support import ScimServer, wait_until

USERS_PER_REALM = 40


@pytest.fixture
async def faulty(scim_server: ScimServer) -> AsyncIterator[FaultProxy]:
    mix = FaultMix(error_500=0.03, throttle_429=0.03, reset_after=0.04)
    proxy = await FaultProxy(f"http://127.0.0.1:{scim_server.port}", mix, seed=11, hang_seconds=1.0).start()
    yield proxy
    await proxy.stop()


@pytest.mark.parametrize("bulk", ["auto", "off"])
async def test_interleaved_lives_spread_over_partitions_converge_for_every_delete_policy(
    pipeline: Pipeline, faulty: FaultProxy, scim_server: ScimServer, bulk: str
) -> None:
    """40 users per realm, one realm per delete policy, all interleaved: after the traffic drains, each
    user downstream equals the event-time-order result (or is absent), with exactly one account per user;
    written through /Bulk (scim2-server announces it) and, with the tenant's `bulk: off`, one request each."""
    rng = random.Random(20261201)
    realms: dict[str, tuple[DeletePolicy, str]] = {}
    all_lives: list[list[lives.Event]] = []
    for policy in DeletePolicy:
        realm = pipeline.realm()
        space = f"{realm}-{uuid.uuid4().hex[:6]}"
        enable = {"base_url": faulty.base_url(space), "token": SCIM_TOKEN, "delete_policy": str(policy), "bulk": bulk}
        status, body = await pipeline.api.call("PUT", f"/tenants/{realm}", enable)
        assert status == 201, body
        realms[realm] = (policy, f"http://127.0.0.1:{scim_server.port}/{space}")
        all_lives += [lives.user_life(rng, realm, str(uuid.uuid4())) for _ in range(USERS_PER_REALM)]
    timeline = lives.interleave(rng, all_lives, events.now_ms())
    await lives.publish(pipeline.publisher, pipeline.settings, timeline, rng)

    wanted = {
        realm: lives.expected_users([e for e in timeline if e[1]["realmName"] == realm], policy)
        for realm, (policy, _) in realms.items()
    }
    different: dict[str, Any] = {}

    async def converged() -> bool:
        different.clear()
        for realm, (_, base) in realms.items():
            different.update(await lives.differences(base, wanted[realm]))
        return not different

    try:
        await wait_until(converged, timeout=180, what="every user converged")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still different: {different}") from None
    assert sum(faulty.injected.values()) > 0, "the downstream never failed: the test lost its faults"
    assert any(v is None for realm in wanted for v in wanted[realm].values()), "no user ends absent"
    if bulk == "off":
        assert faulty.requests["POST /Bulk"] == 0, faulty.requests
        assert faulty.requests["POST /Users"] > 0 and faulty.requests["PATCH /Users"] > 0, faulty.requests
    else:
        assert faulty.requests["POST /Bulk"] > 0, faulty.requests
