"""Local plumbing: where the repository is, a free port, waiting on a readiness check."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str | Callable[[], str] = ""
) -> None:
    """Poll `check` until it is true; a readiness check, not a sleep. `what` names what is awaited (a
    callable: evaluated at the timeout, to show what was seen last)."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {described or check}")
        await asyncio.sleep(0.1)
