"""RekeyProcess: the parent's supervision of stage 1's child process (readiness, counters, its end, a stop).

The children here are small Python scripts standing in for `python -m service rekey-stage`: they get
the same `--report-fd N` and speak the same report lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import pytest
from aiokafka.errors import TransactionalIdAuthorizationFailed
from cryptography.fernet import Fernet
from pydantic import SecretStr
from structlog.testing import capture_logs

from service.errors import StageExited
from service.metrics import Metrics
from service.pipeline.rekey_process import RekeyProcess, counter_totals, read_settings, settings_line
from service.settings import Settings

SETTINGS = Settings(
    token_key=SecretStr(Fernet.generate_key().decode()), admin_token=SecretStr("admin-secret"), instance_id="i1"
)


def child(body: str, *, started: bool = True) -> list[str]:
    """A child command line that reports its start (unless not `started`); `report(obj)` writes one
    report line to the parent."""
    prelude = (
        "import json, os, signal, sys, time\n"
        "settings = json.loads(sys.stdin.readline())\n"
        "out = os.fdopen(int(sys.argv[-1]), 'w', buffering=1)\n"
        "def report(obj): out.write(json.dumps(obj) + '\\n')\n"
    )
    if started:
        prelude += "report({'started': True})\n"
    return [sys.executable, "-c", prelude + body, "--report-fd"]


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_assigned_report_makes_stage_1_ready() -> None:
    """The child's `assigned` report sets the parent's readiness flag for stage 1."""
    process = RekeyProcess(SETTINGS, Metrics(), 5, child("report({'assigned': True}); sys.stdin.read()"))
    await process.start()
    await asyncio.wait_for(process.assigned.wait(), 10)
    await process.stop()


async def test_child_counters_add_up_in_the_parent_registry() -> None:
    """Running totals reported twice count once; what grew in between is added; the parent's own
    increments of a shared counter (dead letters) stay in the sum."""
    metrics = Metrics()
    metrics.dead_letters.labels("conflict").inc(2)  # stage 2's own
    process = RekeyProcess(SETTINGS, metrics, 5)
    totals = {
        "events": [({"type": "LOGIN", "outcome": "not_a_user_change"}, 3.0)],
        "dead_letters": [({"reason": "conflict"}, 1.0)],
        "clamped_times": [({}, 1.0)],
    }
    process.handle_report(json.dumps({"counters": totals}).encode())
    process.handle_report(json.dumps({"counters": totals}).encode())
    totals["events"] = [({"type": "LOGIN", "outcome": "not_a_user_change"}, 5.0)]
    process.handle_report(json.dumps({"counters": totals}).encode())
    assert value(metrics, "outbound_scim_events_total", type="LOGIN", outcome="not_a_user_change") == 5
    assert value(metrics, "outbound_scim_dead_letters_total", reason="conflict") == 3
    assert value(metrics, "outbound_scim_event_time_clamped_total") == 1


async def test_reports_of_other_metrics_or_garbage_are_ignored() -> None:
    """Only stage 1's counters are taken from the child; an unreadable line is logged, not fatal."""
    metrics = Metrics()
    process = RekeyProcess(SETTINGS, metrics, 5)
    with capture_logs() as logs:
        process.handle_report(b"not json\n")
        process.handle_report(json.dumps({"counters": {"commits": [({}, 7.0)]}}).encode())
        process.handle_report(json.dumps({"counters": {"events": [({"nope": "x"}, 1.0)]}}).encode())
        process.handle_report(b"[1, 2]\n")
    assert value(metrics, "outbound_scim_offset_commits_total") == 0
    assert [e["event"] for e in logs] == ["rekey.process.report.unreadable"] * 3


async def test_counter_totals_are_what_the_parent_reads() -> None:
    """The child's snapshot of its counters, fed to a parent, gives the parent the same totals."""
    child_metrics, parent = Metrics(), Metrics()
    child_metrics.events.labels("REGISTER", "forwarded").inc(4)
    child_metrics.dead_letters.labels("invalid_json").inc()
    RekeyProcess(SETTINGS, parent, 5).handle_report(json.dumps({"counters": counter_totals(child_metrics)}).encode())
    assert value(parent, "outbound_scim_events_total", type="REGISTER", outcome="forwarded") == 4
    assert value(parent, "outbound_scim_dead_letters_total", reason="invalid_json") == 1


async def test_a_child_ending_on_its_own_is_reported_with_its_exit_code() -> None:
    """A child that dies resolves `exited` with its exit code and logs rekey.process.exited."""
    process = RekeyProcess(SETTINGS, Metrics(), 5, child("report({'assigned': True}); os._exit(7)"))
    with capture_logs() as logs:
        await process.start()
        assert await asyncio.wait_for(asyncio.shield(process.exited), 10) == 7
    assert {"event": "rekey.process.exited", "pid": process.pid, "exit_code": 7, "log_level": "error"} in logs
    await process.stop()


async def test_stop_asks_the_child_with_sigterm_and_reads_its_last_report() -> None:
    """stop() sends SIGTERM, waits for the child's own clean exit, and takes the counters it sent last."""
    body = (  # the handler only flags: a report written from it could land inside another write
        "asked = []\n"
        "signal.signal(signal.SIGTERM, lambda *_: asked.append(1))\n"
        "report({'assigned': True})\n"
        "while not asked: time.sleep(0.02)\n"
        "report({'counters': {'clamped_times': [[{}, 2.0]]}}); sys.exit(0)\n"
    )
    metrics = Metrics()
    process = RekeyProcess(SETTINGS, metrics, 5, child(body))
    await process.start()
    await asyncio.wait_for(process.assigned.wait(), 10)
    with capture_logs() as logs:
        await process.stop()
    assert process.exited.result() == 0
    assert value(metrics, "outbound_scim_event_time_clamped_total") == 2
    assert "rekey.process.exited" not in [e["event"] for e in logs]  # asked to stop: not an error


async def test_a_child_deaf_to_sigterm_is_killed_after_the_stop_timeout() -> None:
    """A child that does not stop on SIGTERM is killed once the stop timeout has passed."""
    body = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nreport({'assigned': True})\nwhile True: time.sleep(1)\n"
    process = RekeyProcess(SETTINGS, Metrics(), 0.5, child(body))
    await process.start()
    await asyncio.wait_for(process.assigned.wait(), 10)
    started = time.monotonic()
    with capture_logs() as logs:
        await process.stop()
    assert process.exited.result() == -9
    assert 0.5 <= time.monotonic() - started < 5
    assert "rekey.process.stop.timeout" in [e["event"] for e in logs]


async def test_the_child_sees_end_of_file_on_stdin_when_the_parent_lets_go() -> None:
    """The child's stdin is a pipe held by the parent: closing it (as the parent's death does) is end of
    file, the child's cue to stop on its own."""
    body = "report({'assigned': True})\nsys.stdin.read()\nos._exit(5)\n"
    process = RekeyProcess(SETTINGS, Metrics(), 5, child(body))
    await process.start()
    await asyncio.wait_for(process.assigned.wait(), 10)
    assert process._process is not None and process._process.stdin is not None
    process._process.stdin.close()
    assert await asyncio.wait_for(asyncio.shield(process.exited), 10) == 5
    await process.stop()


async def test_the_child_gets_the_parents_settings_secrets_included() -> None:
    """The settings line read back gives the same settings; environment variables do not count."""
    line = settings_line(SETTINGS)
    os.environ["OUTBOUND_SCIM_GROUP_ID"] = "from-the-environment"
    try:
        assert read_settings(line) == SETTINGS
    finally:
        del os.environ["OUTBOUND_SCIM_GROUP_ID"]
    assert read_settings(line).admin_token.get_secret_value() == "admin-secret"


async def test_a_start_refused_by_the_broker_is_raised_in_the_parent_as_the_same_error() -> None:
    """The child's start error comes back as the aiokafka error it was, so a missing ACL is named as in
    one process (Service.start maps it to KafkaAccessDenied)."""
    body = "report({'failed': {'type': 'TransactionalIdAuthorizationFailed', 'args': ['no']}}); os._exit(2)\n"
    process = RekeyProcess(SETTINGS, Metrics(), 5, child(body, started=False))
    with pytest.raises(TransactionalIdAuthorizationFailed):
        await process.start()
    await process.stop()


async def test_a_child_dying_before_it_started_stops_the_start() -> None:
    """A child that ends before reporting its start makes start() raise StageExited with its exit code."""
    process = RekeyProcess(SETTINGS, Metrics(), 5, [sys.executable, "-c", "raise SystemExit(4)", "--report-fd"])
    with pytest.raises(StageExited) as ended:
        await process.start()
    assert ended.value.exit_code == 4
    await process.stop()
