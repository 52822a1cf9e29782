"""Changes read from Keycloak carry the time taken just before the read that returned the user (the
page request, the single-user GET), never the later time they are published: a live change Keycloak
applied after the read must win the per-attribute time rule (service.domain.state)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CollectorRegistry

from service.domain.changes import UserChange
from service.keycloak_admin.client import GroupPage, UserPage
from service.metrics import Metrics
from service.pipeline.authoritative import read_truth
from service.pipeline.backfill import Backfills
from service.pipeline.reconcile import Reconciler
from service.retry import RetryPolicy
from service.scim.client import Downstream
from tests.support import wait_until


def user(user_id: str, enabled: bool = True) -> dict[str, Any]:
    return {
        "id": user_id,
        "username": user_id,
        "firstName": "F",
        "lastName": "L",
        "email": f"{user_id}@x.io",
        "enabled": enabled,
    }


# Two pages read at 1,000 ms and 5,000 ms; the clock is far later when anything is published.
PAGES = [UserPage(1_000, [user("u1"), user("u2")]), UserPage(5_000, [user("u3", enabled=False)])]


class PagedKeycloak:
    def __init__(self, pages: list[UserPage]) -> None:
        self.pages = pages
        self.page_sizes: list[int] = []

    async def count_users(self, realm: str) -> int:
        return sum(len(p.users) for p in self.pages)

    async def iter_user_pages(self, realm: str, page_size: int, *, brief: bool = False) -> AsyncIterator[UserPage]:
        self.page_sizes.append(page_size)
        for page in self.pages:
            yield page

    async def iter_group_pages(self, realm: str, page_size: int) -> AsyncIterator[GroupPage]:
        none: tuple[GroupPage, ...] = ()  # a realm without groups
        for page in none:
            yield page

    async def iter_group_member_pages(self, realm: str, group_id: str, page_size: int) -> AsyncIterator[UserPage]:
        for page in self.pages[:0]:
            yield page


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[UserChange] = []

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append(UserChange.from_json(value))

    async def flush(self) -> None:
        return None


class EmptyDownstream:
    async def list_users(
        self, ds: Downstream, page_size: int = 500, *, retry: RetryPolicy | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        nothing: tuple[dict[str, Any], ...] = ()
        for resource in nothing:
            yield resource


async def test_backfill_stamps_each_user_with_its_pages_read_time() -> None:
    """Users of page 1 carry page 1's request time, users of page 2 page 2's; the page size is the one given."""
    keycloak, producer = PagedKeycloak(PAGES), RecordingProducer()
    backfills = Backfills(keycloak, producer, "changes", Metrics(CollectorRegistry()), page_size=2)
    progress = backfills.start("acme")

    async def finished() -> bool:
        return progress.state != "running"

    await wait_until(finished, timeout=5, what="backfill finished")
    assert progress.state == "done"
    assert [(c.user_id, c.time_ms, c.event_type) for c in producer.sent] == [
        ("u1", 1_000, "BACKFILL"),
        ("u2", 1_000, "BACKFILL"),
        ("u3", 5_000, "BACKFILL"),
    ]
    assert keycloak.page_sizes == [2]


async def test_reconcile_stamps_each_fix_with_its_pages_read_time() -> None:
    """Every user missing downstream is fixed with the request time of the Keycloak page that returned it."""
    keycloak, producer = PagedKeycloak(PAGES), RecordingProducer()
    reconciler = Reconciler(
        keycloak,
        EmptyDownstream(),
        producer,
        "changes",
        Metrics(CollectorRegistry()),
        page_size=2,
    )
    report = await reconciler.run(Downstream("acme", "https://scim.example", "t"), dry_run=False)
    assert report["fixes_queued"] == 3
    assert sorted((c.user_id, c.time_ms, c.force) for c in producer.sent) == [
        ("u1", 1_000, True),
        ("u2", 1_000, True),
        ("u3", 5_000, True),
    ]
    assert keycloak.page_sizes == [2]


class SlowClockKeycloak:
    """get_user moves the clock on by 30 s while the read is in flight."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock

    async def get_user(self, realm: str, user_id: str) -> dict[str, Any] | None:
        self.clock[0] += 30.0
        return user(user_id)


async def test_read_truth_stamps_the_time_before_the_read() -> None:
    """An authoritative re-read is as old as the moment its GET left, not the moment it came back."""
    clock = [100.0]
    change = UserChange("acme", "u1", "upsert", 10, "USER_UPDATE", attributes={"active": False})
    truth = await read_truth(SlowClockKeycloak(clock), change, clock=lambda: clock[0])
    assert truth.time_ms == 100_000
    assert clock[0] == 130.0


async def test_read_truth_never_stamps_earlier_than_the_event() -> None:
    """An event from a Keycloak node whose clock runs ahead keeps its own time."""
    clock = [100.0]
    change = UserChange("acme", "u1", "upsert", 200_000, "USER_UPDATE", attributes={"active": False})
    truth = await read_truth(SlowClockKeycloak(clock), change, clock=lambda: clock[0])
    assert truth.time_ms == 200_000
