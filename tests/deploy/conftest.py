"""Deployment tests: the Helm chart (rendered offline) and the container build (without a Docker engine)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: builds wheels and virtual environments (about a minute, needs the package index or a warm "
        "pip cache); part of the normal run, deselect with -m 'not slow' for a quick loop",
    )
