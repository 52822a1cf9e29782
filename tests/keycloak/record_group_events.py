"""Records what a real Keycloak sends through the Kafka event listener when groups and group membership
change, and what its Admin API answers about groups: the golden inputs in tests/fixtures/keycloak-groups/
and the facts in docs/reference/keycloak-group-events.md come from one run of this.

    python -m tests.keycloak.record_group_events OUTDIR

Starts a broker (tests/support.py) and Keycloak with the project's test listener (tests/keycloak/
conftest.py) on single-partition topics, so each topic's order is the send order, with every user event
type enabled so that any user event a step fires is seen. KAFKA_BOOTSTRAP_SERVERS names a running broker
instead; KEYCLOAK_URL a running Keycloak (with KEYCLOAK_ADMIN_USER / KEYCLOAK_ADMIN_PASSWORD, its
listener's id KEYCLOAK_LISTENER and topics KEYCLOAK_KAFKA_TOPIC / KEYCLOAK_KAFKA_ADMIN_TOPIC, on
KAFKA_BOOTSTRAP_SERVERS). A step's records are read up to the topics' end once its admin calls have
returned: that needs a listener that sends before the request returns, as the project's does.

Each step writes OUTDIR/<step>.json: the admin calls made (body, status, answer), the ids known so far,
and the records of both topics, each the record's JSON value as sent (`representation` left a string).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.keycloak import conftest as kc_fixture
from tests.keycloak.setup_realm import MasterAdmin, ServiceAccount
from tests.support import start_broker, stop_broker

# Keycloak 26.5.6's org.keycloak.events.EventType, each also as <name>_ERROR. The listener ignores
# names its Keycloak does not know, so the list may run ahead of or behind the version.
USER_EVENT_TYPES = """LOGIN REGISTER LOGOUT CODE_TO_TOKEN CLIENT_LOGIN REFRESH_TOKEN VALIDATE_ACCESS_TOKEN INTROSPECT_TOKEN
FEDERATED_IDENTITY_LINK REMOVE_FEDERATED_IDENTITY UPDATE_EMAIL UPDATE_PROFILE UPDATE_PASSWORD UPDATE_TOTP
VERIFY_EMAIL VERIFY_PROFILE REMOVE_TOTP GRANT_CONSENT UPDATE_CONSENT REVOKE_GRANT SEND_VERIFY_EMAIL
SEND_RESET_PASSWORD SEND_IDENTITY_PROVIDER_LINK RESET_PASSWORD RESTART_AUTHENTICATION INVALID_SIGNATURE
REGISTER_NODE UNREGISTER_NODE USER_INFO_REQUEST IDENTITY_PROVIDER_LINK_ACCOUNT IDENTITY_PROVIDER_LOGIN
IDENTITY_PROVIDER_FIRST_LOGIN IDENTITY_PROVIDER_POST_LOGIN IDENTITY_PROVIDER_RESPONSE
IDENTITY_PROVIDER_RETRIEVE_TOKEN IMPERSONATE CUSTOM_REQUIRED_ACTION EXECUTE_ACTIONS EXECUTE_ACTION_TOKEN
CLIENT_INFO CLIENT_REGISTER CLIENT_UPDATE CLIENT_DELETE CLIENT_INITIATED_ACCOUNT_LINKING TOKEN_EXCHANGE
OAUTH2_DEVICE_AUTH OAUTH2_DEVICE_VERIFY_USER_CODE OAUTH2_DEVICE_CODE_TO_TOKEN AUTHREQID_TO_TOKEN
PERMISSION_TOKEN DELETE_ACCOUNT PUSHED_AUTHORIZATION_REQUEST USER_DISABLED_BY_PERMANENT_LOCKOUT
USER_DISABLED_BY_TEMPORARY_LOCKOUT OAUTH2_EXTENSION_GRANT FEDERATED_IDENTITY_OVERRIDE_LINK UPDATE_CREDENTIAL
REMOVE_CREDENTIAL INVITE_ORG USER_SESSION_DELETED""".split()  # noqa: SIM905 (a word list, not 60 lines)
ALL_USER_EVENTS = ",".join(name for base in USER_EVENT_TYPES for name in (base, f"{base}_ERROR"))
DRAIN_TIMEOUT = 30.0  # seconds for the records already on the broker to be read


@dataclass
class Topics:
    """The listener's side: where it sends, and a consumer over every partition of both topics."""

    bootstrap: str
    events: str
    admin_events: str
    consumer: AIOKafkaConsumer | None = None
    partitions: list[TopicPartition] = field(default_factory=list)

    async def open(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics([self.events, self.admin_events])
        finally:
            await admin.close()
        for topic in described:
            if topic["error_code"] or not topic["partitions"]:
                raise RuntimeError(f"topic {topic['topic']} is not on {self.bootstrap}: error {topic['error_code']}")
            self.partitions += [TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"]]
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self.consumer.start()
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_end(*self.partitions)

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def drain(self) -> dict[str, list[dict[str, Any]]]:
        """Every record sent since the last drain, per topic, in send order (offset order per partition;
        across partitions, by `time`)."""
        assert self.consumer is not None
        consumer = self.consumer
        ends = await consumer.end_offsets(self.partitions)
        found: list[tuple[TopicPartition, int, dict[str, Any]]] = []
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while pending := [tp for tp in self.partitions if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"records up to {ends} not read within {DRAIN_TIMEOUT} s")
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < ends[tp]:
                        if record.key is not None or record.headers or record.value is None:
                            raise RuntimeError(f"a key, headers or no value on {tp}@{record.offset}")
                        found.append((tp, record.offset, json.loads(record.value)))
        found.sort(key=lambda item: (item[2].get("time", 0), item[0].partition, item[1]))
        return {
            topic: [value for tp, _, value in found if tp.topic == topic] for topic in (self.events, self.admin_events)
        }


@dataclass
class Recorder:
    """Admin calls on one realm, grouped into steps; each step's records saved with its calls."""

    admin: MasterAdmin
    topics: Topics
    realm: str
    realm_id: str
    out: Path
    ids: dict[str, str] = field(default_factory=dict)  # "/eng", "user:bob", ... -> Keycloak id
    calls: list[dict[str, Any]] = field(default_factory=list)
    keycloak_version: str = "?"

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        """One admin call on the realm as the master admin, kept for the step's file; fails on >= 300."""
        status, doc, location = await self.admin.call(method, f"/{self.realm}{path}", body, **params)
        self.calls.append(
            {
                "request": f"{method} /admin/realms/{self.realm}{path}",
                **({"params": params} if params else {}),
                **({"body": body} if body is not None else {}),
                "status": status,
                **({"location": location} if location else {}),
                **({"answer": doc} if doc is not None else {}),
            }
        )
        if status >= 300:
            raise RuntimeError(f"{method} {path} -> {status} {doc}")
        return location.rsplit("/", 1)[1] if location and doc is None else doc

    async def discard(self) -> None:
        """Reads past what earlier, unrecorded calls sent."""
        await self.topics.drain()
        self.calls = []

    @asynccontextmanager
    async def step(self, name: str, what: str) -> AsyncIterator[None]:
        await self.discard()
        began = time.monotonic()
        yield
        records = await self.topics.drain()
        mine = {topic: [r for r in values if r.get("realmId") == self.realm_id] for topic, values in records.items()}
        doc = {
            "step": name,
            "what": what,
            "keycloak": self.keycloak_version,
            "listener": "outbound-scim-test-kafka (SnuK87/keycloak-kafka's record format: null key, no headers)",
            "realm": self.realm,
            "realmId": self.realm_id,
            "ids": dict(self.ids),
            "calls": self.calls,
            "admin_events": mine[self.topics.admin_events],
            "user_events": mine[self.topics.events],
        }
        write(self.out / f"{name}.json", doc)
        self.calls = []
        print(
            f"{name}: {len(doc['admin_events'])} admin / {len(doc['user_events'])} user events "
            f"({time.monotonic() - began:.1f} s)",
            file=sys.stderr,
        )

    async def group(self, path: str, parent: str | None = None) -> str:
        """Creates group `path` (its parent already recorded in `ids`) and remembers its id."""
        where = f"/groups/{self.ids[parent]}/children" if parent else "/groups"
        answer = await self.call("POST", where, {"name": path.rsplit("/", 1)[1]})
        # A top-level group's POST answers with a Location; a child's with the group itself.
        location = self.calls[-1].get("location")
        self.ids[path] = location.rsplit("/", 1)[1] if location else answer["id"]
        return self.ids[path]


def write(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


async def record_events(rec: Recorder, reader: Reader) -> None:
    """Steps 1-10: each admin change on its own, with the records it produced; step 0 shows that user
    events do reach the topic, so an empty list in a later step means none was fired."""
    async with rec.step(
        "00-control-user-events-arrive", "a client-credentials token request for the service account (no admin call)"
    ):
        await reader.login()
        rec.calls.append({"request": f"POST /realms/{rec.realm}/protocol/openid-connect/token (client_credentials)"})
    async with rec.step("01-create-top-level-group", "POST /groups {name: eng}: a top-level group /eng"):
        await rec.group("/eng")
    async with rec.step("02-create-sub-group", "POST /groups/{eng}/children {name: backend}: /eng/backend"):
        await rec.group("/eng/backend", parent="/eng")
    async with rec.step("03-rename-sub-group", "GET the group, change its name, PUT the whole group as read"):
        group = await rec.call("GET", f"/groups/{rec.ids['/eng/backend']}")
        await rec.call("PUT", f"/groups/{rec.ids['/eng/backend']}", {**group, "name": "platform"})
        rec.ids["/eng/platform"] = rec.ids.pop("/eng/backend")
    async with rec.step("04a-create-other-parent", "preparing the move: a second top-level group /ops"):
        await rec.group("/ops")
    async with rec.step(
        "04b-move-sub-group-to-top-level", "POST /groups with the existing /eng/platform's id: it becomes /platform"
    ):
        platform = rec.ids.pop("/eng/platform")
        await rec.call("POST", "/groups", {"id": platform, "name": "platform"})
        rec.ids["/platform"] = platform
        await rec.call("GET", f"/groups/{platform}")
    async with rec.step(
        "04c-move-group-under-other-parent",
        "POST /groups/{ops}/children with the existing /platform's id: it becomes /ops/platform",
    ):
        platform = rec.ids.pop("/platform")
        await rec.call("POST", f"/groups/{rec.ids['/ops']}/children", {"id": platform, "name": "platform"})
        rec.ids["/ops/platform"] = platform
        await rec.call("GET", f"/groups/{platform}")
    async with rec.step("05-create-user-with-groups", 'POST /users with groups: ["/eng"] in the body'):
        body = {
            "username": "alice",
            "email": "alice@example.com",
            "firstName": "Alice",
            "lastName": "Liddell",
            "enabled": True,
            "groups": ["/eng"],
        }
        rec.ids["user:alice"] = await rec.call("POST", "/users", body)
        await rec.call("GET", f"/users/{rec.ids['user:alice']}/groups")
    async with rec.step("06a-add-member", "PUT /users/{bob}/groups/{eng}"):
        await rec.call("PUT", f"/users/{rec.ids['user:bob']}/groups/{rec.ids['/eng']}")
    async with rec.step("06b-remove-member", "DELETE /users/{bob}/groups/{eng}"):
        await rec.call("DELETE", f"/users/{rec.ids['user:bob']}/groups/{rec.ids['/eng']}")
    async with rec.step(
        "07a-prepare-group-with-members-and-sub-groups",
        "/eng gets sub-groups /eng/frontend and /eng/frontend/web; members: alice (already) and bob in /eng, "
        "carol in /eng/frontend, bob in /eng/frontend/web",
    ):
        await rec.group("/eng/frontend", parent="/eng")
        await rec.group("/eng/frontend/web", parent="/eng/frontend")
        for user, group in (("bob", "/eng"), ("carol", "/eng/frontend"), ("bob", "/eng/frontend/web")):
            await rec.call("PUT", f"/users/{rec.ids['user:' + user]}/groups/{rec.ids[group]}")
        await rec.call("GET", f"/groups/{rec.ids['/eng']}/members")
    async with rec.step(
        "07b-delete-group-with-members-and-sub-groups",
        "DELETE /groups/{eng}: 2 direct members, 2 levels of sub-groups with members; then each user's groups",
    ):
        await rec.call("DELETE", f"/groups/{rec.ids['/eng']}")
        for user in ("alice", "bob", "carol"):
            await rec.call("GET", f"/users/{rec.ids['user:' + user]}/groups")
        for path in ("/eng", "/eng/frontend", "/eng/frontend/web"):
            rec.ids[f"deleted:{path}"] = rec.ids.pop(path)
    async with rec.step("08-change-group-attributes", "GET /ops, add attributes, PUT it whole (name unchanged)"):
        group = await rec.call("GET", f"/groups/{rec.ids['/ops']}")
        await rec.call(
            "PUT",
            f"/groups/{rec.ids['/ops']}",
            {**group, "attributes": {"costCenter": ["4711"], "owner": ["ops-team", "sre"]}},
        )
    async with rec.step(
        "09a-switch-include-representation-off",
        "PUT events/config with adminEventsDetailsEnabled false (the realm's 'Include representation')",
    ):
        status, doc = await rec.admin.enable_listener(rec.realm, listener(), representation=False)
        if status != 204:
            raise RuntimeError(f"events/config -> {status} {doc}")
        rec.calls.append({"request": f"PUT /admin/realms/{rec.realm}/events/config", "status": status})
        await rec.call("GET", "/events/config")
    async with rec.step(
        "09b-add-member-include-representation-off",
        "PUT /users/{bob}/groups/{ops} with 'Include representation' off; then the event as Keycloak's own "
        "admin event store kept it (GET admin-events)",
    ):
        await rec.call("PUT", f"/users/{rec.ids['user:bob']}/groups/{rec.ids['/ops']}")
        await rec.call("GET", "/admin-events", resourceTypes="GROUP_MEMBERSHIP", max="1")
    status, doc = await rec.admin.enable_listener(rec.realm, listener(), representation=True)
    if status != 204:
        raise RuntimeError(f"events/config -> {status} {doc}")
    async with rec.step(
        "10-rename-parent-group",
        "GET /ops (parent of /ops/platform), rename it to operations, PUT it whole; then GET the child",
    ):
        group = await rec.call("GET", f"/groups/{rec.ids['/ops']}")
        await rec.call("PUT", f"/groups/{rec.ids['/ops']}", {**group, "name": "operations"})
        rec.ids["/operations"] = rec.ids.pop("/ops")
        rec.ids["/operations/platform"] = rec.ids.pop("/ops/platform")
        await rec.call("GET", f"/groups/{rec.ids['/operations/platform']}")


@dataclass
class Reader:
    """GETs as the service will make them: a service account's token (client credentials)."""

    session: aiohttp.ClientSession
    base: str
    account: ServiceAccount
    token: str = ""

    async def login(self) -> None:
        """A client-credentials token request: Keycloak fires a CLIENT_LOGIN user event for it."""
        async with self.session.post(
            f"{self.base}/realms/{self.account.realm}/protocol/openid-connect/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.account.client_id,
                "client_secret": self.account.client_secret,
            },
        ) as response:
            response.raise_for_status()
            self.token = (await response.json())["access_token"]

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        if not self.token:
            await self.login()
        url = f"{self.base}/admin/realms/{self.account.realm}{path}"
        async with self.session.get(url, params=params, headers={"Authorization": f"Bearer {self.token}"}) as answer:
            raw = await answer.read()
            return {
                "request": f"GET /admin/realms/{self.account.realm}{path}",
                **({"params": params} if params else {}),
                "status": answer.status,
                "answer": json.loads(raw) if raw else None,
            }


async def record_admin_api(rec: Recorder, reader: Reader) -> None:
    """The Admin API answers backfill and reconciliation read, over a small tree."""
    await rec.group("/sales")
    await rec.group("/support")
    for tier in ("tier1", "tier2", "tier3"):
        await rec.group(f"/support/{tier}", parent="/support")
    await rec.group("/support/tier1/night", parent="/support/tier1")
    for name in ("dave", "erin", "frank"):
        rec.ids[f"user:{name}"] = await rec.call(
            "POST", "/users", {"username": name, "email": f"{name}@example.com", "enabled": True}
        )
    for user, group in (
        ("alice", "/support"),
        ("bob", "/support"),
        ("carol", "/support"),
        ("dave", "/support"),
        ("erin", "/support"),
        ("bob", "/support/tier1"),
        ("bob", "/operations/platform"),
        ("bob", "/support/tier1/night"),
        ("frank", "/support/tier2"),
    ):
        await rec.call("PUT", f"/users/{rec.ids['user:' + user]}/groups/{rec.ids[group]}")
    await rec.discard()

    support, tier1, bob = rec.ids["/support"], rec.ids["/support/tier1"], rec.ids["user:bob"]
    files: dict[str, tuple[str, list[tuple[str, dict[str, str]]]]] = {
        "api-01-groups": (
            "GET /groups: top-level groups; brief by default, full with briefRepresentation=false, paged with "
            "first/max, a search, and subGroupsCount=false",
            [
                ("/groups", {}),
                ("/groups", {"briefRepresentation": "false"}),
                ("/groups", {"first": "0", "max": "2"}),
                ("/groups", {"first": "2", "max": "2"}),
                ("/groups", {"first": "4", "max": "2"}),
                ("/groups", {"search": "night"}),
                ("/groups", {"search": "night", "briefRepresentation": "false"}),
                ("/groups", {"q": "costCenter:4711"}),
                ("/groups", {"subGroupsCount": "false"}),
            ],
        ),
        "api-02-group": (
            "GET /groups/{id} for a top-level group with sub-groups, a sub-group, and GET /group-by-path",
            [
                (f"/groups/{support}", {}),
                (f"/groups/{tier1}", {}),
                (f"/groups/{rec.ids['/operations']}", {}),
                ("/group-by-path/support/tier1", {}),
            ],
        ),
        "api-03-children": (
            "GET /groups/{id}/children, paged, brief and full",
            [
                (f"/groups/{support}/children", {}),
                (f"/groups/{support}/children", {"first": "0", "max": "2"}),
                (f"/groups/{support}/children", {"first": "2", "max": "2"}),
                (f"/groups/{support}/children", {"briefRepresentation": "false"}),
                (f"/groups/{tier1}/children", {}),
            ],
        ),
        "api-04-members": (
            "GET /groups/{id}/members, paged (first/max), briefRepresentation true and default; frank is a "
            "member of /support/tier2 only",
            [
                (f"/groups/{support}/members", {}),
                (f"/groups/{support}/members", {"first": "0", "max": "2", "briefRepresentation": "true"}),
                (f"/groups/{support}/members", {"first": "2", "max": "2", "briefRepresentation": "true"}),
                (f"/groups/{support}/members", {"first": "4", "max": "2", "briefRepresentation": "true"}),
                (f"/groups/{tier1}/members", {"briefRepresentation": "true"}),
                (f"/groups/{rec.ids['/support/tier2']}/members", {"briefRepresentation": "true"}),
                (f"/groups/{rec.ids['/sales']}/members", {}),
            ],
        ),
        "api-05-user-groups": (
            "GET /users/{bob}/groups (brief default, full), paged, and its count; frank's (in /support/tier2 only)",
            [
                (f"/users/{rec.ids['user:frank']}/groups", {}),
                (f"/users/{bob}/groups", {}),
                (f"/users/{bob}/groups", {"briefRepresentation": "false"}),
                (f"/users/{bob}/groups", {"first": "0", "max": "2"}),
                (f"/users/{bob}/groups/count", {}),
            ],
        ),
        "api-06-groups-count": (
            "GET /groups/count: all groups, top-level only, and with a search",
            [("/groups/count", {}), ("/groups/count", {"top": "true"}), ("/groups/count", {"search": "tier"})],
        ),
    }
    roles = "service account with realm-management view-users and query-users (what the service is given)"
    for name, (what, requests) in files.items():
        answers = [await reader.get(path, **params) for path, params in requests]
        doc = {"what": what, "keycloak": rec.keycloak_version, "as": roles, "ids": dict(rec.ids), "calls": answers}
        write(rec.out / f"{name}.json", doc)
        print(f"{name}: {[a['status'] for a in answers]}", file=sys.stderr)
    await record_default_page_sizes(rec, reader, roles)


async def record_default_page_sizes(rec: Recorder, reader: Reader, roles: str) -> None:
    """What the list endpoints return when the caller gives no `max`: 12 top-level groups, 11 children of
    /sales, 101 members of /bulk (answers brief, to keep the file small)."""
    for i in range(1, 10):
        await rec.group(f"/t{i:02d}")
    for i in range(1, 12):
        await rec.group(f"/sales/r{i:02d}", parent="/sales")
    bulk = await rec.group("/bulk")
    for i in range(1, 102):
        user = await rec.call("POST", "/users", {"username": f"bulk{i:03d}", "enabled": True})
        await rec.call("PUT", f"/users/{user}/groups/{bulk}")
    await rec.discard()
    requests = [
        ("/groups", {}),
        ("/groups/count", {"top": "true"}),
        (f"/groups/{rec.ids['/sales']}/children", {}),
        (f"/groups/{rec.ids['/sales']}/children", {"first": "10"}),
        (f"/groups/{rec.ids['/sales']}", {}),
        (f"/groups/{bulk}/members", {"briefRepresentation": "true"}),
        (f"/groups/{bulk}/members", {"briefRepresentation": "true", "first": "100"}),
        (f"/groups/{bulk}/members", {"briefRepresentation": "true", "max": "-1"}),
    ]
    answers = [await reader.get(path, **params) for path, params in requests]
    counts = [len(a["answer"]) if isinstance(a["answer"], list) else None for a in answers]  # list lengths
    ids = {k: v for k, v in rec.ids.items() if k in ("/sales", "/bulk")}
    doc = {
        "what": "GET list endpoints without max: 12 top-level groups, 11 children of /sales, 101 members of /bulk",
        "keycloak": rec.keycloak_version,
        "as": roles,
        "ids": ids,
        "lengths": counts,
        "calls": answers,
    }
    write(rec.out / "api-07-default-page-sizes.json", doc)
    print(f"api-07-default-page-sizes: {[a['status'] for a in answers]} lengths {counts}", file=sys.stderr)


def listener() -> str:
    return os.environ.get("KEYCLOAK_LISTENER", kc_fixture.LISTENER)


async def record(url: str, user: str, password: str, topics: Topics, out: Path) -> None:
    try:
        await topics.open()
        async with aiohttp.ClientSession() as session:
            admin = MasterAdmin(session, url, user, password)
            realm = f"groups-{uuid.uuid4().hex[:6]}"
            realm_id = await admin.create_realm(realm)
            account = await admin.create_service_account(realm, "outbound-scim")
            rec = Recorder(admin, topics, realm, realm_id, out)
            rec.keycloak_version = await version(session, admin, url)
            for name in ("bob", "carol"):  # before the listener is on: not part of any step
                rec.ids[f"user:{name}"] = await admin.create_user(
                    realm, {"username": name, "email": f"{name}@example.com", "enabled": True}
                )
            status, doc = await admin.enable_listener(realm, listener(), representation=True)
            if status != 204:
                raise RuntimeError(f"enabling the listener {listener()} -> {status} {doc}")
            reader = Reader(session, url, account)
            await record_events(rec, reader)
            await record_admin_api(rec, reader)
    finally:
        await topics.close()


async def version(session: aiohttp.ClientSession, admin: MasterAdmin, url: str) -> str:
    """Keycloak's version from /admin/serverinfo (outside /admin/realms, so not through admin.call)."""
    headers = await admin._headers()
    async with session.get(f"{url.rstrip('/')}/admin/serverinfo", headers=headers) as response:
        response.raise_for_status()
        return str((await response.json())["systemInfo"]["version"])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.keycloak.record_group_events OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="record-groups-") as tmp:
        scratch = Path(tmp)
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        broker = None
        if not bootstrap:
            broker = scratch / "kafka"
            bootstrap = start_broker(broker)
            print(f"broker {bootstrap} ({time.monotonic() - began:.1f} s)", file=sys.stderr)
        keycloak = None
        try:
            if url := os.environ.get("KEYCLOAK_URL"):
                user = os.environ.get("KEYCLOAK_ADMIN_USER", "admin")
                password = os.environ.get("KEYCLOAK_ADMIN_PASSWORD", "admin")
                topics = Topics(
                    bootstrap,
                    os.environ.get("KEYCLOAK_KAFKA_TOPIC", "keycloak-events"),
                    os.environ.get("KEYCLOAK_KAFKA_ADMIN_TOPIC", "keycloak-admin-events"),
                )
            else:
                fetched = kc_fixture.fetch()
                if fetched.returncode != 0:
                    raise RuntimeError(f"keycloak.sh fetch failed:\n{fetched.stderr[-3000:]}")
                keycloak = kc_fixture.launch(
                    bootstrap, scratch / "keycloak", partitions=1, env={"KEYCLOAK_KAFKA_EVENTS": ALL_USER_EVENTS}
                )
                print(f"keycloak {keycloak.url} (started in {keycloak.start_seconds:.1f} s)", file=sys.stderr)
                assert keycloak.events_topic and keycloak.admin_events_topic
                url, user, password = keycloak.url, keycloak.admin_user, keycloak.admin_password
                topics = Topics(bootstrap, keycloak.events_topic, keycloak.admin_events_topic)
            asyncio.run(record(url, user, password, topics, out))
        finally:
            if keycloak is not None:
                kc_fixture.stop(keycloak)
            if broker is not None:
                stop_broker(broker)
    print(f"recorded into {out} in {time.monotonic() - began:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
