"""SCIM 2.0 resources over a Transport (service.scim.transport): users, groups, lookups and listings.

Bodies of failed requests are never put in errors or logs: they hold personal data. Ids that come back
from a downstream are checked before they are used in a path, and travel as one percent-encoded
segment. Nothing here retries: a transient failure reaches the caller (the pipeline's applier, or
`retrying` in the listings of backfill and reconciliation), which knows its budget.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import structlog

from service.domain import capabilities as caps
from service.domain import scim
from service.domain.downstreams import labels
from service.domain.sighting import Account, account_of
from service.errors import ScimError, ScimRejected, ScimTransient
from service.jsonhttp import JsonHttp
from service.metrics import Metrics
from service.retry import RetryPolicy, retrying
from service.scim.auth import Authenticator
from service.scim.breaker import BreakerState, CircuitBreaker
from service.scim.egress import EgressPolicy
from service.scim.transport import (
    Downstream,
    GatedTransport,
    HttpTransport,
    Request,
    TenantGate,
    TracingTransport,
    Transport,
)

__all__ = ["Downstream", "LookupMode", "ScimClient", "TenantGate", "UserSnapshot", "WritesMode", "checked_id"]

log = structlog.get_logger(__name__)

LookupMode = Literal["unknown", "filter", "scan"]
WritesMode = Literal["unknown", "patch", "put"]
ResourceKind = Literal["Users", "Groups"]
_RESOURCE_PATH = {"Users": scim.user_path, "Groups": scim.group_path}  # ids percent-encoded as one segment
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
KEPT_VERSIONS = 10_000  # per tenant: the users' versions last answered, for If-Match without a read


def checked_id(value: object, method: str, path: str) -> str:
    """A downstream id we may put into a path, else ScimRejected(reason="invalid_id")."""
    resource_id = scim.valid_resource_id(value)
    if resource_id is None:
        raise ScimRejected(None, method, path, detail="the downstream id is not one path segment", reason="invalid_id")
    return resource_id


SNAPSHOT_ATTRIBUTES = "externalId,userName,name,emails,active"  # what a backfill compares (id always comes)


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """Every account a listing returned, and whether it is provably all of them: `complete` only when
    the listing ended as totalResults said, holding that many distinct accounts, with the same total on
    its first and last page. Only a complete snapshot may say that an account is absent."""

    accounts: list[Account]
    complete: bool
    why_incomplete: str = ""


@dataclass
class _Knowledge:
    """What we learnt of one tenant's downstream (reset when its config changes)."""

    generation: int
    base_url: str
    lookups: LookupMode = "unknown"
    discovery: asyncio.Lock = field(default_factory=asyncio.Lock)
    config: dict[str, Any] | None = None  # its ServiceProviderConfig ({}: none readable), once read
    config_read: asyncio.Lock = field(default_factory=asyncio.Lock)
    config_due: float = 0.0  # monotonic time of its next read
    patch_refused: bool = False  # it answered a PATCH with 405: users are PUT from now on
    writes: WritesMode = "unknown"  # how user updates were last sent, for the API
    versions: dict[str, str] = field(default_factory=dict)  # Users/{id} -> meta.version last answered


class ScimClient:
    """The operations of the executors' ports (users: ScimPort, groups: GroupScimPort), and listings.
    `gates` is the transport layer that holds the tenants' circuit breakers (exposed for the breaker
    monitor and the API)."""

    def __init__(
        self,
        transport: Transport,
        metrics: Metrics,
        gates: GatedTransport | None = None,
        auth: Authenticator | None = None,
        *,
        capabilities_refresh_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self._refresh_seconds = capabilities_refresh_seconds
        self._clock = clock
        self._metrics = metrics
        self._gates = gates if gates is not None else (transport if isinstance(transport, GatedTransport) else None)
        self._auth = auth  # the OAuth2 token cache, when this client sends over HTTP
        self._knowledge: dict[str, _Knowledge] = {}

    @classmethod
    def over_http(
        cls,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        timeout_seconds: float,
        egress: EgressPolicy,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        tenant_concurrency: int = 16,
        breaker: CircuitBreaker | None = None,
        capabilities_refresh_seconds: float = 3600.0,
        on_breaker: Callable[[str, BreakerState], None] | None = None,
    ) -> ScimClient:
        """The service's stack: JSON over HTTP (egress-checked, capped), gated per tenant; `on_breaker`
        hears each tenant's breaker transitions."""
        http = JsonHttp(
            session,
            timeout_seconds=timeout_seconds,
            max_response_bytes=max_response_bytes,
            check_host=egress.check_host,
        )
        auth = Authenticator(http, metrics)
        gates = GatedTransport(HttpTransport(http, metrics, auth), metrics, tenant_concurrency, breaker, on_breaker)
        return cls(gates, metrics, auth=auth, capabilities_refresh_seconds=capabilities_refresh_seconds)

    # -- the gates ----------------------------------------------------------------------------------------

    def gate(self, ds: Downstream) -> TenantGate:
        assert self._gates is not None, "this client has no gated transport"
        return self._gates.gate(ds)

    def refresh(self, ds: Downstream) -> None:
        if self._gates is not None:
            self._gates.refresh(ds)

    def drop(self, tenant: str) -> None:
        self._knowledge.pop(tenant, None)
        if self._gates is not None:
            self._gates.drop(tenant)
        if self._auth is not None:
            self._auth.drop(tenant)

    def breakers(self) -> dict[str, CircuitBreaker]:
        return self._gates.breakers() if self._gates is not None else {}

    def traced(self) -> tuple[ScimClient, TracingTransport]:
        """A client whose every request is also recorded (an on-demand sync's step trace)."""
        tracer = TracingTransport(self.transport)
        traced = ScimClient(
            tracer, self._metrics, self._gates, self._auth, capabilities_refresh_seconds=self._refresh_seconds
        )
        traced._knowledge = self._knowledge  # what we learnt of the downstreams holds for both
        return traced, tracer

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
        """One request. `probe` passes an open breaker (the monitor's test); `detached` goes around the
        gate (validation before an enable / rotation: neither held nor counted by the current breaker)."""
        request = Request(ds, method, path, body, params, authenticated, probe, detached)
        return await self.transport.send(request)

    # -- users --------------------------------------------------------------------------------------------

    async def list_users(
        self, ds: Downstream, page_size: int = 500, *, retry: RetryPolicy | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every user of the downstream, page by page (startIndex / count); each page retried with
        `retry` when given. A downstream that ignores startIndex and answers the same page again ends
        the listing instead of looping. Pages are never larger than the downstream's filter.maxResults."""
        page_size = caps.page_size(page_size, await self.capabilities(ds))
        start = 1
        seen: set[str] = set()
        while True:
            params = {"startIndex": str(start), "count": str(page_size)}
            doc = await self._page(ds, params, retry)
            resources = (doc.get("Resources") if isinstance(doc, dict) else None) or []
            page = [r for r in resources if isinstance(r, dict)]
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
        known = self._known(ds)
        if known.lookups == "unknown":
            async with known.discovery:  # one ServiceProviderConfig read, however many lookups wait
                if known.lookups == "unknown":
                    known.lookups = await self._lookup_mode(ds)
        if known.lookups == "filter":
            doc = await self.send_once(ds, "GET", "Users", params={"filter": scim.eq_filter(attribute, value)})
            answer = scim.verify_lookup(doc, attribute, value)
            if answer.honoured:
                return self._found(ds, answer.match)
            known.lookups = "scan"
            self._metrics.lookup_scans.labels(*labels(ds.tenant)).set(1)
            log.warning(
                "scim.filter.not_honoured", tenant=ds.tenant, attribute=attribute, hint="lookups list every account"
            )
        found = [r async for r in self.list_users(ds) if scim.matches(r, attribute, value)]
        usable = len(found) == 1 and scim.valid_resource_id(found[0].get("id")) is not None
        return self._found(ds, found[0]) if usable else None

    async def find_users(self, ds: Downstream, attribute: str, value: str) -> list[dict[str, Any]]:
        """Every account whose `attribute` equals `value`, verified as find_user's answer is: each one
        satisfies the filter here, whatever the downstream answered, and carries an id usable in a path
        (one without is left out: it cannot be written). For what must reach all of a user's accounts
        (an orphan check), where find_user's "several match" is no answer.

        A filtered answer is paged to its end (a user may have more accounts than one page shows); a
        downstream that does not honour the filter is scanned, as find_user's lookups are."""
        known = await self._lookups_decided(ds)
        if known.lookups == "filter":
            wanted = {"filter": scim.eq_filter(attribute, value)}
            listed = [r async for r in self._listing(ds, "Users", 500, None, wanted)]
            if scim.verify_lookup({"Resources": listed}, attribute, value).honoured:
                return self._usable(ds, listed)
            known.lookups = "scan"
            self._metrics.lookup_scans.labels(*labels(ds.tenant)).set(1)
            log.warning(
                "scim.filter.not_honoured", tenant=ds.tenant, attribute=attribute, hint="lookups list every account"
            )
        return self._usable(ds, [r async for r in self.list_users(ds) if scim.matches(r, attribute, value)])

    def _usable(self, ds: Downstream, matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The matches whose id can be put in a path, each once, their versions kept (_found)."""
        usable: dict[str, dict[str, Any]] = {}
        for match in matches:
            resource_id = scim.valid_resource_id(match.get("id"))
            if resource_id is not None and resource_id not in usable:
                usable[resource_id] = match
                self._found(ds, match)
        return list(usable.values())

    async def _lookups_decided(self, ds: Downstream) -> _Knowledge:
        """The tenant's knowledge, its lookup mode decided (one ServiceProviderConfig read, however many
        lookups wait)."""
        known = self._known(ds)
        if known.lookups == "unknown":
            async with known.discovery:
                if known.lookups == "unknown":
                    known.lookups = await self._lookup_mode(ds)
        return known

    def _found(self, ds: Downstream, match: dict[str, Any] | None) -> dict[str, Any] | None:
        """A looked-up account, its version kept (where its id is usable): the write that follows
        needs no read of its own."""
        user_id = scim.valid_resource_id(match.get("id")) if match is not None else None
        if user_id is not None:
            self._keep_version(ds, scim.user_path(user_id), match)
        return match

    async def _page(self, ds: Downstream, params: dict[str, str], retry: RetryPolicy | None) -> Any:
        async def once() -> Any:
            return await self.send_once(ds, "GET", "Users", params=params)

        return await (once() if retry is None else retrying(retry, once))

    def lookup_mode(self, tenant: str) -> LookupMode:
        known = self._knowledge.get(tenant)
        return known.lookups if known else "unknown"

    async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        created = await self._create(ds, "Users", body)
        self._keep_version(ds, scim.user_path(created["id"]), created)
        return created

    async def patch_user(self, ds: Downstream, user_id: str, operations: list[dict[str, Any]]) -> None:
        """PATCH; a 405 (PATCH announced, not taken) switches the tenant's user updates to PUT, then is
        raised for the executor to resend the change as a PUT."""
        path = scim.user_path(checked_id(user_id, "PATCH", "Users/{id}"))
        try:
            await self._conditional(ds, "PATCH", path, scim.patch_request(operations))
        except ScimRejected as exc:
            if exc.status == 405:
                self.refuse_patch(ds)
            raise

    async def replace_user(self, ds: Downstream, user_id: str, body: dict[str, Any]) -> None:
        """`PUT /Users/{id}` with the full user (downstreams without PATCH)."""
        path = scim.user_path(checked_id(user_id, "PUT", "Users/{id}"))
        await self._conditional(ds, "PUT", path, body)

    async def _conditional(self, ds: Downstream, method: str, path: str, body: dict[str, Any]) -> None:
        """A user write. Where the downstream supports ETags it is sent `If-Match` the user's version
        (the one its last answer gave, else read first); a 412 (changed since: another writer, or a
        version this replica kept from before) reads the version again and sends once more. A second
        412 is transient: the applier retries later."""
        if not caps.etag_supported(await self.capabilities(ds)):
            await self.send_once(ds, method, path, body=body)
            return
        known = self._known(ds)
        version = known.versions.pop(path, None) or await self._read_version(ds, path)
        try:
            doc = await self._send_if_match(ds, method, path, body, version)
        except ScimRejected as exc:
            if exc.status != 412:
                raise
            log.info("scim.version.stale", tenant=ds.tenant, method=method, hint="read again, sent once more")
            try:
                doc = await self._send_if_match(ds, method, path, body, await self._read_version(ds, path))
            except ScimRejected as again:
                if again.status != 412:
                    raise
                raise ScimTransient(412, method, path, detail="the resource changed twice while written") from again
        self._keep_version(ds, path, doc)

    async def _send_if_match(
        self, ds: Downstream, method: str, path: str, body: dict[str, Any], version: str | None
    ) -> Any:
        request = Request(ds, method, path, body, if_match=version)
        return await self.transport.send(request)

    async def _read_version(self, ds: Downstream, path: str) -> str | None:
        """The resource's current meta.version (None: it carries none, the write goes unconditional)."""
        return caps.version_of(await self.send_once(ds, "GET", path))

    def _keep_version(self, ds: Downstream, path: str, doc: object) -> None:
        version = caps.version_of(doc)
        if version is None:
            return
        versions = self._known(ds).versions
        versions[path] = version
        if len(versions) > KEPT_VERSIONS:
            versions.pop(next(iter(versions)))

    async def user_writes(self, ds: Downstream) -> caps.UserWrites:
        """How a linked user's changes go to this downstream: PATCH, or PUT of the full user."""
        known = self._known(ds)
        writes = caps.user_writes(await self.capabilities(ds), known.patch_refused)
        if writes != known.writes:
            known.writes = writes
            if writes == "put":
                log.info("scim.writes.put", tenant=ds.tenant, hint="user updates are sent as PUT of the full user")
        return writes

    def refuse_patch(self, ds: Downstream) -> None:
        """The downstream answered 405 to a PATCH: its users are PUT from now on (until its config changes)."""
        known = self._known(ds)
        if not known.patch_refused:
            known.patch_refused = True
            log.warning("scim.patch.not_allowed", tenant=ds.tenant, hint="user updates are sent as PUT from now on")

    def writes_mode(self, tenant: str) -> WritesMode:
        known = self._knowledge.get(tenant)
        return known.writes if known else "unknown"

    async def delete_user(self, ds: Downstream, user_id: str) -> None:
        await self._delete(ds, "Users", user_id)

    # -- a backfill's snapshot of the accounts, and the downstream's announced capabilities ----------------

    async def snapshot_users(
        self, ds: Downstream, page_size: int = 500, *, retry: RetryPolicy | None = None
    ) -> UserSnapshot:
        """Every account of the downstream with the attributes a backfill compares (`attributes=`, which
        a downstream may ignore), in pages no larger than its filter.maxResults, checked as it comes: a
        page whose accounts carry no usable id, a total that moves, or a count that does not add up makes
        the snapshot incomplete (it then proves nothing absent)."""
        size = caps.page_size(page_size, await self.capabilities(ds))
        accounts: dict[str, Account] = {}
        start, first_total = 1, None
        while True:
            params = {"startIndex": str(start), "count": str(size), "attributes": SNAPSHOT_ATTRIBUTES}
            doc = await self._page(ds, params, retry)
            total = doc.get("totalResults") if isinstance(doc, dict) else None
            if not isinstance(total, int) or isinstance(total, bool):
                return UserSnapshot(list(accounts.values()), False, "no totalResults")
            first_total = total if first_total is None else first_total
            resources = doc.get("Resources") or []
            page = [r for r in resources if isinstance(r, dict)] if isinstance(resources, list) else []
            added = 0
            for resource in page:
                resource_id = scim.valid_resource_id(resource.get("id"))
                if resource_id is None:
                    return UserSnapshot(list(accounts.values()), False, "an account without a usable id")
                if resource_id not in accounts:
                    accounts[resource_id] = account_of(resource, resource_id)
                    added += 1
            start += len(page)
            if not page or added == 0 or start > total:
                break
        if total != first_total:
            return UserSnapshot(list(accounts.values()), False, "totalResults changed while listing")
        if len(accounts) != total:
            return UserSnapshot(list(accounts.values()), False, f"{len(accounts)} accounts listed of {total}")
        return UserSnapshot(list(accounts.values()), True)

    async def capabilities(self, ds: Downstream) -> dict[str, Any]:
        """The downstream's ServiceProviderConfig, read once per tenant config and again every
        `capabilities_refresh_seconds`, with the tenant's overrides laid over it; {} when it has none
        readable. A transient failure of the first read is raised (the caller retries); of a later one,
        the config already read stays in use and the read is tried again a minute later."""
        known = self._known(ds)
        if known.config is None or (self._clock() >= known.config_due and not known.config_read.locked()):
            async with known.config_read:
                if known.config is None or self._clock() >= known.config_due:
                    await self._read_config(ds, known)
        return caps.effective(known.config or {}, ds.capabilities)

    async def _read_config(self, ds: Downstream, known: _Knowledge) -> None:
        try:
            doc = await self.send_once(ds, "GET", "ServiceProviderConfig")
        except ScimTransient:
            if known.config is None:
                raise
            known.config_due = self._clock() + min(60.0, self._refresh_seconds)
            return
        except ScimError:
            doc = None
        config = doc if isinstance(doc, dict) else {}
        if known.config is not None and config != known.config:
            log.info("scim.capabilities.changed", tenant=ds.tenant, hint="the downstream announces other features now")
            known.lookups = "unknown"  # filter support may have changed: decided again at the next lookup
        known.config = config
        known.config_due = self._clock() + self._refresh_seconds

    # -- groups -------------------------------------------------------------------------------------------

    async def list_groups(
        self, ds: Downstream, page_size: int = 200, *, retry: RetryPolicy | None = None, members: bool = True
    ) -> AsyncIterator[dict[str, Any]]:
        """Every group of the downstream, paged like list_users. `members=False` asks for the groups
        without their member lists (`excludedAttributes=members`, as Entra ID asks): a group of thousands
        of members is a large answer, and a scan only needs id, displayName and externalId."""
        extra = {} if members else {"excludedAttributes": "members"}
        async for group in self._listing(ds, "Groups", page_size, retry, extra):
            yield group

    async def find_group(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
        """The one group whose `attribute` equals `value` (displayName: ignoring case), verified here
        whatever the downstream answered; None when none or several match. Lookups filter or scan as
        find_user's do, with the same knowledge of the downstream; a scan lists groups without members."""
        return await self._lookup(ds, "Groups", attribute, value)

    async def create_group(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        return await self._create(ds, "Groups", body)

    async def patch_group(self, ds: Downstream, group_id: str, operations: list[dict[str, Any]]) -> None:
        await self._patch(ds, "Groups", group_id, operations)

    async def delete_group(self, ds: Downstream, group_id: str) -> None:
        await self._delete(ds, "Groups", group_id)

    async def read_group_members(self, ds: Downstream, group_id: str) -> Any:
        """`GET /Groups/{id}?attributes=members`, as decoded: the caller judges it (servers may omit members)."""
        path = scim.group_path(checked_id(group_id, "GET", "Groups/{id}"))
        return await self.send_once(ds, "GET", path, params={"attributes": "members"})

    # -- writes of any resource type (one request each: the applier owns the retries) ---------------------

    async def _create(self, ds: Downstream, kind: ResourceKind, body: dict[str, Any]) -> dict[str, Any]:
        """POST; the answer must carry an id we can use in a path."""
        doc = await self.send_once(ds, "POST", kind, body=body)
        created: dict[str, Any] = doc if isinstance(doc, dict) else {}
        checked_id(created.get("id"), "POST", kind)
        return created

    async def _patch(self, ds: Downstream, kind: ResourceKind, resource_id: str, ops: list[dict[str, Any]]) -> None:
        path = _RESOURCE_PATH[kind](checked_id(resource_id, "PATCH", f"{kind}/{{id}}"))
        await self.send_once(ds, "PATCH", path, body=scim.patch_request(ops))

    async def _delete(self, ds: Downstream, kind: ResourceKind, resource_id: str) -> None:
        await self.send_once(ds, "DELETE", _RESOURCE_PATH[kind](checked_id(resource_id, "DELETE", f"{kind}/{{id}}")))

    # -- lookups and listings of any resource type --------------------------------------------------------

    async def _lookup(self, ds: Downstream, endpoint: str, attribute: str, value: str) -> dict[str, Any] | None:
        """find_user's lookup for any endpoint: filter while the downstream honours filters, else scan."""
        known = self._known(ds)
        if known.lookups == "unknown":
            async with known.discovery:
                if known.lookups == "unknown":
                    known.lookups = await self._lookup_mode(ds)
        if known.lookups == "filter":
            doc = await self.send_once(ds, "GET", endpoint, params={"filter": scim.eq_filter(attribute, value)})
            answer = scim.verify_lookup(doc, attribute, value)
            if answer.honoured:
                return answer.match
            known.lookups = "scan"
            self._metrics.lookup_scans.labels(*labels(ds.tenant)).set(1)
            log.warning(
                "scim.filter.not_honoured",
                tenant=ds.tenant,
                resource=endpoint,
                attribute=attribute,
                hint="lookups list every resource",
            )
        scan = {"excludedAttributes": "members"} if endpoint == "Groups" else {}
        found = [r async for r in self._listing(ds, endpoint, 500, None, scan) if scim.matches(r, attribute, value)]
        return found[0] if len(found) == 1 and scim.valid_resource_id(found[0].get("id")) is not None else None

    async def _listing(
        self, ds: Downstream, endpoint: str, page_size: int, retry: RetryPolicy | None, extra: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        """list_users' paging for any endpoint, with `extra` query parameters on every page."""
        page_size = caps.page_size(page_size, await self.capabilities(ds))
        start = 1
        seen: set[str] = set()
        while True:
            params = {"startIndex": str(start), "count": str(page_size), **extra}
            once = functools.partial(self.send_once, ds, "GET", endpoint, params=params)
            doc = await (once() if retry is None else retrying(retry, once))
            resources = (doc.get("Resources") if isinstance(doc, dict) else None) or []
            page = [r for r in resources if isinstance(r, dict)]
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

    # -- what we learn of a downstream --------------------------------------------------------------------

    def _known(self, ds: Downstream) -> _Knowledge:
        known = self._knowledge.get(ds.tenant)
        if known is None or (known.generation, known.base_url) != (ds.generation, ds.base_url):
            known = self._knowledge[ds.tenant] = _Knowledge(ds.generation, ds.base_url)
        return known

    async def _lookup_mode(self, ds: Downstream) -> LookupMode:
        """Filters are used unless the ServiceProviderConfig says they are unsupported (read once, shared
        with `capabilities`; a config that cannot be read: filter, and verify every answer)."""
        config = await self.capabilities(ds)
        mode: LookupMode = "scan" if scim.filter_supported(config) is False else "filter"
        self._metrics.lookup_scans.labels(*labels(ds.tenant)).set(1 if mode == "scan" else 0)
        if mode == "scan":
            log.warning("scim.filter.unsupported", tenant=ds.tenant, hint="lookups list every account")
        return mode
