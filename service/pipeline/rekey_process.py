"""Stage 1 in a child process of its own (OUTBOUND_SCIM_REKEY_PROCESS), supervised by the service.

Both stages are CPU-bound Python in one event loop otherwise: behind a burst, each of stage 1's
transaction round trips waits for its turn behind stage 2's requests. In a process of its own, stage 1
gets the second core and its event loop to itself.

The child is `python -m service rekey-stage`. Its stdin is a pipe from the parent: the first line is the
parent's settings (JSON, secrets included: a pipe, never argv or the environment), so both run with the
same ones, and stage 1 keeps the transactional id derived from the instance id (a restarted pod fences
its predecessor's child). It reports to the parent over another pipe, one JSON object a line:
`{"started": true}` once its clients are up, or `{"failed": {"type": ..., "args": [...]}}` with the
error that stopped its start (a broker refusing an ACL is re-raised in the parent as it would be in
one process, so it is named the same way), `{"assigned": true}` once its consumer has partitions
(readiness) and `{"counters": ...}`, the running
totals of stage 1's counters, every REPORT_SECONDS and at its end, which the parent adds to its own
(one /metrics endpoint). Its logs go to the inherited stdout, JSON like the parent's.

Supervision: the child ending on its own stops the parent, which exits non-zero (the container
restarts); the parent stops the child first on SIGTERM (SIGTERM to the child, which finishes its
transaction and leaves its group). End of file on the child's stdin means the parent died, and the
child stops too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping
from typing import IO, Any

import structlog
from aiokafka import errors as kafka_errors
from prometheus_client import Counter
from pydantic import SecretStr

from service import heap
from service.errors import StageExited
from service.metrics import Metrics
from service.pipeline.rekey import RekeyStage
from service.settings import Settings

log = structlog.get_logger(__name__)

# The Metrics attributes stage 1 writes: all counters, so the parent adds the child's totals to its own.
STAGE_1_COUNTERS = ("events", "dead_letters", "clamped_times")
REPORT_SECONDS = 1.0
STOP_GRACE_SECONDS = 10.0  # beyond the drain timeout, for the child's last transaction: then it is killed

Totals = dict[str, list[tuple[dict[str, str], float]]]


def counter_totals(metrics: Metrics) -> Totals:
    """Stage 1's counters as (labels, total) per Metrics attribute."""
    totals: Totals = {}
    for name in STAGE_1_COUNTERS:
        counter: Counter = getattr(metrics, name)
        totals[name] = [
            (dict(sample.labels), sample.value)
            for family in counter.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        ]
    return totals


def settings_line(settings: Settings) -> bytes:
    """The settings as one JSON line, secret values included (for the child's stdin only)."""
    values = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in settings.model_dump().items()
    }
    return json.dumps(values, separators=(",", ":")).encode() + b"\n"


def read_settings(line: bytes) -> Settings:
    """The parent's settings from the first line of stdin: no environment variable or .env file counts."""
    return Settings(_env_file=None, **json.loads(line))


class ChildCounters:
    """Adds a child's running totals to the parent's counters: each report adds what grew since the last."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def update(self, totals: Mapping[str, list[tuple[dict[str, str], float]]]) -> None:
        for name, samples in totals.items():
            if name not in STAGE_1_COUNTERS:
                continue  # only stage 1's own counters; anything else is not the child's to report
            counter: Counter = getattr(self._metrics, name)
            for labels, total in samples:
                key = (name, tuple(sorted(labels.items())))
                grown = total - self._seen.get(key, 0.0)
                if grown > 0:
                    (counter.labels(**labels) if labels else counter).inc(grown)
                    self._seen[key] = total


class RekeyProcess:
    """The parent's handle on the stage 1 child: start, readiness, its unexpected end, a graceful stop."""

    def __init__(
        self, settings: Settings, metrics: Metrics, stop_timeout_seconds: float, argv: list[str] | None = None
    ) -> None:
        """`argv`: the child's command line, to which `--report-fd N` is added (default: the hidden
        `rekey-stage` subcommand); after `stop_timeout_seconds` a stop kills it."""
        self._settings = settings
        self._argv = argv or [sys.executable, "-m", "service", "rekey-stage"]
        self._counters = ChildCounters(metrics)
        self._stop_timeout = stop_timeout_seconds
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False
        self._started = asyncio.Event()
        self._start_error: Exception | None = None
        self.assigned = asyncio.Event()
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        read_fd, write_fd = os.pipe()
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv,
                "--report-fd",
                str(write_fd),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child holds its copy: end of file here once the child is gone
        assert self._process.stdin is not None
        self._process.stdin.write(settings_line(self._settings))  # kept open: its end tells the child we are gone
        self._reader = asyncio.create_task(self._read_reports(read_fd), name="rekey-process-reports")
        log.info("rekey.process.started", pid=self._process.pid)
        started = asyncio.ensure_future(self._started.wait())
        either: set[asyncio.Future[Any]] = {started, self.exited}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if self._start_error is not None:
            raise self._start_error
        if not self._started.is_set():
            raise StageExited("stage 1 (rekey)", self.exited.result())

    async def _read_reports(self, fd: int) -> None:
        assert self._process is not None
        reader = asyncio.StreamReader(limit=1 << 22)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                self.handle_report(line)
        finally:
            transport.close()
            code = await self._process.wait()
            if not self._stopping:
                log.error("rekey.process.exited", pid=self._process.pid, exit_code=code)
            if not self.exited.done():
                self.exited.set_result(code)

    def handle_report(self, line: bytes) -> None:
        """One line of the child's report; a line that does not parse is logged, never fatal (the reports
        must keep being read, or the child blocks on a full pipe)."""
        try:
            report: dict[str, Any] = json.loads(line)
            if not isinstance(report, dict):
                raise ValueError("not an object")
        except ValueError:
            log.warning("rekey.process.report.unreadable", size=len(line))
            return
        if report.get("started"):
            self._started.set()
        if isinstance(failed := report.get("failed"), dict):
            self._start_error = rebuilt_error(failed)
        if report.get("assigned"):
            self.assigned.set()
        if isinstance(counters := report.get("counters"), dict):
            try:
                self._counters.update(counters)
            except (ValueError, TypeError) as exc:  # labels that do not fit the counter
                log.warning("rekey.process.report.unreadable", size=len(line), error=str(exc)[:200])

    async def stop(self) -> None:
        """SIGTERM, then wait for the child to finish its transaction and leave its group; kill it after
        the stop timeout."""
        self._stopping = True
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._stop_timeout)
            except TimeoutError:
                log.error("rekey.process.stop.timeout", pid=process.pid, seconds=self._stop_timeout)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._reader is not None:
            await self._reader  # the final counters
        if process.stdin is not None:
            process.stdin.close()
        log.info("rekey.process.stopped", pid=process.pid, exit_code=process.returncode)


async def serve_rekey(settings: Settings, report_fd: int) -> None:
    """The child's life: stage 1 until SIGTERM or the parent's end, reporting to the parent meanwhile.
    The settings line has been read from stdin already."""
    metrics = Metrics()
    stage = RekeyStage(settings, metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # a terminal's Ctrl-C: the parent decides the order
    report = os.fdopen(report_fd, "w", buffering=1)
    background = [
        asyncio.create_task(_watch_parent(stop), name="parent-watch"),
        asyncio.create_task(_report(stage, metrics, report), name="report"),
    ]
    try:
        try:
            await stage.start()
        except Exception as exc:  # the parent raises it again: a missing ACL is named as in one process
            _send(report, {"failed": {"type": type(exc).__name__, "args": [str(a) for a in exc.args]}})
            raise
        _send(report, {"started": True})
        if settings.gc_settle:
            heap.settle_after_start()
        await stop.wait()
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await stage.stop()
        with contextlib.suppress(OSError):
            _send(report, {"counters": counter_totals(metrics)})
            report.close()


async def _watch_parent(stop: asyncio.Event) -> None:
    """End of file on stdin: the parent is gone (killed), so stop rather than run on unsupervised."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError, ValueError):  # no usable stdin: nothing to watch
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while await reader.read(4096):
            pass
        log.warning("rekey.process.orphaned", hint="the parent process ended; stopping")
        stop.set()


async def _report(stage: RekeyStage, metrics: Metrics, report: IO[str]) -> None:
    assigned = False
    while True:
        if not assigned and stage.assigned.is_set():
            assigned = True
            _send(report, {"assigned": True})
        _send(report, {"counters": counter_totals(metrics)})
        await asyncio.sleep(REPORT_SECONDS if assigned else 0.05)


def rebuilt_error(failed: Mapping[str, Any]) -> Exception:
    """The child's start error in the parent: the same aiokafka error type when it is one (so a refused
    ACL maps to KafkaAccessDenied as it does in one process), else a RuntimeError that says what it was."""
    kind = getattr(kafka_errors, str(failed.get("type")), None)
    args = [str(a) for a in failed.get("args", [])]
    if isinstance(kind, type) and issubclass(kind, kafka_errors.KafkaError):
        return kind(*args)
    return RuntimeError(f"stage 1 (child process) failed to start: {failed.get('type')}: {'; '.join(args)}")


def _send(report: IO[str], message: dict[str, Any]) -> None:
    report.write(json.dumps(message, separators=(",", ":")) + "\n")
