"""An aiohttp client for the Keycloak Admin REST API: the authoritative state of users and groups, for
sync, backfill and reconciliation.

It authenticates as a service account (client-credentials grant against the realm the client lives
in), caches the token until shortly before it expires, and fetches a new one once when Keycloak answers
401 (a token can be revoked or the realm's keys rotated before it expires). Transient failures are
retried with service.retry's backoff, as for downstream calls; statuses become errors in one
function, `error_for_status` (see service.keycloak_admin.errors). Response bodies never reach errors
or logs: they hold personal data.

Roles the service account needs, on the `realm-management` client of each realm it reads: `view-users`
(users, count, groups with their children and members; it includes `query-users`), for `realm_names()`
to see realm ids `view-realm`, and for `events_config()` (the enable-time check of the realm's event
settings) `view-events`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
from yarl import URL

from service.jsonhttp import NOT_JSON, Answer, JsonHttp, TransportFailure
from service.keycloak_admin.errors import (
    KeycloakError,
    KeycloakNotFound,
    KeycloakUnauthorized,
    KeycloakUnavailable,
)
from service.keycloak_admin.mapping import group_fields, user_attributes
from service.retry import RetryPolicy, parse_retry_after, retrying

__all__ = ["GroupPage", "KeycloakAdminClient", "UserPage", "error_for_status", "group_fields", "user_attributes"]

log = structlog.get_logger(__name__)

# Refresh this long before the token's own expiry (at most a fifth of its lifetime), so that a request
# never leaves with a token that expires in flight.
TOKEN_EARLY_REFRESH_SECONDS = 30.0
DEFAULT_TOKEN_LIFETIME_SECONDS = 60.0  # when the token response carries no expires_in
USER_GROUPS_PAGE_SIZE = 100  # a user's groups per request (user_groups reads them all)


def error_for_status(
    status: int, method: str, path: str, body: object = None, retry_after: str | None = None
) -> KeycloakError | None:
    """The one status -> error mapping. None means success."""
    if status < 400:
        return None
    detail = _short_error(body)
    if status in (408, 429) or status >= 500:
        return KeycloakUnavailable(status, method, path, detail, retry_after=parse_retry_after(retry_after))
    if status in (401, 403):
        return KeycloakUnauthorized(status, method, path, detail)
    if status == 404:
        return KeycloakNotFound(status, method, path, detail)
    return KeycloakError(status, method, path, detail)


@dataclass(frozen=True, slots=True)
class UserPage:
    """One page of a realm's users and the wall-clock time (epoch ms) taken just before it was requested.

    That time, not the time the users are published, is how old the read is: a change Keycloak applied
    after it (and its live event) must win over these users, however long the rest of a listing takes.
    """

    read_started_ms: int
    users: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class GroupPage:
    """One page of a realm's groups (top-level ones, or one group's children) and the wall-clock time
    (epoch ms) taken just before it was requested, for the same reason as UserPage's. Each group is
    `group_fields`: `id`, `name`, `path`, `parent` (the parent group's id; None at the top level)."""

    read_started_ms: int
    groups: list[dict[str, Any]]


class KeycloakAdminClient:
    """Reads one Keycloak as one service account. Safe to share between tasks; the session is the
    caller's (one aiohttp session per process, as for the SCIM client)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        auth_realm: str,
        retry: RetryPolicy | None = None,
        timeout_seconds: float = 10.0,
        max_response_bytes: int = 32 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = JsonHttp(session, timeout_seconds=timeout_seconds, max_response_bytes=max_response_bytes)
        self._base = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._auth_realm = auth_realm  # where the client lives: master, or the tenant's own realm
        self._retry = retry or RetryPolicy()
        self._clock = clock  # token expiry
        self._wall_clock = wall_clock  # read times of user pages, compared with Keycloak's event times
        self._token: str | None = None
        self._token_good_until = 0.0
        self._token_lock = asyncio.Lock()
        # Counted for the benchmark's "Keycloak requests per user" and for tests.
        self.requests_sent = 0
        self.tokens_fetched = 0

    def __repr__(self) -> str:  # never the secret nor the token
        return f"KeycloakAdminClient({self._base!r}, client_id={self._client_id!r}, realm={self._auth_realm!r})"

    # -- users ------------------------------------------------------------------------------------------

    async def get_user(self, realm: str, user_id: str) -> dict[str, Any] | None:
        """The stored user, or None when Keycloak says this user does not exist. Any other 404 (the realm
        is gone, the base URL is wrong) raises KeycloakNotFound: it must not look like a deletion."""
        if not user_id:
            raise ValueError("empty user id")  # ".../users/" would be the list endpoint
        try:
            doc = await self._send("GET", ("admin", "realms", realm, "users", user_id))
        except KeycloakNotFound as exc:
            if exc.user_missing:
                return None
            raise
        if not isinstance(doc, dict):
            raise KeycloakError(200, "GET", _path(realm, "users", user_id), "response is not a user")
        return doc

    async def iter_users(
        self, realm: str, page_size: int = 100, *, brief: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Every user of the realm (see iter_user_pages), for callers that do not need read times."""
        async for page in self.iter_user_pages(realm, page_size, brief=brief):
            for user in page.users:
                yield user

    async def iter_user_pages(
        self, realm: str, page_size: int = 100, *, brief: bool = False
    ) -> AsyncIterator[UserPage]:
        """Every user of the realm, page by page (first/max), each page with the time its request left.
        Offset paging is not a snapshot: a user created or deleted while paging can be missed or seen
        twice, which backfill and reconciliation tolerate (live events and the next cycle cover the gap).
        `brief=True` is enough for user_attributes() and several times smaller (no attributes, no
        userProfileMetadata)."""
        params = {"briefRepresentation": str(brief).lower()}
        async for read_started_ms, users in self._pages(("admin", "realms", realm, "users"), page_size, params):
            yield UserPage(read_started_ms, users)

    async def count_users(self, realm: str) -> int:
        """The realm's user count (service accounts are not counted), for backfill progress (done/total)."""
        doc = await self._send_retrying("GET", ("admin", "realms", realm, "users", "count"))
        if not isinstance(doc, int) or isinstance(doc, bool):
            raise KeycloakError(200, "GET", _path(realm, "users", "count"), "response is not a number")
        return doc

    async def realm_names(self) -> dict[str, str]:
        """Realm id -> realm name for the realms this account can see. Plugins such as ru.playa's send
        only the realm's internal id, while the Admin API takes the name. Without `view-realm` Keycloak
        lists names but no ids: those realms are left out (and logged)."""
        doc = await self._send_retrying("GET", ("admin", "realms"), params={"briefRepresentation": "true"})
        if not isinstance(doc, list):
            raise KeycloakError(200, "GET", "admin/realms", "response is not a list")
        names: dict[str, str] = {}
        without_id = []
        for realm in doc:
            if not isinstance(realm, dict) or not isinstance(realm.get("realm"), str):
                continue
            if isinstance(realm.get("id"), str):
                names[realm["id"]] = realm["realm"]
            else:
                without_id.append(realm["realm"])
        if without_id:
            log.warning("keycloak.realms.no_id", realms=without_id, hint="grant realm-management view-realm")
        return names

    async def events_config(self, realm: str) -> dict[str, Any]:
        """The realm's event settings (RealmEventsConfigRepresentation: `eventsListeners`,
        `eventsEnabled`, `adminEventsEnabled`, `adminEventsDetailsEnabled`, ...), so that enabling a
        tenant can say what keeps its events from reaching the service. Needs the realm-management role
        `view-events`; without it Keycloak answers 403 (KeycloakUnauthorized)."""
        doc = await self._send_retrying("GET", ("admin", "realms", realm, "events", "config"))
        if not isinstance(doc, dict):
            raise KeycloakError(200, "GET", _path(realm, "events", "config"), "response is not an object")
        return doc

    # -- groups -----------------------------------------------------------------------------------------

    async def iter_group_pages(self, realm: str, page_size: int = 100) -> AsyncIterator[GroupPage]:
        """Every group of the realm, parents before their children, page by page, each page with the time
        its request left. `GET /groups` lists top-level groups only (its `subGroups` is always empty);
        a group's sub-groups are `GET /groups/{id}/children`, which answers at most 10 when `max` is left
        out, so every request names `first` and `max` (recorded: docs/reference/keycloak-group-events.md).
        A group whose `subGroupCount` is 0 is not asked for children. Offset paging is not a snapshot
        (see iter_user_pages); a group listed twice is expanded once."""
        pending: deque[str | None] = deque([None])  # groups whose children are still to list; None: the top
        expanded: set[str] = set()
        while pending:
            parent = pending.popleft()
            parts = ("admin", "realms", realm, "groups") + (() if parent is None else (parent, "children"))
            params = {"briefRepresentation": "true"}
            async for read_started_ms, reps in self._pages(parts, page_size, params):
                groups = []
                for rep in reps:
                    group = group_fields(rep, parent)
                    if group is None:
                        continue
                    groups.append(group)
                    if rep.get("subGroupCount") != 0 and group["id"] not in expanded:
                        expanded.add(group["id"])
                        pending.append(group["id"])
                yield GroupPage(read_started_ms, groups)

    async def iter_group_member_pages(self, realm: str, group_id: str, page_size: int = 100) -> AsyncIterator[UserPage]:
        """The group's direct members (brief users: enough for user_attributes()), page by page, each page
        with the time its request left. Without `max` Keycloak answers at most 100 (recorded), so every
        request names it. Members of sub-groups are theirs, not this group's."""
        if not group_id:
            raise ValueError("empty group id")
        parts = ("admin", "realms", realm, "groups", group_id, "members")
        async for read_started_ms, users in self._pages(parts, page_size, {"briefRepresentation": "true"}):
            yield UserPage(read_started_ms, users)

    async def get_group(self, realm: str, group_id: str) -> dict[str, Any] | None:
        """The stored group as `group_fields`, or None when Keycloak says this group does not exist. Any
        other 404 raises KeycloakNotFound, as for get_user. One attempt: the pipeline's applier retries."""
        if not group_id:
            raise ValueError("empty group id")  # ".../groups/" would be the list endpoint
        try:
            doc = await self._send("GET", ("admin", "realms", realm, "groups", group_id))
        except KeycloakNotFound as exc:
            if exc.group_missing:
                return None
            raise
        group = group_fields(doc) if isinstance(doc, dict) else None
        if group is None:
            raise KeycloakError(200, "GET", _path(realm, "groups", group_id), "response is not a group")
        return group

    async def user_groups(self, realm: str, user_id: str) -> list[dict[str, Any]]:
        """The groups the user is a direct member of, as `group_fields`, every page read. An absent user
        raises KeycloakNotFound (`user_missing`). One attempt per page: the pipeline's applier retries."""
        if not user_id:
            raise ValueError("empty user id")
        parts = ("admin", "realms", realm, "users", user_id, "groups")
        groups: list[dict[str, Any]] = []
        params = {"briefRepresentation": "true"}
        async for _, reps in self._pages(parts, USER_GROUPS_PAGE_SIZE, params, retry=False):
            groups.extend(g for g in map(group_fields, reps) if g is not None)
        return groups

    async def _pages(
        self, parts: tuple[str, ...], page_size: int, params: dict[str, str], *, retry: bool = True
    ) -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
        """A list endpoint page by page (`first`/`max`) until a short page, each page with the wall-clock
        time (epoch ms) taken before its request; each page retried while Keycloak is unavailable,
        unless `retry` is False (the applier's reads: it retries the whole change)."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        send = self._send_retrying if retry else self._send
        first = 0
        while True:
            read_started_ms = int(self._wall_clock() * 1000)
            page = await send("GET", parts, params={**params, "first": str(first), "max": str(page_size)})
            if not isinstance(page, list):
                raise KeycloakError(200, "GET", "/".join(parts), "response is not a list")
            yield read_started_ms, [item for item in page if isinstance(item, dict)]
            if len(page) < page_size:
                return
            first += len(page)

    # -- transport --------------------------------------------------------------------------------------

    async def _send_retrying(self, method: str, parts: tuple[str, ...], *, params: dict[str, str] | None = None) -> Any:
        """`_send`, retried with backoff while Keycloak is unavailable: for callers outside the pipeline
        (whose applier retries a whole change, so its reads go through `_send` once)."""

        def note(exc: BaseException, attempt: int, delay: float) -> None:
            log.info(
                "keycloak.request.retry",
                method=method,
                path="/".join(parts),
                error=str(exc),
                attempt=attempt,
                delay=round(delay, 3),
            )

        return await retrying(self._retry, lambda: self._send(method, parts, params=params), on_retry=note)

    async def _send(self, method: str, parts: tuple[str, ...], *, params: dict[str, str] | None = None) -> Any:
        """One call (with one fresh token after a 401); raise the error its answer maps to."""
        path = "/".join(parts)
        url = self._url(parts)
        token = await self._access_token()
        answer = await self._request(method, url, path, token, params)
        if answer.status == 401:  # revoked, or signed with a rotated key: one fresh token, then give up
            self._forget(token)
            token = await self._access_token()
            answer = await self._request(method, url, path, token, params)
        error = error_for_status(answer.status, method, path, answer.doc, answer.header("Retry-After"))
        if error is not None:
            raise error
        if answer.doc is NOT_JSON or answer.too_large:
            raise KeycloakError(answer.status, method, path, "response is not JSON (wrong base URL?) or too large")
        return answer.doc

    async def _request(self, method: str, url: URL, path: str, token: str, params: dict[str, str] | None) -> Answer:
        self.requests_sent += 1
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            return await self._http.request(method, url, headers=headers, params=params)
        except TransportFailure as exc:
            raise KeycloakUnavailable(None, method, path, exc.detail) from exc

    # -- token ------------------------------------------------------------------------------------------

    async def _access_token(self) -> str:
        if self._token is not None and self._clock() < self._token_good_until:
            return self._token
        async with self._token_lock:  # one token request at a time, however many callers wait
            if self._token is not None and self._clock() < self._token_good_until:
                return self._token
            token, lifetime = await self._fetch_token()
            self._token = token
            self._token_good_until = self._clock() + lifetime - min(TOKEN_EARLY_REFRESH_SECONDS, lifetime / 5)
            return token

    def _forget(self, token: str) -> None:
        if self._token == token:  # another task may already hold a newer one
            self._token = None

    async def _fetch_token(self) -> tuple[str, float]:
        path = f"realms/{self._auth_realm}/protocol/openid-connect/token"
        form = {"grant_type": "client_credentials", "client_id": self._client_id, "client_secret": self._client_secret}
        self.requests_sent += 1
        self.tokens_fetched += 1
        try:
            answer = await self._http.request(
                "POST",
                self._url(("realms", self._auth_realm, "protocol", "openid-connect", "token")),
                headers={"Accept": "application/json"},
                form=form,
            )
        except TransportFailure as exc:
            raise KeycloakUnavailable(None, "POST", path, exc.detail) from exc
        status, doc, retry_after = answer.status, answer.doc, answer.header("Retry-After")
        if status in (400, 401):  # invalid_client, unauthorized_client: the credentials are wrong
            raise KeycloakUnauthorized(status, "POST", path, _short_error(doc))
        error = error_for_status(status, "POST", path, doc, retry_after)
        if error is not None:
            raise error
        token = doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise KeycloakError(status, "POST", path, "token response carries no access_token")
        lifetime = doc.get("expires_in")
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME_SECONDS
        return token, float(lifetime)

    def _url(self, parts: tuple[str, ...]) -> URL:
        # Each part is one path segment: a user id is opaque (`f:<component>:<id>` for federated users,
        # anything for imported ones) and a "/" in it must not become a separator.
        return URL(self._base + "/" + "/".join(quote(part, safe="") for part in parts), encoded=True)


def _short_error(body: object) -> str:
    """Keycloak's `error` (and `error_description`) text: short, and never personal data."""
    if not isinstance(body, dict):
        return ""
    parts = [str(body[key]) for key in ("error", "error_description") if isinstance(body.get(key), str)]
    return ": ".join(parts)[:200]


def _path(realm: str, *rest: str) -> str:
    return "/".join(("admin", "realms", realm, *rest))
