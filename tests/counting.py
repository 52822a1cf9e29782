"""A counting proxy for tests: forwards every request to a real scim2-server honestly and counts them as
`METHOD /Endpoint` (e.g. `POST /Users`, `POST /Bulk`, `GET /ServiceProviderConfig`), so a test can say how
many requests reached the downstream without trusting the service's own counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from tests.faults import FaultProxy


@dataclass
class CountingProxy(FaultProxy):
    counted: Counter[str] = field(default_factory=Counter)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.split("/")  # "", tenant, endpoint, id...
        self.counted[f"{request.method} /{parts[2] if len(parts) > 2 else ''}"] += 1
        return await super()._handle(request)

    def total(self) -> int:
        return sum(self.counted.values())
