"""JSON over HTTP: the one way the service talks to a remote (SCIM downstreams, Keycloak's Admin API).

Every request is held to the same hygiene: redirects are never followed (the caller sees the 3xx, so a
body and its token never go to an address nobody checked), no cookie is kept or sent, an IP-literal host
is checked before connecting (aiohttp does not resolve literals, so a resolver-level check never sees
them), and bodies are read up to a cap. A request either gets an `Answer` (any status; the caller maps
statuses to its own errors in one function) or raises `TransportFailure` (no answer: unreachable, refused target).

Retrying is not done here: the caller that knows the budget retries, once, at its level
(service.retry.retrying; the pipeline's applier for changes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from yarl import URL

from service.domain.compact import compact_json

NOT_JSON: Any = type("NotJson", (), {"__repr__": lambda self: "NOT_JSON"})()  # a 2xx body that does not parse


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    doc: Any  # the decoded body; None when empty, a 204 or a redirect; NOT_JSON when it does not parse
    headers: Mapping[str, str]
    too_large: bool = False  # the body was over the cap (doc is None)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class TransportFailure(Exception):
    """No answer: `kind` says why (the remote is unreachable, or the target was refused before sending)."""

    def __init__(self, kind: Literal["unreachable", "forbidden_address", "invalid_url"], detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class ForbiddenAddress(OSError):
    """Raised by a host check (and by the egress resolver): the target's address is not allowed."""


def client_session(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
    """The session `JsonHttp` sends on. It keeps no cookies: aiohttp's default jar would send a remote's
    Set-Cookie back with every later request to that host, whichever tenant's request it is (two tenants'
    downstreams on one host, a realm's several apps), and a session cookie could then stand in for the
    credentials that request carries."""
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


class JsonHttp:
    """Sends JSON requests on a shared aiohttp session (made by `client_session`). `check_host` (optional)
    refuses an IP-literal host before any connection (the egress policy's request-time check)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout_seconds: float,
        max_response_bytes: int,
        check_host: Callable[[str], None] | None = None,
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_response_bytes = max_response_bytes
        self._check_host = check_host

    async def request(
        self,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str],
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
    ) -> Answer:
        try:
            target = url if isinstance(url, URL) else URL(url)  # parsed once: the host checked is the one used
        except ValueError as exc:
            raise TransportFailure("invalid_url", "the URL does not parse") from exc
        try:
            if self._check_host is not None:
                self._check_host(target.raw_host or "")
            sent = dict(headers)
            body: bytes | Mapping[str, str] | None = form
            if json_body is not None:  # encoded here: aiohttp's json= builds an encoder per request
                body = compact_json(json_body)
                sent.setdefault("Content-Type", "application/json")
            async with self._session.request(
                method,
                target,
                data=body,
                params=params,
                headers=sent,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                kept = {k: v for k in ("Retry-After", "Location", "ETag") if (v := response.headers.get(k)) is not None}
                if 300 <= response.status < 400 or response.status == 204:
                    return Answer(response.status, None, kept)
                raw = await self._read(response)
                if raw is None:
                    return Answer(response.status, None, kept, too_large=True)
                return Answer(response.status, _decode(raw), kept)
        except ForbiddenAddress as exc:
            raise TransportFailure("forbidden_address", str(exc)) from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ForbiddenAddress):  # the egress resolver refused the resolved address
                raise TransportFailure("forbidden_address", str(exc.os_error)) from exc
            raise TransportFailure("unreachable", type(exc).__name__) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportFailure("unreachable", type(exc).__name__) from exc

    async def _read(self, response: aiohttp.ClientResponse) -> bytes | None:
        length = response.content_length  # aiohttp reads no more than a declared length
        if length is not None and length <= self._max_response_bytes:
            return await response.read()
        return await read_capped(response.content, self._max_response_bytes)


async def read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """At most `limit` bytes from the stream; None (after reading limit + 1) if it holds more."""
    buffer = bytearray()
    while len(buffer) <= limit:
        chunk = await stream.read(limit + 1 - len(buffer))
        if not chunk:
            return bytes(buffer)
        buffer += chunk
    return None


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return NOT_JSON
