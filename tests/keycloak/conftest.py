"""A real Keycloak for the session: KEYCLOAK_URL if set (with KEYCLOAK_ADMIN_PASSWORD), else the
Quarkus distribution from Maven Central, fetched and started by scripts/keycloak/keycloak.sh.

The only reason to skip is that Maven Central cannot be reached and nothing is cached: `fetch` exits 3.
Even then the fixture asks `keycloak.sh probe` (a real download into a throwaway repository) and fails
when Maven Central does answer, so a misread error cannot hide the tests. A skip leaves the marker file
SKIP_MARKER (and OUTBOUND_SCIM_KEYCLOAK_SKIPPED in this process's environment) for CI to fail on.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT

KEYCLOAK_SCRIPT = ROOT / "scripts" / "keycloak" / "keycloak.sh"
SKIP_MARKER = ROOT / "scripts" / "keycloak" / ".cache" / "tests-skipped-maven-central-unreachable"
UNREACHABLE = 3  # keycloak.sh fetch's exit code for "Maven Central cannot be reached"


@dataclass
class RealKeycloak:
    url: str
    admin_user: str
    admin_password: str
    kafka_provider: Path | None  # the playa listener jar in providers/, when the registry served it
    kafka_bootstrap: str | None  # where that listener sends, when it is loaded
    fetch_seconds: float = 0.0
    start_seconds: float = 0.0
    pid: int | None = None
    memory_at_end: str = "n/a"

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
    return subprocess.run(
        ["bash", str(KEYCLOAK_SCRIPT), *args], capture_output=True, text=True, check=False, env=env
    )


def _skip_unreachable(fetch: subprocess.CompletedProcess[str]) -> None:
    if _run("probe").returncode == 0:
        pytest.fail(
            "keycloak.sh fetch reported Maven Central unreachable, yet it answers: not a reason to skip.\n"
            + fetch.stderr[-3000:]
        )
    reason = "Maven Central is unreachable and keycloak-quarkus-dist is not cached"
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
            kafka_provider=None,
            kafka_bootstrap=None,
        )
        return

    started = time.monotonic()
    fetch = _run("fetch")
    fetch_seconds = time.monotonic() - started
    if fetch.returncode == UNREACHABLE:
        _skip_unreachable(fetch)
    if fetch.returncode != 0:
        raise RuntimeError(f"keycloak.sh fetch failed:\n{fetch.stderr[-3000:]}")
    SKIP_MARKER.unlink(missing_ok=True)

    provider = _run("provider")
    jar = Path(provider.stdout.strip()) if provider.returncode == 0 and provider.stdout.strip() else None
    # The listener sends synchronously (keycloak.kafka.sync=true): without a broker, every admin
    # write on a realm that enables it would block for kafka.max.block.ms. So a real broker, but only
    # when the listener is there at all.
    bootstrap = request.getfixturevalue("kafka_bootstrap") if jar is not None else None

    data = tmp_path_factory.mktemp("keycloak")
    password = secrets.token_urlsafe(12)
    env = {**os.environ, "KC_BOOTSTRAP_ADMIN_USERNAME": "admin", "KC_BOOTSTRAP_ADMIN_PASSWORD": password}
    if bootstrap:
        env["KEYCLOAK_KAFKA_BOOTSTRAP"] = bootstrap
    started = time.monotonic()
    start = _run("start", "0", str(data), env=env)
    if start.returncode != 0:
        raise RuntimeError(f"Keycloak did not start:\n{start.stderr[-3000:]}")
    kc = RealKeycloak(
        url=start.stdout.strip().splitlines()[-1],
        admin_user="admin",
        admin_password=password,
        kafka_provider=jar,
        kafka_bootstrap=bootstrap,
        fetch_seconds=fetch_seconds,
        start_seconds=time.monotonic() - started,
        pid=int((data / "keycloak.pid").read_text()),
    )
    _started.append(kc)
    try:
        yield kc
    finally:
        kc.memory_at_end = kc.memory()
        _run("stop", str(data))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Fetch and start times and the JVM's memory, in every run's output (CI logs included)."""
    for kc in _started:
        terminalreporter.write_line(
            f"keycloak: fetch {kc.fetch_seconds:.1f} s, start {kc.start_seconds:.1f} s, "
            f"{kc.memory_at_end} at the end, kafka listener jar {'present' if kc.kafka_provider else 'absent'}"
        )
