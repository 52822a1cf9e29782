"""`make bench`, backfill part: 10,000 Keycloak users into an empty downstream, one service process.

What it measures (the "Benchmark" section of the Keycloak issue): a real Keycloak holds U users before
outbound SCIM is enabled; the tenant is enabled with `"backfill": true`; the service pages through the
realm's users (Admin REST API) and feeds one change per user into its keyed pipeline, which writes them
to the bench's SCIM responder (scripts/bench.py, a subprocess answering every request after
--latency-ms). Figures:

- wall time from the enable call to the moment the responder holds every user with the right
  attributes (the responder's timestamp of the last write, so polling does not blur it), and users/s;
- Keycloak requests per user: the service reaches Keycloak through a counting reverse proxy of the
  bench, so the count is measured (token, count, user pages, single-user reads, other), not computed;
- downstream requests per user, by method, as the responder received them;
- the service process's peak RSS, and where the host's CPU went (broker, Keycloak, responder share it);
- the time the same run needs just to page the realm from Keycloak (the service's own Admin API client,
  the same page size, through the same proxy; once before and once after the backfills), and the ratio
  of each backfill's wall time to it (the target: <= 1.3x, and <= 1.05 downstream requests per user).

Each mode (--modes: `single`, the tenant's `bulk: off`; `bulk`, a responder space that announces /Bulk
with maxOperations 1000) runs its own service process with topics of its own, into an empty space.

Setup is not measured but reported: Keycloak's start (scripts/keycloak/keycloak.sh; the first start on
a machine augments and can take 30-120 s) and the creation of the users through the realm's partial
import (`POST /admin/realms/{realm}/partialImport`, --import-chunk users a request, --create-concurrency
requests in flight; one user at a time through the Admin API takes hours at 100,000). KEYCLOAK_URL (+ KEYCLOAK_ADMIN_USER / KEYCLOAK_ADMIN_PASSWORD)
uses a running Keycloak instead (a fresh realm, deleted at the end); KAFKA_BOOTSTRAP_SERVERS a running
broker. The floor is 10,000 users in under 60 s; a run with another --users is judged by its rate
(166.7 users/s) and says so.

The run prints a table and exits 0 even below the floor: it is a measurement. It exits non-zero on
errors, e.g. when not every user is right downstream within --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from devkit.kafka import create_source_topics
from devkit.keycloak import MasterAdmin, ServiceAccount
from devkit.local import ROOT, free_port, wait_until
from devkit.service import Api, make_settings, spawn_service
from scripts.bench import (
    DOWNSTREAM_TOKEN,
    SERVICE_OVERRIDES,
    BenchError,
    CpuWindow,
    ProcessWatch,
    Responder,
    kafka_broker,
    print_counters,
    print_cpu,
    running_responder,
    service_counters,
    verdict,
)
from service.keycloak_admin.client import KeycloakAdminClient
from service.pipeline.backfill import PAGE_SIZE

KEYCLOAK = ROOT / "scripts" / "keycloak" / "keycloak.sh"
UNREACHABLE = 3  # keycloak.sh fetch's exit code for "Maven Central cannot be reached"
FLOOR_USERS = 10_000
FLOOR_SECONDS = 60.0
FLOOR_RATE = FLOOR_USERS / FLOOR_SECONDS
MODES = {"single": "backfill", "bulk": "bulk-backfill"}  # mode -> the responder's space (bulk... announce /Bulk)


# == the users ===========================================================================================


def expected(i: int) -> dict[str, Any]:
    """User i as the downstream must end up holding it (SCIM side). Some users have no lastName and
    some are disabled, so the mapping of absent names and of `enabled` is checked too."""
    return {
        "userName": f"bf{i:05d}",
        "givenName": f"Given{i}",
        "familyName": None if i % 7 == 0 else f"Fam{i}",
        "email": f"bf{i:05d}@bench.test",
        "active": i % 10 != 0,
    }


def representation(i: int) -> dict[str, Any]:
    want = expected(i)
    rep = {
        "username": want["userName"],
        "firstName": want["givenName"],
        "email": want["email"],
        "enabled": want["active"],
    }
    if want["familyName"]:
        rep["lastName"] = want["familyName"]
    return rep


@dataclass
class Setup:
    realm: str
    account: ServiceAccount
    ids: dict[str, int]  # Keycloak user id -> i
    seconds: float
    concurrency: int

    @property
    def users_per_second(self) -> float:
        return len(self.ids) / self.seconds if self.seconds > 0 else 0.0


async def import_users(admin: MasterAdmin, realm: str, users: int, chunk: int, concurrency: int) -> dict[str, int]:
    """The users through the realm's partial import, `chunk` a request, `concurrency` requests in flight;
    each answer names the created users' ids."""
    ids: dict[str, int] = {}
    index = {representation(i)["username"]: i for i in range(users)}
    slots = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def one(first: int) -> None:
        reps = [
            {**representation(i), "enabled": expected(i)["active"]} for i in range(first, min(first + chunk, users))
        ]
        async with slots:
            for attempt in range(1, 5):
                status, doc, _ = await admin.call(
                    "POST", f"/{realm}/partialImport", {"ifResourceExists": "SKIP", "users": reps}
                )
                if status == 200 and isinstance(doc, dict):
                    break
                if status < 500 or attempt == 4:
                    raise BenchError(f"partial import of users {first}.. failed: {status} {str(doc)[:300]}")
                await asyncio.sleep(attempt)
        for result in doc.get("results") or []:
            if result.get("resourceType") == "USER" and result.get("resourceName") in index:
                ids[result["id"]] = index[result["resourceName"]]
        elapsed = time.monotonic() - started
        print(f"   {len(ids)} of {users} users imported ({elapsed:.0f} s, {len(ids) / elapsed:.0f}/s)", flush=True)

    await asyncio.gather(*(one(first) for first in range(0, users, chunk)))
    return ids


async def prepare_realm(kc: KeycloakHandle, users: int, concurrency: int, chunk: int) -> Setup:
    """A fresh realm, the service's service account in it (realm-management view-users / query-users),
    and `users` users created through the realm's partial import."""
    realm = f"bench-bf-{uuid.uuid4().hex[:6]}"
    async with aiohttp.ClientSession() as session:
        admin = MasterAdmin(session, kc.url, kc.admin_user, kc.admin_password)
        await admin.create_realm(realm)
        kc.realms.append(realm)
        account = await admin.create_service_account(realm, "outbound-scim-bench")
        print(
            f"-- importing {users} users into realm {realm} (partialImport, {chunk} a request, {concurrency} in flight)",
            flush=True,
        )
        started = time.monotonic()
        ids = await import_users(admin, realm, users, chunk, concurrency)
        seconds = time.monotonic() - started
        count = await admin.ok("GET", f"/{realm}/users/count")
    if count != users or len(ids) != users:
        raise BenchError(f"the realm holds {count} users, {len(ids)} created, {users} wanted")
    setup = Setup(realm, account, ids, seconds, concurrency)
    print(f"-- {users} users imported in {seconds:.1f} s ({setup.users_per_second:.0f} users/s)", flush=True)
    return setup


# == Keycloak ============================================================================================


@dataclass
class KeycloakHandle:
    url: str
    admin_user: str
    admin_password: str
    own: bool  # started by the bench (else KEYCLOAK_URL)
    start_seconds: float = 0.0
    pid: int | None = None  # the JVM, when ours
    version: str = "external"
    realms: list[str] = field(default_factory=list)  # created by the bench (deleted at the end when not ours)


def _keycloak_sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(KEYCLOAK), *args], capture_output=True, text=True, check=False, env=env)


def java_pid(pid: int) -> int:
    """kc.sh may be a wrapper shell around the JVM: the java process among pid and its descendants."""
    todo = [pid]
    while todo:
        current = todo.pop()
        with suppress(OSError):
            if Path(f"/proc/{current}/comm").read_text().strip() == "java":
                return current
            todo += [int(p) for p in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
    return pid


@asynccontextmanager
async def keycloak(workdir: Path, bootstrap: str) -> AsyncIterator[KeycloakHandle]:
    """KEYCLOAK_URL if set, else a Keycloak of our own from scripts/keycloak/keycloak.sh, stopped at exit."""
    if os.environ.get("KEYCLOAK_URL"):
        handle = KeycloakHandle(
            os.environ["KEYCLOAK_URL"].rstrip("/"),
            os.environ.get("KEYCLOAK_ADMIN_USER", "admin"),
            os.environ.get("KEYCLOAK_ADMIN_PASSWORD", "admin"),
            own=False,
        )
        try:
            yield handle
        finally:
            await _delete_realms(handle)
        return
    print("-- fetching Keycloak (scripts/keycloak/keycloak.sh fetch; cached after the first time)", flush=True)
    fetched = await asyncio.to_thread(_keycloak_sh, "fetch")
    if fetched.returncode == UNREACHABLE:
        raise BenchError(f"Maven Central is unreachable and Keycloak is not cached:\n{fetched.stderr[-2000:]}")
    if fetched.returncode != 0:
        raise BenchError(f"keycloak.sh fetch failed:\n{fetched.stderr[-3000:]}")
    state = workdir / "keycloak"
    password = secrets.token_urlsafe(12)
    # The test Kafka listener is installed but not enabled on the bench realm, so nothing is
    # published; it gets the bench's broker anyway, so that it never waits for a missing one.
    env = {
        **os.environ,
        "KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
        "KC_BOOTSTRAP_ADMIN_PASSWORD": password,
        "KEYCLOAK_KAFKA_BOOTSTRAP": bootstrap,
    }
    print("-- starting Keycloak (start-dev, H2; the first start on a machine can take 30-120 s)", flush=True)
    started = time.monotonic()
    try:
        result = await asyncio.to_thread(lambda: _keycloak_sh("start", "0", str(state), env=env))
        if result.returncode != 0:
            raise BenchError(f"Keycloak did not start:\n{result.stderr[-3000:]}")
        handle = KeycloakHandle(
            result.stdout.strip().splitlines()[-1],
            "admin",
            password,
            own=True,
            start_seconds=time.monotonic() - started,
            pid=java_pid(int((state / "keycloak.pid").read_text())),
            version=os.environ.get("KEYCLOAK_VERSION", "26.7.3"),
        )
        print(f"-- Keycloak {handle.version} ready at {handle.url} in {handle.start_seconds:.0f} s", flush=True)
        yield handle
    finally:
        print("-- stopping Keycloak", flush=True)
        stopped = await asyncio.to_thread(_keycloak_sh, "stop", str(state))
        if stopped.returncode == 0:  # its H2 data and copied home; keycloak.log stays with the service log
            await asyncio.to_thread(shutil.rmtree, state / "home", True)


async def _delete_realms(handle: KeycloakHandle) -> None:
    with suppress(Exception):
        async with aiohttp.ClientSession() as session:
            admin = MasterAdmin(session, handle.url, handle.admin_user, handle.admin_password)
            for realm in handle.realms:
                await admin.call("DELETE", f"/{realm}")


# == the counting proxy in front of Keycloak =============================================================

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",
    }
)
DROP_FROM_ANSWER = HOP_BY_HOP | {"content-encoding"}


def classify(method: str, path: str) -> str:
    """What a request to Keycloak is for, by its path."""
    parts = [p for p in path.split("/") if p]
    if method == "POST" and path.endswith("/protocol/openid-connect/token"):
        return "token"
    if method == "GET" and len(parts) >= 4 and parts[:2] == ["admin", "realms"] and parts[3] == "users":
        if len(parts) == 4:
            return "user pages"
        if len(parts) == 5:
            return "user count" if parts[4] == "count" else "single users"
    return "other"


class CountingProxy:
    """A reverse proxy between the service and Keycloak that counts the service's requests by kind.

    Both the token request and the Admin API calls go through it, so the token's issuer and the URL the
    Admin API is called on agree (Keycloak checks that). It adds one local hop per request.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.timings: list[tuple[str, float]] = []  # (kind, seconds Keycloak took to answer), in order
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=True)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
        if self._session:
            await self._session.close()

    def snapshot(self) -> Counter[str]:
        return Counter(self.counts)

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        kind = classify(request.method, request.path)
        self.counts[kind] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        began = time.monotonic()
        try:
            async with self._session.request(
                request.method,
                URL(self.upstream + request.raw_path, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as answer:
                payload = await answer.read()
                self.statuses[answer.status] += 1
                self.timings.append((kind, time.monotonic() - began))
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in DROP_FROM_ANSWER}
                return web.Response(status=answer.status, body=payload, headers=kept)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.statuses[502] += 1
            return web.Response(status=502, text=f"bench proxy: {type(exc).__name__}")


@asynccontextmanager
async def counting_proxy(upstream: str) -> AsyncIterator[CountingProxy]:
    proxy = CountingProxy(upstream)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


# == the run ==============================================================================================


@dataclass
class Measured:
    mode: str  # single | bulk
    users: int
    wall_seconds: float  # enable call -> last write of the responder
    first_write_seconds: float  # enable call -> first user written downstream
    backfill: dict[str, Any]  # the service's own progress at the end (GET /tenants/{realm}/backfill)
    keycloak_requests: Counter[str]  # in the window enable -> converged
    keycloak_before: Counter[str]  # made by the service between its start and the enable call
    keycloak_statuses: Counter[int]
    keycloak_timings: list[tuple[str, float]]  # in the window
    downstream_requests: dict[str, int]  # by method
    downstream_users: int
    correct: int
    peak_rss_mb: float
    cpu: dict[str, float]
    counters: dict[str, float]

    @property
    def users_per_second(self) -> float:
        return self.users / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def keycloak_per_user(self) -> float:
        return sum(self.keycloak_requests.values()) / self.users

    @property
    def downstream_per_user(self) -> float:
        """HTTP requests per user (a /Bulk request is one; its operations are counted apart, BULK/<method>)."""
        return sum(n for method, n in self.downstream_requests.items() if "/" not in method) / self.users

    @property
    def operations_per_user(self) -> float:
        """Writes and lookups per user, whether sent alone or inside a /Bulk request."""
        return sum(n for method, n in self.downstream_requests.items() if method != "BULK") / self.users


async def page_realm(proxy: CountingProxy, setup: Setup, page_size: int) -> float:
    """Seconds to page every user of the realm as the service's backfill does (its own Admin API client,
    token, count, brief pages of `page_size`, through the same proxy), and nothing else."""
    async with aiohttp.ClientSession() as session:
        client = KeycloakAdminClient(
            session,
            proxy.url,
            setup.account.client_id,
            setup.account.client_secret,
            auth_realm=setup.realm,
            timeout_seconds=60,
        )
        started = time.monotonic()
        total = await client.count_users(setup.realm)
        seen = 0
        async for page in client.iter_user_pages(setup.realm, page_size, brief=True):
            seen += len(page.users)
        seconds = time.monotonic() - started
    if seen < total:
        raise BenchError(f"the plain paging pass saw {seen} of {total} users")
    print(f"-- plain paging pass: {seen} users in {seconds:.1f} s (pages of {page_size})", flush=True)
    return seconds


async def wait_backfilled(
    responder: Responder,
    api: Api,
    realm: str,
    process: subprocess.Popen[bytes],
    users: int,
    timeout: float,
    log: Path,
    space: str,
) -> None:
    """Until the responder holds every user with its expected (familyName, active); fails early when
    the service exits or reports its backfill failed. Polled every 0.5 s: the figure comes from the
    responder's write times, not from this loop."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    next_report = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            raise BenchError(f"the service exited during the backfill:\n{log.read_text()[-3000:]}")
        last = await responder.progress(space)
        if int(last["matching"]) >= users:
            return
        status, progress = await api.call("GET", f"/tenants/{realm}/backfill")
        if status == 200 and progress.get("state") == "failed":
            raise BenchError(f"the backfill failed: {progress}")
        if time.monotonic() > deadline:
            raise BenchError(f"not every user downstream within {timeout:g} s: responder {last}, backfill {progress}")
        if time.monotonic() > next_report:
            print(
                f"   {last['matching']} of {users} users right downstream; service backfill: "
                f"{progress.get('done')} of {progress.get('total')} read ({progress.get('state')})",
                flush=True,
            )
            next_report += 10
        await asyncio.sleep(0.5)


async def verify(responder: Responder, setup: Setup, space: str) -> tuple[int, int, list[str]]:
    """Every attribute of every user as the responder holds it: (correct, downstream users, first problems)."""
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {DOWNSTREAM_TOKEN}"}) as http,
        http.get(f"{responder.base_url(space)}/Users", params={"count": "1000000"}) as answer,
    ):
        answer.raise_for_status()
        doc = await answer.json(content_type=None)
    found: dict[str, list[dict[str, Any]]] = {}
    for user in doc.get("Resources") or []:
        found.setdefault(user.get("externalId") or "", []).append(user)
    correct, problems = 0, []
    for user_id, i in setup.ids.items():
        want, held = expected(i), found.get(user_id, [])
        if len(held) != 1:
            problems.append(f"{want['userName']}: {len(held)} downstream users")
            continue
        user = held[0]
        got = {
            "userName": user.get("userName"),
            "givenName": (user.get("name") or {}).get("givenName"),
            "familyName": (user.get("name") or {}).get("familyName"),
            "email": ((user.get("emails") or [{}])[0]).get("value"),
            "active": user.get("active"),
        }
        if got == want:
            correct += 1
        else:
            problems.append(f"{want['userName']}: {got} != {want}")
    return correct, len(doc.get("Resources") or []), problems[:5]


async def run_service(
    bootstrap: str,
    kc: KeycloakHandle,
    setup: Setup,
    responder: Responder,
    proxy: CountingProxy,
    args: argparse.Namespace,
    workdir: Path,
    neighbours: dict[str, int],
    mode: str,
) -> Measured:
    space = MODES[mode]
    settings = make_settings(
        bootstrap,
        api_port=free_port(),
        **SERVICE_OVERRIDES,
        keycloak_url=proxy.url,
        keycloak_auth_realm=setup.realm,
        keycloak_client_id=setup.account.client_id,
        keycloak_client_secret=setup.account.client_secret,
    )
    await create_source_topics(settings)
    await responder.expect(
        space, {uid: (expected(i)["familyName"], expected(i)["active"]) for uid, i in setup.ids.items()}
    )
    log = workdir / f"service-backfill-{mode}.log"
    process = spawn_service(settings, log)
    watch = ProcessWatch(process.pid)
    cpu = CpuWindow({"service": process.pid, **neighbours})
    sampler = asyncio.create_task(watch.run())
    api = Api(settings.api_port)
    try:

        async def ready() -> bool:
            if process.poll() is not None:
                raise BenchError(f"the service exited at start:\n{log.read_text()[-3000:]}")
            return await api.ready()

        await wait_until(ready, timeout=120, what="service ready")
        before, timed_before = proxy.snapshot(), len(proxy.timings)
        print(
            f"-- {mode}: enabling realm {setup.realm} with backfill ({len(setup.ids)} users, downstream answers "
            f"after {args.latency_ms:g} ms)",
            flush=True,
        )
        cpu.start()
        enabled_at = time.time()
        status, body = await api.call(
            "PUT",
            f"/tenants/{setup.realm}",
            {
                "base_url": responder.base_url(space),
                "token": DOWNSTREAM_TOKEN,
                "backfill": True,
                "bulk": "auto" if mode == "bulk" else "off",
            },
        )
        if status not in (200, 201) or not isinstance(body, dict) or "backfill" not in body:
            raise BenchError(f"enabling the tenant with backfill failed: {status} {body}")
        await wait_backfilled(responder, api, setup.realm, process, len(setup.ids), args.timeout, log, space)
        cpu.stop()
        watch.sample()
        during = proxy.snapshot() - before
        _, backfill = await api.call("GET", f"/tenants/{setup.realm}/backfill")
        counters = await service_counters(api)
    finally:
        sampler.cancel()
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 60)
        except subprocess.TimeoutExpired:
            process.kill()
    writes = await responder.writes(space)
    progress = await responder.progress(space)
    correct, downstream_users, problems = await verify(responder, setup, space)
    if correct != len(setup.ids):
        raise BenchError(f"{correct} of {len(setup.ids)} users right downstream in every attribute; e.g. {problems}")
    return Measured(
        mode=mode,
        users=len(setup.ids),
        wall_seconds=max(sent for _m, _r, sent, _f in writes) - enabled_at,
        first_write_seconds=min(sent for _m, _r, sent, _f in writes) - enabled_at,
        backfill=backfill if isinstance(backfill, dict) else {},
        keycloak_requests=during,
        keycloak_before=before,
        keycloak_statuses=proxy.statuses,
        keycloak_timings=proxy.timings[timed_before:],
        downstream_requests=dict(progress["requests"]),
        downstream_users=downstream_users,
        correct=correct,
        peak_rss_mb=watch.peak_kb / 1024,
        cpu=cpu.used,
        counters=counters,
    )


# == the report ===========================================================================================


def print_table(
    args: argparse.Namespace, kc: KeycloakHandle, setup: Setup, m: Measured, broker: str, paging: list[float]
) -> None:
    reference = sum(paging) / len(paging)
    ratio = m.wall_seconds / reference
    full = m.users == FLOOR_USERS
    if full:
        floor = f"< {FLOOR_SECONDS:.0f} s  {'PASS' if m.wall_seconds < FLOOR_SECONDS else 'BELOW'}"
        rate_floor = ""
    else:
        floor = f"(floor is for {FLOOR_USERS} users)"
        rate_floor = f">= {FLOOR_RATE:.1f}  {'PASS' if m.users_per_second >= FLOOR_RATE else 'BELOW'} (rate only)"
    kc_kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(m.keycloak_requests.items()))
    ds_kinds = " ".join(f"{method}={n}" for method, n in sorted(m.downstream_requests.items()))
    rows = [
        ("users in the realm, backfilled", f"{m.users}", ""),
        ("downstream latency (ms)", f"{args.latency_ms:g}", ""),
        ("wall time, enable call -> all users right downstream (s)", f"{m.wall_seconds:.2f}", floor),
        ("users/s", f"{m.users_per_second:.0f}", rate_floor),
        ("time to the first user downstream (s)", f"{m.first_write_seconds:.2f}", ""),
        ("service's Keycloak read + publish phase (s)", f"{m.backfill.get('elapsed_seconds', float('nan'))}", ""),
        ("Keycloak requests per user", f"{m.keycloak_per_user:.4f}", ""),
        (
            "downstream requests per user",
            f"{m.downstream_per_user:.4f}",
            f"<= 1.05  {verdict(m.downstream_per_user <= 1.05)}",
        ),
        ("downstream operations per user (inside /Bulk too)", f"{m.operations_per_user:.4f}", ""),
        ("plain paging of the realm, before / after (s)", " / ".join(f"{p:.1f}" for p in paging), ""),
        ("wall time / plain paging time (their mean)", f"{ratio:.2f}", f"<= 1.3  {verdict(ratio <= 1.3)}"),
        ("peak RSS, the service and its stage 1 child (MB)", f"{m.peak_rss_mb:.1f}", ""),
        ("users right downstream, every attribute", f"{m.correct} of {m.users}", ""),
    ]
    print()
    where = f"Keycloak {kc.version} (start-dev, H2, own)" if kc.own else f"Keycloak {kc.url} (KEYCLOAK_URL)"
    print(f"outbound-scim backfill bench, mode {m.mode}: {os.cpu_count()} CPUs, broker {broker}, {where}")
    if not full:
        print(f"NOTE: measured with {m.users} users, not {FLOOR_USERS}: the floor is judged on the rate only")
    print(f"service settings: {', '.join(f'{k}={v}' for k, v in SERVICE_OVERRIDES.items())}")
    setup_line = (
        f"setup (not measured): {len(setup.ids)} users imported (partialImport) in "
        f"{setup.seconds:.1f} s ({setup.users_per_second:.0f} users/s, {setup.concurrency} in flight)"
    )
    if kc.own:
        setup_line += f"; Keycloak start {kc.start_seconds:.0f} s"
    print(setup_line)
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'measured':>12}  floor")
    print("-" * (width + 40))
    for label, value, floor_text in rows:
        print(f"{label:<{width}}  {value:>12}  {floor_text}")
    print("-" * (width + 40))
    print(
        f"Keycloak requests in the window: {sum(m.keycloak_requests.values())} ({kc_kinds}); "
        f"before the enable call: {sum(m.keycloak_before.values())}; statuses {dict(sorted(m.keycloak_statuses.items()))}"
    )
    pages = [seconds for kind, seconds in m.keycloak_timings if kind == "user pages"]
    if pages:
        print(
            f"Keycloak answer time for the user pages: {sum(pages):.1f} s in all, first {pages[0] * 1000:.0f} ms, "
            f"slowest {max(pages) * 1000:.0f} ms, last {pages[-1] * 1000:.0f} ms (read one after another)"
        )
    print(
        f"downstream requests: {sum(m.downstream_requests.values())} ({ds_kinds}); "
        f"users held downstream: {m.downstream_users}"
    )
    print(f"service backfill progress: {m.backfill}")
    print_cpu(m.cpu, m.wall_seconds, m.users, "user")
    print_counters(m.counters)


# == orchestration ========================================================================================


async def bench(args: argparse.Namespace, bootstrap: str, broker_pid: int | None, workdir: Path) -> None:
    runs: list[Measured] = []
    async with keycloak(workdir, bootstrap) as kc:
        setup = await prepare_realm(kc, args.users, args.create_concurrency, args.import_chunk)
        async with counting_proxy(kc.url) as proxy, running_responder(args.latency_ms) as responder:
            neighbours = {"kafka broker": broker_pid} if broker_pid else {}
            if kc.pid:
                neighbours["keycloak"] = kc.pid
            neighbours.update({"responder": responder.process.pid, "bench (Keycloak proxy)": os.getpid()})
            paging = [await page_realm(proxy, setup, PAGE_SIZE)]
            for mode in args.modes:
                measured = await run_service(bootstrap, kc, setup, responder, proxy, args, workdir, neighbours, mode)
                print(f"-- {mode} backfill: {measured.users} users in {measured.wall_seconds:.1f} s", flush=True)
                runs.append(measured)
            paging.append(await page_realm(proxy, setup, PAGE_SIZE))
    for measured in runs:
        print_table(args, kc, setup, measured, bootstrap, paging)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_backfill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=FLOOR_USERS, help="Keycloak users to create and backfill")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the responder answers after this")
    parser.add_argument(
        "--create-concurrency",
        type=int,
        default=2,
        help="partialImport requests in flight while creating the users (setup)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the downstream")
    parser.add_argument(
        "--modes",
        type=lambda text: [m for m in text.split(",") if m],
        default=list(MODES),
        help="comma-separated: single (tenant bulk off), bulk (a downstream announcing /Bulk); default both",
    )
    parser.add_argument("--import-chunk", type=int, default=1000, help="users per partialImport request (setup)")
    return parser.parse_args(argv)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers: everything started is stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.users < 1:
        print("--users must be at least 1", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="outbound-scim-bench-backfill-"))
    try:
        with kafka_broker(workdir) as (bootstrap, broker_pid):
            asyncio.run(bench(args, bootstrap, broker_pid, workdir))
    except BenchError as exc:
        print(f"backfill bench failed: {exc}\n(work dir: {workdir})", file=sys.stderr)
        return 1
    print(f"\nbackfill bench run took {time.monotonic() - started:.0f} s (work dir with the logs: {workdir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
