"""An aiohttp client for SCIM 2.0 `/Users`, shared by all downstreams, retrying what is transient.

HTTP statuses become errors in one function, `error_for_status`, named for what the caller does next
(see service.errors). Bodies of failed requests are never put in errors or logs: they hold personal data.

Every request is held to the same hygiene: redirects are never followed (a 3xx is refused, so a write
and its token never go to an address the egress policy did not see), an IP-literal host is checked
against the egress policy before connecting, bodies are read up to a cap, and downstream ids travel as
one percent-encoded path segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import structlog
from yarl import URL

from service.domain import scim
from service.errors import CircuitOpen, ScimConflict, ScimError, ScimNotFound, ScimRejected, ScimTransient
from service.metrics import Metrics
from service.scim.breaker import BreakerState, CircuitBreaker
from service.scim.egress import EgressPolicy, ForbiddenAddress
from service.scim.ratelimit import TokenBucket
from service.scim.retry import RetryPolicy, parse_retry_after

log = structlog.get_logger(__name__)

DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Downstream:
    """Where one tenant's users go, and how hard they may be pushed. The token never appears in repr()."""

    tenant: str
    base_url: str
    token: str = field(repr=False)
    max_concurrency: int | None = None  # None: the service-wide default
    rate_per_minute: int | None = None  # None: unpaced
    generation: int = 0  # the tenant's enable / rotate count: a newer one gets a fresh gate

    def url(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"


LookupMode = Literal["unknown", "filter", "scan"]


@dataclass
class TenantGate:
    """What stands between one tenant's changes and its downstream: breaker, pacing, concurrency;
    and what we learnt of it: whether its filters can be trusted for lookups."""

    breaker: CircuitBreaker
    slots: asyncio.Semaphore
    size: int
    bucket: TokenBucket | None = None
    lookups: LookupMode = "unknown"
    discovery: asyncio.Lock = field(default_factory=asyncio.Lock)
    generation: int = 0
    base_url: str = ""


def error_for_status(
    status: int,
    method: str,
    path: str,
    body: object = None,
    retry_after: str | None = None,
    location: str | None = None,
) -> ScimError | None:
    """The one status -> error mapping. None means success."""
    if 300 <= status < 400:
        return ScimRejected(status, method, path, detail=_redirect_detail(location), reason="redirect")
    if status < 400:
        return None
    scim_type = body.get("scimType") if isinstance(body, dict) else None
    detail = str(body.get("detail", ""))[:200] if isinstance(body, dict) else ""
    if status == 429 or status >= 500 or status == 408:
        return ScimTransient(status, method, path, scim_type, detail, retry_after=parse_retry_after(retry_after))
    if status == 404:
        return ScimNotFound(status, method, path, scim_type, detail)
    if status == 409:
        return ScimConflict(status, method, path, scim_type, detail)
    return ScimRejected(status, method, path, scim_type, detail)


def _redirect_detail(location: str | None) -> str:
    """Names where the redirect pointed (the host only: the rest of a URL may carry tokens)."""
    try:
        host = urlsplit(location).hostname if location else None
    except ValueError:
        host = None
    return f"redirect to {host[:100]} not followed" if host else "redirect not followed"


def checked_id(value: object, method: str, path: str) -> str:
    """A downstream id we may put into a path, else ScimRejected(reason="invalid_id")."""
    resource_id = scim.valid_resource_id(value)
    if resource_id is None:
        raise ScimRejected(None, method, path, detail="the downstream id is not one path segment", reason="invalid_id")
    return resource_id


class ScimClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        retry: RetryPolicy,
        timeout_seconds: float,
        tenant_concurrency: int = 16,
        breaker: CircuitBreaker | None = None,
        *,
        egress: EgressPolicy,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._session = session
        self._egress = egress
        self._max_response_bytes = max_response_bytes
        self._metrics = metrics
        self._retry = retry
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._tenant_concurrency = tenant_concurrency
        self._breaker_template = breaker or CircuitBreaker()
        self._gates: dict[str, TenantGate] = {}

    def gate(self, ds: Downstream) -> TenantGate:
        """The tenant's gate. A newer generation (enable / rotate) or another base URL starts a fresh one
        (closed breaker, new limits): the old breaker judged the old downstream or token. A request made
        with an older generation's config uses the current gate as it is."""
        size = ds.max_concurrency or self._tenant_concurrency
        gate = self._gates.get(ds.tenant)
        if gate is not None and ds.generation < gate.generation:
            return gate
        if gate is None or ds.generation > gate.generation or ds.base_url != gate.base_url:
            t = self._breaker_template
            breaker = CircuitBreaker(t.threshold, t.open_seconds, t.max_open_seconds)
            gate = self._gates[ds.tenant] = TenantGate(
                breaker, asyncio.Semaphore(size), size, generation=ds.generation, base_url=ds.base_url
            )
            self._set_breaker(ds.tenant, gate, breaker.state)
        elif gate.size != size:
            gate.slots, gate.size = asyncio.Semaphore(size), size
        rate = ds.rate_per_minute
        if rate is None:
            gate.bucket = None
        elif gate.bucket is None or gate.bucket.rate_per_minute != rate:
            gate.bucket = TokenBucket(rate, burst=max(1.0, min(rate / 6, 20.0)))
        return gate

    def refresh(self, ds: Downstream) -> None:
        """Bring an existing gate in line with the tenant's stored config now rather than at its next
        request, so an enable / rotation seen on this replica resets the breaker the monitor probes."""
        if ds.tenant in self._gates:
            self.gate(ds)

    def drop(self, tenant: str) -> None:
        """Forget a disabled tenant's gate and its breaker-state series."""
        self._gates.pop(tenant, None)
        with contextlib.suppress(KeyError):
            self._metrics.breaker_state.remove(tenant)

    def breakers(self) -> dict[str, CircuitBreaker]:
        return {tenant: gate.breaker for tenant, gate in self._gates.items()}

    async def list_users(self, ds: Downstream, page_size: int = 500) -> AsyncIterator[dict[str, Any]]:
        """Every user of the downstream, page by page (startIndex / count). A downstream that ignores
        startIndex and answers the same page again ends the listing instead of looping."""
        start = 1
        seen: set[str] = set()
        while True:
            doc = await self.send(ds, "GET", "Users", params={"startIndex": str(start), "count": str(page_size)})
            page = [r for r in ((doc.get("Resources") if isinstance(doc, dict) else None) or []) if isinstance(r, dict)]
            ids = {str(r.get("id")) for r in page}
            if not page or ids <= seen:
                return
            seen |= ids
            for resource in page:
                yield resource
            total = doc.get("totalResults") if isinstance(doc, dict) else None
            start += len(page)
            if not isinstance(total, int) or start > total:
                return

    async def find_user(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
        """The one account whose `attribute` equals `value` (userName: ignoring case), verified here
        whatever the downstream answered; None when none or several match.

        A downstream whose ServiceProviderConfig says filters are unsupported, or that once answered a
        filter with accounts that do not satisfy it, is not asked to filter again: its accounts are
        listed and matched here instead (a scan; slower, but a "no match" then means no match)."""
        gate = self.gate(ds)
        if gate.lookups == "unknown":
            async with gate.discovery:  # one ServiceProviderConfig read per gate, however many lookups wait
                if gate.lookups == "unknown":
                    gate.lookups = await self._lookup_mode(ds)
        if gate.lookups == "filter":
            doc = await self.send(ds, "GET", "Users", params={"filter": scim.eq_filter(attribute, value)})
            answer = scim.verify_lookup(doc, attribute, value)
            if answer.honoured:
                return answer.match
            gate.lookups = "scan"
            self._metrics.lookup_scans.labels(ds.tenant).set(1)
            log.warning(
                "scim.filter.not_honoured",
                tenant=ds.tenant,
                attribute=attribute,
                hint="lookups list every account from now on",
            )
        return await self._scan(ds, attribute, value)

    async def _scan(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
        found = [r async for r in self.list_users(ds) if scim.matches(r, attribute, value)]
        return found[0] if len(found) == 1 and scim.valid_resource_id(found[0].get("id")) is not None else None

    async def _lookup_mode(self, ds: Downstream) -> LookupMode:
        """Filters are used unless the ServiceProviderConfig says they are unsupported."""
        try:
            config = await self.send(ds, "GET", "ServiceProviderConfig")
        except ScimTransient:
            raise
        except ScimError:
            return "filter"  # no readable config: filter, and verify every answer
        mode: LookupMode = "scan" if scim.filter_supported(config) is False else "filter"
        self._metrics.lookup_scans.labels(ds.tenant).set(1 if mode == "scan" else 0)
        if mode == "scan":
            log.warning("scim.filter.unsupported", tenant=ds.tenant, hint="lookups list every account")
        return mode

    def lookup_mode(self, tenant: str) -> LookupMode:
        gate = self._gates.get(tenant)
        return gate.lookups if gate else "unknown"

    async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        doc = await self.send(ds, "POST", "Users", body=body)
        created: dict[str, Any] = doc if isinstance(doc, dict) else {}
        checked_id(created.get("id"), "POST", "Users")
        return created

    async def patch_user(self, ds: Downstream, user_id: str, operations: list[dict[str, Any]]) -> None:
        path = scim.user_path(checked_id(user_id, "PATCH", "Users/{id}"))
        await self.send(ds, "PATCH", path, body=scim.patch_request(operations))

    async def delete_user(self, ds: Downstream, user_id: str) -> None:
        await self.send(ds, "DELETE", scim.user_path(checked_id(user_id, "DELETE", "Users/{id}")))

    async def send(
        self,
        ds: Downstream,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """Send one request, retrying transient failures with backoff; raise the final error."""
        for attempt in range(1, self._retry.attempts + 1):
            try:
                return await self.send_once(ds, method, path, body=body, params=params)
            except ScimTransient as exc:
                if attempt == self._retry.attempts or isinstance(exc, CircuitOpen):
                    raise
                delay = self._retry.delay(attempt, exc.retry_after)
                self._metrics.retries.labels(ds.tenant).inc()
                log.info(
                    "scim.request.retry",
                    tenant=ds.tenant,
                    method=method,
                    path=path,
                    status=exc.status,
                    attempt=attempt,
                    delay=round(delay, 3),
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def send_once(
        self,
        ds: Downstream,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        authenticated: bool = True,
        probe: bool = False,
        detached: bool = False,
    ) -> Any:
        """One request through the tenant's gate. `probe` requests pass an open breaker: they test it.
        `detached` requests (validation before an enable / rotation) bypass the gate entirely: an open
        breaker does not hold them and their outcome does not count in it."""
        if detached:
            return await self._request(ds, method, path, self._headers(ds, body, authenticated), body, params)
        gate = self.gate(ds)
        now = time.monotonic()
        if not probe and not gate.breaker.allows(now):
            raise CircuitOpen(None, method, path, detail="circuit_open", retry_after=gate.breaker.retry_in(now))
        if gate.bucket is not None:
            wait = gate.bucket.reserve(now)
            if wait > 0:
                await asyncio.sleep(wait)
        headers = self._headers(ds, body, authenticated)
        try:
            async with gate.slots:
                result = await self._request(ds, method, path, headers, body, params)
        except ScimTransient:
            self._set_breaker(ds.tenant, gate, gate.breaker.failed(time.monotonic()))
            raise
        except ScimError:
            self._set_breaker(ds.tenant, gate, gate.breaker.succeeded())  # the downstream answered
            raise
        self._set_breaker(ds.tenant, gate, gate.breaker.succeeded())
        return result

    @staticmethod
    def _headers(ds: Downstream, body: dict[str, Any] | None, authenticated: bool) -> dict[str, str]:
        headers = {"Accept": scim.CONTENT_TYPE}
        if authenticated:
            headers["Authorization"] = f"Bearer {ds.token}"
        if body is not None:
            headers["Content-Type"] = scim.CONTENT_TYPE
        return headers

    def _set_breaker(self, tenant: str, gate: TenantGate, state: BreakerState) -> None:
        """Report the state of the tenant's current gate only: a request that ends after a reset or a
        drop must not bring back the old breaker's state (or the series of a disabled tenant)."""
        if self._gates.get(tenant) is gate:
            self._metrics.breaker_state.labels(tenant).set(int(state))

    async def _request(
        self,
        ds: Downstream,
        method: str,
        path: str,
        headers: dict[str, str],
        body: dict[str, Any] | None,
        params: dict[str, str] | None,
    ) -> Any:
        started = time.perf_counter()
        status_class = "error"
        try:
            url = URL(ds.url(path))  # parsed once: the host checked is the host aiohttp connects to
        except ValueError as exc:
            raise ScimRejected(None, method, path, detail="the URL does not parse", reason="invalid_url") from exc
        try:
            self._egress.check_host(url.raw_host or "")
            async with self._session.request(
                method,
                url,
                json=body,
                params=params,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status_class = f"{response.status // 100}xx"
                redirect = 300 <= response.status < 400
                doc = None if redirect else await self._read_json(response, method, path)
                error = error_for_status(
                    response.status,
                    method,
                    path,
                    doc,
                    response.headers.get("Retry-After"),
                    response.headers.get("Location"),
                )
                if error is not None:
                    raise error
                return doc
        except ForbiddenAddress as exc:
            raise ScimRejected(None, method, path, detail=str(exc), reason="forbidden_address") from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ForbiddenAddress):
                raise ScimRejected(None, method, path, detail=str(exc.os_error), reason="forbidden_address") from exc
            raise ScimTransient(None, method, path, detail=type(exc).__name__) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ScimTransient(None, method, path, detail=type(exc).__name__) from exc
        finally:
            self._metrics.scim_requests.labels(ds.tenant, method, status_class).inc()
            self._metrics.scim_latency.labels(method).observe(time.perf_counter() - started)

    async def _read_json(self, response: aiohttp.ClientResponse, method: str, path: str) -> Any:
        """The body as JSON (None if empty or not JSON), read in a stream that stops past the cap."""
        if response.status == 204:
            return None
        length = response.content_length  # aiohttp reads no more than a declared length
        if length is not None and length <= self._max_response_bytes:
            raw: bytes | None = await response.read()
        else:
            raw = await read_capped(response.content, self._max_response_bytes)
        if raw is None and response.status >= 400:
            return None  # the status says what to do; the body would only add a detail
        if raw is None:
            raise ScimRejected(
                response.status,
                method,
                path,
                reason="response_too_large",
                detail=f"body over {self._max_response_bytes} bytes",
            )
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None


async def read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """At most `limit` bytes from the stream; None (after reading limit + 1) if it holds more."""
    buffer = bytearray()
    while len(buffer) <= limit:
        chunk = await stream.read(limit + 1 - len(buffer))
        if not chunk:
            return bytes(buffer)
        buffer += chunk
    return None
