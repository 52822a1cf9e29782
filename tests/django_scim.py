"""django-scim2's SCIM server (scripts/django_scim) in a venv of its own, for the session fixture.

The venv is built from scripts/django_scim/requirements.txt (pinned) and rebuilt only when that file
changes; pip's cache makes a rebuild quick. Each start migrates a fresh SQLite database.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT, free_port

PROJECT = ROOT / "scripts" / "django_scim"
VENV = PROJECT / ".cache" / "venv"


@dataclass
class DjangoScim:
    scim_url: str
    token: str
    process: subprocess.Popen[str]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def venv_python() -> Path:
    """The project's own venv, rebuilt when requirements.txt changes."""
    requirements = PROJECT / "requirements.txt"
    stamp = VENV / "requirements.sha256"
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        stamp.write_text(wanted)
    return VENV / "bin" / "python"


def start_django_scim(data: Path) -> DjangoScim:
    """Starts the server with its database in `data`; returns once it listens (its first line says so)."""
    process = subprocess.Popen(
        [str(venv_python()), str(PROJECT / "server.py"), str(free_port()), str(data)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"django-scim2's server exited with {process.wait()}")
    started = json.loads(line)
    return DjangoScim(started["scim_url"], started["token"], process)
