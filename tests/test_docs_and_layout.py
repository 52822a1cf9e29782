"""The docs name every setting and metric the code has, and the pure core stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

from prometheus_client import CollectorRegistry

from service.metrics import Metrics
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))])


def test_docs_name_every_setting() -> None:
    """Each setting appears in the docs as its environment variable."""
    missing = [name for name in Settings.model_fields if f"`OUTBOUND_SCIM_{name.upper()}`" not in DOCS]
    assert missing == []


def test_docs_name_every_metric() -> None:
    """Each exported metric family appears in the docs under the name Prometheus scrapes (counters: _total)."""
    metrics = Metrics(CollectorRegistry())
    scraped = {"counter": "_total", "info": "_info"}
    missing = [
        family.name
        for family in metrics.registry.collect()
        if f"`{family.name}{scraped.get(family.type, '')}`" not in DOCS
    ]
    assert missing == []


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
