"""What ships and what the scripts run never import the tests; the service never imports the devkit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def top_levels(package: str) -> dict[str, set[str]]:
    return {
        str(path.relative_to(ROOT)): {name.split(".")[0] for name in imported_modules(path)}
        for path in sorted((ROOT / package).rglob("*.py"))
        if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)  # caches, venvs
    }


@pytest.mark.parametrize("package", ["service", "devkit", "scripts"])
def test_no_import_from_tests(package: str) -> None:
    """The shipped package, the devkit and the scripts stand without the test package."""
    offenders = [path for path, names in top_levels(package).items() if "tests" in names]
    assert offenders == []


def test_the_service_does_not_import_the_devkit() -> None:
    """The devkit is not in the wheel: the service cannot depend on it."""
    offenders = [path for path, names in top_levels("service").items() if names & {"devkit", "scripts"}]
    assert offenders == []
