"""The README stays true to the code, and the pure core stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

from prometheus_client import CollectorRegistry

from service.metrics import Metrics
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_lists_every_setting() -> None:
    """Each setting appears in the README as its environment variable."""
    missing = [name for name in Settings.model_fields if f"`OUTBOUND_SCIM_{name.upper()}`" not in README]
    assert missing == []


def test_readme_lists_every_metric() -> None:
    """Each exported metric family is in the README's catalog; counters end in _total."""
    metrics = Metrics(CollectorRegistry())
    names = {family.name for family in metrics.registry.collect()}
    missing = [name for name in names if name not in README]
    assert missing == []
    for family in metrics.registry.collect():
        if family.type == "counter":
            assert f"`{family.name}_total`" in README


def test_domain_imports_no_io() -> None:
    """service/domain is pure: it imports neither aiokafka, aiohttp, asyncio nor another service package."""
    forbidden = (
        "aiokafka",
        "aiohttp",
        "asyncio",
        "service.scim",
        "service.pipeline",
        "service.api",
        "service.tenants",
        "service.app",
    )
    for path in (ROOT / "service" / "domain").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"
