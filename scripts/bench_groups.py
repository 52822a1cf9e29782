"""`make bench`, membership part: a burst of group memberships through the service, one process.

What it measures: a tenant with `"groups": true` whose downstream already holds U users and G groups
(created first through the same pipeline: setup, not measured); then a burst of memberships as Keycloak
sends them (GROUP_MEMBERSHIP CREATE on `users/<user>/groups/<group>`, devkit.events.join_group: each user
joins --per-user of the G groups), followed by --leaves removals of some of those memberships (DELETE on
the same path). Each membership travels as the service sends it (docs/decisions/0005-memberships.md):
keyed by its user, merged into the user's state, then a hop to the group's key, where the group's applier
turns what has queued up into PATCH `add` / `remove` requests of at most `group_members_per_request`
member operations each. Figures:

- wall time from the first produce to the responder's last member write, once every group holds exactly
  its expected members (checked again after the run: exact member sets, as user ids of the downstream
  mapped back to Keycloak ids), and memberships/s (joins and leaves);
- PATCH requests per membership (the coalescing), against the fewest possible (per group,
  ceil(member operations / group_members_per_request)), and member operations that changed nothing;
- latency per membership, produce -> the response to the PATCH carrying it (includes the burst backlog);
- the service process's CPU per membership and peak RSS, and where the host's CPU went.

It reuses scripts/bench.py's broker, its SCIM responder subprocess (which serves /Groups too) and the
same service settings. The run prints a table and exits 0: it is a measurement. It exits non-zero on
errors, e.g. when the groups are not exactly right within --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit import events as ev
from devkit.kafka import Publisher, create_source_topics
from devkit.local import free_port, wait_until
from devkit.service import Api, make_settings, spawn_service
from scripts.bench import (
    DOWNSTREAM_TOKEN,
    REALM,
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
)

SPACE = "groups"  # the responder's base path for this run
COUNTERS = {
    "outbound_scim_changes_total",
    "outbound_scim_group_changes_total",
    "outbound_scim_group_patches_total",
    "outbound_scim_scim_requests_total",
    "outbound_scim_dead_letters_total",
    "outbound_scim_parked_total",
}


# == workload ==========================================================================================


@dataclass(frozen=True, slots=True)
class Membership:
    """One membership event to publish: `leave` removes the user from the group."""

    user: str
    group: str
    leave: bool
    event: dict[str, Any]


@dataclass
class GroupWorkload:
    users: list[str]
    groups: dict[str, str]  # Keycloak group id -> name
    setup: list[dict[str, Any]]  # admin events: the groups' creates, then the users'
    memberships: list[Membership]  # the joins (shuffled), then the leaves
    final: dict[str, set[str]]  # group id -> user ids after the last event

    @property
    def joins(self) -> int:
        return sum(1 for m in self.memberships if not m.leave)

    @property
    def leaves(self) -> int:
        return len(self.memberships) - self.joins


def build_workload(users: int, groups: int, per_user: int, leaves: int, seed: int = 1) -> GroupWorkload:
    """Each user joins `per_user` distinct groups drawn at random (seeded), in a shuffled order, as an
    operator's script would add them; then `leaves` of those memberships are removed again.

    Event times come from devkit.events.now_ms in publish order, so a leave is newer than its join."""
    if users < 1 or not 1 <= per_user <= groups:
        raise BenchError(f"need users >= 1 and 1 <= per-user <= groups (users={users}, groups={groups})")
    if not 0 <= leaves <= users * per_user:
        raise BenchError(f"--leaves must be between 0 and users x per-user ({users * per_user})")
    rng = random.Random(seed)
    user_ids = [f"gu-{n:06d}" for n in range(users)]
    group_names = {f"gg-{n:04d}": f"team-{n:04d}" for n in range(groups)}
    group_ids = list(group_names)
    setup = [ev.create_group(REALM, gid, name) for gid, name in group_names.items()]
    setup += [_create_user(uid) for uid in user_ids]
    pairs = [(uid, gid) for uid in user_ids for gid in rng.sample(group_ids, per_user)]
    rng.shuffle(pairs)
    left = rng.sample(pairs, leaves)
    memberships = [Membership(u, g, False, ev.join_group(REALM, u, g, f"/{group_names[g]}")) for u, g in pairs]
    memberships += [
        Membership(u, g, True, ev.join_group(REALM, u, g, f"/{group_names[g]}", leave=True)) for u, g in left
    ]
    final: dict[str, set[str]] = {gid: set() for gid in group_ids}
    for uid, gid in pairs:
        final[gid].add(uid)
    for uid, gid in left:
        final[gid].discard(uid)
    return GroupWorkload(user_ids, group_names, setup, memberships, final)


def _create_user(uid: str) -> dict[str, Any]:
    """An admin CREATE of a user created without groups (devkit's create_user names a group by path,
    which Keycloak sends with no group id: the service would read it from Keycloak, which the bench has
    not). Memberships then come as their own events."""
    login = f"login-{uid}"
    rep = {
        "username": login,
        "firstName": "Bench",
        "lastName": "Member",
        "email": f"{login}@bench.test",
        "emailVerified": False,
        "enabled": True,
        "requiredActions": [],
    }
    return ev.admin_event(REALM, uid, "CREATE", rep)


# == measuring ==========================================================================================


@dataclass
class GroupResult:
    users: int
    groups: int
    joins: int
    leaves: int
    setup_seconds: float
    wall_seconds: float
    latencies_ms: list[float]  # one per membership event whose own member operation reached the downstream
    group_requests: dict[str, int]  # method -> count in the measured phase, /Groups only
    member_operations: Counter[str]  # op -> member operations written in the measured phase
    redundant: dict[str, int]  # member operations that changed nothing (an add of a held member ...)
    fewest_patches: int
    groups_right: int
    peak_rss_mb: float = 0.0
    phase_peak_rss_mb: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def memberships(self) -> int:
        return self.joins + self.leaves

    @property
    def per_second(self) -> float:
        return self.memberships / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def patches(self) -> int:
        return self.group_requests.get("PATCH", 0)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def latencies(workload: GroupWorkload, produced: list[float], writes: list[tuple[float, str, str, str]]) -> list[float]:
    """Per membership event: the response time of the first PATCH carrying its member operation (an
    add for a join, a remove for a leave) minus its produce time. A join removed again before it was
    written has no operation of its own (nor, then, has its leave): not counted."""
    first: dict[tuple[str, str, str], float] = {}
    for sent, op, group, user in writes:
        key = (op, group, user)
        first[key] = min(sent, first.get(key, sent))
    found = []
    for membership, at in zip(workload.memberships, produced, strict=True):
        written = first.get(("remove" if membership.leave else "add", membership.group, membership.user))
        if written is not None:
            found.append((written - at) * 1000)
    return found


def fewest_patches(workload: GroupWorkload, per_request: int) -> int:
    """The fewest PATCH requests that can carry the final member sets, had every membership been known
    at once: ceil(members / per_request) per group (leaves folded into joins cost nothing)."""
    return sum(math.ceil(len(members) / per_request) for members in workload.final.values())


def check_groups(workload: GroupWorkload, state: dict[str, Any]) -> list[str]:
    """Every expected group with exactly its members and name; no group the workload did not create."""
    held: dict[str, list[str]] = state["members"]
    problems = []
    for gid, want in sorted(workload.final.items()):
        have = set(held.get(gid, []))
        if gid not in held:
            problems.append(f"group {gid} missing downstream")
        elif have != want:
            problems.append(
                f"group {gid}: {len(want - have)} members missing, {len(have - want)} extra "
                f"(e.g. {sorted(want - have)[:3]} / {sorted(have - want)[:3]})"
            )
        elif state["names"].get(gid) != workload.groups[gid]:
            problems.append(f"group {gid}: displayName {state['names'].get(gid)!r}")
    problems += [f"unexpected group {gid} downstream" for gid in sorted(set(held) - set(workload.final))]
    return problems


# == the run ============================================================================================


async def group_progress(responder: Responder) -> dict[str, Any]:
    return dict(await responder.call("GET", f"/_bench/group-progress/{SPACE}"))


async def wait_progress(responder: Responder, what: str, timeout: float, done: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def check() -> bool:
        seen.update(await group_progress(responder))
        return bool(done(seen))

    try:
        await wait_until(check, timeout=timeout, what=what)
    except AssertionError as exc:
        raise BenchError(f"{exc} (last progress: {seen})") from exc
    return seen


async def settled(responder: Responder, quiet: float, timeout: float) -> dict[str, Any]:
    """Until no member write for `quiet` seconds: a late add and remove of one member would otherwise
    pass unnoticed if the groups looked right in between."""
    deadline = time.monotonic() + timeout
    last = await group_progress(responder)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet)
        now = await group_progress(responder)
        if now["member_writes"] == last["member_writes"]:
            return now
        last = now
    raise BenchError(f"member writes did not stop within {timeout:.0f} s")


def reset_peak_rss(pid: int) -> bool:
    """Linux resets VmHWM to the current RSS when 5 is written to clear_refs (our own child: allowed)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def run(args: argparse.Namespace, bootstrap: str, broker_pid: int | None, workdir: Path) -> GroupResult:
    workload = build_workload(args.users, args.groups, args.per_user, args.leaves, args.seed)
    settings = make_settings(bootstrap, api_port=free_port(), **SERVICE_OVERRIDES)
    await create_source_topics(settings, partitions=args.partitions)
    async with running_responder(args.latency_ms) as responder:
        neighbours = {"kafka broker": broker_pid} if broker_pid else {}
        neighbours.update({"responder": responder.process.pid, "bench": os.getpid()})
        expected = {gid: sorted(users) for gid, users in workload.final.items()}
        await responder.call("POST", f"/_bench/expect-groups/{SPACE}", expected)
        log = workdir / "service-groups.log"
        process = spawn_service(settings, log)
        watch = ProcessWatch(process.pid)
        cpu = CpuWindow({"service": process.pid, **neighbours})
        sampler = asyncio.create_task(watch.run())
        try:
            api = Api(settings.api_port)

            async def ready() -> bool:
                if process.poll() is not None:
                    raise BenchError(f"the service exited at start:\n{log.read_text()[-3000:]}")
                return await api.ready()

            await wait_until(ready, timeout=120, what="service ready")
            body = {
                "base_url": responder.base_url(SPACE),
                "token": DOWNSTREAM_TOKEN,
                "groups": True,
                "group_members_per_request": args.members_per_request,
            }
            status, answer = await api.call("PUT", f"/tenants/{REALM}", body)
            if status not in (200, 201) or not isinstance(answer, dict) or answer.get("groups") is not True:
                raise BenchError(f"enabling the tenant with groups failed: {status} {answer}")
            topic = settings.admin_events_topic

            print(f"-- setup: {len(workload.groups)} groups and {len(workload.users)} users (not measured)", flush=True)
            setup_started = time.time()
            async with Publisher(bootstrap) as publisher:
                for event in workload.setup:
                    await publisher.send(topic, event)
                await publisher.flush()
            await wait_progress(
                responder,
                "users and groups created downstream",
                args.timeout,
                lambda p: p["users"] >= len(workload.users) and p["groups"] >= len(workload.groups),
            )
            setup_seconds = time.time() - setup_started
            watch.sample()
            setup_peak_kb = watch.peak_kb
            phase_peak = reset_peak_rss(process.pid)
            if phase_peak:
                watch.peak_kb = 0
            before = await group_progress(responder)

            print(
                f"-- {workload.joins} joins and {workload.leaves} leaves as a burst "
                f"(setup took {setup_seconds:.1f} s); waiting for the groups",
                flush=True,
            )
            produced: list[float] = []
            cpu.start()
            async with Publisher(bootstrap) as publisher:
                for membership in workload.memberships:
                    produced.append(time.time())
                    await publisher.send(topic, membership.event)
                await publisher.flush()
            print(f"-- published in {time.time() - produced[0]:.1f} s", flush=True)
            await wait_progress(
                responder,
                f"{len(workload.groups)} groups with exactly their members",
                args.timeout,
                lambda p: p["matching_groups"] >= len(workload.groups),
            )
            cpu.stop()
            watch.sample()
            after = await settled(responder, quiet=2.0, timeout=args.timeout)
            counters = await service_counters(api, COUNTERS)  # after the last PATCH's batch is counted
        finally:
            sampler.cancel()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        state = await responder.call("GET", f"/_bench/groups/{SPACE}")
    problems = check_groups(workload, state)
    if problems:
        raise BenchError("the groups did not end right:\n  " + "\n  ".join(problems[:20]))
    writes = [(float(w[0]), str(w[1]), str(w[2]), str(w[3])) for w in state["member_writes"]]
    phase_writes = writes[before["member_writes"] :]
    requests = {m: n - before["group_requests"].get(m, 0) for m, n in after["group_requests"].items()}
    redundant = {op: n - before["redundant"].get(op, 0) for op, n in after["redundant"].items()}
    result = GroupResult(
        users=len(workload.users),
        groups=len(workload.groups),
        joins=workload.joins,
        leaves=workload.leaves,
        setup_seconds=setup_seconds,
        wall_seconds=after["last_member_write"] - produced[0],
        latencies_ms=latencies(workload, produced, phase_writes),
        group_requests={m: n for m, n in requests.items() if n},
        member_operations=Counter(op for _sent, op, _group, _user in phase_writes),
        redundant=redundant,
        fewest_patches=fewest_patches(workload, args.members_per_request),
        groups_right=len(workload.final) - len(problems),
        peak_rss_mb=max(setup_peak_kb, watch.peak_kb) / 1024,
        phase_peak_rss_mb=watch.peak_kb / 1024 if phase_peak else None,
        cpu=cpu.used,
        counters=counters,
    )
    return result


# == the report =========================================================================================


def print_table(args: argparse.Namespace, r: GroupResult, broker: str) -> None:
    phase_rss = f"{r.phase_peak_rss_mb:.1f}" if r.phase_peak_rss_mb is not None else "-"
    rows = [
        ("existing users, groups (setup, not measured)", f"{r.users:,}, {r.groups}"),
        ("setup: creates -> all downstream (s)", f"{r.setup_seconds:.1f}"),
        ("memberships: joins + leaves", f"{r.joins:,} + {r.leaves:,} = {r.memberships:,}"),
        ("downstream latency (ms)", f"{args.latency_ms:g}"),
        ("wall time, first produce -> last member write (s)", f"{r.wall_seconds:.2f}"),
        ("memberships/s", f"{r.per_second:,.0f}"),
        ("PATCH /Groups requests", f"{r.patches:,} (fewest possible {r.fewest_patches})"),
        ("PATCH requests per membership", f"{r.patches / r.memberships:.4f}"),
        (
            "member operations sent: add, remove",
            f"{r.member_operations['add']:,}, {r.member_operations['remove']:,}",
        ),
        ("  of which changed nothing: add, remove", f"{r.redundant.get('add', 0)}, {r.redundant.get('remove', 0)}"),
        ("membership events with an operation of their own", f"{len(r.latencies_ms):,}"),
        ("p50 latency produce -> downstream (ms)", f"{r.percentile(50):.0f}"),
        ("p99 latency produce -> downstream (ms)", f"{r.percentile(99):.0f}"),
        ("peak RSS of the service, whole run (MB)", f"{r.peak_rss_mb:.1f}"),
        ("peak RSS of the service, membership phase (MB)", phase_rss),
        ("groups with exactly their members", f"{r.groups_right} of {r.groups}"),
    ]
    print()
    print(
        f"outbound-scim membership bench: {os.cpu_count()} CPUs, broker {broker}, {args.partitions} partitions "
        f"per source topic, memberships published as a burst, group_members_per_request={args.members_per_request}"
    )
    print(f"service settings: {', '.join(f'{k}={v}' for k, v in SERVICE_OVERRIDES.items())}")
    width = max(len(label) for label, _ in rows)
    print("-" * (width + 30))
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print("-" * (width + 30))
    print(f"/Groups requests in the membership phase by method: {json.dumps(r.group_requests, sort_keys=True)}")
    print_cpu(r.cpu, r.wall_seconds, r.memberships, "membership")
    print_counters(r.counters)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_groups", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2_000, help="existing users (created in the setup)")
    parser.add_argument("--groups", type=int, default=20, help="existing groups (created in the setup)")
    parser.add_argument("--per-user", type=int, default=3, help="groups each user joins in the burst")
    parser.add_argument("--leaves", type=int, default=600, help="memberships removed again after the joins")
    parser.add_argument("--members-per-request", type=int, default=100, help="the tenant's group_members_per_request")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the responder answers after this")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of each source topic")
    parser.add_argument("--seed", type=int, default=1, help="which groups each user joins, and which leave")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the downstream")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="outbound-scim-bench-groups-"))
    try:
        with kafka_broker(workdir) as (bootstrap, broker_pid):
            result = asyncio.run(run(args, bootstrap, broker_pid, workdir))
    except BenchError as exc:
        print(f"bench failed: {exc}\n(work dir: {workdir})", file=sys.stderr)
        return 1
    print_table(args, result, bootstrap)
    print(f"\nbench run took {time.monotonic() - started:.0f} s (work dir with the service log: {workdir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
