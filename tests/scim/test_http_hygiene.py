"""What every request to a downstream is held to: no redirect followed, IP literals checked before
connecting, bodies read up to a cap, downstream ids sent as one percent-encoded path segment.

The downstreams are small aiohttp servers on 127.0.0.1 that record every request they receive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from service.domain import scim
from service.errors import EnableRefused, ScimRejected, ScimTransient
from service.jsonhttp import client_session
from service.metrics import Metrics
from service.scim.client import Downstream, ScimClient
from service.scim.discovery import validate_downstream
from service.scim.egress import EgressPolicy

LOCAL = EgressPolicy(frozenset({"127.0.0.1"}), allow_private_networks=True)
CAP = 4096
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    method: str
    raw_path: str


@dataclass
class LocalServer:
    """A downstream on 127.0.0.1 answering with `handler` and recording each request it receives."""

    handler: Handler
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Recorded(request.method, request.raw_path))
        return await self.handler(request)


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[LocalServer]:
    server = LocalServer(handler)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server._handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()


@asynccontextmanager
async def client(
    egress: EgressPolicy = LOCAL, timeout: float = 5.0, session: aiohttp.ClientSession | None = None
) -> AsyncIterator[ScimClient]:
    """A SCIM client on the session the service makes (`client_session`), or on `session`."""
    async with session or client_session(aiohttp.TCPConnector()) as http:
        yield ScimClient.over_http(
            http, Metrics(CollectorRegistry()), timeout_seconds=timeout, egress=egress, max_response_bytes=CAP
        )


def downstream(server: LocalServer, tenant: str = "t1") -> Downstream:
    return Downstream("acme", f"{server.url}/{tenant}", "token-1")


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"schemas": [scim.LIST_SCHEMA], "totalResults": 0, "Resources": []})


# -- redirects ----------------------------------------------------------------------------------------

WRITES: dict[str, Callable[[ScimClient, Downstream], Awaitable[Any]]] = {
    "POST": lambda c, ds: c.create_user(ds, scim.user_resource("kc-1", {"userName": "jdoe"})),
    "PATCH": lambda c, ds: c.patch_user(ds, "u-1", [{"op": "replace", "path": "active", "value": False}]),
    "DELETE": lambda c, ds: c.delete_user(ds, "u-1"),
    "GET": lambda c, ds: c.send_once(ds, "GET", "Users", params={"count": "1"}),
}


@pytest.mark.parametrize("status", [307, 308, 302])
@pytest.mark.parametrize("method", list(WRITES))
async def test_a_redirect_is_refused_and_never_followed(status: int, method: str) -> None:
    """A 3xx pointing at a second server ends in ScimRejected(reason="redirect"), asked once (no retry);
    the second server receives nothing: neither the body nor the token leave for the other address."""
    async with serving(ok) as target:

        async def redirect(request: web.Request) -> web.Response:
            return web.Response(
                status=status,
                text="moved: body not for the error",
                headers={"Location": f"{target.url}{request.path_qs}"},
            )

        async with serving(redirect) as origin, client() as scim_client:
            with pytest.raises(ScimRejected) as caught:
                await WRITES[method](scim_client, downstream(origin))
    assert (caught.value.reason, caught.value.status) == ("redirect", status)
    assert "127.0.0.1" in caught.value.detail
    assert "body not for the error" not in str(caught.value)
    writes = [r for r in origin.requests if "ServiceProviderConfig" not in r.raw_path]  # read once, as any
    assert [r.method for r in writes] == [method]
    assert target.requests == []


async def test_discovery_refuses_a_redirecting_base_url() -> None:
    """Enable-time validation does not follow a redirect either: EnableRefused("redirect")."""
    async with serving(ok) as target:

        async def redirect(request: web.Request) -> web.Response:
            return web.Response(status=307, headers={"Location": f"{target.url}{request.path_qs}"})

        async with serving(redirect) as origin, client() as scim_client:
            with pytest.raises(EnableRefused) as caught:
                await validate_downstream(scim_client, downstream(origin), LOCAL)
    assert caught.value.reason == "redirect"
    assert target.requests == []


# -- cookies ------------------------------------------------------------------------------------------


async def cookies_sent_back(session: aiohttp.ClientSession | None) -> list[str | None]:
    """Tenant a's downstream sets a session cookie; then a, b (another tenant on the same host) and a again
    are asked. The Cookie header each of the three later requests carried. The host is a name: aiohttp's
    default jar keeps no cookie of an IP-literal host, so 127.0.0.1 would hide the leak."""
    seen: list[str | None] = []

    async def sets_a_cookie(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = await ok(request)
        if request.path.startswith("/a/"):
            response.set_cookie("session", "tenant-a-session", path="/")
        return response

    named = EgressPolicy(frozenset({"localhost"}), allow_private_networks=True)
    async with serving(sets_a_cookie) as server, client(named, session=session) as scim_client:
        base = f"http://localhost:{server.port}"
        tenant_a = Downstream("acme", f"{base}/a", "token-a")
        tenant_b = Downstream("globex", f"{base}/b", "token-b")
        for ds in (tenant_a, tenant_a, tenant_b, tenant_a):
            await scim_client.send_once(ds, "GET", "Users", params={"count": "1"})
    return seen[1:]


async def test_a_cookie_a_downstream_sets_is_never_sent_back() -> None:
    """No request carries a cookie a downstream set: not its own tenant's next request, and not another
    tenant's on the same host (where a session cookie could stand in for that tenant's token). The same
    requests on aiohttp's default session do carry it, so the input is one that would leak."""
    assert await cookies_sent_back(None) == [None, None, None]
    assert await cookies_sent_back(aiohttp.ClientSession()) == ["session=tenant-a-session"] * 3


# -- IP-literal hosts ---------------------------------------------------------------------------------


async def test_a_forbidden_ip_literal_is_refused_before_connecting() -> None:
    """127.0.0.1 under a policy without private networks: ScimRejected(reason="forbidden_address") and the
    server there never sees a request (aiohttp skips the resolver for literals, the client checks them)."""
    strict = EgressPolicy(frozenset({"127.0.0.1"}))
    async with serving(ok) as server, client(strict) as scim_client:
        with pytest.raises(ScimRejected) as caught:
            await scim_client.send_once(downstream(server), "GET", "Users")
    assert caught.value.reason == "forbidden_address"
    assert server.requests == []


async def test_a_metadata_ip_literal_is_refused_without_a_connection_attempt() -> None:
    """169.254.169.254 (nothing listens on it here) is refused at once rather than timing out."""
    async with client(LOCAL, timeout=30) as scim_client:
        ds = Downstream("acme", "http://169.254.169.254/latest", "token-1")
        with pytest.raises(ScimRejected) as caught:
            await asyncio.wait_for(scim_client.send_once(ds, "GET", "Users"), 5)
    assert caught.value.reason == "forbidden_address"


async def test_an_allowed_ip_literal_is_reached() -> None:
    """The same literal under a policy that allows it is requested normally."""
    async with serving(ok) as server, client(LOCAL) as scim_client:
        await scim_client.send_once(downstream(server), "GET", "Users")
    assert [r.method for r in server.requests] == ["GET"]


# -- response body cap --------------------------------------------------------------------------------


def json_body(size: int) -> bytes:
    """A SCIM-ish JSON document of exactly `size` bytes."""
    head, tail = b'{"schemas":[],"pad":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def answering(body: bytes, chunked: bool) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=body, content_type=scim.CONTENT_TYPE)
        response = web.StreamResponse(headers={"Content-Type": scim.CONTENT_TYPE})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 1000):
            await response.write(body[start : start + 1000])
        await response.write_eof()
        return response

    return handler


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_at_the_cap_is_read(chunked: bool) -> None:
    """A body of exactly the cap is read and parsed."""
    async with serving(answering(json_body(CAP), chunked)) as server, client() as scim_client:
        doc = await scim_client.send_once(downstream(server), "GET", "Users")
    assert len(doc["pad"]) == CAP - len(b'{"schemas":[],"pad":""}')


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_one_byte_over_the_cap_is_refused(chunked: bool) -> None:
    """One byte more: ScimRejected(reason="response_too_large"), not retried."""
    async with serving(answering(json_body(CAP + 1), chunked)) as server, client() as scim_client:
        with pytest.raises(ScimRejected) as caught:
            await scim_client.send_once(downstream(server), "GET", "Users")
    assert caught.value.reason == "response_too_large"
    assert len(server.requests) == 1


async def test_the_cap_stops_reading_a_body_that_never_ends() -> None:
    """The body is streamed and reading stops past the cap: a server that sends cap + 1 bytes and then
    stalls forever gets a refusal, not a timeout (reading it whole would wait for the end)."""
    release = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": scim.CONTENT_TYPE})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"[" + b"0," * (CAP // 2))
        await release.wait()
        return response

    async with serving(endless) as server, client(timeout=30) as scim_client:
        try:
            with pytest.raises(ScimRejected) as caught:
                await asyncio.wait_for(scim_client.send_once(downstream(server), "GET", "Users"), 10)
        finally:
            release.set()
    assert caught.value.reason == "response_too_large"


async def test_a_large_error_body_keeps_the_status_meaning() -> None:
    """An over-cap body on a 503 is dropped, not refused: the status still says retry (to the caller)."""

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503, body=b"<html>" + b"x" * CAP)

    async with serving(unavailable) as server, client() as scim_client:
        with pytest.raises(ScimTransient):
            await scim_client.send_once(downstream(server), "GET", "Users")
    assert len(server.requests) == 1


# -- downstream ids -----------------------------------------------------------------------------------


def created_with(answer: dict[str, Any]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(answer, status=201)

    return handler


@pytest.mark.parametrize("bad_id", ["a b/c", "", "a?b", "a#b", "a\nb", ".."])
async def test_an_unusable_id_in_the_post_answer_is_refused(bad_id: str) -> None:
    """The id a POST answers with must be usable as one path segment, else ScimRejected("invalid_id")."""
    async with serving(created_with({"id": bad_id, "userName": "jdoe"})) as server, client() as scim_client:
        with pytest.raises(ScimRejected) as caught:
            await scim_client.create_user(downstream(server), scim.user_resource("kc-1", {"userName": "jdoe"}))
    assert caught.value.reason == "invalid_id"


@pytest.mark.parametrize("answer", [{"userName": "jdoe"}, {"id": 42}, {"id": None}])
async def test_a_post_answer_without_a_string_id_is_refused(answer: dict[str, Any]) -> None:
    """No id, or an id that is not a string: invalid_id."""
    async with serving(created_with(answer)) as server, client() as scim_client:
        with pytest.raises(ScimRejected) as caught:
            await scim_client.create_user(downstream(server), scim.user_resource("kc-1", {"userName": "jdoe"}))
    assert caught.value.reason == "invalid_id"


async def test_ids_are_sent_percent_encoded_as_one_segment() -> None:
    """PATCH and DELETE of "a b" go to .../Users/a%20b."""

    async def no_content(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async with serving(no_content) as server, client() as scim_client:
        ds = downstream(server)
        await scim_client.patch_user(ds, "a b", [{"op": "replace", "path": "active", "value": False}])
        await scim_client.delete_user(ds, "a b")
    writes = [r for r in server.requests if "ServiceProviderConfig" not in r.raw_path]
    assert writes == [Recorded("PATCH", "/t1/Users/a%20b"), Recorded("DELETE", "/t1/Users/a%20b")]


@pytest.mark.parametrize("bad_id", ["a b/c", "../Groups/1", "a?x=1", "a#b", "\x85"])
async def test_an_unusable_id_is_never_sent(bad_id: str) -> None:
    """PATCH / DELETE with an id that would leave its segment are refused before any request."""
    async with serving(ok) as server, client() as scim_client:
        ds = downstream(server)
        with pytest.raises(ScimRejected) as patching:
            await scim_client.patch_user(ds, bad_id, [])
        with pytest.raises(ScimRejected) as deleting:
            await scim_client.delete_user(ds, bad_id)
    assert (patching.value.reason, deleting.value.reason) == ("invalid_id", "invalid_id")
    assert server.requests == []


async def test_an_unparseable_base_url_is_refused_not_retried() -> None:
    """A stored base URL the HTTP client cannot parse is ScimRejected(reason="invalid_url"), asked once."""
    async with client() as scim_client:
        ds = Downstream("acme", "http://evil.example\\@127.0.0.1/t1", "token-1")
        with pytest.raises(ScimRejected) as caught:
            await scim_client.send_once(ds, "GET", "Users")
    assert caught.value.reason == "invalid_url"
