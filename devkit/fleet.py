"""Several service processes in one group, a steady stream of interleaved user events, and what their logs
say about who owned which partition when: for the scaling tests and the rolling-restart figures.

Ownership of a changes-topic partition runs, in one replica's log, from its `apply.assigned` line (the
partition's state is restored, no record of it read before) to its `apply.revoked` line (running work
drained, offsets committed; also logged on a graceful stop); a replica killed with -9 owns nothing after
the kill. Two replicas owning a partition at once would break the per-user order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from devkit.events import create_user, update_user
from devkit.kafka import Publisher
from devkit.local import free_port, wait_until
from devkit.scim import by_external_id, downstream_users
from devkit.service import Api, kill_all, spawn_service
from service.settings import Settings


@dataclass
class Replica:
    name: str
    settings: Settings
    log: Path
    process: subprocess.Popen[bytes]
    ended_at: datetime | None = None  # when it was killed or exited

    def lines(self) -> Iterator[dict[str, Any]]:
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                yield json.loads(line)


@dataclass(frozen=True)
class Ownership:
    replica: str
    partition: int
    start: datetime
    end: datetime


def _time(line: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(line["timestamp"])


class Fleet:
    """Replicas of one service (same topics and groups), each a process with an instance id of its own."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.replicas: list[Replica] = []

    def spawn(self, name: str) -> Replica:
        settings = self.settings.model_copy(update={"api_port": free_port(), "instance_id": name})
        log = self.workdir / f"{name}-{len(self.replicas)}.log"
        replica = Replica(name, settings, log, spawn_service(settings, log))
        self.replicas.append(replica)
        return replica

    async def start(self, *names: str) -> list[Replica]:
        """Start replicas at once and wait until each is ready (tenants loaded, partitions assigned)."""
        replicas = [self.spawn(name) for name in names]
        for replica in replicas:
            await self.ready(replica)
        return replicas

    async def ready(self, replica: Replica) -> None:
        async def check() -> bool:
            assert replica.process.poll() is None, f"{replica.name} exited:\n{replica.log.read_text()[-3000:]}"
            return await Api(replica.settings.api_port).ready()

        await wait_until(check, timeout=90, what=f"{replica.name} ready")

    async def stop(self, replica: Replica) -> int:
        """SIGTERM, as Kubernetes stops a pod: the replica drains, commits and leaves the group."""
        replica.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(replica.process.wait, 90)
        replica.ended_at = datetime.now(UTC)
        return code

    async def kill(self, replica: Replica) -> None:
        """kill -9: no drain, no commit, no leave."""
        kill_all(replica.process)
        replica.ended_at = datetime.now(UTC)
        await asyncio.to_thread(replica.process.wait)

    def running(self) -> list[Replica]:
        return [r for r in self.replicas if r.process.poll() is None]

    async def close(self) -> None:
        for replica in self.running():
            replica.process.terminate()
        for replica in self.replicas:
            try:
                await asyncio.to_thread(replica.process.wait, 60)
            except subprocess.TimeoutExpired:
                replica.process.kill()

    def ownership(self) -> list[Ownership]:
        """Every stretch of time a replica owned a changes-topic partition, from the logs."""
        stretches: list[Ownership] = []
        for replica in self.replicas:
            held: dict[int, datetime] = {}
            for line in replica.lines():
                if line.get("event") == "apply.assigned":
                    held.update(dict.fromkeys(line["partitions"], _time(line)))
                elif line.get("event") == "apply.revoked":
                    for p in line["partitions"]:
                        if p in held:
                            stretches.append(Ownership(replica.log.stem, p, held.pop(p), _time(line)))
            end = replica.ended_at or datetime.max.replace(tzinfo=UTC)  # still owned
            stretches += [Ownership(replica.log.stem, p, start, end) for p, start in held.items()]
        return stretches

    def held(self) -> set[int]:
        """Partitions the running replicas own now."""
        running = {r.log.stem for r in self.running()}
        return {o.partition for o in self.ownership() if o.replica in running and o.end > datetime.now(UTC)}

    def overlaps(self) -> list[tuple[Ownership, Ownership]]:
        """Pairs of replicas that owned the same partition at the same time (none, if the handover works)."""
        found = []
        by_partition: dict[int, list[Ownership]] = {}
        for o in self.ownership():
            by_partition.setdefault(o.partition, []).append(o)
        for stretches in by_partition.values():
            stretches.sort(key=lambda o: o.start)
            for i, before in enumerate(stretches):
                found += [(before, after) for after in stretches[i + 1 :] if after.start < before.end]
        return found

    def worked_outside_ownership(self) -> list[dict[str, Any]]:
        """Changes a replica applied at a time it did not own their partition (none, if the handover works)."""
        stretches: dict[tuple[str, int], list[Ownership]] = {}
        for o in self.ownership():
            stretches.setdefault((o.replica, o.partition), []).append(o)
        outside = []
        for replica in self.replicas:
            for line in replica.lines():
                if line.get("event") != "change.applied":
                    continue
                at = _time(line)
                owned = stretches.get((replica.log.stem, line["partition"]), [])
                if not any(o.start <= at <= o.end for o in owned):
                    outside.append({"replica": replica.log.stem, **line})
        return outside

    def handled(self) -> dict[tuple[int, int], int]:
        """How often each changes-topic record (partition, offset) was acted on, over all replicas."""
        times: dict[tuple[int, int], int] = {}
        for replica in self.replicas:
            for line in replica.lines():
                if line.get("event") in ("change.applied", "change.skipped") and "offset" in line:
                    key = (line["partition"], line["offset"])
                    times[key] = times.get(key, 0) + 1
        return times

    def restored(self) -> int:
        """User states read back from the changelog on assignments, over all replicas."""
        return sum(
            line.get("users_restored", 0)
            for replica in self.replicas
            for line in replica.lines()
            if line.get("event") == "apply.assigned"
        )


@dataclass
class Workload:
    """Users' events interleaved with each other's: a few users are live at a time, each event goes to a
    live user picked at random, a user's script is create, renames, sometimes a disable, a last rename;
    new users start while others are mid-script (creates are not all first). `expected` is each started
    user's last state: (familyName, active)."""

    realm: str
    prefix: str
    live: int = 20
    seed: int = 12
    expected: dict[str, tuple[str, bool]] = field(default_factory=dict)
    _scripts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _started: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def _script(self, n: int) -> list[dict[str, Any]]:
        user = f"{self.prefix}{n}"
        events = [create_user(self.realm, user, f"{self.prefix}login{n}", "F", "L0")]
        events += [update_user(self.realm, user, lastName=f"L{v}") for v in (1, 2)]
        if n % 3 == 0:
            events.append(update_user(self.realm, user, enabled=False))
        events.append(update_user(self.realm, user, lastName="L3"))
        return events

    def take(self, count: int) -> list[dict[str, Any]]:
        events = []
        for _ in range(count):
            while len(self._scripts) < self.live:
                user = f"{self.prefix}{self._started}"
                self._scripts[user] = self._script(self._started)
                self._started += 1
            user = self._random.choice(sorted(self._scripts))
            event = self._scripts[user].pop(0)
            if not self._scripts[user]:
                del self._scripts[user]
            events.append(event)
            self._track(user, event)
        return events

    def _track(self, user: str, event: dict[str, Any]) -> None:
        last, active = self.expected.get(user, ("", True))
        rep = json.loads(event["representation"])
        self.expected[user] = (rep.get("lastName", last), rep.get("enabled", active))


async def feed(settings: Settings, workload: Workload, per_second: float, stop: asyncio.Event) -> int:
    """Publish the workload at a steady rate until `stop`, record by record over the source partitions
    (a user's events land on different partitions); returns how many were sent."""
    sent, started = 0, time.monotonic()
    async with Publisher(settings.kafka_bootstrap_servers) as publisher:
        while not stop.is_set():
            due = int((time.monotonic() - started) * per_second) - sent
            for event in workload.take(due):
                await publisher.send(settings.admin_events_topic, event, partition=sent % 3)
                sent += 1
            await asyncio.sleep(0.05)  # pacing the load, not waiting for a condition
        await publisher.flush()
    return sent


async def downstream_matches(base: str, token: str, workload: Workload) -> bool:
    """Every user of the workload downstream once, in its last state; raises on a duplicate account."""
    found = by_external_id(await downstream_users(base, token))
    for user in found:
        assert len(found[user]) <= 1, f"duplicate downstream accounts for {user}: {found[user]}"
    for user, (last, active) in workload.expected.items():
        matches = found.get(user, [])
        if not matches or matches[0]["name"]["familyName"] != last or matches[0]["active"] is not active:
            return False
    return True


async def apply_lag(settings: Settings) -> int:
    """Records of the changes topic that read_committed readers can see and the apply group has not
    committed, over all partitions (what is left to do, whoever owns it)."""
    group = f"{settings.group_id}.apply"
    tps = [TopicPartition(settings.changes_topic, p) for p in range(settings.internal_partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, isolation_level="read_committed")
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await admin.close()
    done = {tp: (meta.offset if meta and meta.offset >= 0 else 0) for tp, meta in committed.items()}
    return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())
