"""The event loop the service's processes run on (service.eventloop)."""

from __future__ import annotations

import asyncio

import uvloop

from service import eventloop


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_runs_the_coroutine_on_a_uvloop_loop() -> None:
    """`uvloop` (the default) runs the service's main coroutine on uvloop's loop."""
    assert issubclass(eventloop.run(_loop_type(), "uvloop"), uvloop.Loop)


def test_asyncio_keeps_the_standard_library_loop() -> None:
    """`asyncio` runs it on the standard library's default loop, and needs no uvloop."""
    assert eventloop.loop_factory("asyncio") is None
    assert not issubclass(eventloop.run(_loop_type(), "asyncio"), uvloop.Loop)
