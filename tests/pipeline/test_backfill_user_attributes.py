"""A backfill of a realm whose tenant maps Keycloak user attributes reads whole users (a brief user has
no `attributes`) and says, for each, every attribute it has; otherwise it reads brief users as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry

from service.domain.mapping import ENTERPRISE_USER, parse_mapping
from service.domain.sighting import Seen, account_of
from service.keycloak_admin.client import UserPage
from service.metrics import Metrics
from service.pipeline.backfill import Backfills
from service.scim.client import UserSnapshot
from service.tenants.models import Tenant
from tests.pipeline.test_backfill_listing import Producer, Realm, Snapshots
from tests.support import wait_until

MAPPED = parse_mapping(
    [
        {"source": "username", "target": "userName"},
        {"source": "attributes.dept", "target": f"{ENTERPRISE_USER}:department"},
    ]
)


class WholeUsers(Realm):
    """Whole users carry `attributes` (the first one has two values, the second none); brief ones do not."""

    def __init__(self) -> None:
        super().__init__(2, 10)
        self.users = [{**user, "email": f"{user['username']}@example.com"} for user in self.users]
        self.brief: list[bool] = []

    async def iter_user_pages(self, realm: str, page_size: int, *, brief: bool = False) -> AsyncIterator[UserPage]:
        self.brief.append(brief)
        whole: list[dict[str, Any]] = [{**self.users[0], "attributes": {"dept": ["Ops", "Sales"]}}, self.users[1]]
        yield UserPage(1_000, self.users if brief else whole)


class OneTenant:
    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant

    def get(self, realm: str) -> Tenant | None:
        return self.tenant


async def backfill(tenant: Tenant, snapshots: Snapshots | None = None) -> tuple[WholeUsers, Producer]:
    realm, producer = WholeUsers(), Producer()
    metrics = Metrics(CollectorRegistry())
    backfills = Backfills(realm, producer, "changes", metrics, 10, tenants=OneTenant(tenant), downstream=snapshots)
    progress = backfills.start("acme")

    async def finished() -> bool:
        return progress.state != "running"

    await wait_until(finished, timeout=5, what="backfill")
    return realm, producer


async def test_a_mapping_of_user_attributes_makes_the_backfill_read_whole_users() -> None:
    """Whole users are read; each change lists all of the user's attributes (first values), complete."""
    realm, producer = await backfill(replace(Tenant("acme", "https://scim.example", "t"), mapping=MAPPED))
    assert realm.brief == [False]
    assert [(dict(c.user_attributes), c.user_attributes_complete) for c in producer.sent] == [
        ({"dept": "Ops"}, True),
        ({}, True),
    ]


async def test_the_default_mapping_keeps_brief_users() -> None:
    """No user attribute mapped: brief users, and the changes say nothing of user attributes."""
    realm, producer = await backfill(Tenant("acme", "https://scim.example", "t"))
    assert realm.brief == [True]
    assert [(dict(c.user_attributes), c.user_attributes_complete) for c in producer.sent] == [({}, False)] * 2


async def test_the_listing_is_matched_on_the_user_name_the_mapping_sends() -> None:
    """userName from email: an account holding u0's email (not ours) is seen as holding its userName."""
    held = account_of({"id": "d-9", "userName": "u0@example.com", "externalId": "someone-else"}, "d-9")
    by_email = parse_mapping([{"source": "email", "target": "userName"}])
    tenant = replace(Tenant("acme", "https://scim.example", "t"), mapping=by_email)
    _, producer = await backfill(tenant, Snapshots(UserSnapshot([held], True)))
    assert [c.sighting.seen if c.sighting else None for c in producer.sent] == [Seen.HELD, Seen.ABSENT]
