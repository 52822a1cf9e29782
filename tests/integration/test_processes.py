"""The service as real processes: two replicas in one group, and SIGTERM in the middle of a burst."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from service.settings import Settings
from tests.conftest import SCIM_TOKEN
from tests.integration.scenarios import burst, converged, start_with_tenant, stop, wait_ready, when_downstream_has
from tests.support import (
    Api,
    Publisher,
    ScimServer,
    create_source_topics,
    free_port,
    make_settings,
    spawn_service,
    wait_until,
)


async def test_two_replicas_in_one_group_give_one_user_each(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """Two service processes share the partitions -> same final state, exactly one downstream user each."""
    first = make_settings(kafka_bootstrap, api_port=free_port())
    second = first.model_copy(update={"api_port": free_port(), "instance_id": f"{first.instance_id}-2"})
    await create_source_topics(first)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    processes = [spawn_service(s, log) for s, log in zip((first, second), logs, strict=True)]
    try:
        for s, p, log in zip((first, second), processes, logs, strict=True):
            await wait_ready(s.api_port, p, log)
        realm, base = "two-replicas", scim_server.base_url()
        assert (await Api(first.api_port).enable(realm, base, SCIM_TOKEN))[0] == 201

        async def both_know_the_tenant() -> bool:
            return (await Api(second.api_port).call("GET", f"/tenants/{realm}"))[0] == 200

        await wait_until(both_know_the_tenant, what="the second replica materialized the tenant")
        async with Publisher(kafka_bootstrap) as publisher:
            await publisher.send_all(first.admin_events_topic, burst(realm, 300, "r"), partitions=3)
        await wait_until(lambda: converged(base, 300, "r"), timeout=120, what="300 users converged")
        applied = [await _changes_applied(s.api_port) for s in (first, second)]
        assert all(count > 0 for count in applied), f"both replicas should have worked: {applied}"
    finally:
        for p in processes:
            stop(p)


async def test_sigterm_mid_stream_then_restart_loses_and_duplicates_nothing(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """SIGTERM during a burst -> clean exit 0; a restart finishes the rest: every user once, in its last state."""
    settings: Settings = make_settings(kafka_bootstrap, api_port=free_port())
    await create_source_topics(settings)
    log = tmp_path / "service.log"
    realm, base = "sigterm", scim_server.base_url()
    process = await start_with_tenant(settings, log, realm, base)
    async with Publisher(kafka_bootstrap) as publisher:
        await publisher.send_all(settings.admin_events_topic, burst(realm, 200, "s"), partitions=3)
    await when_downstream_has(base, 20, "the burst under way")
    assert stop(process) == 0
    assert not await converged(base, 200, "s"), "the burst finished before SIGTERM: the test proves nothing"
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(line["event"] == "service.stopped" for line in lines), "every log line is JSON; stop is logged"
    applied = [line for line in lines if line["event"] == "change.applied"]
    assert applied
    assert {"tenant", "user_id", "event_id", "partition", "offset"} <= applied[0].keys()
    assert SCIM_TOKEN not in text
    assert settings.admin_token.get_secret_value() not in text

    process = spawn_service(settings, log)
    try:
        await wait_ready(settings.api_port, process, log)
        await wait_until(lambda: converged(base, 200, "s"), timeout=120, what="200 users converged after restart")
    finally:
        assert stop(process) == 0


async def _changes_applied(port: int) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("outbound_scim_changes_total{")
    )
