"""A rolling restart of 3 replicas under a steady load: what it costs (the figures of
docs/kafka-production.md).

    .venv/bin/python -m scripts.bench_rolling [--rounds 2] [--rate 40] [--assignors roundrobin,sticky]

Per round: a broker of its own, a scim2-server downstream, 3 service processes (6 partitions) and a steady
stream of interleaved user events (devkit.fleet). After a warm-up, the replicas are replaced one at a
time as a Deployment rolls out (a new replica with a new instance id ready, then SIGTERM to an old one).
Figures:

- lag: records of the changes topic not yet committed by the apply group, sampled every 0.25 s; its peak
  during the rollout against the peak of the warm-up (the steady state);
- drain: from the last old replica's exit until the lag is back at the warm-up's peak;
- re-applied: changes-topic records acted on twice (change.applied / change.skipped log lines for the
  same partition and offset, over all replicas);
- restored: user states read back from the changelog on assignments (the apply.assigned lines).
Then the load stops and every user must be downstream in its last state, once, else it exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from devkit.fleet import Fleet, Workload, downstream_matches, feed
from devkit.kafka import create_source_topics, start_broker, stop_broker
from devkit.local import wait_until
from devkit.scim import start_scim_server
from devkit.service import Api, make_settings
from service.settings import Settings

TOKEN = "bench-rolling-token"
WARM_UP_SECONDS = 10.0


@dataclass(frozen=True)
class Figures:
    assignor: str
    steady_lag: int
    peak_lag: int
    rollout_seconds: float
    drain_seconds: float
    re_applied: int
    handled: int
    restored: int


class LagProbe:
    """The apply group's lag over all partitions: read_committed end offsets minus committed offsets."""

    def __init__(self, settings: Settings) -> None:
        self._group = f"{settings.group_id}.apply"
        self._tps = [TopicPartition(settings.changes_topic, p) for p in range(settings.internal_partitions)]
        self._admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers, isolation_level="read_committed"
        )
        self.samples: list[tuple[float, int]] = []

    async def __aenter__(self) -> LagProbe:
        await self._admin.start()
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def lag(self) -> int:
        committed = await self._admin.list_consumer_group_offsets(self._group, partitions=self._tps)
        ends = await self._consumer.end_offsets(self._tps)
        done = {tp: meta.offset for tp, meta in committed.items() if meta is not None and meta.offset >= 0}
        return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())

    async def sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.samples.append((time.monotonic(), await self.lag()))
            await asyncio.sleep(0.25)  # the sampling period

    def peak(self, since: float, until: float = float("inf")) -> int:
        return max((lag for at, lag in self.samples if since <= at <= until), default=0)


async def one_round(workdir: Path, bootstrap: str, base_url: str, assignor: str, rate: float) -> Figures:
    settings = make_settings(bootstrap, internal_partitions=6, kafka_partition_assignor=assignor)
    await create_source_topics(settings)
    fleet = Fleet(settings, workdir)
    stop_feed, stop_probe = asyncio.Event(), asyncio.Event()
    try:
        replicas = await fleet.start("a", "b", "c")
        realm = f"rolling-{assignor}"
        base = f"{base_url}-{assignor}"
        assert (await Api(replicas[0].settings.api_port).enable(realm, base, TOKEN))[0] == 201
        for replica in replicas[1:]:

            async def knows(port: int = replica.settings.api_port) -> bool:
                return (await Api(port).call("GET", f"/tenants/{realm}"))[0] == 200

            await wait_until(knows, what="every replica read the tenant")
        workload = Workload(realm, "u")
        async with LagProbe(settings) as probe:
            feeder = asyncio.create_task(feed(settings, workload, rate, stop_feed))
            sampler = asyncio.create_task(probe.sample(stop_probe))
            started = time.monotonic()
            await asyncio.sleep(WARM_UP_SECONDS)  # the steady state before the rollout
            steady = probe.peak(started + 2)
            rollout = time.monotonic()
            for old in replicas:
                new = fleet.spawn(f"{old.name}2")
                await fleet.ready(new)
                assert await fleet.stop(old) == 0, f"{old.name} did not stop cleanly"
            last_exit = time.monotonic()

            async def drained() -> bool:
                return bool(probe.samples) and probe.samples[-1][0] > last_exit and probe.samples[-1][1] <= steady

            await wait_until(drained, timeout=180, what="the lag back at its steady level")
            drain = time.monotonic() - last_exit
            peak = probe.peak(rollout)
            stop_feed.set()
            await feeder
            await wait_until(lambda: downstream_matches(base, TOKEN, workload), timeout=180, what="users converged")
            stop_probe.set()
            await sampler
        assert fleet.overlaps() == [], fleet.overlaps()
        handled = fleet.handled()
        return Figures(
            assignor,
            steady,
            peak,
            last_exit - rollout,
            drain,
            sum(1 for times in handled.values() if times > 1),
            len(handled),
            fleet.restored(),
        )
    finally:
        stop_feed.set()
        stop_probe.set()
        await fleet.close()


async def main(rounds: int, rate: float, assignors: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "kafka"
        bootstrap = start_broker(data)
        scim = start_scim_server(TOKEN)
        try:
            print(f"rolling restart of 3 replicas, 6 partitions, {rate:.0f} events/s", flush=True)
            for r in range(rounds):
                for assignor in assignors:
                    work = Path(tmp) / f"{assignor}-{r}"
                    work.mkdir()
                    f = await one_round(work, bootstrap, scim.base_url(f"r{r}"), assignor, rate)
                    print(
                        f"{f.assignor:10} lag steady {f.steady_lag:4d}, peak {f.peak_lag:5d}; rollout "
                        f"{f.rollout_seconds:5.1f} s; drained {f.drain_seconds:5.1f} s after the last exit; "
                        f"re-applied {f.re_applied} of {f.handled}; states restored {f.restored}",
                        flush=True,
                    )
        finally:
            scim.stop()
            stop_broker(data)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=40.0, help="events per second")
    parser.add_argument("--assignors", default="roundrobin,sticky")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.rate, args.assignors.split(",")))
