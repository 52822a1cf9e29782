"""How requests to a downstream authenticate: a static bearer token, HTTP Basic, or OAuth2 client
credentials (RFC 6749 section 4.4).

An OAuth2 access token is fetched from the token URL when first needed, cached per tenant and
credentials until shortly before its `expires_in`, and fetched again once when the downstream answers
401 (a token can be revoked, or the server's signing keys rotated, before it expires): only a second
401 with a fresh token reaches the caller, which marks the tenant unauthorized. One token request per
tenant at a time, however many requests wait for it.

The token request goes through the same JsonHttp as the SCIM requests (egress checks, no redirects,
capped bodies). Secrets and tokens never appear in repr(), errors, logs or metrics: a refused token
request is reported with the server's `error` code only.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from service.domain.downstreams import labels
from service.errors import ScimError, ScimRejected, ScimTransient
from service.jsonhttp import NOT_JSON, JsonHttp, TransportFailure
from service.metrics import Metrics
from service.scim.credentials import BasicAuth, BearerToken, ClientCredentials
from service.scim.transport import Downstream, error_for_status

TOKEN_PATH = "token_url"  # noqa: S105 - not a secret: how errors of the token request name it (the URL's query could carry anything)
EARLY_REFRESH_SECONDS = 30.0  # renew this long before expiry (at most a fifth of the lifetime)
DEFAULT_LIFETIME_SECONDS = 60.0  # when the token response carries no usable expires_in


@dataclass(slots=True)
class _Cached:
    token: str
    good_until: float


@dataclass(slots=True)
class _Slot:
    credentials: ClientCredentials
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    cached: _Cached | None = None


class Authenticator:
    """The Authorization header for a downstream's requests; owns the OAuth2 token cache."""

    def __init__(self, http: JsonHttp, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self._http = http
        self._metrics = metrics
        self._clock = clock
        self._slots: dict[str, _Slot] = {}

    async def header(self, ds: Downstream) -> str:
        """The header value; raises ScimError when an OAuth2 token cannot be had (transient: the token
        endpoint is unavailable; rejected with reason token_refused: the credentials are wrong)."""
        credentials = ds.credentials
        if isinstance(credentials, BearerToken):
            return f"Bearer {credentials.token}"
        if isinstance(credentials, BasicAuth):
            pair = f"{credentials.username}:{credentials.password}".encode()
            return f"Basic {base64.b64encode(pair).decode()}"
        return f"Bearer {await self._access_token(ds.tenant, credentials)}"

    def renewable(self, ds: Downstream) -> bool:
        """Whether a 401 may be answered by fetching a fresh token (OAuth2 only)."""
        return isinstance(ds.credentials, ClientCredentials)

    def forget(self, ds: Downstream, header: str) -> None:
        """Drop the cached token that `header` carried (a 401 came back), unless a newer one replaced it."""
        slot = self._slots.get(ds.tenant)
        if slot is not None and slot.cached is not None and header == f"Bearer {slot.cached.token}":
            slot.cached = None

    def drop(self, tenant: str) -> None:
        """Forget a disabled tenant's token."""
        self._slots.pop(tenant, None)

    async def _access_token(self, tenant: str, credentials: ClientCredentials) -> str:
        slot = self._slots.get(tenant)
        if slot is None or slot.credentials != credentials:  # new credentials (enable, rotation): new token
            slot = self._slots[tenant] = _Slot(credentials)
        if slot.cached is not None and self._clock() < slot.cached.good_until:
            return slot.cached.token
        async with slot.lock:
            if slot.cached is not None and self._clock() < slot.cached.good_until:
                return slot.cached.token
            token, lifetime = await self._fetch(tenant, credentials)
            slot.cached = _Cached(token, self._clock() + lifetime - min(EARLY_REFRESH_SECONDS, lifetime / 5))
            return token

    async def _fetch(self, tenant: str, credentials: ClientCredentials) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if credentials.scope:
            form["scope"] = credentials.scope
        if credentials.audience:
            form["audience"] = credentials.audience
        # RFC 6749 section 2.3.1: id and secret are form-urlencoded before they are joined and encoded
        pair = f"{quote(credentials.client_id, safe='')}:{quote(credentials.client_secret, safe='')}".encode()
        headers = {"Accept": "application/json", "Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        try:
            answer = await self._http.request("POST", credentials.token_url, headers=headers, form=form)
        except TransportFailure as exc:
            self._metrics.downstream_tokens.labels(*labels(tenant), "failed").inc()
            if exc.kind == "unreachable":
                raise ScimTransient(None, "POST", TOKEN_PATH, detail=exc.detail) from exc
            raise ScimRejected(None, "POST", TOKEN_PATH, detail=exc.detail, reason=exc.kind) from exc
        try:
            token, lifetime = _token_of(answer.status, answer.doc, answer.header("Retry-After"))
        except ScimTransient:
            self._metrics.downstream_tokens.labels(*labels(tenant), "failed").inc()
            raise
        except ScimError:
            self._metrics.downstream_tokens.labels(*labels(tenant), "refused").inc()
            raise
        self._metrics.downstream_tokens.labels(*labels(tenant), "fetched").inc()
        return token, lifetime


def _token_of(status: int, doc: object, retry_after: str | None) -> tuple[str, float]:
    """The access token and its lifetime from a token response, or the error it stands for."""
    if status in (400, 401, 403):  # invalid_client, unauthorized_client, invalid_scope ...: fix the config
        raise ScimRejected(status, "POST", TOKEN_PATH, detail=_oauth_error(doc), reason="token_refused")
    error = error_for_status(status, "POST", TOKEN_PATH, None if doc is NOT_JSON else doc, retry_after)
    if error is not None:
        raise error
    token = doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise ScimRejected(status, "POST", TOKEN_PATH, detail="no access_token in the answer", reason="token_refused")
    assert isinstance(doc, dict)
    lifetime = doc.get("expires_in")
    if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
        lifetime = DEFAULT_LIFETIME_SECONDS
    return token, float(lifetime)


def _oauth_error(doc: object) -> str:
    """The server's `error` code (RFC 6749 section 5.2): short, and never a secret."""
    code = doc.get("error") if isinstance(doc, dict) else None
    return f"the token endpoint answered {code[:60]}" if isinstance(code, str) else "the token endpoint refused"
