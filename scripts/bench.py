"""`make bench`: the service against a naive baseline, same broker, same downstream, one run.

What it measures (the issue's "Benchmark" section): N plugin-format events over U users are published
to a real broker (null keys, like the plugin); a minimal SCIM responder of the bench answers every
request after a fixed latency. Every event sets `lastName = v<seq>`, so the responder can tell which
event a write carries and produce -> downstream latency is measured per event.

- the service runs as its own process (`outbound-scim run`), exactly as deployed;
- the baseline is the naive design: one consumer, partition order, one request at a time: every event
  is sent downstream as it comes (same parsing and SCIM code, but no per-user ordering state, only a
  cache of downstream ids), so it does not even end right: the report says how many of its users end
  in their last state.

The responder runs in a subprocess of its own (`--serve-responder`), so its CPU does not compete with
the bench's publisher inside one event loop. Times are `time.time()` in every process (same host).
A short throwaway service run warms the broker up first (--warmup-events). Events are published as a
burst by default, so latency includes the backlog; --rate N shows steady-state latency instead.
Because the broker, the responder and the publisher share the host with the service, the report
also says where the host's CPU went during the service run (a busy host lowers every figure).

Flags for comparing and scaling: --before <tree> runs another checkout's service (its venv) on the same
broker and responder, alternating with this one for --rounds rounds, and prints both side by side;
--breakdown splits the latency into legs (stage 1, the transaction's commit, stage 2, the downstream)
with a read_committed probe on the changes topic; --seed / --size 100k|1m start from users that exist
already (downstream and in the user-state changelog, written directly), so every event is an update;
--bulk has the responder announce /Bulk to the service runs (the default downstream does not).

The run prints a table and exits 0 even below a floor: it is a measurement. It exits non-zero on
errors, e.g. when not every user reached its final state downstream within --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from devkit import events as ev
from devkit.kafka import Publisher, create_source_topics
from devkit.local import ROOT, free_port, wait_until
from devkit.service import Api, make_settings, spawn_service
from service import eventloop
from service.domain import scim as scim_schema
from service.domain.changes import UserChange, change_from_event
from service.domain.keycloak import parse_record
from service.domain.plan import DeletePolicy, plan_change
from service.domain.state import UserState
from service.errors import PoisonRecord
from service.kafka_topics import ensure_topics, partitions_of
from service.metrics import Metrics
from service.scim.client import Downstream, ScimClient
from service.scim.egress import EgressPolicy
from service.scim.executor import execute
from service.settings import Settings

KAFKA = ROOT / "scripts" / "kafka" / "kafka.sh"
DOWNSTREAM_TOKEN = "bench-downstream-token"
REALM = "bench"
FLOOR_EVENTS_PER_SECOND = 1000.0
FLOOR_RATIO = 30.0
FLOOR_RSS_MB = 200.0
SERVICE_OVERRIDES: dict[str, Any] = {
    "tenant_max_concurrency": 256,
    "max_in_flight": 1000,
    "internal_partitions": 6,
    "log_level": "WARNING",
}


class BenchError(Exception):
    """Something went wrong (not a slow result): the bench exits non-zero."""


# == workload ==========================================================================================


@dataclass(frozen=True, slots=True)
class Planned:
    """One event to publish; `seq` is encoded in its lastName as v<seq>. Kept small (the event itself is
    built when published): a million-user run plans millions of them."""

    seq: int
    source: str  # "admin" or "user": which source topic
    kind: str  # create | register | update | update_profile
    uid: str
    family: str
    active: bool = True  # update: the `enabled` it sets, when `flip`
    flip: bool = False
    previous: str = ""  # update_profile: the lastName it replaces

    @property
    def event(self) -> dict[str, Any]:
        if self.kind == "create":
            return ev.create_user(REALM, self.uid, f"login-{self.uid}", "Bench", self.family, enabled=True)
        if self.kind == "register":
            login = f"login-{self.uid}"
            details = {
                "username": login,
                "first_name": "Bench",
                "last_name": self.family,
                "email": f"{login}@bench.test",
            }
            return ev.user_event(REALM, self.uid, "REGISTER", details)
        if self.kind == "update_profile":
            details = {"previous_last_name": self.previous, "updated_last_name": self.family}
            return ev.user_event(REALM, self.uid, "UPDATE_PROFILE", details)
        if self.flip:
            return ev.update_user(REALM, self.uid, lastName=self.family, enabled=self.active)
        return ev.update_user(REALM, self.uid, lastName=self.family)


@dataclass
class Workload:
    events: list[Planned]
    final: dict[str, tuple[str, bool]]  # user id -> (familyName, active) after the last event


SEEDED_FAMILY = "seeded"  # the lastName of every user a seeded run starts with


def user_ids(users: int, prefix: str) -> list[str]:
    return [f"{prefix}-{n:07d}" for n in range(users)]


def build_workload(events: int, users: int, prefix: str, *, seeded: bool = False) -> Workload:
    """A create per user, then updates round-robin over the users (every event sets lastName=v<seq>).

    Mixed sources, as Keycloak sends them: creates are admin CREATE (3 in 4) or REGISTER user events;
    updates are admin UPDATE (lastName, every 4th one also flips `enabled`) or UPDATE_PROFILE user
    events (every 3rd update). Event times come from devkit.events.now_ms: strictly increasing with seq.
    `seeded`: the users exist already (downstream and in the service's state, see `seed`): no creates.
    """
    if users < 1 or events < users:
        raise BenchError(f"need at least one event per user (events={events}, users={users})")
    ids = user_ids(users, prefix)
    last_name = dict.fromkeys(ids, SEEDED_FAMILY if seeded else "")
    active = dict.fromkeys(ids, True)
    planned: list[Planned] = []
    creates = 0 if seeded else users
    for seq in range(events):
        uid = ids[seq % users]
        family = f"v{seq}"
        if seq < creates:
            kind, source = ("register", "user") if seq % 4 == 3 else ("create", "admin")
            planned.append(Planned(seq, source, kind, uid, family))
        else:
            update = seq - creates
            if update % 3 == 2:
                planned.append(Planned(seq, "user", "update_profile", uid, family, previous=last_name[uid]))
            elif update % 4 == 0:
                active[uid] = not active[uid]
                planned.append(Planned(seq, "admin", "update", uid, family, active=active[uid], flip=True))
            else:
                planned.append(Planned(seq, "admin", "update", uid, family))
        last_name[uid] = family
    return Workload(planned, {uid: (last_name[uid], active[uid]) for uid in ids})


async def publish(
    publisher: Publisher, topics: dict[str, str], workload: Workload, rate: float = 0.0, partitions: int = 3
) -> dict[int, float]:
    """Publish with null keys, each topic's records spread over its partitions one by one (round robin);
    returns the produce time of each seq.

    rate 0 is a burst (as fast as the producer takes them): latency then includes the backlog. A rate
    below the service's capacity shows the latency of one event in steady state instead: events go out
    TICK at a time, each tick when the rate says. Records are handed to the producer as batches
    (`Publisher.send_batched`): per record, aiokafka's `send` cost the bench more CPU than the service
    spent on the event, on the same cores.
    """
    produced: dict[int, float] = {}
    started = time.time()
    spread = dict.fromkeys(topics.values(), 0)
    tick = TICK if rate else BURST_TICK
    for first in range(0, len(workload.events), tick):
        if rate and (ahead := started + first / rate - time.time()) > 0:
            await asyncio.sleep(ahead)
        records = []
        for item in workload.events[first : first + tick]:
            topic = topics[item.source]
            records.append((topic, spread[topic] % partitions, json.dumps(item.event).encode()))
            spread[topic] += 1
            produced[item.seq] = time.time()
        await publisher.send_batched(records)
    await publisher.flush()
    return produced


TICK = 20  # events per send at a steady rate
BURST_TICK = 1_000


# == the SCIM responder (runs in its own process) ====================================================

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
RESPONDER_MAX_BODY = 1024**3
FILTER = re.compile(r'^\s*(externalId|userName|displayName)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$')
MEMBER_FILTER = re.compile(r'^members\[\s*value\s+eq\s+"((?:[^"\\]|\\.)*)"\s*\]$')


@dataclass
class Space:
    """The users and groups of one base path (`/<space>`): the service and the baseline each get their own."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_user_name: dict[str, str] = field(default_factory=dict)
    by_external_id: dict[str, str] = field(default_factory=dict)
    writes: list[tuple[str, float, float, str | None]] = field(default_factory=list)  # method, in, out, family
    requests: dict[str, int] = field(default_factory=dict)  # method -> count
    expected: dict[str, tuple[str, bool]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> group without its members
    members: dict[str, dict[str, None]] = field(default_factory=dict)  # group id -> member ids (ordered set)
    group_by_name: dict[str, str] = field(default_factory=dict)  # casefolded displayName -> id
    group_by_external_id: dict[str, str] = field(default_factory=dict)
    group_requests: dict[str, int] = field(default_factory=dict)  # method -> count, /Groups only
    # sent, op, group externalId, user externalId: one per member operation of a PATCH
    member_writes: list[tuple[float, str, str, str]] = field(default_factory=list)
    redundant: dict[str, int] = field(default_factory=lambda: {"add": 0, "remove": 0})  # no-op member operations
    expected_groups: dict[str, set[str]] = field(default_factory=dict)  # group externalId -> user externalIds

    def index(self, user: dict[str, Any]) -> None:
        self.by_user_name[user["userName"]] = user["id"]
        if user.get("externalId"):
            self.by_external_id[user["externalId"]] = user["id"]

    def unindex(self, user: dict[str, Any]) -> None:
        self.by_user_name.pop(user.get("userName", ""), None)
        self.by_external_id.pop(user.get("externalId") or "", None)

    def matching(self) -> int:
        """How many users have their expected final (familyName, active) downstream."""
        done = 0
        for external_id, (family, active) in self.expected.items():
            user = self.users.get(self.by_external_id.get(external_id, ""))
            if user and user.get("name", {}).get("familyName") == family and user.get("active") is active:
                done += 1
        return done

    def external_id_of_user(self, user_id: str) -> str:
        """The member as the bench names it (the Keycloak user id); an id the responder never issued
        stays visible as `?<id>`, so a wrong member never passes for a right one."""
        user = self.users.get(user_id)
        return str(user.get("externalId")) if user and user.get("externalId") else f"?{user_id}"

    def group_members(self) -> dict[str, set[str]]:
        """Group externalId -> its members' externalIds, as the downstream holds them now."""
        return {
            str(group.get("externalId") or f"?{gid}"): {self.external_id_of_user(m) for m in self.members[gid]}
            for gid, group in self.groups.items()
        }

    def matching_groups(self) -> int:
        """How many groups exist with exactly their expected members."""
        held = self.group_members()
        return sum(1 for gid, want in self.expected_groups.items() if held.get(gid) == want)

    def index_group(self, group: dict[str, Any]) -> None:
        self.group_by_name[str(group["displayName"]).casefold()] = group["id"]
        if group.get("externalId"):
            self.group_by_external_id[group["externalId"]] = group["id"]

    def unindex_group(self, group: dict[str, Any]) -> None:
        self.group_by_name.pop(str(group.get("displayName", "")).casefold(), None)
        self.group_by_external_id.pop(group.get("externalId") or "", None)

    def render_group(self, gid: str, with_members: bool = True) -> dict[str, Any]:
        group = dict(self.groups[gid])
        if with_members:
            group["members"] = [{"value": m} for m in self.members[gid]]
        return group


def build_responder(latency: float) -> web.Application:
    """A minimal, in-memory SCIM 2.0 server of /Users and /Groups that answers after `latency` seconds.

    /Groups: POST (displayName unique ignoring case, like most downstreams: 409), GET filtered on
    externalId or displayName and paged (startIndex / count, `excludedAttributes=members`), PATCH with
    `add` of `members`, `remove` of `members[value eq "<id>"]` and `replace` of displayName (anything
    else: 400, so a request shape the bench does not expect shows up), answered 204 as AWS and Entra do,
    and DELETE. Every member operation is logged with its response time, for latency per membership."""
    spaces: dict[str, Space] = {}

    def space_of(request: web.Request) -> Space:
        return spaces.setdefault(request.match_info["space"], Space())

    def scim_json(body: object, status: int = 200) -> web.Response:
        return web.json_response(body, status=status, content_type=scim_schema.CONTENT_TYPE)

    def error(status: int, detail: str, scim_type: str | None = None) -> web.Response:
        body = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail}
        if scim_type:
            body["scimType"] = scim_type
        return scim_json(body, status)

    @web.middleware
    async def delayed(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every SCIM answer comes after the downstream latency; bench endpoints answer at once."""
        if request.path.startswith("/_bench/"):
            return await handler(request)
        space = space_of(request)
        space.requests[request.method] = space.requests.get(request.method, 0) + 1
        if "/Groups" in request.path:
            space.group_requests[request.method] = space.group_requests.get(request.method, 0) + 1
        await asyncio.sleep(latency)
        if not request.path.endswith("/ServiceProviderConfig") and (
            request.headers.get("Authorization") != f"Bearer {DOWNSTREAM_TOKEN}"
        ):
            return error(401, "bad token")
        return await handler(request)

    async def service_provider_config(request: web.Request) -> web.Response:
        config: dict[str, Any] = {
            "schemas": [scim_schema.SPC_SCHEMA],
            "patch": {"supported": True},
            "filter": {"supported": True, "maxResults": 100},
        }
        if request.match_info["space"].startswith(BULK_SPACE_PREFIX):
            config["bulk"] = BULK_CONFIG
        return scim_json(config)

    async def list_users(request: web.Request) -> web.Response:
        space = space_of(request)
        found = list(space.users.values())
        if "filter" in request.query:
            match = FILTER.match(request.query["filter"])
            if not match or match[1] == "displayName":
                return error(400, "unsupported filter", "invalidFilter")
            attribute, value = match[1], re.sub(r"\\(.)", r"\1", match[2])
            index = space.by_external_id if attribute == "externalId" else space.by_user_name
            found = [space.users[index[value]]] if value in index else []
        return scim_json(_page(found, request.query))

    async def create_user(request: web.Request) -> web.Response:
        space, received = space_of(request), time.time()
        body = await request.json()
        if not isinstance(body, dict) or not body.get("userName"):
            return error(400, "userName is required", "invalidValue")
        if body["userName"] in space.by_user_name:
            return error(409, "userName exists", "uniqueness")
        user = {**body, "id": uuid.uuid4().hex, "meta": {"resourceType": "User"}}
        space.users[user["id"]] = user
        space.index(user)
        space.writes.append(("POST", received, time.time(), (body.get("name") or {}).get("familyName")))
        return scim_json(user, 201)

    async def patch_user(request: web.Request) -> web.Response:
        space, received = space_of(request), time.time()
        user = space.users.get(request.match_info["id"])
        if user is None:
            return error(404, "no such user")
        body = await request.json()
        space.unindex(user)
        family = None
        for operation in body.get("Operations") or []:
            _apply_operation(user, operation)
            if operation.get("path") == "name.familyName":
                family = operation.get("value")
        space.index(user)
        space.writes.append(("PATCH", received, time.time(), family))
        return scim_json(user)

    async def delete_user(request: web.Request) -> web.Response:
        space, received = space_of(request), time.time()
        user = space.users.pop(request.match_info["id"], None)
        if user is None:
            return error(404, "no such user")
        space.unindex(user)
        space.writes.append(("DELETE", received, time.time(), None))
        return web.Response(status=204)

    async def list_groups(request: web.Request) -> web.Response:
        space = space_of(request)
        ids = list(space.groups)
        if "filter" in request.query:
            match = FILTER.match(request.query["filter"])
            if not match or match[1] == "userName":
                return error(400, "unsupported filter", "invalidFilter")
            attribute, value = match[1], re.sub(r"\\(.)", r"\1", match[2])
            if attribute == "externalId":
                found = space.group_by_external_id.get(value)
            else:
                found = space.group_by_name.get(value.casefold())
            ids = [found] if found else []
        with_members = "members" not in request.query.get("excludedAttributes", "").split(",")
        return scim_json(_page([space.render_group(gid, with_members) for gid in ids], request.query))

    async def get_group(request: web.Request) -> web.Response:
        space = space_of(request)
        if request.match_info["id"] not in space.groups:
            return error(404, "no such group")
        return scim_json(space.render_group(request.match_info["id"]))

    async def create_group(request: web.Request) -> web.Response:
        space = space_of(request)
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("displayName"), str) or not body["displayName"]:
            return error(400, "displayName is required", "invalidValue")
        if body["displayName"].casefold() in space.group_by_name:
            return error(409, "displayName exists", "uniqueness")
        if body.get("members"):
            return error(400, "the bench expects members by PATCH only", "invalidValue")
        group = {**body, "id": uuid.uuid4().hex, "meta": {"resourceType": "Group"}}
        space.groups[group["id"]] = group
        space.members[group["id"]] = {}
        space.index_group(group)
        return scim_json(space.render_group(group["id"]), 201)

    async def patch_group(request: web.Request) -> web.Response:
        space = space_of(request)
        gid = request.match_info["id"]
        if gid not in space.groups:
            return error(404, "no such group")
        body = await request.json()
        operations = body.get("Operations") if isinstance(body, dict) else None
        if not isinstance(operations, list) or not operations:
            return error(400, "no operations", "invalidValue")
        changes: list[tuple[str, str]] = []  # (op, member id), applied only when every operation is valid
        rename = None
        for operation in operations:
            op, path = str(operation.get("op", "")).lower(), str(operation.get("path", ""))
            if op == "add" and path == "members" and isinstance(operation.get("value"), list):
                changes += [("add", str(m.get("value"))) for m in operation["value"]]
            elif op == "remove" and (match := MEMBER_FILTER.match(path)):
                changes.append(("remove", re.sub(r"\\(.)", r"\1", match[1])))
            elif op == "replace" and path == "displayName" and isinstance(operation.get("value"), str):
                rename = operation["value"]
            else:
                return error(400, f"unsupported operation {op} {path}", "invalidPath")
        group, members = space.groups[gid], space.members[gid]
        if rename is not None and space.group_by_name.get(rename.casefold(), gid) != gid:
            return error(409, "displayName exists", "uniqueness")
        if rename is not None:
            space.unindex_group(group)
            group["displayName"] = rename
            space.index_group(group)
        sent = time.time()
        external_id = str(group.get("externalId") or f"?{gid}")
        for op, member in changes:
            held = member in members
            if (op == "add") == held:
                space.redundant[op] += 1
            if op == "add":
                members[member] = None
            else:
                members.pop(member, None)
            space.member_writes.append((sent, op, external_id, space.external_id_of_user(member)))
        return web.Response(status=204)

    async def delete_group(request: web.Request) -> web.Response:
        space = space_of(request)
        group = space.groups.pop(request.match_info["id"], None)
        if group is None:
            return error(404, "no such group")
        space.members.pop(group["id"], None)
        space.unindex_group(group)
        return web.Response(status=204)

    async def expect_groups(request: web.Request) -> web.Response:
        space = space_of(request)
        space.expected_groups = {k: set(v) for k, v in (await request.json()).items()}
        return web.json_response({"groups": len(space.expected_groups)})

    async def group_progress(request: web.Request) -> web.Response:
        space = space_of(request)
        return web.json_response(
            {
                "users": len(space.by_external_id),
                "groups": len(space.groups),
                "matching_groups": space.matching_groups(),
                "member_writes": len(space.member_writes),
                "last_member_write": max((w[0] for w in space.member_writes), default=0.0),
                "group_requests": space.group_requests,
                "requests": space.requests,
                "redundant": space.redundant,
            }
        )

    async def group_state(request: web.Request) -> web.Response:
        space = space_of(request)
        return web.json_response(
            {
                "members": {k: sorted(v) for k, v in space.group_members().items()},
                "names": {str(g.get("externalId")): g.get("displayName") for g in space.groups.values()},
                "member_writes": space.member_writes,
            }
        )

    async def seed(request: web.Request) -> web.Response:
        """Users that exist before a seeded run, as `seeded_user` makes them (a million without a request each)."""
        space, body = space_of(request), await request.json()
        for uid in user_ids(int(body["users"]), str(body["prefix"])):
            user = {"id": f"d-{uid}", "externalId": uid, **scim_schema.user_resource(uid, seeded_values(uid))}
            space.users[user["id"]] = user
            space.index(user)
        return web.json_response({"users": len(space.users)})

    async def expect(request: web.Request) -> web.Response:
        space_of(request).expected = {k: (v[0], v[1]) for k, v in (await request.json()).items()}
        return web.json_response({"users": len(space_of(request).expected)})

    async def progress(request: web.Request) -> web.Response:
        space = space_of(request)
        return web.json_response(
            {"matching": space.matching(), "writes": len(space.writes), "requests": space.requests}
        )

    async def writes(request: web.Request) -> web.Response:
        return web.json_response(space_of(request).writes)

    async def bulk(request: web.Request) -> web.Response:
        """POST /Bulk (RFC 7644 §3.7) of user POSTs and PATCHes, each answered as its own request would
        be (a success carries its location only, as scim2-server answers). Counted as one BULK request,
        and each operation under BULK/<method>."""
        space = space_of(request)
        space.requests["POST"] -= 1  # the middleware counted it as a POST
        space.requests["BULK"] = space.requests.get("BULK", 0) + 1
        body = await request.json()
        answers = []
        for operation in body.get("Operations") or []:
            method, path = str(operation.get("method", "")).upper(), str(operation.get("path", ""))
            space.requests[f"BULK/{method}"] = space.requests.get(f"BULK/{method}", 0) + 1
            answer = {"method": method, "bulkId": operation.get("bulkId")}
            if method == "POST" and path == "/Users":
                status, doc = _bulk_create(space, operation.get("data") or {})
            elif method == "PATCH" and path.startswith("/Users/"):
                status, doc = _bulk_patch(space, path.removeprefix("/Users/"), operation.get("data") or {})
            else:
                status, doc = 400, {"schemas": [ERROR_SCHEMA], "status": "400", "detail": "unsupported operation"}
            answer["status"] = str(status)
            if status < 300:
                answer["location"] = f"{request.url.origin()}/{request.match_info['space']}/Users/{doc['id']}"
            else:
                answer["response"] = doc
            answers.append(answer)
        return scim_json({"schemas": [BULK_RESPONSE_SCHEMA], "Operations": answers})

    # The expectations of a 100,000-user run are a few megabytes: over aiohttp's 1 MB default (HTTP 413).
    app = web.Application(middlewares=[delayed], client_max_size=RESPONDER_MAX_BODY)
    app.router.add_post("/{space}/Bulk", bulk)
    app.router.add_post("/_bench/seed/{space}", seed)
    app.router.add_post("/_bench/expect/{space}", expect)
    app.router.add_get("/_bench/progress/{space}", progress)
    app.router.add_get("/_bench/writes/{space}", writes)
    app.router.add_get("/{space}/ServiceProviderConfig", service_provider_config)
    app.router.add_get("/{space}/Users", list_users)
    app.router.add_post("/{space}/Users", create_user)
    app.router.add_patch("/{space}/Users/{id}", patch_user)
    app.router.add_delete("/{space}/Users/{id}", delete_user)
    app.router.add_post("/_bench/expect-groups/{space}", expect_groups)
    app.router.add_get("/_bench/group-progress/{space}", group_progress)
    app.router.add_get("/_bench/groups/{space}", group_state)
    app.router.add_get("/{space}/Groups", list_groups)
    app.router.add_post("/{space}/Groups", create_group)
    app.router.add_get("/{space}/Groups/{id}", get_group)
    app.router.add_patch("/{space}/Groups/{id}", patch_group)
    app.router.add_delete("/{space}/Groups/{id}", delete_group)
    return app


# -- the responder's /Bulk (spaces named bulk... announce it) --------------------------------------------

BULK_SPACE_PREFIX = "bulk"
BULK_CONFIG = {"supported": True, "maxOperations": 1000, "maxPayloadSize": 1024 * 1024}
BULK_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"


def _bulk_create(space: Space, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One POST /Users operation of a bulk request, as create_user answers it."""
    received = time.time()
    if not body.get("userName"):
        return 400, {"schemas": [ERROR_SCHEMA], "status": "400", "detail": "userName is required"}
    if body["userName"] in space.by_user_name:
        return 409, {"schemas": [ERROR_SCHEMA], "status": "409", "detail": "userName exists", "scimType": "uniqueness"}
    user = {**body, "id": uuid.uuid4().hex, "meta": {"resourceType": "User"}}
    space.users[user["id"]] = user
    space.index(user)
    space.writes.append(("POST", received, time.time(), (body.get("name") or {}).get("familyName")))
    return 201, user


def _bulk_patch(space: Space, user_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One PATCH /Users/{id} operation of a bulk request, as patch_user answers it."""
    received = time.time()
    user = space.users.get(user_id)
    if user is None:
        return 404, {"schemas": [ERROR_SCHEMA], "status": "404", "detail": "no such user"}
    space.unindex(user)
    family = None
    for operation in body.get("Operations") or []:
        _apply_operation(user, operation)
        if operation.get("path") == "name.familyName":
            family = operation.get("value")
    space.index(user)
    space.writes.append(("PATCH", received, time.time(), family))
    return 200, user


def _page(found: list[dict[str, Any]], query: Any) -> dict[str, Any]:
    """A ListResponse of `found` from startIndex (1-based) with at most `count` resources."""
    start, count = max(1, int(query.get("startIndex", "1"))), max(0, int(query.get("count", "100")))
    page = found[start - 1 : start - 1 + count]
    return {
        "schemas": [scim_schema.LIST_SCHEMA],
        "totalResults": len(found),
        "itemsPerPage": len(page),
        "startIndex": start,
        "Resources": page,
    }


def _apply_operation(user: dict[str, Any], operation: dict[str, Any]) -> None:
    """replace / add / remove on the paths the service sends (service.domain.scim.patch_operations)."""
    path, op = str(operation.get("path", "")), str(operation.get("op", "")).lower()
    *parents, leaf = path.split(".")
    target = user
    for part in parents:
        target = target.setdefault(part, {})
    if op == "remove":
        target.pop(leaf, None)
    else:
        target[leaf] = operation.get("value")


async def serve_responder(port: int, latency: float) -> None:
    """Entry point of the responder subprocess: serve until SIGTERM."""
    runner = web.AppRunner(build_responder(latency), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


class Responder:
    """The bench's handle on the responder subprocess."""

    def __init__(self, latency_ms: float) -> None:
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "scripts.bench",
            "--serve-responder",
            str(self.port),
            "--latency-ms",
            str(latency_ms),
        ]
        self.process = subprocess.Popen(command, cwd=ROOT)
        self.url = f"http://127.0.0.1:{self.port}"

    def base_url(self, space: str) -> str:
        return f"{self.url}/{space}"

    async def wait_ready(self) -> None:
        async def listening() -> bool:
            if self.process.poll() is not None:
                raise BenchError("the SCIM responder exited at start")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        await wait_until(listening, timeout=30, what="SCIM responder")

    async def call(self, method: str, path: str, body: object = None) -> Any:
        async with aiohttp.ClientSession() as http, http.request(method, self.url + path, json=body) as r:
            r.raise_for_status()
            return await r.json()

    async def expect(self, space: str, final: dict[str, tuple[str, bool]]) -> None:
        await self.call("POST", f"/_bench/expect/{space}", final)

    async def progress(self, space: str) -> dict[str, Any]:
        return dict(await self.call("GET", f"/_bench/progress/{space}"))

    async def writes(self, space: str) -> list[tuple[str, float, float, str | None]]:
        return [tuple(w) for w in await self.call("GET", f"/_bench/writes/{space}")]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# == measuring ==========================================================================================


@dataclass
class Result:
    name: str
    events: int
    users: int
    wall_seconds: float
    latencies_ms: list[float]  # one per event whose own lastName reached the downstream
    merged: int  # events that caused no request of their own (superseded / folded into a later write)
    requests: dict[str, int]
    peak_rss_mb: float | None = None  # the process tree: the service and its stage 1 child, summed
    main_rss_mb: float | None = None  # the service's own process (the floor's measure)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds in the measured window, by process
    counters: dict[str, float] = field(default_factory=dict)
    breakdown: dict[str, list[float]] = field(default_factory=dict)  # leg of the path -> ms per event (--breakdown)
    ready_seconds: float | None = None  # service start -> ready (restoring its state included)

    @property
    def events_per_second(self) -> float:
        return self.events / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    @property
    def requests_per_event(self) -> float:
        """HTTP requests (a /Bulk request is one; its operations, counted as BULK/<method>, are not)."""
        return sum(n for method, n in self.requests.items() if "/" not in method) / self.events


def measure(
    name: str,
    workload: Workload,
    produced: dict[int, float],
    writes: list[tuple[str, float, float, str | None]],
    requests: dict[str, int],
) -> Result:
    """Latency = response-send time of the first write carrying v<seq> minus the produce time of seq.

    An event may legitimately cause no request of its own: an older event that lost the race against a
    newer one of the same user, or an update folded into the POST that created the user. Those are
    counted in `merged`, not in the latency figures.
    """
    first_write: dict[int, float] = {}
    for _method, _received, sent, family in writes:
        if family and family.startswith("v"):
            seq = int(family[1:])
            first_write[seq] = min(sent, first_write.get(seq, sent))
    latencies = [(first_write[seq] - produced[seq]) * 1000 for seq in produced if seq in first_write]
    wall = max(sent for _m, _r, sent, _f in writes) - min(produced.values())
    users = len(workload.final)
    return Result(name, len(workload.events), users, wall, latencies, len(produced) - len(latencies), requests)


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (a service with OUTBOUND_SCIM_REKEY_PROCESS runs stage 1 as a child)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
    return found


@dataclass
class ProcessWatch:
    """Samples a process's VmHWM (peak RSS) from /proc while it runs: the value is lost once it exits.
    Its child processes count in: the peaks of each process, summed; their CPU time, added. `main_kb` is
    the process's own peak, without its children."""

    pid: int
    peak_kb: int = 0
    main_kb: int = 0
    children: bool = True  # False: this process alone (the bench, whose children are the service and responder)

    def sample(self) -> None:
        total = 0
        for pid in process_tree(self.pid):
            with suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
                        if pid == self.pid:
                            self.main_kb = max(self.main_kb, int(line.split()[1]))
        self.peak_kb = max(self.peak_kb, total)

    def cpu_seconds(self) -> float | None:
        """User + system CPU time so far (fields 14 and 15 of /proc/<pid>/stat), children included."""
        total, found = 0, False
        for pid in process_tree(self.pid) if self.children else [self.pid]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found = True
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK") if found else None

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.2)


def host_seconds() -> tuple[float, float]:
    """CPU seconds the whole host (all cores) spent busy, and had stolen by the hypervisor (a virtual
    machine's cores waiting for the physical ones: work of other machines), since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:7]) - idle) / tick, steal / tick


class CpuWindow:
    """CPU seconds of the processes involved (and of the whole host) between start() and stop().

    On a small machine the broker, the responder and the bench's publisher share the cores with the
    service, and so may other work on the host: this says where the cores went during the run.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self._watches = {name: ProcessWatch(pid, children=name != "bench") for name, pid in pids.items()}
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        found = {name: watch.cpu_seconds() for name, watch in self._watches.items()}
        busy, stolen = host_seconds()
        return {**{k: v for k, v in found.items() if v is not None}, "host busy": busy, "host stolen": stolen}

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> None:
        end = self._now()
        self.used = {name: end[name] - self._start[name] for name in end if name in self._start}


# == where the latency goes =============================================================================

LAST_NAME = re.compile(rb'"familyName":"v(\d+)"')
LEGS = (
    "stage 1: produce -> re-keyed",
    "commit: re-keyed -> readable",
    "stage 2: readable -> request",
    "downstream: request -> answer",
)


class ChangesProbe:
    """Reads the changes topic as the apply stage does (read_committed), waking every few milliseconds, and
    notes per event when stage 1 re-published it (the record's CreateTime, set by stage 1's producer)
    and when it became readable (its transaction committed). With the responder's receive and answer
    times this splits produce -> downstream answer into its legs (`breakdown`)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=5,
        )
        self.rekeyed: dict[int, float] = {}  # seq -> when stage 1 sent its change
        self.readable: dict[int, float] = {}  # seq -> when a read_committed reader got it
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batches.values():
                for record in records:
                    found = LAST_NAME.search(record.value or b"")
                    if found:
                        seq = int(found[1])
                        self.rekeyed.setdefault(seq, record.timestamp / 1000)
                        self.readable.setdefault(seq, now)


def breakdown(
    produced: dict[int, float],
    probe: ChangesProbe,
    writes: list[tuple[str, float, float, str | None]],
    latency_ms: float,
) -> dict[str, list[float]]:
    """Per leg, the milliseconds of every event seen at both of its ends (its first write downstream).
    The responder notes a write once its latency has passed: the request arrived `latency_ms` before."""
    first: dict[int, tuple[float, float]] = {}  # seq -> (received, sent) of its first write
    for _method, received, sent, family in writes:
        if family and family.startswith("v"):
            seq = int(family[1:])
            if seq not in first or sent < first[seq][1]:
                first[seq] = (received, sent)
    legs: dict[str, list[float]] = {leg: [] for leg in LEGS}
    for seq, (received, sent) in first.items():
        if seq not in probe.readable or seq not in produced:
            continue
        marks = (produced[seq], probe.rekeyed[seq], probe.readable[seq], received - latency_ms / 1000, sent)
        for leg, start, end in zip(LEGS, marks, marks[1:], strict=False):
            legs[leg].append((end - start) * 1000)
    return legs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def wait_converged(responder: Responder, space: str, users: int, timeout: float) -> None:
    """Wait until every user shows its final (familyName, active) downstream. A progress answer checks
    every user: for a big run it is asked less often, so the responder's CPU goes to the SCIM requests
    (the figures come from the responder's write times, not from when this noticed)."""
    seen: dict[str, Any] = {}
    pause = min(5.0, users / 20_000)

    async def converged() -> bool:
        seen.update(await responder.progress(space))
        if int(seen["matching"]) >= users:
            return True
        if pause > 0.1:
            await asyncio.sleep(pause)
        return False

    try:
        await wait_until(converged, timeout=timeout, what=f"{users} users converged in /{space}")
    except AssertionError as exc:
        raise BenchError(f"{exc} (last progress: {seen})") from exc


# == seeding (big runs) =================================================================================


def seeded_values(uid: str) -> dict[str, Any]:
    """What a seeded user holds, downstream and in the service's state, before the run."""
    login = f"login-{uid}"
    return {
        "userName": login,
        "givenName": "Bench",
        "familyName": SEEDED_FAMILY,
        "email": f"{login}@bench.test",
        "active": True,
    }


async def seed(bootstrap: str, settings: Settings, responder: Responder, space: str, users: int) -> float:
    """The users of a seeded run exist downstream and in the service's state before it starts.

    The user-state changelog is written directly, as the service writes it (key `<realm>/<user id>`, the
    default partitioner, so each record lands on its key's partition of the changes topic), so a
    100,000 or 1,000,000-user run measures events over a big state, not a million creates first.
    Returns the seconds it took."""
    started = time.monotonic()
    await ensure_topics(settings)
    await responder.call("POST", f"/_bench/seed/{space}", {"users": users, "prefix": space})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, max_batch_size=1 << 20)
    await producer.start()
    try:
        for uid in user_ids(users, space):
            values = seeded_values(uid)
            versions = dict.fromkeys(values, (1, ""))
            state = UserState(downstream_id=f"d-{uid}", values=values, versions=versions, written=values)
            await producer.send(settings.user_state_topic, key=f"{REALM}/{uid}".encode(), value=state.to_json())
        await producer.flush()
    finally:
        await producer.stop()
    return time.monotonic() - started


# == the service ========================================================================================


async def bench_service(
    bootstrap: str,
    responder: Responder,
    args: argparse.Namespace,
    workdir: Path,
    neighbours: dict[str, int],
    space: str = "service",
    python: str | None = None,
    overrides: dict[str, str] | None = None,
) -> Result:
    """The real service as its own process, one enabled tenant, the workload burst-published.

    `neighbours` (name -> pid: broker, responder, bench) get their CPU time measured over the window.
    `python` runs another tree's service (its venv's interpreter, `--before`); default: this one's.
    `overrides` are settings of this run (`--set`, `--before-set`).
    """
    settings = make_settings(bootstrap, api_port=free_port(), **{**SERVICE_OVERRIDES, **(overrides or {})})
    await create_source_topics(settings, partitions=args.partitions)
    workload = build_workload(args.events, args.users, space, seeded=args.seed)
    await responder.expect(space, workload.final)
    if args.seed:
        print(f"-- {space}: seeding {args.users} users (downstream and the user-state changelog)", flush=True)
        print(
            f"-- {space}: seeded in {await seed(bootstrap, settings, responder, space, args.users):.1f} s", flush=True
        )
    log = workdir / f"service-{space}.log"
    spawned = time.monotonic()
    process = spawn_service(settings, log, python=python)
    watch = ProcessWatch(process.pid)
    cpu = CpuWindow({"service": process.pid, **neighbours})
    sampler = asyncio.create_task(watch.run())
    probe = ChangesProbe(bootstrap, settings.changes_topic) if args.breakdown else None
    try:
        api = Api(settings.api_port)

        async def ready() -> bool:
            if process.poll() is not None:
                raise BenchError(f"the service exited at start:\n{log.read_text()[-3000:]}")
            return await api.ready()

        await wait_until(ready, timeout=args.timeout, what="service ready")
        ready_seconds = time.monotonic() - spawned
        status, body = await api.enable(REALM, responder.base_url(space), DOWNSTREAM_TOKEN)
        if status not in (200, 201):
            raise BenchError(f"enabling the tenant failed: {status} {body}")
        if probe is not None:
            await probe.start()
        print(f"-- {space}: publishing {args.events} events over {args.users} users", flush=True)
        topics = {"admin": settings.admin_events_topic, "user": settings.events_topic}
        cpu.start()
        async with Publisher(bootstrap) as publisher:
            produced = await publish(publisher, topics, workload, args.rate, args.partitions)
        print(
            f"-- {space}: published in {time.time() - min(produced.values()):.1f} s; waiting for the downstream",
            flush=True,
        )
        await wait_converged(responder, space, args.users, args.timeout)
        cpu.stop()
        watch.sample()
        counters = await service_counters(api)
    finally:
        sampler.cancel()
        if probe is not None:
            await probe.stop()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    progress = await responder.progress(space)
    writes = await responder.writes(space)
    result = measure("service", workload, produced, writes, progress["requests"])
    result.peak_rss_mb, result.cpu, result.counters = watch.peak_kb / 1024, cpu.used, counters
    result.main_rss_mb = watch.main_kb / 1024
    result.ready_seconds = ready_seconds
    if probe is not None:
        result.breakdown = breakdown(produced, probe, writes, args.latency_ms)
    return result


COUNTERS = {"outbound_scim_changes_total", "outbound_scim_scim_requests_total", "outbound_scim_offset_commits_total"}


async def service_counters(api: Api, wanted: set[str] = COUNTERS) -> dict[str, float]:
    """A few of the service's own counters (/metrics), as evidence of where the work went."""
    status, text = await api.call("GET", "/metrics")
    if status != 200:
        return {}
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(str(text)):
        for sample in family.samples:
            if sample.name in wanted:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "tenant")
                found[f"{sample.name.removeprefix('outbound_scim_')}{{{labels}}}"] = sample.value
    return found


# == the naive baseline =================================================================================


async def bench_baseline(bootstrap: str, responder: Responder, args: argparse.Namespace) -> Result:
    """One consumer, partition order, each event sent downstream before the next is read."""
    users = max(1, round(args.users * args.baseline_events / args.events))
    workload = build_workload(args.baseline_events, users, "base")
    await responder.expect("base", workload.final)
    settings = make_settings(bootstrap)  # only for fresh topic names
    await create_source_topics(settings, partitions=args.partitions)
    for topic in settings.source_topics:  # leaders elected, or the consumer logs NotLeaderForPartition
        await partitions_of(settings, topic)
    topics = {"admin": settings.admin_events_topic, "user": settings.events_topic}
    consumer = AIOKafkaConsumer(
        *settings.source_topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await wait_until(_assigned(consumer, 2 * args.partitions), timeout=30, what="baseline consumer assigned")
        downstream = Downstream(REALM, responder.base_url("base"), DOWNSTREAM_TOKEN)
        async with aiohttp.ClientSession() as http:
            client = ScimClient.over_http(
                http,
                Metrics(),
                timeout_seconds=10.0,
                tenant_concurrency=1,
                egress=EgressPolicy(allow_private_networks=True),
            )
            applier = asyncio.create_task(_apply_one_at_a_time(consumer, client, downstream, len(workload.events)))
            print(f"-- baseline: publishing {len(workload.events)} events over {users} users", flush=True)
            async with Publisher(bootstrap) as publisher:
                produced = await publish(publisher, topics, workload, args.rate, args.partitions)
            await asyncio.wait_for(applier, args.timeout)
    finally:
        await consumer.stop()
    progress = await responder.progress("base")
    print(
        f"-- baseline: {progress['matching']} of {users} users ended in their last state "
        "(partition order without per-user ordering)",
        flush=True,
    )
    return measure("baseline", workload, produced, await responder.writes("base"), progress["requests"])


class _FreshTopicNoise(logging.Filter):
    """A topic created a moment ago answers NotLeaderForPartition once while its leader settles;
    aiokafka retries by itself but logs an error line that would look like a failure of the bench."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "NotLeaderForPartitionError" not in record.getMessage()


for _logger in ("aiokafka.consumer.fetcher", "aiokafka.producer.sender"):
    logging.getLogger(_logger).addFilter(_FreshTopicNoise())


def _assigned(consumer: AIOKafkaConsumer, partitions: int) -> Any:
    async def check() -> bool:
        return len(consumer.assignment()) >= partitions

    return check


async def _apply_one_at_a_time(consumer: AIOKafkaConsumer, client: ScimClient, ds: Downstream, total: int) -> None:
    downstream_ids: dict[str, str | None] = {}
    done = 0
    while done < total:
        batches = await consumer.getmany(timeout_ms=200)
        for _tp, records in sorted(batches.items(), key=lambda item: (item[0].topic, item[0].partition)):
            for record in records:
                done += 1
                try:
                    result = change_from_event(parse_record(record.value))
                except PoisonRecord:
                    continue
                if not isinstance(result, UserChange):  # a skip; the workload has no group events
                    continue
                state = UserState(downstream_id=downstream_ids.get(result.key))  # no ordering state: naive
                plan = plan_change(state, result, DeletePolicy.IGNORE)
                outcome = await execute(plan, result, ds, client)
                downstream_ids[result.key] = outcome.state.downstream_id


# == the report =========================================================================================


def verdict(ok: bool) -> str:
    return "PASS" if ok else "BELOW"


def print_table(args: argparse.Namespace, service: Result, baseline: Result, broker: str) -> None:
    ratio = service.events_per_second / baseline.events_per_second if baseline.events_per_second else float("inf")
    rss = service.main_rss_mb or 0.0
    rows: list[tuple[str, str, str, str]] = [
        ("events", f"{service.events}", f"{baseline.events}", ""),
        ("users", f"{service.users}", f"{baseline.users}", ""),
        ("downstream latency (ms)", f"{args.latency_ms:g}", f"{args.latency_ms:g}", ""),
        (
            "wall time, first produce -> last write (s)",
            f"{service.wall_seconds:.2f}",
            f"{baseline.wall_seconds:.2f}",
            "",
        ),
        (
            "events/s",
            f"{service.events_per_second:.0f}",
            f"{baseline.events_per_second:.1f}",
            f">= {FLOOR_EVENTS_PER_SECOND:.0f}  {verdict(service.events_per_second >= FLOOR_EVENTS_PER_SECOND)}",
        ),
        (
            "p50 latency produce -> downstream (ms)",
            f"{service.percentile(50):.0f}",
            f"{baseline.percentile(50):.0f}",
            "",
        ),
        (
            "p99 latency produce -> downstream (ms)",
            f"{service.percentile(99):.0f}",
            f"{baseline.percentile(99):.0f}",
            "",
        ),
        (
            "peak RSS of the service process (MB)",
            f"{rss:.1f}",
            "-",
            f"<= {FLOOR_RSS_MB:.0f}  {verdict(rss <= FLOOR_RSS_MB)}",
        ),
        ("peak RSS with stage 1's child process (MB)", f"{service.peak_rss_mb or 0.0:.1f}", "-", ""),
        (
            "ratio service / baseline events/s",
            f"{ratio:.1f}x",
            "",
            f">= {FLOOR_RATIO:.0f}x  {verdict(ratio >= FLOOR_RATIO)}",
        ),
        ("requests per event", f"{service.requests_per_event:.2f}", f"{baseline.requests_per_event:.2f}", ""),
        ("events with a write of their own", f"{len(service.latencies_ms)}", f"{len(baseline.latencies_ms)}", ""),
        ("events merged/superseded (no own write)", f"{service.merged}", f"{baseline.merged}", ""),
    ]
    print()
    publishing = f"at {args.rate:g} events/s" if args.rate else "as a burst"
    print(
        f"outbound-scim bench: {os.cpu_count()} CPUs, broker {broker}, {args.partitions} partitions per source "
        f"topic, events published {publishing}"
    )
    settings = {**SERVICE_OVERRIDES, **dict(args.set)}
    print(f"service settings: {', '.join(f'{k}={v}' for k, v in settings.items())}")
    if args.before_set:
        print(f"--before runs also with: {', '.join(f'{k}={v}' for k, v in args.before_set)}")
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'service':>10}  {'baseline':>10}  floor")
    print("-" * (width + 40))
    for label, svc, base, floor in rows:
        print(f"{label:<{width}}  {svc:>10}  {base:>10}  {floor}")
    print("-" * (width + 40))
    print(f"service requests by method: {_methods(service.requests)}; baseline: {_methods(baseline.requests)}")
    print_cpu(service.cpu, service.wall_seconds, service.events, "event")
    print_counters(service.counters)
    print_breakdown(service.breakdown)


def print_breakdown(legs: dict[str, list[float]]) -> None:
    """p50 / p99 of each leg of produce -> downstream answer (--breakdown)."""
    if not legs:
        return
    print(f"latency by leg (ms; {len(next(iter(legs.values())))} events):")
    width = max(len(leg) for leg in legs)
    for leg, values in legs.items():
        print(f"  {leg:<{width}}  p50 {percentile(values, 50):7.1f}  p99 {percentile(values, 99):7.1f}")


def print_cpu(cpu: dict[str, float], wall_seconds: float, units: int, unit: str) -> None:
    """Where the host's cores went while the service worked (both benches print this)."""
    used = dict(cpu)
    if "service" not in used or "host busy" not in used:
        return
    cores = os.cpu_count() or 1
    capacity = cores * wall_seconds
    busy, stolen = used.pop("host busy"), used.pop("host stolen", 0.0)
    own = sum(used.values())
    print(f"CPU seconds in the window ({cores} cores x {wall_seconds:.1f} s = {capacity:.0f}):")
    print(
        "  "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in used.items())
        + f", other processes on the host {max(0.0, busy - own):.1f}, stolen by the hypervisor {stolen:.1f}"
        + f", idle {max(0.0, capacity - busy - stolen):.1f}"
    )
    print(
        f"  service: {used['service'] / units * 1e6:.0f} us CPU per {unit}, "
        f"{used['service'] / wall_seconds:.0%} of one core"
    )


def print_counters(counters: dict[str, float]) -> None:
    for name, value in sorted(counters.items()):
        if value:
            print(f"  {name} = {value:g}")


def _methods(requests: dict[str, int]) -> str:
    return " ".join(f"{m}={n}" for m, n in sorted(requests.items()))


# == orchestration ======================================================================================


@contextmanager
def kafka_broker(workdir: Path) -> Iterator[tuple[str, int | None]]:
    """KAFKA_BOOTSTRAP_SERVERS if set; else a broker of our own from scripts/kafka/kafka.sh, stopped at exit
    and its data deleted (hundreds of MB for the big runs, which filled this machine's disk when kept)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"], None
        return
    state = workdir / "kafka"
    print("-- starting a local Kafka broker (scripts/kafka/kafka.sh)", flush=True)
    started = subprocess.run(
        ["bash", str(KAFKA), "start", "0", str(state)], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        raise BenchError(f"kafka.sh start failed:\n{started.stderr[-3000:]}")
    try:
        yield started.stdout.strip().splitlines()[-1], int((state / "kafka.pid").read_text())
    finally:
        subprocess.run(["bash", str(KAFKA), "stop", str(state)], check=False)
        shutil.rmtree(state, ignore_errors=True)


@asynccontextmanager
async def running_responder(latency_ms: float) -> AsyncIterator[Responder]:
    responder = Responder(latency_ms)
    try:
        await responder.wait_ready()
        yield responder
    finally:
        responder.stop()


async def warm_up(
    bootstrap: str, responder: Responder, args: argparse.Namespace, workdir: Path, neighbours: dict[str, int]
) -> None:
    """A short throwaway service run first: a fresh broker's JVM compiles its hot paths during its
    first thousands of records (and creates its internal topics), which is not what we measure."""
    small = argparse.Namespace(
        **{
            **vars(args),
            "events": args.warmup_events,
            "users": max(1, args.users * args.warmup_events // args.events),
            "seed": False,
            "breakdown": False,
        }
    )
    result = await bench_service(bootstrap, responder, small, workdir, neighbours, space="warmup")
    print(f"-- warmup: {result.events_per_second:.0f} events/s (discarded)", flush=True)


def before_python(tree: str) -> str:
    """The interpreter of another tree's venv: it runs that tree's service (`--before`)."""
    python = Path(tree).resolve() / ".venv" / "bin" / "python"
    if not python.exists():
        raise BenchError(
            f"--before {tree}: no {python}; make it with "
            f"`cd {tree} && python3 -m venv .venv && .venv/bin/pip install -e '.[test]'`"
        )
    return str(python)


async def bench(args: argparse.Namespace, bootstrap: str, broker_pid: int | None, workdir: Path) -> None:
    """Each round runs this tree's service and, with --before, the other tree's, on the same broker and
    responder, alternating which goes first (a host that gets busier or quieter favours neither)."""
    trees = {"this": None} if not args.before else {"before": before_python(args.before), "this": None}
    overrides = {"this": dict(args.set), "before": dict(args.before_set)}
    runs: dict[str, list[Result]] = {name: [] for name in trees}
    async with running_responder(args.latency_ms) as responder:
        neighbours = {"kafka broker": broker_pid} if broker_pid else {}
        neighbours.update({"responder": responder.process.pid, "bench": os.getpid()})
        if args.warmup_events:
            await warm_up(bootstrap, responder, args, workdir, neighbours)
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for name in order:
                space = "service" if (name, args.rounds) == ("this", 1) else f"{name}{round_}"
                if args.bulk:  # a space whose name starts so announces /Bulk
                    space = f"{BULK_SPACE_PREFIX}-{space}"
                result = await bench_service(
                    bootstrap, responder, args, workdir, neighbours, space, trees[name], overrides[name]
                )
                print(f"-- {space}: {result.wall_seconds:.1f} s from first produce to last write", flush=True)
                runs[name].append(result)
        baseline = await bench_baseline(bootstrap, responder, args)
        print(f"-- baseline: {baseline.wall_seconds:.1f} s from first produce to last write", flush=True)
    print_table(args, median_run(runs["this"]), baseline, bootstrap)
    if args.before:
        print_side_by_side(args, runs["before"], runs["this"])


def median_run(results: list[Result]) -> Result:
    """The round of median throughput (its other figures come from the same round)."""
    return sorted(results, key=lambda r: r.events_per_second)[len(results) // 2]


def print_side_by_side(args: argparse.Namespace, before: list[Result], this: list[Result]) -> None:
    """Both builds' figures, median round of each, and this / before."""

    def cpu_per_event(r: Result) -> float:
        return r.cpu.get("service", float("nan")) / r.events * 1e6

    rows: list[tuple[str, Any, bool]] = [  # label, figure of a result, higher is better
        ("events/s", lambda r: r.events_per_second, True),
        ("p50 latency produce -> downstream (ms)", lambda r: r.percentile(50), False),
        ("p99 latency produce -> downstream (ms)", lambda r: r.percentile(99), False),
        ("service CPU per event (us)", cpu_per_event, False),
        ("requests per event", lambda r: r.requests_per_event, False),
        ("events merged/superseded (no own write)", lambda r: r.merged, False),
        ("peak RSS of the service process (MB)", lambda r: r.main_rss_mb or float("nan"), False),
        ("peak RSS with stage 1's child (MB)", lambda r: r.peak_rss_mb or float("nan"), False),
        ("service start -> ready (s)", lambda r: r.ready_seconds or float("nan"), False),
    ]
    for leg in this[0].breakdown:
        rows.append((f"{leg}, p50 (ms)", lambda r, leg=leg: percentile(r.breakdown.get(leg, []), 50), False))
        rows.append((f"{leg}, p99 (ms)", lambda r, leg=leg: percentile(r.breakdown.get(leg, []), 99), False))
    b, t = median_run(before), median_run(this)
    print()
    print(
        f"side by side, {args.rounds} round(s) each, alternating, same broker and responder; the median "
        f"round of each by events/s (before: {args.before})"
    )
    width = max(len(label) for label, _, _ in rows)
    print(f"{'':<{width}}  {'before':>10}  {'this':>10}  {'this/before':>11}  rounds (before | this)")
    print("-" * (width + 60))
    for label, figure, _higher in rows:
        fb, ft = float(figure(b)), float(figure(t))
        ratio = f"{ft / fb:.2f}x" if fb else "-"
        each = (
            " ".join(f"{float(figure(r)):.0f}" for r in before)
            + " | "
            + " ".join(f"{float(figure(r)):.0f}" for r in this)
        )
        print(f"{label:<{width}}  {fb:>10.1f}  {ft:>10.1f}  {ratio:>11}  {each}")
    print("-" * (width + 60))


SIZES = {  # --size: users, events (seeded: every event is an update of an existing user)
    "100k": (100_000, 200_000),
    "1m": (1_000_000, 1_000_000),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events for the service run")
    parser.add_argument("--users", type=int, default=2_000, help="distinct users for the service run")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the responder answers after this")
    parser.add_argument(
        "--baseline-events", type=int, default=1_000, help="events for the naive baseline (users scaled in proportion)"
    )
    parser.add_argument(
        "--warmup-events",
        type=int,
        default=2_000,
        help="a throwaway service run first, to warm up the broker (0: none)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="publish at this many events/s (default 0: a burst, as fast as possible)",
    )
    parser.add_argument("--partitions", type=int, default=3, help="partitions of each source topic")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="split produce -> downstream latency into its legs (a read_committed probe on the changes topic)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the downstream")
    parser.add_argument(
        "--before",
        metavar="TREE",
        help="also run the service of another checkout (its .venv/bin/python -m service), e.g. a git worktree "
        "of the previous release, and print both side by side",
    )
    parser.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of this tree's service runs (a Settings field, e.g. rekey_process=true); repeatable",
    )
    parser.add_argument(
        "--before-set",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the --before runs only, e.g. --before . --before-set rekey_process=false",
    )
    parser.add_argument(
        "--bulk",
        action="store_true",
        help="the responder announces /Bulk (maxOperations 1,000) to the service runs, so the service's "
        "writes of many users go out as bulk requests; the baseline's downstream stays without",
    )
    parser.add_argument("--rounds", type=int, default=1, help="service runs per build (alternating with --before)")
    parser.add_argument(
        "--seed",
        action="store_true",
        help="the users exist before the run (downstream, and in the user-state changelog written directly): "
        "every event is an update",
    )
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        help="a big run: 100k (100,000 users, 200,000 events) or 1m (1,000,000 users and events); implies --seed",
    )
    parser.add_argument("--serve-responder", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size:
        args.users, args.events = SIZES[args.size]
        args.seed = True
    return args


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or name not in Settings.model_fields:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE with NAME a settings field")
    return name, value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_responder:
        eventloop.run(serve_responder(args.serve_responder, args.latency_ms / 1000), "uvloop")
        return 0
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="outbound-scim-bench-"))
    try:
        with kafka_broker(workdir) as (bootstrap, broker_pid):
            eventloop.run(bench(args, bootstrap, broker_pid, workdir), "uvloop")
    except BenchError as exc:
        print(f"bench failed: {exc}\n(work dir: {workdir})", file=sys.stderr)
        return 1
    print(f"\nbench run took {time.monotonic() - started:.0f} s (work dir with the service log: {workdir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
