"""Backfill with a listing of the downstream (one request per user) and Keycloak pages read ahead,
against fakes of the listing Protocols (service.pipeline.ports)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CollectorRegistry

from service.domain.changes import UserChange, decode_change
from service.domain.sighting import Seen, account_of
from service.errors import ScimTransient
from service.keycloak_admin.client import GroupPage, UserPage
from service.metrics import Metrics
from service.pipeline.backfill import Backfills, ReadAhead
from service.retry import RetryPolicy
from service.scim.client import Downstream, UserSnapshot
from service.tenants.models import Tenant
from tests.support import wait_until

TENANT = Tenant("acme", "https://scim.example", "t")


def kc_user(i: int) -> dict[str, Any]:
    return {"id": f"kc-{i}", "username": f"u{i}", "firstName": "F", "enabled": True}


class Realm:
    """Users in pages of `page`; records when each page was requested, for the read-ahead."""

    def __init__(self, users: int, page: int) -> None:
        self.users = [kc_user(i) for i in range(users)]
        self.page = page
        self.requested: list[int] = []

    async def count_users(self, realm: str) -> int:
        return len(self.users)

    async def iter_user_pages(self, realm: str, page_size: int, *, brief: bool = False) -> AsyncIterator[UserPage]:
        for n, first in enumerate(range(0, len(self.users), self.page)):
            self.requested.append(n)
            yield UserPage(1_000 + n, self.users[first : first + self.page])

    async def iter_group_pages(self, realm: str, page_size: int) -> AsyncIterator[GroupPage]:
        return
        yield

    async def iter_group_member_pages(self, realm: str, group_id: str, page_size: int) -> AsyncIterator[UserPage]:
        return
        yield


class Producer:
    def __init__(self) -> None:
        self.sent: list[UserChange] = []

    async def send(self, topic: str, *, key: bytes, value: bytes) -> None:
        change = decode_change(value)
        assert isinstance(change, UserChange)
        self.sent.append(change)

    async def flush(self) -> None:
        return None


class Snapshots:
    def __init__(self, snapshot: UserSnapshot | Exception) -> None:
        self.snapshot = snapshot
        self.listed: list[Downstream] = []

    async def snapshot_users(
        self, ds: Downstream, page_size: int = 500, *, retry: RetryPolicy | None = None
    ) -> UserSnapshot:
        self.listed.append(ds)
        if isinstance(self.snapshot, Exception):
            raise self.snapshot
        return self.snapshot


class Tenants:
    def get(self, realm: str) -> Tenant | None:
        return TENANT if realm == "acme" else None


async def run(realm: Realm, snapshots: Snapshots) -> tuple[Producer, dict[str, Any]]:
    producer = Producer()
    backfills = Backfills(
        realm, producer, "changes", Metrics(CollectorRegistry()), 2, tenants=Tenants(), downstream=snapshots
    )
    progress = backfills.start("acme")

    async def finished() -> bool:
        return progress.state != "running"

    await wait_until(finished, timeout=5, what="backfill")
    return producer, progress.public()


def seen(producer: Producer) -> dict[str, Seen | None]:
    return {c.user_id: c.sighting.seen if c.sighting else None for c in producer.sent}


async def test_each_change_carries_what_a_complete_listing_saw() -> None:
    accounts = [
        account_of({"id": "d-1", "userName": "u1", "externalId": "kc-1", "active": True}, "d-1"),
        account_of({"id": "d-2", "userName": "U2", "externalId": "someone-else"}, "d-2"),
    ]
    producer, progress = await run(Realm(3, 2), Snapshots(UserSnapshot(accounts, True)))
    assert seen(producer) == {"kc-0": Seen.ABSENT, "kc-1": Seen.OURS, "kc-2": Seen.HELD}
    assert (progress["state"], progress["done"], progress["downstream_listed"]) == ("done", 3, 2)


async def test_an_empty_downstream_makes_every_change_a_direct_create() -> None:
    producer, _ = await run(Realm(5, 2), Snapshots(UserSnapshot([], True)))
    assert set(seen(producer).values()) == {Seen.ABSENT}


async def test_an_incomplete_or_failed_listing_says_nothing() -> None:
    """A listing that does not add up (or fails) proves nothing absent: each user is looked up as before."""
    for snapshot in (UserSnapshot([], False, "1 accounts listed of 2"), ScimTransient(503, "GET", "Users")):
        producer, progress = await run(Realm(3, 2), Snapshots(snapshot))
        assert set(seen(producer).values()) == {None}
        assert (progress["state"], progress["downstream_listed"]) == ("done", None)


async def test_keycloak_pages_are_read_ahead_of_the_publishing_but_bounded() -> None:
    """While the consumer holds page 0, pages 1 and 2 are fetched (depth 2 in the queue, one in hand at most);
    page 4 waits until the consumer takes more."""
    realm = Realm(10, 1)
    pages = ReadAhead(realm.iter_user_pages("acme", 1), 2)
    try:
        first = await pages.__anext__()
        await asyncio.sleep(0.01)
        assert first.read_started_ms == 1_000
        assert realm.requested == [0, 1, 2, 3]  # 1 and 2 queued, 3 fetched and waiting for room
        rest = [page.read_started_ms async for page in pages]
        assert rest == [1_000 + n for n in range(1, 10)]
    finally:
        await pages.aclose()


async def test_a_keycloak_failure_while_reading_ahead_fails_the_backfill() -> None:
    class Failing(Realm):
        async def iter_user_pages(self, realm: str, page_size: int, *, brief: bool = False) -> AsyncIterator[UserPage]:
            yield UserPage(1, self.users[:1])
            raise RuntimeError("keycloak went away")

    producer, progress = await run(Failing(3, 1), Snapshots(UserSnapshot([], True)))
    assert (progress["state"], len(producer.sent)) == ("failed", 1)
    assert "keycloak went away" in progress["error"]
