"""Probes the downstreams whose circuit breaker is open, and reports the ones that recovered.

While a breaker is open no change is sent to that tenant (they are parked instead), so real traffic
cannot tell when the downstream is back: this monitor sends `GET /Users?count=1` once each open period
has elapsed. A success closes the breaker and calls `on_recovered` (which replays the parked changes).
It always probes the tenant's current gate: an enable or rotation replaces the gate, breaker included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from service.errors import ScimError, ScimTransient
from service.scim.client import Downstream, ScimClient

log = structlog.get_logger(__name__)


class BreakerMonitor:
    def __init__(
        self,
        client: ScimClient,
        lookup: Callable[[str], Downstream | None],
        on_recovered: Callable[[str], Awaitable[None]],
        interval_seconds: float = 0.5,
    ) -> None:
        self._client = client
        self._lookup = lookup
        self._on_recovered = on_recovered
        self._interval = interval_seconds

    async def run(self) -> None:
        while True:
            await self.probe_due()
            await asyncio.sleep(self._interval)

    async def probe_due(self) -> None:
        now = time.monotonic()
        due = [t for t, breaker in self._client.breakers().items() if breaker.probe_due(now)]
        await asyncio.gather(*(self._probe(tenant) for tenant in due))

    async def _probe(self, tenant: str) -> None:
        ds = self._lookup(tenant)
        if ds is None:
            return  # disabled meanwhile
        breaker = self._client.gate(ds).breaker
        if not breaker.probe_due(time.monotonic()):
            return  # an enable / rotation gave the tenant a fresh gate meanwhile: nothing to probe
        breaker.start_probe()
        try:
            await self._client.send_once(ds, "GET", "Users", params={"count": "1"}, probe=True)
        except ScimTransient as exc:
            log.warning("breaker.probe.failed", tenant=tenant, error=str(exc), next_probe_in=round(breaker.period, 1))
            return
        except ScimError as exc:  # it answered: reachable again (a refused token is handled by the changes)
            log.info("breaker.probe.answered", tenant=tenant, status=exc.status)
        log.info("breaker.closed", tenant=tenant)
        await self._on_recovered(tenant)
