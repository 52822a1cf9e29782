"""Groups read from a real Keycloak (see conftest.py) through a service account holding realm-management
view-users and query-users: a backfill with groups publishes exactly the realm's groups and direct
memberships to a changes topic on the real broker, read back here; and the single reads the applier
makes (get_group, user_groups) answer as Keycloak stores the groups.

The tree: /eng (alice, bob), /eng/backend (carol), /ops (dave) with 12 sub-groups /ops/c01 .. /ops/c12
(more than the 10 Keycloak answers for /children without `max`), bob in /ops/c11 and erin in /ops/c12.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from service.domain.changes import UserChange, decode_change
from service.domain.groups import GroupChange
from service.domain.stamps import ChangeSource
from service.keycloak_admin import KeycloakAdminClient, KeycloakNotFound
from service.metrics import Metrics
from service.pipeline.backfill import BackfillProgress, Backfills
from service.retry import RetryPolicy
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, ServiceAccount
from tests.support import wait_until

RETRY = RetryPolicy(attempts=3, base_seconds=0.1, max_seconds=1.0)
USERS = ("alice", "bob", "carol", "dave", "erin")
OPS_CHILDREN = 12
GROUP_NOT_FOUND = {
    "error": "Could not find group by id"
}  # what the replayed server in test_admin_client_groups answers


@dataclass
class Tree:
    realm: str
    account: ServiceAccount
    users: dict[str, str]  # name -> id
    groups: dict[str, tuple[str, str, str | None]]  # path -> (id, name, parent id)
    members: set[tuple[str, str]]  # (user id, group id), direct memberships


@pytest.fixture(scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(scope="module")
async def admin(keycloak: RealKeycloak, session: aiohttp.ClientSession) -> MasterAdmin:
    return MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)


@pytest.fixture(scope="module")
async def tree(admin: MasterAdmin) -> Tree:
    realm = f"gr-{uuid.uuid4().hex[:8]}"
    await admin.create_realm(realm)
    account = await admin.create_service_account(realm, "outbound-scim")
    users = {
        name: await admin.create_user(realm, {"username": name, "email": f"{name}@example.com", "enabled": True})
        for name in USERS
    }
    groups: dict[str, tuple[str, str, str | None]] = {}

    async def create(path: str) -> None:
        parent_path, name = path.rsplit("/", 1)
        parent = groups[parent_path][0] if parent_path else None
        where = f"/{realm}/groups" + (f"/{parent}/children" if parent else "")
        created = await admin.ok("POST", where, {"name": name})  # the id from Location, or the group as body
        groups[path] = (created if isinstance(created, str) else created["id"], name, parent)

    for path in ("/eng", "/eng/backend", "/ops", *(f"/ops/c{i:02d}" for i in range(1, OPS_CHILDREN + 1))):
        await create(path)
    members = {("alice", "/eng"), ("bob", "/eng"), ("carol", "/eng/backend"), ("dave", "/ops")}
    members |= {("bob", "/ops/c11"), ("erin", "/ops/c12")}
    for user, path in sorted(members):
        await admin.ok("PUT", f"/{realm}/users/{users[user]}/groups/{groups[path][0]}")
    return Tree(realm, account, users, groups, {(users[u], groups[p][0]) for u, p in members})


def reader(keycloak: RealKeycloak, session: aiohttp.ClientSession, tree: Tree) -> KeycloakAdminClient:
    account = tree.account
    return KeycloakAdminClient(
        session, keycloak.url, account.client_id, account.client_secret, auth_realm=account.realm, retry=RETRY
    )


async def run_backfill(kc: KeycloakAdminClient, bootstrap: str, realm: str, page_size: int) -> tuple[str, int]:
    """A groups backfill into a fresh single-partition topic (so the topic's order is the publish order);
    returns the topic and the wall-clock ms just before the backfill started."""
    topic = f"changes-{uuid.uuid4().hex[:8]}"
    kafka_admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await kafka_admin.start()
    try:
        await kafka_admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await kafka_admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        started_ms = int(time.time() * 1000)
        backfills = Backfills(kc, producer, topic, Metrics(CollectorRegistry()), page_size=page_size)
        progress = backfills.start(realm, groups=True)

        async def finished() -> bool:
            return progress.state != "running"

        await wait_until(finished, timeout=60, what="the groups backfill finished")
        assert progress.state == "done", progress.error
        check_progress(progress)
    finally:
        await producer.stop()
    return topic, started_ms


def check_progress(progress: BackfillProgress) -> None:
    assert (progress.done, progress.groups, progress.memberships) == (len(USERS), 3 + OPS_CHILDREN, 6)


async def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes, bytes, int]]:
    """Every record of the topic's only partition up to its end: (key, value, timestamp ms)."""
    partition = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        records: list[tuple[bytes, bytes, int]] = []
        while await consumer.position(partition) < end:
            batch = await consumer.getmany(partition, timeout_ms=1000)
            records += [(r.key or b"", r.value or b"", r.timestamp) for r in batch.get(partition, [])]
        return records
    finally:
        await consumer.stop()


@pytest.mark.parametrize("page_size", [100, 4])
async def test_a_groups_backfill_publishes_exactly_the_realms_groups_and_memberships(
    keycloak: RealKeycloak, kafka_bootstrap: str, session: aiohttp.ClientSession, tree: Tree, page_size: int
) -> None:
    """After one upsert per user: one upsert per group (all 15, the 11th and 12th child of /ops included)
    with its name and parent, a parent before its children, and one membership per direct membership,
    each on its key; every change read before it was published, and not before the backfill began.
    Page size 100 is over Keycloak's default caps (10 children), 4 makes every listing page."""
    topic, started_ms = await run_backfill(reader(keycloak, session, tree), kafka_bootstrap, tree.realm, page_size)
    records = await read_topic(kafka_bootstrap, topic)
    changes = [decode_change(value) for _, value, _ in records]
    for (key, _, published_ms), change in zip(records, changes, strict=True):
        assert key == change.key.encode()
        assert started_ms <= change.time_ms <= published_ms, (change, published_ms)

    users = [c for c in changes if isinstance(c, UserChange) and c.op == "upsert"]
    assert changes[: len(users)] == users, "users come first"
    assert sorted(c.user_id for c in users) == sorted(tree.users.values())

    groups = [c for c in changes if isinstance(c, GroupChange)]
    assert sorted((g.group_id, g.name, g.parent) for g in groups) == sorted(tree.groups.values())
    assert all(
        (g.op, g.event_type, g.source, g.parent_known, g.force)
        == ("upsert", "BACKFILL", ChangeSource.BACKFILL, True, False)
        for g in groups
    )
    position = {g.group_id: i for i, g in enumerate(changes) if isinstance(g, GroupChange)}
    assert all(position[g.parent] < position[g.group_id] for g in groups if g.parent is not None)

    memberships = [c for c in changes if isinstance(c, UserChange) and c.op == "membership"]
    assert sorted((m.user_id, m.group_id or "") for m in memberships) == sorted(tree.members)
    assert all((m.event_type, m.source, m.member) == ("BACKFILL", ChangeSource.BACKFILL, True) for m in memberships)
    assert len(changes) == len(users) + len(groups) + len(memberships)


async def test_get_group_reads_the_stored_group_and_none_only_when_keycloak_says_so(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, admin: MasterAdmin, tree: Tree
) -> None:
    """A sub-group with its path and parent; an unknown id is Keycloak's "Could not find group by id"
    (None); an unknown realm raises."""
    kc = reader(keycloak, session, tree)
    backend, _, eng = tree.groups["/eng/backend"]
    assert await kc.get_group(tree.realm, backend) == {
        "id": backend,
        "name": "backend",
        "path": "/eng/backend",
        "parent": eng,
    }
    assert await admin.call("GET", f"/{tree.realm}/groups/no-such-group") == (404, GROUP_NOT_FOUND, None)
    assert await kc.get_group(tree.realm, "no-such-group") is None
    with pytest.raises(KeycloakNotFound) as caught:
        await kc.get_group(f"{tree.realm}-gone", backend)
    assert not caught.value.group_missing


async def test_user_groups_are_the_users_direct_groups(
    keycloak: RealKeycloak, session: aiohttp.ClientSession, tree: Tree
) -> None:
    """bob is a direct member of /eng and /ops/c11 (not of /ops, /ops/c11's parent)."""
    kc = reader(keycloak, session, tree)
    groups = await kc.user_groups(tree.realm, tree.users["bob"])
    assert sorted((g["path"], g["parent"]) for g in groups) == [
        ("/eng", None),
        ("/ops/c11", tree.groups["/ops"][0]),
    ]
    with pytest.raises(KeycloakNotFound) as caught:
        await kc.user_groups(tree.realm, "no-such-user")
    assert caught.value.user_missing
