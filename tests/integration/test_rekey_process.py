"""OUTBOUND_SCIM_REKEY_PROCESS: stage 1 as a child process of `outbound-scim run`, on the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from service.settings import Settings
from tests.integration.scenarios import burst, converged, start_with_tenant, stop, wait_ready
from tests.support import (
    Publisher,
    ScimServer,
    create_source_topics,
    free_port,
    make_settings,
    spawn_service,
    wait_until,
)


def split_settings(bootstrap: str) -> Settings:
    return make_settings(bootstrap, api_port=free_port(), rekey_process=True)


def log_lines(log: Path) -> list[dict[str, Any]]:
    """Every log line of both processes parsed as JSON (a line that is not fails here); the command's
    last word on stderr, `outbound-scim run: ...`, is not a log line."""
    lines = log.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip() and not line.startswith("outbound-scim run: ")]


def child_pid(log: Path) -> int:
    [started] = [line for line in log_lines(log) if line["event"] == "rekey.process.started"]
    return int(started["pid"])


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by whoever adopted it, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def forwarded_events(port: int) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("outbound_scim_events_total{") and 'outcome="forwarded"' in line
    )


async def exit_code(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    return await asyncio.to_thread(process.wait, timeout)


async def test_events_flow_end_to_end_with_stage_1_in_its_own_process(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """A burst converges downstream through the child's stage 1; its counters show on the one /metrics and
    its log lines are JSON on the service's stdout."""
    settings = split_settings(kafka_bootstrap)
    await create_source_topics(settings)
    log = tmp_path / "service.log"
    realm, base = "split", scim_server.base_url()
    process = await start_with_tenant(settings, log, realm, base)
    try:
        child = child_pid(log)
        assert child != process.pid and alive(child)
        events = burst(realm, 100, "p")
        async with Publisher(kafka_bootstrap) as publisher:
            await publisher.send_all(settings.admin_events_topic, events, partitions=3)
        await wait_until(lambda: converged(base, 100, "p"), timeout=120, what="100 users converged")

        async def all_counted() -> bool:
            return await forwarded_events(settings.api_port) == len(events)

        await wait_until(all_counted, what=f"{len(events)} forwarded events on /metrics")
    finally:
        assert stop(process) == 0
    assert any(line["event"] == "rekey.assigned" for line in log_lines(log)), "the child's own log line"


async def test_kill_9_of_the_stage_1_process_stops_the_service_non_zero(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """The child killed -> the service logs it, stops stage 2 and the API cleanly, and exits 3."""
    settings = split_settings(kafka_bootstrap)
    await create_source_topics(settings)
    log = tmp_path / "service.log"
    process = spawn_service(settings, log)
    try:
        await wait_ready(settings.api_port, process, log)
        os.kill(child_pid(log), signal.SIGKILL)
        assert await exit_code(process) == 3
        assert "outbound-scim run: stage 1 (rekey) (child process) exited with code -9" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    events = [line["event"] for line in log_lines(log)]
    assert events.index("rekey.process.exited") < events.index("service.stopped")
    [exited] = [line for line in log_lines(log) if line["event"] == "rekey.process.exited"]
    assert exited["exit_code"] == -signal.SIGKILL


async def test_sigterm_stops_stage_1_first_then_the_service_cleanly(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """SIGTERM to the service during a burst -> the child stops on its own terms (exit 0) before stage 2
    drains; the service exits 0; a restart finishes the burst."""
    settings = split_settings(kafka_bootstrap)
    await create_source_topics(settings)
    log = tmp_path / "service.log"
    realm, base = "split-sigterm", scim_server.base_url()
    process = await start_with_tenant(settings, log, realm, base)
    child = child_pid(log)
    async with Publisher(kafka_bootstrap) as publisher:
        await publisher.send_all(settings.admin_events_topic, burst(realm, 200, "t"), partitions=3)
    assert stop(process) == 0
    assert not alive(child)
    lines = log_lines(log)
    events = [line["event"] for line in lines]
    [stopped] = [line for line in lines if line["event"] == "rekey.process.stopped"]
    assert stopped["exit_code"] == 0
    assert "rekey.process.exited" not in events, "asked to stop: not reported as a failure"
    [drained] = [n for n, line in enumerate(lines) if line["event"] == "apply.revoked" and line.get("stopping")]
    assert events.index("rekey.process.stopped") < drained < events.index("service.stopped")

    process = spawn_service(settings, log)
    try:
        await wait_ready(settings.api_port, process, log)
        await wait_until(lambda: converged(base, 200, "t"), timeout=120, what="200 users converged after restart")
    finally:
        assert stop(process) == 0


async def test_the_stage_1_process_stops_when_the_service_is_killed(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """kill -9 of the service: the child sees its stdin end and stops rather than run on unsupervised."""
    settings = split_settings(kafka_bootstrap)
    await create_source_topics(settings)
    log = tmp_path / "service.log"
    process = spawn_service(settings, log)
    await wait_ready(settings.api_port, process, log)
    child = child_pid(log)
    process.kill()
    process.wait(timeout=10)

    async def child_gone() -> bool:
        return not alive(child)

    await wait_until(child_gone, timeout=30, what="the orphaned stage 1 process stopped")
    assert any(line["event"] == "rekey.process.orphaned" for line in log_lines(log))
