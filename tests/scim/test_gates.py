"""Per-tenant gates across enable, rotate and disable: a new generation starts a fresh gate, a disable drops
it, validation goes around it, and the breaker monitor probes the gate in force. A small local aiohttp
server plays the downstream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from service.domain import scim
from service.errors import CircuitOpen, EnableRefused, ScimTransient
from service.metrics import Metrics
from service.scim.breaker import BreakerState, CircuitBreaker
from service.scim.client import Downstream, ScimClient
from service.scim.discovery import validate_downstream
from service.scim.egress import EgressPolicy
from service.scim.health import BreakerMonitor
from service.scim.transport import GatedTransport, Request

EGRESS = EgressPolicy(frozenset({"127.0.0.1"}), allow_private_networks=True)


@dataclass
class Downstream503:
    """A SCIM downstream that records who called, answers 503 while `failing`, and while `held` is set
    keeps each request waiting (after setting `arrived`) until `held` is cleared."""

    base_url: str = ""
    failing: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)  # (path, bearer token)
    held: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def downstream() -> AsyncIterator[Downstream503]:
    state = Downstream503()

    async def answer(request: web.Request) -> web.Response:
        state.calls.append((request.path, request.headers.get("Authorization", "").removeprefix("Bearer ")))
        state.arrived.set()
        if state.held is not None:
            await state.held.wait()
        if state.failing:
            return web.json_response({"detail": "down"}, status=503)
        if request.path.endswith("/ServiceProviderConfig"):
            return web.json_response({"schemas": [scim.SPC_SCHEMA]})
        return web.json_response({"schemas": [scim.LIST_SCHEMA], "totalResults": 0, "Resources": []})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/scim/v2"
    yield state
    await runner.cleanup()


FIRST_TOKEN = "token-1"


class NoRequests:
    """A Transport for the gate tests that send no request."""

    async def send(self, request: Request) -> Any:
        raise AssertionError(f"unexpected request {request.method} {request.path}")


def new_client(session: aiohttp.ClientSession | None = None) -> ScimClient:
    """Breakers open at the first transient failure and are due for a probe at once."""
    breaker = CircuitBreaker(threshold=1, open_seconds=0.0)
    if session is None:
        metrics = Metrics(CollectorRegistry())
        return ScimClient(GatedTransport(NoRequests(), metrics, 4, breaker), metrics)
    return ScimClient.over_http(
        session,
        Metrics(CollectorRegistry()),
        timeout_seconds=5.0,
        egress=EgressPolicy(frozenset({"127.0.0.1"}), allow_private_networks=True),
        tenant_concurrency=4,
        breaker=breaker,
    )


@pytest.fixture
async def client() -> AsyncIterator[ScimClient]:
    async with aiohttp.ClientSession() as session:
        yield new_client(session)


def ds(base_url: str, generation: int, token: str = FIRST_TOKEN, **limits: int) -> Downstream:
    return Downstream("acme", base_url, token, limits.get("max_concurrency"), limits.get("rate"), generation)


def open_breaker(client: ScimClient, downstream: Downstream) -> CircuitBreaker:
    breaker = client.gate(downstream).breaker
    breaker.failed(time.monotonic())
    assert breaker.state is BreakerState.OPEN
    return breaker


def circuit_series(client: ScimClient) -> float | None:
    registry = client._metrics.registry  # the metrics the client was built with
    return registry.get_sample_value("outbound_scim_circuit_state", {"tenant": "acme", "downstream": "default"})


def test_a_newer_generation_starts_a_fresh_gate() -> None:
    """Rotation: closed breaker, the new limits; a request still holding the old config uses the new gate."""
    client = new_client()
    old = open_breaker(client, ds("https://a.example/v2", 1, max_concurrency=2))
    gate = client.gate(ds("https://a.example/v2", 2, max_concurrency=5, rate=60))
    assert gate.breaker is not old
    assert (gate.breaker.state, gate.size, gate.generation) == (BreakerState.CLOSED, 5, 2)
    assert gate.bucket is not None
    assert client.gate(ds("https://a.example/v2", 1, max_concurrency=2)) is gate
    assert client.gate(ds("https://a.example/v2", 1)).size == 5, "an older config does not resize the new gate"


def test_another_base_url_starts_a_fresh_gate_and_a_resize_keeps_the_breaker() -> None:
    """Same generation (untracked, 0): a new URL means another downstream; new limits alone keep the breaker."""
    client = new_client()
    old = open_breaker(client, ds("https://a.example/v2", 0))
    resized = client.gate(ds("https://a.example/v2", 0, max_concurrency=9))
    assert (resized.breaker, resized.size) == (old, 9)
    moved = client.gate(ds("https://b.example/v2", 0))
    assert moved.breaker is not old
    assert moved.breaker.state is BreakerState.CLOSED


def test_drop_forgets_the_gate_and_its_breaker_series() -> None:
    """Disable: no breaker left for the monitor, no outbound_scim_circuit_state series for the tenant."""
    client = new_client()
    client.gate(ds("https://a.example/v2", 1))
    assert circuit_series(client) == 0
    client.drop("acme")
    assert client.breakers() == {}
    assert circuit_series(client) is None
    client.drop("acme")  # twice is fine (every replica sees the tombstone once, a restart again)


async def test_a_request_ending_after_a_drop_does_not_bring_the_series_back(
    client: ScimClient, downstream: Downstream503
) -> None:
    """A request in flight while the tenant is disabled reports its failure to no series."""
    downstream.failing, downstream.held = True, asyncio.Event()
    request = asyncio.create_task(client.send_once(ds(downstream.base_url, 1), "GET", "Users"))
    await downstream.arrived.wait()
    client.drop("acme")
    downstream.held.set()
    with pytest.raises(ScimTransient):
        await request
    assert client.breakers() == {}
    assert circuit_series(client) is None


async def test_validation_goes_around_an_open_breaker_and_is_not_counted(
    client: ScimClient, downstream: Downstream503
) -> None:
    """Enable / rotate validation passes an open breaker, and neither its success nor a failure changes it."""
    current = ds(downstream.base_url, 1)
    breaker = open_breaker(client, current)
    with pytest.raises(CircuitOpen):
        await client.send_once(current, "GET", "Users")
    await validate_downstream(client, ds(downstream.base_url, 1, token="token-2"), EGRESS)
    assert (breaker.state, breaker.failures) == (BreakerState.OPEN, 1)
    downstream.failing = True
    with pytest.raises(EnableRefused, match="downstream_error"):
        await validate_downstream(client, ds(downstream.base_url, 1, token="token-2"), EGRESS)
    assert (breaker.state, breaker.failures) == (BreakerState.OPEN, 1)
    assert [p.rsplit("/", 1)[1] for p, _ in downstream.calls] == [
        "ServiceProviderConfig",
        "Users",
        "ServiceProviderConfig",
    ]


async def test_the_monitor_probes_the_gate_in_force_after_a_rotation(
    client: ScimClient, downstream: Downstream503
) -> None:
    """An open breaker replaced by a rotation is not probed; the new gate's breaker is, with the new token."""
    current: dict[str, Downstream] = {"acme": ds(downstream.base_url, 1, token="token-1")}
    recovered: list[str] = []

    async def on_recovered(tenant: str) -> None:
        recovered.append(tenant)

    monitor = BreakerMonitor(client, current.get, on_recovered)
    open_breaker(client, current["acme"])
    current["acme"] = ds(downstream.base_url, 2, token="token-2")
    client.refresh(current["acme"])
    await monitor.probe_due()
    assert (downstream.calls, recovered) == ([], [])
    new = open_breaker(client, current["acme"])
    await monitor.probe_due()
    assert downstream.calls == [("/scim/v2/Users", "token-2")]
    assert (new.state, recovered) == (BreakerState.CLOSED, ["acme"])
    assert circuit_series(client) == 0
