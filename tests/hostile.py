"""A hostile SCIM downstream for tests: a proxy in front of a real scim2-server that answers honestly
except where its mode tells it to misbehave on purpose (unlike tests/faults.py, whose faults are
failures, these answers are well-formed and deceptive).

Modes:
- `honest`: forward everything.
- `redirect_writes`: reads (GET, the ServiceProviderConfig) are forwarded; every write (POST, PATCH,
  PUT, DELETE) answers `redirect_status` with a Location on `redirect_to`, same path and query.
- `no_groups`: every `/Groups` request answers 404, as from a server that serves users only.
- `ignore_filters`: `GET /Users?filter=...` is answered as if there were no filter: every account, page
  by page (servers that do not implement filtering do this), while the ServiceProviderConfig still
  claims filter support.
- `answer_posts_with_holder`: `POST /Users` for a userName that an account already holds is answered
  201 with that account, unchanged, instead of 409 (servers that "return the existing user" do this).

Adding a mode: write `async def _name(proxy, request) -> web.StreamResponse | None` and register it in
`MODES`. Return None to forward honestly; `await proxy.forward(request)` gives the real answer when a
mode tampers with it (drop resources, swap ids...). Settings a mode needs are fields of HostileProxy.
`misbehaved[mode]` counts the requests a mode answered itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.support import free_port

PASS_HEADERS = ("Authorization", "Content-Type", "Accept")
RETURN_HEADERS = ("Content-Type", "Location", "ETag")
WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})

Mode = Callable[["HostileProxy", web.Request], Awaitable[web.StreamResponse | None]]


@dataclass
class Received:
    method: str
    path_qs: str
    authorization: str | None


@dataclass
class Recorder:
    """A listener that records every request it receives. It answers 201 with a user, so a client that
    was led here would believe its write had landed."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Recorder:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(request.method, request.path_qs, request.headers.get("Authorization")))
        return web.json_response(
            {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "planted-1"}, status=201
        )


@dataclass
class HostileProxy:
    upstream: str  # e.g. http://127.0.0.1:8080 (a scim2-server)
    mode: str = "honest"
    redirect_to: str = ""  # redirect_writes: base of the Location
    redirect_status: int = 307
    port: int = field(default_factory=free_port)
    misbehaved: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)  # "METHOD Resource": e.g. "PATCH Groups"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; known: {sorted(MODES)}")
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    def base_url(self, tenant: str) -> str:
        return f"http://127.0.0.1:{self.port}/{tenant}"

    def upstream_url(self, tenant: str) -> str:
        """The same tenant read directly, behind the proxy."""
        return f"{self.upstream}/{tenant}"

    async def start(self) -> HostileProxy:
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
        if self._http:
            await self._http.close()

    async def forward(self, request: web.Request) -> web.Response:
        """The upstream's real answer to the request (body read whole: test downstreams are small)."""
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k in PASS_HEADERS}
        async with self._http.request(
            request.method,
            f"{self.upstream}{request.rel_url}",
            data=await request.read(),
            headers=headers,
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k in RETURN_HEADERS}
            return web.Response(status=upstream.status, body=body, headers=kept)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen[f"{request.method} {_resource(request.path)}"] += 1
        answer = await MODES[self.mode](self, request)
        if answer is None:
            return await self.forward(request)
        self.misbehaved[self.mode] += 1
        return answer


def _resource(path: str) -> str:
    """`/<tenant>/Groups/<id>` -> `Groups`."""
    parts = path.strip("/").split("/")
    return parts[1] if len(parts) > 1 else ""


async def _honest(proxy: HostileProxy, request: web.Request) -> web.StreamResponse | None:
    return None


async def _redirect_writes(proxy: HostileProxy, request: web.Request) -> web.StreamResponse | None:
    if request.method not in WRITES:
        return None
    return web.Response(status=proxy.redirect_status, headers={"Location": f"{proxy.redirect_to}{request.rel_url}"})


async def _ignore_filters(proxy: HostileProxy, request: web.Request) -> web.StreamResponse | None:
    if request.method != "GET" or not request.path.endswith("/Users") or "filter" not in request.query:
        return None
    unfiltered = request.clone(rel_url=request.rel_url.without_query_params("filter"))
    return await proxy.forward(unfiltered)


async def _no_groups(proxy: HostileProxy, request: web.Request) -> web.StreamResponse | None:
    if "/Groups" not in request.path:
        return None
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "404", "detail": "no such endpoint"}
    return web.json_response(body, status=404)


async def _answer_posts_with_holder(proxy: HostileProxy, request: web.Request) -> web.StreamResponse | None:
    if request.method != "POST" or not request.path.endswith("/Users") or proxy._http is None:
        return None
    user_name = (await request.json()).get("userName")
    headers = {k: v for k, v in request.headers.items() if k in PASS_HEADERS}
    async with proxy._http.get(
        f"{proxy.upstream}{request.path}", params={"filter": f'userName eq "{user_name}"'}, headers=headers
    ) as found:
        held = (await found.json(content_type=None)).get("Resources") or []
    if len(held) != 1:
        return None
    return web.json_response(held[0], status=201, content_type="application/scim+json")


MODES: dict[str, Mode] = {
    "honest": _honest,
    "redirect_writes": _redirect_writes,
    "ignore_filters": _ignore_filters,
    "no_groups": _no_groups,
    "answer_posts_with_holder": _answer_posts_with_holder,
}
