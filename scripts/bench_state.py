"""`make bench` (state): restore of the user state at 100,000 users by default, 1,000,000 with --users.

What it measures (the "Memory" line of the scale issue), on a broker of its own:
1. the user-state changelog topic is seeded directly with --users realistic user states (UserState's
   to_json: downstream id, five attributes with their versions, about 500 bytes each), spread over the
   partitions;
2. a plain aiokafka consumer reads the whole topic (same fetch size as the service's restore): the
   floor of any restore;
3. the service starts as its own process (`outbound-scim run`) on an empty state dir and restores from
   scratch: its `apply.assigned` log line gives the restore time and the records read; the ratio to (2)
   is the restore's cost over the read alone (target <= 2x);
4. memory of the service once restored and ready: peak RSS (VmHWM) and the resident anonymous and
   file-backed memory apart (RssAnon, RssFile), from /proc/<pid>/status (target: peak <= 300 MB);
5. the service stops (SIGTERM), --more records are written to the changelog as another replica would,
   and a restart must read exactly those from its checkpoint.

The run prints a table and exits 0 even above a target: it is a measurement. It exits non-zero on errors,
e.g. when the restart from the checkpoint reads another count than --more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devkit.local import free_port, wait_until
from devkit.service import Api, make_settings, spawn_service
from scripts.bench import BenchError, ProcessWatch, host_seconds, kafka_broker
from service.domain.state import UserState
from service.kafka_topics import ensure_topics
from service.pipeline.user_state import RESTORE_FETCH_BYTES
from service.settings import Settings

REALM = "bench"
TARGET_RATIO = 2.0
TARGET_PEAK_MB = 300.0


def user_state(n: int) -> bytes:
    """A user as the service stores it after a create and a few updates, linked downstream."""
    event = str(uuid.UUID(int=n * 7919 + 1))
    at = 1_767_000_000_000 + n
    values = {
        "userName": f"user{n:07d}@bench.example.com",
        "givenName": f"Given{n % 997}",
        "familyName": f"Family-{n:07d}",
        "email": f"user{n:07d}@bench.example.com",
        "active": n % 17 != 0,
    }
    versions = {attribute: (at + i, event) for i, attribute in enumerate(values)}
    return UserState(str(uuid.UUID(int=n + 1)), values, versions, written=values).to_json()


def user_key(n: int) -> bytes:
    return f"{REALM}/{uuid.UUID(int=(n + 1) << 64)}".encode()


async def seed(settings: Settings, first: int, count: int) -> float:
    """Write `count` user states (numbers first.. first+count-1) to the changelog; returns the seconds."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        linger_ms=20,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    started = time.monotonic()
    try:
        partitions = settings.internal_partitions
        for n in range(first, first + count):
            await producer.send(
                settings.user_state_topic, key=user_key(n), value=user_state(n), partition=n % partitions
            )
        await producer.flush()
    finally:
        await producer.stop()
    return time.monotonic() - started


async def plain_read(settings: Settings) -> tuple[int, float, float]:
    """Read the whole changelog with a plain consumer: (records, seconds, CPU seconds of this process)."""
    cpu = time.process_time()
    started = time.monotonic()  # like the restore's time: the consumer's start and offset lookups count
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        max_partition_fetch_bytes=RESTORE_FETCH_BYTES,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.user_state_topic, p) for p in range(settings.internal_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > 0}
        records = 0
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            records += sum(len(batch) for batch in batches.values())
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return records, time.monotonic() - started, time.process_time() - cpu
    finally:
        await consumer.stop()


@dataclass
class Run:
    """One service start: its restore (from the log) and its memory once ready."""

    restore: dict[str, Any]
    ready_seconds: float
    status_kb: dict[str, int]
    cpu_seconds: float


def memory(pid: int) -> dict[str, int]:
    wanted = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in wanted:
            found[name] = int(value.split()[0])
    return found


async def start_service(settings: Settings, log: Path) -> Run:
    """Start the service, wait until it is ready (restored), read its memory and restore line, stop it."""
    offset = log.stat().st_size if log.exists() else 0
    started = time.monotonic()
    process = spawn_service(settings, log)
    watch = ProcessWatch(process.pid)
    sampler = asyncio.create_task(watch.run())
    api = Api(settings.api_port)
    try:
        await wait_until(api.ready, timeout=3600, what="service ready (state restored)")
        ready = time.monotonic() - started
        status = memory(process.pid)
        cpu = watch.cpu_seconds() or 0.0
    finally:
        sampler.cancel()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise BenchError(f"the service exited with {process.returncode}; see {log}")
    with log.open("rb") as lines:
        lines.seek(offset)
        assigned = [json.loads(line) for line in lines if b'"apply.assigned"' in line]
    if len(assigned) != 1:
        raise BenchError(f"expected one apply.assigned line, found {len(assigned)}; see {log}")
    status["VmHWM"] = max(status["VmHWM"], watch.peak_kb)
    return Run(assigned[0], ready, status, cpu)


def mb(kb: int) -> str:
    return f"{kb / 1024:.0f}"


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def bench(args: argparse.Namespace, bootstrap: str, broker_pid: int | None, workdir: Path) -> None:
    settings = make_settings(
        bootstrap,
        internal_partitions=args.partitions,
        state_dir=str(workdir / "state"),
        api_port=free_port(),
        log_level="INFO",
    )
    await ensure_topics(settings)
    log = workdir / "service.log"
    host_before = host_seconds()
    wall_before = time.monotonic()

    print(f"-- seeding {args.users:,} user states into {settings.user_state_topic}", flush=True)
    seeded = await seed(settings, 0, args.users)
    print(f"-- seeded in {seeded:.1f} s", flush=True)
    plain_records, plain_seconds, plain_cpu = await plain_read(settings)
    print(f"-- plain consumer: {plain_records:,} records in {plain_seconds:.1f} s", flush=True)
    if plain_records != args.users:
        raise BenchError(f"the plain consumer read {plain_records} records, expected {args.users}")

    scratch = await start_service(settings, log)
    print(f"-- restore from scratch: {scratch.restore}", flush=True)
    plain_after, plain_after_seconds, plain_after_cpu = await plain_read(settings)
    print(f"-- plain consumer again: {plain_after:,} records in {plain_after_seconds:.1f} s", flush=True)
    disk = du(workdir / "state")

    await seed(settings, args.users, args.more)
    resumed = await start_service(settings, log)
    print(f"-- restart from the checkpoint: {resumed.restore}", flush=True)

    shutil.rmtree(workdir / "state", ignore_errors=True)  # 700 MB at a million users; the log stays
    host_busy = host_seconds()[0] - host_before[0]
    host_stolen = host_seconds()[1] - host_before[1]
    wall = time.monotonic() - wall_before

    plain = (plain_seconds + plain_after_seconds) / 2
    ratio = scratch.restore["seconds"] / plain
    peak = scratch.status_kb["VmHWM"] / 1024
    rows = [
        ("users in the changelog", f"{args.users:,}", ""),
        ("plain consumer read (s)", f"{plain_seconds:.1f} / {plain_after_seconds:.1f}", "before / after the service"),
        (
            "restore from scratch (s)",
            f"{scratch.restore['seconds']:.1f}",
            f"{ratio:.2f}x the plain read (target <= {TARGET_RATIO:.0f}x)  "
            f"{'ok' if ratio <= TARGET_RATIO else 'MISSED'}",
        ),
        (
            "CPU: plain read / service start to ready (s)",
            f"{(plain_cpu + plain_after_cpu) / 2:.1f} / {scratch.cpu_seconds:.1f}",
            f"restart from the checkpoint: {resumed.cpu_seconds:.1f} s CPU",
        ),
        (
            "records read from scratch",
            f"{scratch.restore['records_restored']:,}",
            f"from_scratch={scratch.restore['from_scratch']}",
        ),
        ("service start to ready (s)", f"{scratch.ready_seconds:.1f}", ""),
        (
            "peak RSS, VmHWM (MB)",
            f"{peak:.0f}",
            f"target <= {TARGET_PEAK_MB:.0f}  {'ok' if peak <= TARGET_PEAK_MB else 'MISSED'}",
        ),
        (
            "RSS once ready: anon / file (MB)",
            f"{mb(scratch.status_kb['RssAnon'])} / {mb(scratch.status_kb['RssFile'])}",
            "",
        ),
        ("state dir on disk (MB)", f"{disk / 1e6:.0f}", f"{disk / args.users:.0f} bytes per user"),
        ("records written after the checkpoint", f"{args.more:,}", ""),
        (
            "records read on restart",
            f"{resumed.restore['records_restored']:,}",
            f"from_checkpoint={resumed.restore['from_checkpoint']}  "
            f"{'ok' if resumed.restore['records_restored'] == args.more else 'WRONG'}",
        ),
        (
            "restore from the checkpoint (s)",
            f"{resumed.restore['seconds']:.2f}",
            f"ready after {resumed.ready_seconds:.1f} s",
        ),
        (
            "restart: peak RSS / anon / file (MB)",
            f"{mb(resumed.status_kb['VmHWM'])} / {mb(resumed.status_kb['RssAnon'])} / {mb(resumed.status_kb['RssFile'])}",
            "",
        ),
    ]
    print(
        f"\noutbound-scim state bench: {os.cpu_count()} CPUs, broker {bootstrap}, {args.partitions} partitions, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")
    print(
        f"  host CPU over the run: {host_busy:.0f} s busy of {wall * (os.cpu_count() or 1):.0f} s "
        f"({host_stolen:.0f} s stolen by the hypervisor); broker pid {broker_pid}"
    )
    if resumed.restore["records_restored"] != args.more:
        raise BenchError(f"the restart read {resumed.restore['records_restored']} records, expected {args.more}")
    if scratch.restore["records_restored"] != args.users:
        raise BenchError(f"the restore read {scratch.restore['records_restored']} records, expected {args.users}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_state", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000, help="user states seeded into the changelog")
    parser.add_argument("--more", type=int, default=10_000, help="records written after the checkpoint")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the changelog topic")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="outbound-scim-bench-state-"))
    try:
        with kafka_broker(workdir) as (bootstrap, broker_pid):
            asyncio.run(bench(args, bootstrap, broker_pid, workdir))
    except BenchError as exc:
        print(f"bench failed: {exc}\n(work dir: {workdir})", file=sys.stderr)
        return 1
    print(f"\nbench run took {time.monotonic() - started:.0f} s (work dir with the service log: {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
