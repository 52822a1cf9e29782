"""A real Keycloak for the session: KEYCLOAK_URL if set (with KEYCLOAK_ADMIN_PASSWORD), else the
Quarkus distribution from Maven Central, fetched and started by scripts/keycloak/keycloak.sh, with the
test Kafka event listener (scripts/keycloak/listener, SnuK87's record format, synchronous sends)
installed and pointed at the session broker, on two topics of this session's own. A realm sends through
it once it enables the listener (setup_realm.MasterAdmin.enable_listener(realm, LISTENER)); a test that
needs such a realm and a service reading it takes setup_realm.realm_with_listener(admin,
keycloak.kafka_listener(), ...).

The only reason to skip is that Maven Central cannot be reached and what fetch needs (the distribution,
the listener's build) is not cached: `fetch` exits 3. Even then the fixture asks `keycloak.sh probe` (a
real download into a throwaway repository) and fails when Maven Central does answer, so a misread error
cannot hide the tests. A skip leaves the marker file SKIP_MARKER (and OUTBOUND_SCIM_KEYCLOAK_SKIPPED in
this process's environment) for CI to fail on.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.keycloak.setup_realm import TEST_LISTENER, KafkaListener
from tests.support import ROOT

KEYCLOAK_SCRIPT = ROOT / "scripts" / "keycloak" / "keycloak.sh"
SKIP_MARKER = ROOT / "scripts" / "keycloak" / ".cache" / "tests-skipped-maven-central-unreachable"
UNREACHABLE = 3  # keycloak.sh fetch's exit code for "Maven Central cannot be reached"
LISTENER = TEST_LISTENER  # the listener's provider id, what a realm lists to enable it


@dataclass
class RealKeycloak:
    url: str
    admin_user: str
    admin_password: str
    listener_jar: Path | None = None  # the Kafka event listener in providers/ (None: KEYCLOAK_URL)
    kafka_bootstrap: str | None = None  # where it sends
    events_topic: str | None = None  # its topic for user events
    admin_events_topic: str | None = None  # its topic for admin events
    log: Path | None = None  # Keycloak's log (the listener logs failed sends there)
    fetch_seconds: float = 0.0
    start_seconds: float = 0.0
    pid: int | None = None
    memory_at_end: str = "n/a"

    @property
    def listener(self) -> str | None:
        """The listener's id when it is installed, else None."""
        return LISTENER if self.listener_jar is not None else None

    def kafka_listener(self) -> KafkaListener:
        """The installed listener and its topics; skips the test where there is none to point."""
        if self.listener_jar is None or self.events_topic is None or self.admin_events_topic is None:
            pytest.skip("KEYCLOAK_URL names a Keycloak of its own: its Kafka event listener is not ours to point")
        return KafkaListener(LISTENER, self.events_topic, self.admin_events_topic)

    def log_lines(self, *needles: str, last: int = 20) -> str:
        """The last log lines mentioning any of `needles`, for failure messages."""
        if self.log is None or not self.log.exists():
            return "(no Keycloak log)"
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if any(n in line for n in needles)]
        return "\n".join(lines[-last:]) or f"(nothing about {needles} in {self.log})"

    def memory(self) -> str:
        """Resident memory of the Keycloak JVM now and at its peak (kc.sh may be a wrapper shell)."""
        if self.pid is None:
            return "n/a"
        pids = [self.pid]
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() != "java":
                    continue
                status = dict(
                    line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
                )
            except OSError:
                continue
            rss, peak = (int(status[key].split()[0]) // 1024 for key in ("VmRSS", "VmHWM"))
            return f"RSS {rss} MB (peak {peak} MB)"
        return "n/a"


_started: list[RealKeycloak] = []


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(KEYCLOAK_SCRIPT), *args], capture_output=True, text=True, check=False, env=env)


def _skip_unreachable(fetch: subprocess.CompletedProcess[str]) -> None:
    if _run("probe").returncode == 0:
        pytest.fail(
            "keycloak.sh fetch reported Maven Central unreachable, yet it answers: not a reason to skip.\n"
            + fetch.stderr[-3000:]
        )
    reason = "Maven Central is unreachable and keycloak-quarkus-dist or the listener's build is not cached"
    SKIP_MARKER.parent.mkdir(parents=True, exist_ok=True)
    SKIP_MARKER.write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {reason}\n")
    os.environ["OUTBOUND_SCIM_KEYCLOAK_SKIPPED"] = reason
    pytest.skip(f"real Keycloak tests skipped: {reason} (marker: {SKIP_MARKER.relative_to(ROOT)})")


@pytest.fixture(scope="session")
def keycloak(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealKeycloak]:
    if os.environ.get("KEYCLOAK_URL"):
        yield RealKeycloak(
            url=os.environ["KEYCLOAK_URL"].rstrip("/"),
            admin_user=os.environ.get("KEYCLOAK_ADMIN_USER", "admin"),
            admin_password=os.environ.get("KEYCLOAK_ADMIN_PASSWORD", "admin"),
        )
        return

    started = time.monotonic()
    fetched = fetch()
    fetch_seconds = time.monotonic() - started
    if fetched.returncode == UNREACHABLE:
        _skip_unreachable(fetched)
    if fetched.returncode != 0:
        raise RuntimeError(f"keycloak.sh fetch failed:\n{fetched.stderr[-3000:]}")
    SKIP_MARKER.unlink(missing_ok=True)

    kc = launch(request.getfixturevalue("kafka_bootstrap"), tmp_path_factory.mktemp("keycloak"))
    kc.fetch_seconds = fetch_seconds
    _started.append(kc)
    try:
        yield kc
    finally:
        kc.memory_at_end = kc.memory()
        stop(kc)


def launch(bootstrap: str, data: Path, *, partitions: int = 3, env: dict[str, str] | None = None) -> RealKeycloak:
    """Starts the fetched distribution, state in `data`, with the listener sending to two fresh topics of
    `bootstrap` (`partitions` each); `env` adds variables for keycloak.sh (e.g. KEYCLOAK_KAFKA_EVENTS)."""
    listener = _run("listener")
    if listener.returncode != 0 or not listener.stdout.strip():
        raise RuntimeError("keycloak.sh fetch did not build the Kafka event listener")
    jar = Path(listener.stdout.strip())
    # The listener sends synchronously: a missing broker would stall each admin write on a realm that
    # enables it for the send timeout. So the session's broker, and topics made before anything is sent.
    session = uuid.uuid4().hex[:8]
    topics = (f"kc{session}.keycloak-events", f"kc{session}.keycloak-admin-events")
    with ThreadPoolExecutor(1) as pool:  # its own event loop, whatever runs in this thread
        pool.submit(asyncio.run, _create_topics(bootstrap, topics, partitions)).result()

    password = secrets.token_urlsafe(12)
    started = time.monotonic()
    start = _run(
        "start",
        "0",
        str(data),
        env={
            **os.environ,
            **(env or {}),
            "KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
            "KC_BOOTSTRAP_ADMIN_PASSWORD": password,
            "KEYCLOAK_KAFKA_BOOTSTRAP": bootstrap,
            "KEYCLOAK_KAFKA_TOPIC": topics[0],
            "KEYCLOAK_KAFKA_ADMIN_TOPIC": topics[1],
        },
    )
    if start.returncode != 0:
        raise RuntimeError(f"Keycloak did not start:\n{start.stderr[-3000:]}")
    return RealKeycloak(
        url=start.stdout.strip().splitlines()[-1],
        admin_user="admin",
        admin_password=password,
        listener_jar=jar,
        kafka_bootstrap=bootstrap,
        events_topic=topics[0],
        admin_events_topic=topics[1],
        log=data / "keycloak.log",
        start_seconds=time.monotonic() - started,
        pid=int((data / "keycloak.pid").read_text()),
    )


def fetch() -> subprocess.CompletedProcess[str]:
    """keycloak.sh fetch: the distribution and the listener's build, each only when not cached."""
    return _run("fetch")


def stop(kc: RealKeycloak) -> None:
    """Stops a Keycloak that `launch` started (its state dir holds the log and the pid)."""
    if kc.log is not None:
        _run("stop", str(kc.log.parent))


async def _create_topics(bootstrap: str, topics: tuple[str, ...], partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1) for topic in topics])
    finally:
        await admin.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Fetch (listener build included) and start times and the JVM's memory, in every run's output."""
    for kc in _started:
        terminalreporter.write_line(
            f"keycloak: fetch {kc.fetch_seconds:.1f} s, start {kc.start_seconds:.1f} s, "
            f"{kc.memory_at_end} at the end, kafka listener {kc.listener or 'absent'}"
        )
