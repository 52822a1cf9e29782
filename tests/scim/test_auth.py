"""How requests to a downstream authenticate: static bearer, HTTP Basic, OAuth2 client credentials (the
token cached until shortly before expiry, one fresh token after a 401, a refused client secret marking the
tenant unauthorized). The token endpoint and the downstream are small aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from service.errors import EnableRefused, ScimRejected, ScimTransient
from service.jsonhttp import JsonHttp
from service.metrics import Metrics
from service.scim.auth import Authenticator
from service.scim.client import Downstream, ScimClient
from service.scim.credentials import BasicAuth, ClientCredentials
from service.scim.discovery import validate_downstream
from service.scim.egress import EgressPolicy
from service.scim.transport import HttpTransport

LOCAL = EgressPolicy(frozenset({"127.0.0.1"}), allow_private_networks=True)
SECRET = "s3cret/with:odd chars"
LIST = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 0, "Resources": []}
CONFIG = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"], "patch": {"supported": True}}


@dataclass
class Server:
    """A token endpoint (client `outbound`, secret SECRET) and a SCIM API accepting the tokens it issued
    and not revoked since."""

    expires_in: int = 300
    issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    seen: list[str | None] = field(default_factory=list)  # Authorization of each SCIM request
    token_forms: list[dict[str, str]] = field(default_factory=list)
    port: int = 0

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def downstream(self, secret: str = SECRET, scope: str | None = None, audience: str | None = None) -> Downstream:
        auth = ClientCredentials(self.token_url, "outbound", secret, scope=scope, audience=audience)
        return Downstream("acme", f"http://127.0.0.1:{self.port}/scim", "", generation=1, auth=auth)

    async def token(self, request: web.Request) -> web.Response:
        self.token_forms.append({k: str(v) for k, v in (await request.post()).items()})
        expected = "Basic " + base64.b64encode(b"outbound:s3cret%2Fwith%3Aodd%20chars").decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid_client", "error_description": "no"}, status=401)
        token = f"tok-{len(self.issued) + 1}"
        self.issued.append(token)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in})

    async def scim(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization")
        self.seen.append(header)
        token = (header or "").removeprefix("Bearer ")
        if token not in self.issued or token in self.revoked:
            return web.json_response({"detail": "Bearer token required"}, status=401)
        return web.json_response(CONFIG if request.path.endswith("ServiceProviderConfig") else LIST)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[Server]:
    app = web.Application()
    app.router.add_post("/token", server.token)
    app.router.add_route("*", "/scim/{tail:.*}", server.scim)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()


@asynccontextmanager
async def scim_client(clock: Clock) -> AsyncIterator[tuple[ScimClient, Metrics]]:
    metrics = Metrics(CollectorRegistry())
    async with aiohttp.ClientSession() as session:
        http = JsonHttp(session, timeout_seconds=5, max_response_bytes=1 << 20, check_host=LOCAL.check_host)
        transport = HttpTransport(http, metrics, Authenticator(http, metrics, clock))
        yield ScimClient(transport, metrics), metrics


def tokens(metrics: Metrics, result: str) -> float:
    return (
        metrics.registry.get_sample_value(
            "outbound_scim_downstream_tokens_total", {"tenant": "acme", "downstream": "default", "result": result}
        )
        or 0.0
    )


async def test_an_oauth2_token_is_reused_until_shortly_before_it_expires() -> None:
    """One token request serves every request until 30 s (at most a fifth of the lifetime) before expiry;
    then a new one is fetched. The token request carries the scope and audience asked for."""
    clock = Clock()
    async with serving(Server(expires_in=300)) as server, scim_client(clock) as (client, metrics):
        ds = server.downstream(scope="scim", audience="https://app.example")
        for _ in range(3):
            await client.send_once(ds, "GET", "Users")
        clock.now += 269
        await client.send_once(ds, "GET", "Users")
        assert server.issued == ["tok-1"]
        clock.now += 2  # 271 s: inside the last 30 s
        await client.send_once(ds, "GET", "Users")
    assert server.issued == ["tok-1", "tok-2"]
    assert server.seen == ["Bearer tok-1"] * 4 + ["Bearer tok-2"]
    assert server.token_forms[0] == {
        "grant_type": "client_credentials",
        "scope": "scim",
        "audience": "https://app.example",
    }
    assert tokens(metrics, "fetched") == 2


async def test_a_401_fetches_one_fresh_token_and_sends_again() -> None:
    """A cached token the downstream refuses (revoked before its expiry) is dropped; the request is sent
    once more with a fresh token, and succeeds."""
    async with serving(Server()) as server, scim_client(Clock()) as (client, _):
        ds = server.downstream()
        await client.send_once(ds, "GET", "Users")
        server.revoked.add("tok-1")
        await client.send_once(ds, "GET", "Users")
    assert server.seen == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]


async def test_a_401_to_a_fresh_token_reaches_the_caller_as_unauthorized() -> None:
    """Only one fresh token per request: when the downstream refuses that one too, the caller gets the
    401 (and marks the tenant unauthorized)."""
    async with serving(Server()) as server, scim_client(Clock()) as (client, _):
        ds = server.downstream()
        server.revoked.update({"tok-1", "tok-2", "tok-3"})
        with pytest.raises(ScimRejected) as caught:
            await client.send_once(ds, "GET", "Users")
    assert caught.value.unauthorized and caught.value.status == 401
    assert server.issued == ["tok-1", "tok-2"]


async def test_a_refused_client_secret_is_unauthorized_and_names_no_secret() -> None:
    """The token endpoint's 401 becomes ScimRejected(reason token_refused), which counts as unauthorized;
    neither the error nor the metrics hold the secret."""
    async with serving(Server()) as server, scim_client(Clock()) as (client, metrics):
        with pytest.raises(ScimRejected) as caught:
            await client.send_once(server.downstream(secret="wrong-secret"), "GET", "Users")
    assert caught.value.reason == "token_refused" and caught.value.unauthorized
    assert "invalid_client" in str(caught.value)
    assert "wrong-secret" not in str(caught.value) and "wrong-secret" not in repr(server.downstream("wrong-secret"))
    assert tokens(metrics, "refused") == 1 and server.seen == []


async def test_an_unreachable_token_endpoint_is_transient() -> None:
    """No answer from the token URL is retriable, like an unreachable downstream."""
    async with serving(Server()) as server:
        token_url = server.token_url  # the server is gone once this block ends
    unreachable = Downstream(
        "acme", "http://127.0.0.1:9/scim", "", auth=ClientCredentials(token_url, "outbound", SECRET)
    )
    async with scim_client(Clock()) as (client, metrics):
        with pytest.raises(ScimTransient):
            await client.send_once(unreachable, "GET", "Users")
    assert tokens(metrics, "failed") == 1


async def test_basic_auth_sends_the_encoded_pair() -> None:
    """HTTP Basic: user and password, UTF-8, base64."""
    seen: list[str | None] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response(LIST)

    app = web.Application()
    app.router.add_get("/scim/Users", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        ds = Downstream(
            "acme", f"http://127.0.0.1:{runner.addresses[0][1]}/scim", "", auth=BasicAuth("svc", "pässword")
        )
        async with scim_client(Clock()) as (client, _):
            await client.send_once(ds, "GET", "Users")
    finally:
        await runner.cleanup()
    assert seen == ["Basic " + base64.b64encode("svc:pässword".encode()).decode()]


async def test_enable_validation_is_authenticated_and_names_a_refused_client() -> None:
    """ServiceProviderConfig is read with the credentials (a server answering it only with a token
    validates); a wrong client secret is the enable refusal `unauthorized`."""
    async with serving(Server()) as server, scim_client(Clock()) as (client, _):
        config = await validate_downstream(client, server.downstream(), LOCAL)
        assert config == CONFIG
        assert server.seen == ["Bearer tok-1", "Bearer tok-1"]
        with pytest.raises(EnableRefused) as caught:
            await validate_downstream(client, server.downstream(secret="nope"), LOCAL)
    assert caught.value.reason == "unauthorized"
    assert "token URL" in caught.value.detail and "nope" not in caught.value.detail
