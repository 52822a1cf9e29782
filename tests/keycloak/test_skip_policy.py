"""The real-Keycloak fixture skips only when Maven Central really is unreachable, and says so for CI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.keycloak import conftest

FETCH_UNREACHABLE = subprocess.CompletedProcess(["fetch"], 3, "", "keycloak.sh: Maven Central is unreachable")


def probe_answers(rc: int) -> object:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        assert args == ("probe",)
        return subprocess.CompletedProcess(["probe"], rc, "", "")

    return run


def test_unreachable_confirmed_by_the_probe_skips_and_leaves_a_marker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """fetch exit 3 and a failing probe: skip, with a marker file and an env flag for CI."""
    marker = tmp_path / "skipped"
    monkeypatch.setattr(conftest, "SKIP_MARKER", marker)
    monkeypatch.setattr(conftest, "ROOT", tmp_path)
    monkeypatch.setattr(conftest, "_run", probe_answers(3))
    monkeypatch.delenv("OUTBOUND_SCIM_KEYCLOAK_SKIPPED", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Maven Central is unreachable"):
        conftest._skip_unreachable(FETCH_UNREACHABLE)
    assert "unreachable" in marker.read_text()
    assert os.environ["OUTBOUND_SCIM_KEYCLOAK_SKIPPED"]


def test_unreachable_contradicted_by_the_probe_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """fetch exit 3 while Maven Central answers the probe: fail, never skip."""
    marker = tmp_path / "skipped"
    monkeypatch.setattr(conftest, "SKIP_MARKER", marker)
    monkeypatch.setattr(conftest, "_run", probe_answers(0))
    with pytest.raises(pytest.fail.Exception, match="not a reason to skip"):
        conftest._skip_unreachable(FETCH_UNREACHABLE)
    assert not marker.exists()
