"""The one seam through which SCIM requests leave, and the wrappers around it (httpx's transport idea).

    ScimClient (resources: users, lookups)  ->  Transport.send(Request)
        GatedTransport    per-tenant circuit breaker, rate (token bucket) and concurrency cap
        TracingTransport  records each request and its answer (the step trace of an on-demand sync)
                          (and, inside `recording()`, HttpTransport notes each exchange for the activity log)
        HttpTransport     JSON over HTTP (service.jsonhttp); statuses -> errors in `error_for_status`;
                          the Authorization header from an Authorizer (service.scim.auth: bearer, basic,
                          OAuth2 with one fresh token after a 401)

A unit test hands ScimClient a scripted Transport; the service stacks Gated(Http); an on-demand sync
stacks Tracing(Gated(Http)). No layer retries: the caller that knows the budget does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlencode, urlsplit

from service.domain import scim
from service.domain.activity import ANSWER_CHARS, PATH_CHARS, SENT_KEPT, SentRequest
from service.domain.capabilities import NO_OVERRIDES, Overrides
from service.domain.downstreams import labels
from service.domain.mapping import DEFAULT_MAPPING, AttributeMapping
from service.errors import CircuitOpen, ScimConflict, ScimError, ScimNotFound, ScimRejected, ScimTransient
from service.jsonhttp import NOT_JSON, Answer, JsonHttp, TransportFailure
from service.metrics import Metrics
from service.retry import parse_retry_after
from service.scim.breaker import BreakerState, CircuitBreaker
from service.scim.credentials import BearerToken, Credentials
from service.scim.ratelimit import TokenBucket

UserLookup = Literal["externalId", "userName"]


@dataclass(frozen=True, slots=True)
class Downstream:
    """Where one tenant's users go, and how hard they may be pushed. Secrets never appear in repr()."""

    tenant: str
    base_url: str
    token: str = field(repr=False)  # a static bearer token; unused when `auth` is set
    max_concurrency: int | None = None  # None: the service-wide default
    rate_per_minute: int | None = None  # None: unpaced
    generation: int = 0  # the tenant's enable / rotate count: a newer one gets a fresh gate
    bulk: bool = True  # writes may go out as SCIM /Bulk when the downstream announces it (tenant option)
    auth: Credentials | None = field(default=None, repr=False)  # None: Bearer `token`
    # how an account not linked yet is found: its externalId, or (downstreams whose externalId filter
    # finds nothing) its userName, taken only when the account's externalId is ours
    user_lookup: UserLookup = "externalId"
    # what the operator says it supports, over its ServiceProviderConfig (service.domain.capabilities)
    capabilities: Overrides = NO_OVERRIDES
    # which Keycloak field or user attribute each SCIM attribute holds (service.domain.mapping)
    mapping: AttributeMapping = DEFAULT_MAPPING

    @property
    def credentials(self) -> Credentials:
        return self.auth if self.auth is not None else BearerToken(self.token)

    def url(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"


@dataclass(frozen=True, slots=True)
class Request:
    ds: Downstream
    method: str
    path: str  # relative to the base URL; ids already percent-encoded (service.domain.scim.user_path)
    body: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    authenticated: bool = True
    probe: bool = False  # the breaker monitor's test request: passes an open breaker
    detached: bool = False  # validation before an enable / rotation: neither held nor counted by the gate
    if_match: str | None = None  # the resource version a conditional write expects (ETags)


class Transport(Protocol):
    async def send(self, request: Request) -> Any: ...


class Authorizer(Protocol):
    """The Authorization header of a downstream's requests (service.scim.auth.Authenticator)."""

    async def header(self, ds: Downstream) -> str: ...

    def renewable(self, ds: Downstream) -> bool: ...

    def forget(self, ds: Downstream, header: str) -> None: ...


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


# -- what was sent, for the activity log -------------------------------------------------------------

_SENT: ContextVar[list[SentRequest] | None] = ContextVar("scim_requests_sent", default=None)


@contextlib.contextmanager
def recording() -> Iterator[list[SentRequest]]:
    """Collects each request sent within the block (by this task and the tasks it starts) with its status
    and a short answer: what the activity log shows of a change. Outside such a block nothing is kept."""
    sent: list[SentRequest] = []
    with recording_into(sent):
        yield sent


@contextlib.contextmanager
def recording_into(sent: list[SentRequest] | None) -> Iterator[None]:
    """Requests sent within the block go to `sent` (None: nowhere), e.g. the record of the change whose
    operation a bulk request carried."""
    token = _SENT.set(sent)
    try:
        yield
    finally:
        _SENT.reset(token)


def sent_record() -> list[SentRequest] | None:
    """The record being kept here (None: none)."""
    return _SENT.get()


def note_sent(method: str, path: str, status: int | None, answer: object, secret: str = "") -> None:
    """Adds a request to the block's record, if one is being kept (at most SENT_KEPT): its answer as short
    text, without `secret` (the credential the request carried, should an answer echo it)."""
    sent = _SENT.get()
    if sent is None or len(sent) >= SENT_KEPT:
        return
    if isinstance(answer, str):
        text = answer
    elif answer is None or answer is NOT_JSON:
        text = ""
    else:
        text = json.dumps(answer, separators=(",", ":"), default=str)
    text = text[: ANSWER_CHARS + len(secret)]
    if secret and secret in text:
        text = text.replace(secret, "[redacted]")
    sent.append(SentRequest(method, path[:PATH_CHARS], status, text[:ANSWER_CHARS]))


def _shown(request: Request) -> str:
    """The request's path as the activity log shows it: from the base URL, with its query."""
    path = "/" + request.path.lstrip("/")
    return f"{path}?{urlencode(request.params)}" if request.params else path


def _credential(authorization: str | None) -> str:
    """The secret part of an Authorization header value (the token, the Basic pair)."""
    return authorization.partition(" ")[2] if authorization else ""


class HttpTransport:
    """SCIM over HTTP: the tenant's credentials, SCIM media type, statuses and transport failures mapped
    to ScimError. A 401 to a request sent with an OAuth2 token is sent once more with a fresh token."""

    def __init__(self, http: JsonHttp, metrics: Metrics, auth: Authorizer) -> None:
        self._http = http
        self._metrics = metrics
        self._auth = auth
        # the metric series each request updates, looked up once per label set (their series are never
        # removed): a labels() lookup per request costs more than the count itself
        self._counted: dict[tuple[str, str, str], Any] = {}
        self._timed: dict[str, Any] = {}

    async def send(self, request: Request) -> Any:
        ds, method, path = request.ds, request.method, request.path
        headers = {"Accept": scim.CONTENT_TYPE}
        if request.body is not None:
            headers["Content-Type"] = scim.CONTENT_TYPE
        if request.if_match is not None:
            headers["If-Match"] = request.if_match
        if request.authenticated:
            headers["Authorization"] = await self._auth.header(ds)
        answer = await self._exchange(request, headers)
        if answer.status == 401 and request.authenticated and self._auth.renewable(ds):
            self._auth.forget(ds, headers["Authorization"])  # expired early, revoked, or keys rotated
            headers["Authorization"] = await self._auth.header(ds)
            answer = await self._exchange(request, headers)
        doc = None if answer.doc is NOT_JSON else answer.doc
        error = error_for_status(
            answer.status, method, path, doc, answer.header("Retry-After"), answer.header("Location")
        )
        if error is not None:
            raise error
        if answer.too_large:
            raise ScimRejected(answer.status, method, path, detail="body over the cap", reason="response_too_large")
        if request.if_match is not None and doc is None and answer.header("ETag"):
            # a conditional write answered without a body (204): its ETag header is the new version
            return {"meta": {"version": answer.header("ETag")}}
        return doc

    async def _exchange(self, request: Request, headers: dict[str, str]) -> Answer:
        """One HTTP request and its answer, counted; no answer at all becomes a ScimError."""
        ds, method, path = request.ds, request.method, request.path
        started = time.perf_counter()
        status_class = "error"
        try:
            try:
                answer = await self._http.request(
                    method, ds.url(path), headers=headers, json_body=request.body, params=request.params
                )
            except TransportFailure as exc:
                note_sent(method, _shown(request), None, exc.detail)
                if exc.kind == "unreachable":
                    raise ScimTransient(None, method, path, detail=exc.detail) from exc
                raise ScimRejected(None, method, path, detail=exc.detail, reason=exc.kind) from exc
            status_class = f"{answer.status // 100}xx"
            if _SENT.get() is not None:
                note_sent(method, _shown(request), answer.status, answer.doc, _credential(headers.get("Authorization")))
            return answer
        finally:
            self._timed_series(method).observe(time.perf_counter() - started)
            self._counted_series(ds.tenant, method, status_class).inc()

    def _counted_series(self, tenant: str, method: str, status_class: str) -> Any:
        key = (tenant, method, status_class)
        series = self._counted.get(key)
        if series is None:
            series = self._counted[key] = self._metrics.scim_requests.labels(*labels(tenant), method, status_class)
        return series

    def _timed_series(self, method: str) -> Any:
        series = self._timed.get(method)
        if series is None:
            series = self._timed[method] = self._metrics.scim_latency.labels(method)
        return series


@dataclass
class TenantGate:
    """What stands between one tenant's requests and its downstream: breaker, pacing, concurrency."""

    breaker: CircuitBreaker
    slots: asyncio.Semaphore
    size: int
    bucket: TokenBucket | None = None
    generation: int = 0
    base_url: str = ""
    reported: BreakerState | None = None  # the state the breaker gauge shows for this gate


class GatedTransport:
    """Holds each tenant's requests to its gate: an open breaker refuses them (CircuitOpen: the caller
    parks), the bucket paces them, the semaphore caps them. Transient failures open the breaker."""

    def __init__(
        self,
        inner: Transport,
        metrics: Metrics,
        tenant_concurrency: int = 16,
        breaker: CircuitBreaker | None = None,
        on_transition: Callable[[str, BreakerState], None] | None = None,  # tenant key, new state
    ) -> None:
        self._on_transition = on_transition
        self._inner = inner
        self._metrics = metrics
        self._tenant_concurrency = tenant_concurrency
        self._breaker_template = breaker or CircuitBreaker()
        self._gates: dict[str, TenantGate] = {}

    async def send(self, request: Request) -> Any:
        if request.detached:
            return await self._inner.send(request)
        ds = request.ds
        gate = self.gate(ds)
        now = time.monotonic()
        if not request.probe and not gate.breaker.allows(now):
            raise CircuitOpen(
                None, request.method, request.path, detail="circuit_open", retry_after=gate.breaker.retry_in(now)
            )
        if gate.bucket is not None:
            wait = gate.bucket.reserve(now)
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            async with gate.slots:
                result = await self._inner.send(request)
        except ScimTransient:
            self._set_breaker(ds.tenant, gate, gate.breaker.failed(time.monotonic()))
            raise
        except ScimError:
            self._set_breaker(ds.tenant, gate, gate.breaker.succeeded())  # the downstream answered
            raise
        self._set_breaker(ds.tenant, gate, gate.breaker.succeeded())
        return result

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
            if self._on_transition is not None:
                breaker.observer = functools.partial(self._on_transition, ds.tenant)
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
            self._metrics.breaker_state.remove(*labels(tenant))

    def breakers(self) -> dict[str, CircuitBreaker]:
        return {tenant: gate.breaker for tenant, gate in self._gates.items()}

    def _set_breaker(self, tenant: str, gate: TenantGate, state: BreakerState) -> None:
        """Report the state of the tenant's current gate only: a request that ends after a reset or a
        drop must not bring back the old breaker's state (or the series of a disabled tenant)."""
        if gate.reported is not state and self._gates.get(tenant) is gate:  # set on a change only
            self._metrics.breaker_state.labels(*labels(tenant)).set(int(state))
            gate.reported = state


class TracingTransport:
    """Passes requests on and records each one with its answer: what an operator reads in the step
    trace of an on-demand sync. Request bodies are recorded (the operator asked for this user); the
    token never is (it travels in a header, built below this layer)."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.steps: list[dict[str, Any]] = []

    async def send(self, request: Request) -> Any:
        step: dict[str, Any] = {"step": "scim_request", "method": request.method, "path": request.path}
        if request.params:
            step["query"] = dict(request.params)
        if request.body is not None:
            step["request"] = request.body
        self.steps.append(step)
        try:
            answer = await self._inner.send(request)
        except ScimError as exc:
            step["outcome"] = {"error": type(exc).__name__, "status": exc.status, "detail": exc.detail}
            raise
        step["outcome"] = "ok"
        if isinstance(answer, dict) and "id" in answer:
            step["answer"] = {"id": answer.get("id")}
        elif isinstance(answer, dict) and "totalResults" in answer:
            resources = answer.get("Resources")
            listed: list[Any] = resources if isinstance(resources, list) else []
            step["answer"] = {
                "totalResults": answer.get("totalResults"),
                "ids": [r.get("id") for r in listed[:20] if isinstance(r, dict)],
            }
        return answer
