"""Crash safety: kill -9 at random points of a burst, and a broker restarted mid-stream."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from service.domain.plan import DeletePolicy
from tests import events, lives
from tests.conftest import SCIM_TOKEN
from tests.integration.scenarios import burst, converged, start_with_tenant, stop, wait_ready, when_downstream_has
from tests.support import (
    Publisher,
    ScimServer,
    create_source_topics,
    downstream_users,
    free_port,
    kill_all,
    make_settings,
    spawn_service,
    start_broker,
    stop_broker,
    wait_until,
)


async def test_kill_minus_nine_at_random_points_loses_and_duplicates_nothing(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """Five rounds of: publish 60 interleaved user lives (tests/lives.py: creates, edits, disables and
    deletions spread over partitions and both topics), SIGKILL the service at a random moment, restart
    it. At the end every user of every round is what event-time order says (policy delete: deleted
    users absent), with at most one account each."""
    rng = random.Random(20261129)
    settings = make_settings(kafka_bootstrap, api_port=free_port())
    await create_source_topics(settings)
    log = tmp_path / "service.log"
    realm, base = "killed", scim_server.base_url()
    process = await start_with_tenant(settings, log, realm, base, delete_policy="delete")
    kill_points, wanted = [], {}
    async with Publisher(kafka_bootstrap) as publisher:
        for round_ in range(5):
            timeline = lives.interleave(
                rng, [lives.user_life(rng, realm, f"k{round_}-{n}") for n in range(60)], events.now_ms()
            )
            wanted.update(lives.expected_users(timeline, DeletePolicy.DELETE))
            before = len(await downstream_users(base, SCIM_TOKEN))
            await lives.publish(publisher, settings, timeline, rng)

            async def under_way(before: int = before) -> bool:
                return len(await downstream_users(base, SCIM_TOKEN)) != before

            await wait_until(under_way, what=f"round {round_} under way")
            delay = rng.uniform(0.0, 1.5)
            await asyncio.sleep(delay)  # the random kill point inside the burst: a deliberate pause, not a wait
            kill_all(process)  # the service and its stage 1 process, as a container dies
            process.wait(timeout=30)
            kill_points.append((round_, round(delay, 2), len(await downstream_users(base, SCIM_TOKEN))))
            process = spawn_service(settings, log)
            await wait_ready(settings.api_port, process, log)
    different: dict[str, object] = {}

    async def converged() -> bool:
        different.clear()
        different.update(await lives.differences(base, wanted))
        return not different

    try:
        await wait_until(converged, timeout=120, what="every round converged")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still different: {different}") from None
    finally:
        assert stop(process) == 0
    print(f"\nFIGURES kill -9: (round, delay s, downstream users at the kill) {kill_points}")
    assert len(await downstream_users(base, SCIM_TOKEN)) == sum(1 for v in wanted.values() if v is not None)


async def test_broker_restart_mid_stream_is_survived(scim_server: ScimServer, tmp_path: Path) -> None:
    """The broker stops in the middle of a burst and comes back on the same address: the service
    reconnects by itself and finishes the burst, once per user."""
    data = tmp_path / "kafka"
    bootstrap = start_broker(data)
    port = int(bootstrap.rsplit(":", 1)[1])
    settings = make_settings(bootstrap, api_port=free_port())
    log = tmp_path / "service.log"
    process = None
    try:
        await create_source_topics(settings)
        realm, base = "broker-restart", scim_server.base_url()
        process = await start_with_tenant(settings, log, realm, base)
        async with Publisher(bootstrap) as publisher:
            await publisher.send_all(settings.admin_events_topic, burst(realm, 150, "b"), partitions=3)
        await when_downstream_has(base, 10, "the burst under way")
        stop_broker(data)
        outage_started = time.monotonic()
        assert process.poll() is None, "the service must survive a broker outage"
        start_broker(data, port)
        outage = time.monotonic() - outage_started
        await wait_until(lambda: converged(base, 150, "b"), timeout=180, what="burst finished after the restart")
        assert process.poll() is None
        print(f"\nFIGURES broker restart: outage {outage:.1f}s, 150 users converged after it")
    finally:
        if process is not None:
            stop(process)
        stop_broker(data)
