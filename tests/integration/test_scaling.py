"""Replicas come and go while events flow: a rolling restart, scaling 1 -> 3 -> 1, a replica killed
(-9) that restarts under its instance id or never comes back. In each, every user ends downstream in its
last state with one account, and no two replicas own a changes-topic partition at the same time (from
their logs' apply.assigned / apply.revoked lines), so a user's changes are applied in order across the
handover. Users' events are interleaved and spread record by record over the source partitions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from devkit.fleet import Fleet, Replica, Workload, downstream_matches, feed
from tests.conftest import SCIM_TOKEN
from tests.support import Api, ScimServer, create_source_topics, make_settings, wait_until

RATE = 40.0  # events per second: steady, well within what one replica applies


@dataclass
class Run:
    fleet: Fleet
    workload: Workload
    base: str
    stop_feed: asyncio.Event
    feeder: asyncio.Task[int]

    async def progress(self, replica: Replica, changes: int = 5) -> None:
        """Wait until `replica` has applied some changes (it took part, under load)."""

        async def worked() -> bool:
            assert replica.process.poll() is None, replica.log.read_text()[-3000:]
            return sum(1 for line in replica.lines() if line.get("event") == "change.applied") >= changes

        await wait_until(worked, timeout=60, what=f"{replica.name} applying changes")

    async def settle(self) -> None:
        """Stop the load; every user downstream in its last state, one account each; one owner at a time."""
        self.stop_feed.set()
        await self.feeder
        await wait_until(
            lambda: downstream_matches(self.base, SCIM_TOKEN, self.workload),
            timeout=120,
            what=f"{len(self.workload.expected)} users downstream in their last state",
        )
        assert self.fleet.overlaps() == []
        assert self.fleet.worked_outside_ownership() == []


@asynccontextmanager
async def under_load(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path, names: tuple[str, ...], **overrides: object
) -> AsyncIterator[Run]:
    """Replicas `names` started and ready, a tenant enabled and known to all, events flowing."""
    settings = make_settings(kafka_bootstrap, internal_partitions=6, **overrides)
    await create_source_topics(settings)
    fleet = Fleet(settings, tmp_path)
    try:
        replicas = await fleet.start(*names)
        realm = f"scale-{uuid.uuid4().hex[:6]}"
        base = scim_server.base_url(realm)
        assert (await Api(replicas[0].settings.api_port).enable(realm, base, SCIM_TOKEN))[0] == 201
        for replica in replicas[1:]:
            await wait_until(_knows(replica, realm), what=f"{replica.name} read the tenant")
        workload = Workload(realm, "u")
        stop_feed = asyncio.Event()
        feeder = asyncio.create_task(feed(settings, workload, RATE, stop_feed))
        try:
            yield Run(fleet, workload, base, stop_feed, feeder)
        finally:
            stop_feed.set()
            await feeder
    finally:
        await fleet.close()


def _knows(replica: Replica, realm: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await Api(replica.settings.api_port).call("GET", f"/tenants/{realm}"))[0] == 200

    return check


async def test_a_rolling_restart_of_three_replicas_under_load_loses_and_duplicates_nothing(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """3 replicas replaced one at a time as a Deployment rolls out (a new pod with a new instance id
    ready, then SIGTERM to an old one) while events flow -> each exits 0, every user right downstream
    once, one owner per partition at a time."""
    async with under_load(kafka_bootstrap, scim_server, tmp_path, ("a", "b", "c")) as run:
        olds = list(run.fleet.replicas)
        await run.progress(olds[0])
        for old in olds:
            new = run.fleet.spawn(f"{old.name}2")
            await run.fleet.ready(new)
            assert await run.fleet.stop(old) == 0
            await run.progress(new)
        await run.settle()


async def test_scaling_from_one_to_three_replicas_and_back_under_load(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """1 replica, then 3 (each new one takes partitions and applies changes), then 1 again (two SIGTERMed)
    while events flow -> every user right downstream once, one owner per partition at a time."""
    async with under_load(kafka_bootstrap, scim_server, tmp_path, ("a",)) as run:
        (first,) = run.fleet.replicas
        await run.progress(first)
        added = await run.fleet.start("b", "c")
        for replica in added:
            await run.progress(replica)
        for replica in added:
            assert await run.fleet.stop(replica) == 0
        await run.progress(first, changes=len(_applied(first)) + 5)
        await run.settle()


async def test_a_replica_killed_mid_run_restarts_under_its_instance_id(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """kill -9 of one replica of three while events flow, restarted at once under the same instance id
    (a container restarting in its pod) -> it takes part again; every user right downstream once, one
    owner per partition at a time."""
    async with under_load(kafka_bootstrap, scim_server, tmp_path, ("a", "b", "c")) as run:
        victim = run.fleet.replicas[1]
        await run.progress(victim)
        await run.fleet.kill(victim)
        again = run.fleet.spawn(victim.name)
        await run.fleet.ready(again)
        await run.progress(again)
        await run.settle()


async def test_a_replica_killed_mid_run_that_never_returns_hands_its_partitions_over(
    kafka_bootstrap: str, scim_server: ScimServer, tmp_path: Path
) -> None:
    """kill -9 of one replica of three while events flow, never restarted -> after the session timeout
    the two others own all partitions; every user right downstream once, one owner at a time."""
    async with under_load(
        kafka_bootstrap, scim_server, tmp_path, ("a", "b", "c"), kafka_session_timeout_ms=6000
    ) as run:
        victim = run.fleet.replicas[1]
        await run.progress(victim)
        await run.fleet.kill(victim)

        async def survivors_own_everything() -> bool:
            return run.fleet.held() == set(range(6))

        await wait_until(survivors_own_everything, timeout=60, what="the survivors own all partitions")
        await run.settle()


def _applied(replica: Replica) -> list[dict[str, object]]:
    return [line for line in replica.lines() if line.get("event") == "change.applied"]
