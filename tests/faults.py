"""A fault-injecting HTTP proxy for tests: sits in front of a real scim2-server and misbehaves on purpose.

Each request draws one fault from a configurable mix (seeded, so a run can be repeated):
500s, 429s with Retry-After (seconds or HTTP-date), timeouts, connection resets (before the request
reaches the downstream, or after it was processed and only the answer is lost) and slow answers.
`down` refuses everything (the downstream vanished); `accept_token` answers 401 to any other token
(a token rotated on the downstream's side). `late_posts` holds that many POST /Users without an answer
(the client times out) and delivers them to the downstream only at `deliver_late()`: a request that
lands after the client gave up on it, as any network can deliver one.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Self

import aiohttp
from aiohttp import web

from tests.support import free_port

PASS_HEADERS = ("Authorization", "Content-Type", "Accept", "If-Match")
RETURN_HEADERS = ("Content-Type", "Location", "ETag")


@dataclass
class FaultMix:
    error_500: float = 0.0
    throttle_429: float = 0.0
    timeout: float = 0.0  # hangs past the client's timeout; half of them after forwarding
    reset_before: float = 0.0
    reset_after: float = 0.0  # the downstream did it, the client never hears
    slow: float = 0.0  # answers after `slow_seconds`

    @classmethod
    def spread(cls, total: float) -> FaultMix:
        """`total` of all requests fail, spread over every kind of fault."""
        part = total / 6
        return cls(part, part, part, part, part, part)


@dataclass
class FaultProxy:
    upstream: str  # e.g. http://127.0.0.1:8080
    mix: FaultMix = field(default_factory=FaultMix)
    seed: int = 7
    hang_seconds: float = 3.0
    slow_seconds: float = 0.3
    down: bool = False
    accept_token: str | None = None
    port: int = field(default_factory=free_port)
    injected: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)  # "POST /Users", "PATCH /Users", "POST /Bulk", ...
    late_posts: int = 0  # POST /Users still to hold (see the module docstring)
    held: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)  # (path and query, body, headers)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    def base_url(self, tenant: str) -> str:
        return f"http://127.0.0.1:{self.port}/{tenant}"

    async def start(self) -> Self:
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
        if self._http:
            await self._http.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests[f"{request.method} /{_resource(request.path)}"] += 1
        if self.down:
            self.injected["down"] += 1
            return _reset(request)
        if self.accept_token and request.headers.get("Authorization") not in (None, f"Bearer {self.accept_token}"):
            self.injected["401"] += 1
            return web.json_response(
                {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "401"}, status=401
            )
        if self.late_posts and request.method == "POST" and _resource(request.path) == "Users":
            self.late_posts -= 1
            return await self._hold(request)
        fault = self._draw() if "ServiceProviderConfig" not in request.path else None
        if fault:
            self.injected[fault] += 1
        if fault == "error_500":
            return web.json_response({"status": "500", "detail": "injected"}, status=500)
        if fault == "throttle_429":
            retry_after = "1" if self._rng.random() < 0.5 else formatdate(usegmt=True)  # now: retry at once
            return web.json_response({"status": "429"}, status=429, headers={"Retry-After": retry_after})
        if fault == "reset_before":
            return _reset(request)
        if fault == "timeout" and self._rng.random() < 0.5:
            await asyncio.sleep(self.hang_seconds)
            return _reset(request)
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        response = await self._forward(request)
        if fault == "reset_after":
            return _reset(request)
        if fault == "timeout":
            await asyncio.sleep(self.hang_seconds)
        return response

    async def _hold(self, request: web.Request) -> web.StreamResponse:
        """Keep the request for `deliver_late` and never answer: the client times out and hangs up."""
        headers = {k: v for k, v in request.headers.items() if k in PASS_HEADERS}
        self.held.append((str(request.rel_url), await request.read(), headers))
        self.injected["late"] += 1
        await asyncio.Event().wait()  # cancelled when the client hangs up (handler_cancellation)
        raise AssertionError("unreachable")

    async def deliver_late(self) -> list[int]:
        """Send the held requests to the downstream now; their statuses, in order."""
        assert self._http is not None
        statuses = []
        while self.held:
            path, body, headers = self.held.pop(0)
            async with self._http.post(f"{self.upstream}{path}", data=body, headers=headers) as upstream:
                statuses.append(upstream.status)
        return statuses

    def _draw(self) -> str | None:
        roll = self._rng.random()
        for name in ("error_500", "throttle_429", "timeout", "reset_before", "reset_after", "slow"):
            share = getattr(self.mix, name)
            if roll < share:
                return name
            roll -= share
        return None

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k in PASS_HEADERS}
        async with self._http.request(
            request.method, f"{self.upstream}{request.rel_url}", data=await request.read(), headers=headers
        ) as upstream:
            body = await upstream.read()
            kept = {k: v for k in RETURN_HEADERS if (v := upstream.headers.get(k)) is not None}
            return web.Response(status=upstream.status, body=body, headers=kept)


def _resource(path: str) -> str:
    """The SCIM endpoint a request went to, without the tenant prefix and the id: `/t1/Users/42` -> Users."""
    parts = [p for p in path.split("/") if p]
    return parts[1] if len(parts) > 1 else (parts[0] if parts else "")


def _reset(request: web.Request) -> web.Response:
    """Drop the connection without an answer."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)
