"""The container build, checked without a Docker engine.

The Dockerfile is parsed and linted for the rules the image must follow; its HEALTHCHECK command is run
against a local HTTP server; and the slow test replays the two stages with virtual environments:
`pip wheel` of the build context into a wheelhouse, then an offline install (`--no-index`) of the
service from that wheelhouse into a clean environment, from which `outbound-scim` must run.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONSOLE_COMMAND = "outbound-scim"
OCI_LABELS = {"title", "description", "version", "revision", "created", "source", "licenses"}


# ----------------------------------------------------------------------------------------------- parser


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None

    def flags(self) -> dict[str, str]:
        return dict(re.findall(r"--([a-z-]+)=(\S+)", self.args))


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for instruction in self.all("ENV"):
            env.update(dict(pair.split("=", 1) for pair in shlex.split(instruction.args)))
        return env

    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = {}
        for instruction in self.all("LABEL"):
            labels.update(dict(pair.split("=", 1) for pair in shlex.split(instruction.args)))
        return labels


@dataclass
class Dockerfile:
    directives: dict[str, str]
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolve(self, text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.global_args.get(m.group(1), m.group(0)), text)


def parse_dockerfile(text: str) -> Dockerfile:
    directives: dict[str, str] = {}
    lines = text.splitlines()
    for raw in lines:  # parser directives: leading `# key=value` comments
        match = re.match(r"#\s*(\w+)\s*=\s*(\S+)\s*$", raw)
        if not match:
            break
        directives[match.group(1).lower()] = match.group(2)
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append((start, buffer + stripped))
        buffer = ""
    assert not buffer, "the Dockerfile ends inside a continued line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), number)
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {number}: only ARG may precede the first FROM"
            key, _, default = instruction.args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(directives, global_args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def in_build_context(path: str) -> bool:
    """Whether .dockerignore lets `path` into the build context (last matching rule wins)."""
    included = True
    for pattern in dockerignore_patterns():
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatchcase(p, pattern) or fnmatch.fnmatchcase(p, pattern.removeprefix("**/")) for p in prefixes
        ):
            included = negate
    return included


def context_copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not from another stage)."""
    copies = []
    for instruction in stage.all("COPY"):
        if "from" in instruction.flags():
            continue
        words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
        copies.append((words[:-1], words[-1]))
    return copies


# ------------------------------------------------------------------------------------------------ rules


def test_multi_stage_build_on_a_slim_python(dockerfile: Dockerfile) -> None:
    assert dockerfile.directives.get("syntax", "").startswith("docker/dockerfile:")
    assert len(dockerfile.stages) >= 2
    builder, final = dockerfile.stages[0], dockerfile.final
    assert builder.name == "builder"
    for stage in dockerfile.stages:
        base = dockerfile.resolve(stage.base)
        assert base == "python:3.11-slim", f"{stage.name}: {base}"
    assert any("pip wheel" in run.args for run in builder.all("RUN")), "the builder stage builds wheels"
    # the final stage installs from the builder's wheels only, offline, and copies no source in
    assert context_copies(final) == []
    installs = [run for run in final.all("RUN") if "pip install" in run.args]
    assert installs
    assert all("--no-index" in run.args for run in installs)
    assert all("from=builder" in run.args for run in installs), "the wheels come from the builder stage"


def test_no_remote_fetch_or_moving_tags(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        assert stage.all("ADD") == [], "use COPY; ADD fetches URLs and unpacks archives"
        assert not dockerfile.resolve(stage.base).endswith(":latest")
        for run in stage.all("RUN"):
            assert not re.search(r"\b(curl|wget|sudo)\b", run.args), run.args


def test_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    [user] = final.all("USER")
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit()
    assert int(uid) >= 10000
    assert not gid or gid.isdigit()
    # created with that uid, and USER comes after every RUN (nothing at run time is root)
    assert any(f"--uid {uid}" in run.args for run in final.all("RUN"))
    assert all(run.line < user.line for run in final.all("RUN"))


def test_read_only_root_filesystem_ready(dockerfile: Dockerfile) -> None:
    env = dockerfile.final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["TMPDIR"] == "/tmp"
    assert dockerfile.final.all("WORKDIR")[-1].args == "/tmp"
    assert dockerfile.final.all("VOLUME") == []


def test_entrypoint_is_the_console_command(dockerfile: Dockerfile) -> None:
    assert CONSOLE_COMMAND in PYPROJECT["project"]["scripts"]
    [entrypoint] = dockerfile.final.all("ENTRYPOINT")
    assert entrypoint.exec_form() == [CONSOLE_COMMAND]
    [cmd] = dockerfile.final.all("CMD")
    assert cmd.exec_form() == ["run"]


def test_exposes_the_api_port(dockerfile: Dockerfile) -> None:
    [expose] = dockerfile.final.all("EXPOSE")
    assert expose.args == str(Settings.model_fields["api_port"].default) == "8080"
    assert dockerfile.final.env()["OUTBOUND_SCIM_API_PORT"] == "8080"


def test_oci_labels(dockerfile: Dockerfile) -> None:
    labels = dockerfile.final.labels()
    oci = {
        key.removeprefix("org.opencontainers.image."): value
        for key, value in labels.items()
        if key.startswith("org.opencontainers.image.")
    }
    assert set(oci) >= OCI_LABELS
    assert oci["title"] == PYPROJECT["project"]["name"]
    assert oci["licenses"] == PYPROJECT["project"]["license"]
    assert oci["description"] == PYPROJECT["project"]["description"]
    assert oci["version"] == "${VERSION}"
    [version_arg] = [a for a in dockerfile.final.all("ARG") if a.args.startswith("VERSION=")]
    assert version_arg.args == f"VERSION={PYPROJECT['project']['version']}"


def healthcheck_argv(dockerfile: Dockerfile) -> list[str]:
    [healthcheck] = dockerfile.final.all("HEALTHCHECK")
    options, _, command = healthcheck.args.partition("CMD ")
    assert re.search(r"--interval=\d+s", options)
    assert re.search(r"--timeout=\d+s", options)
    assert re.search(r"--start-period=\d+s", options)
    argv = json.loads(command)
    assert isinstance(argv, list), "HEALTHCHECK in exec form (a JSON array)"
    assert argv[0] == "python"
    assert "urllib" in argv[-1]
    assert "/healthz" in argv[-1]
    return argv


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


HealthServer = tuple[ThreadingHTTPServer, type[_Handler]]


@pytest.fixture
def health_server() -> Iterator[HealthServer]:
    handler = type("Handler", (_Handler,), {"status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()
    thread.join()


def test_healthcheck_probes_healthz(dockerfile: Dockerfile, health_server: HealthServer) -> None:
    argv = [sys.executable, *healthcheck_argv(dockerfile)[1:]]
    server, handler = health_server
    env = {**os.environ, "OUTBOUND_SCIM_API_PORT": str(server.server_address[1])}
    assert subprocess.run(argv, env=env, capture_output=True, check=False, timeout=30).returncode == 0
    handler.status = 503
    assert subprocess.run(argv, env=env, capture_output=True, check=False, timeout=30).returncode != 0
    server.shutdown()
    server.server_close()
    assert subprocess.run(argv, env=env, capture_output=True, check=False, timeout=30).returncode != 0


def test_build_context_holds_what_the_build_copies(dockerfile: Dockerfile) -> None:
    patterns = dockerignore_patterns()
    assert patterns[0] == "*", ".dockerignore is an allow-list"
    copied = {
        source.rstrip("/") for stage in dockerfile.stages for sources, _ in context_copies(stage) for source in sources
    }
    # setuptools reads the readme named in pyproject.toml: the build needs it in the context
    assert {"pyproject.toml", PYPROJECT["project"]["readme"], "service"} <= copied
    for source in copied:
        assert in_build_context(source), f"{source} is COPYed but .dockerignore keeps it out"
        assert in_build_context(f"{source}/x.py") or not (ROOT / source).is_dir()
    for private in (
        ".git",
        ".venv",
        "tests",
        "devkit",
        "scripts",
        "deploy",
        "scripts/kafka/.cache",
        "service/__pycache__/a.pyc",
    ):
        assert not in_build_context(private), f"{private} would be sent to the Docker daemon"


# ------------------------------------------------------------------------- the two stages, replayed


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _run(argv: list[str], cwd: Path, timeout: int = 600, **extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, cwd=cwd, env=_clean_env(**extra), capture_output=True, text=True, check=False, timeout=timeout
    )
    assert result.returncode == 0, f"{shlex.join(argv)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.slow
def test_wheel_builds_and_runs_from_a_clean_environment(dockerfile: Dockerfile, tmp_path: Path) -> None:
    # the build context the builder stage sees: exactly what its COPY instructions take from the repository
    context = tmp_path / "context"
    context.mkdir()
    for sources, destination in context_copies(dockerfile.stages[0]):
        for source in sources:
            origin = ROOT / source
            assert origin.exists(), f"the Dockerfile COPYs {source}, which the repository lacks: docker build fails"
            target = context / (source if destination in {".", "./"} else destination.removeprefix("./"))
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(origin, target)

    # stage 1: pip wheel of the project and every dependency
    builder = tmp_path / "builder"
    _run([sys.executable, "-m", "venv", str(builder)], tmp_path)
    wheels = tmp_path / "wheels"
    _run([str(builder / "bin" / "python"), "-m", "pip", "wheel", "--wheel-dir", str(wheels), str(context)], tmp_path)
    [project_wheel] = wheels.glob("outbound_scim-*.whl")
    with zipfile.ZipFile(project_wheel) as wheel:
        top_level = {name.split("/")[0] for name in wheel.namelist()}
        entry_points = next(wheel.read(n).decode() for n in wheel.namelist() if n.endswith("entry_points.txt"))
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"service"}
    assert f"{CONSOLE_COMMAND} = service.cli:main" in entry_points

    # stage 2: offline install from the wheelhouse into a clean environment (every dependency must be there)
    runtime = tmp_path / "runtime"
    _run([sys.executable, "-m", "venv", str(runtime)], tmp_path)
    _run(
        [
            str(runtime / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            str(wheels),
            "--compile",
            PYPROJECT["project"]["name"],
        ],
        tmp_path,
    )

    # run from outside the repository, so only the installed package can be imported
    installed = _tree(runtime)
    workdir = tmp_path / "run"
    workdir.mkdir()
    help_text = _run([str(runtime / "bin" / CONSOLE_COMMAND), "--help"], workdir).stdout
    assert "usage: outbound-scim" in help_text
    for command in ("run", "tenants", "gen-key"):
        assert command in help_text
    key = _run([str(runtime / "bin" / CONSOLE_COMMAND), "gen-key"], workdir).stdout.strip()
    Fernet(key.encode())
    imported = _run(
        [str(runtime / "bin" / "python"), "-c", "import service, service.app, service.cli; print(service.__file__)"],
        workdir,
    ).stdout
    assert imported.strip().startswith(str(runtime))
    # nothing was written into the installation at run time (it is read-only in the image)
    assert _tree(runtime) == installed
