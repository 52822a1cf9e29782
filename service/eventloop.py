"""The event loop the service's processes run on (`run` and its stage 1 child).

uvloop (libuv) runs the same asyncio code with less CPU per socket operation, timer and callback; the
service is CPU-bound on a core in stage 2, where every change costs a few HTTP requests. `asyncio`
keeps the standard library's loop, for a platform without uvloop or to rule it out when debugging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

EventLoopKind = Literal["uvloop", "asyncio"]


def loop_factory(kind: EventLoopKind) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of a new loop of `kind`; None: the standard library's default."""
    if kind == "asyncio":
        return None
    import uvloop  # imported only when used: `asyncio` must work where it is not installed

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], kind: EventLoopKind) -> T:
    """asyncio.run(main) on a loop of `kind`."""
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(main)
