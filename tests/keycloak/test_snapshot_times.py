"""A long listing must not undo a change Keycloak applied while it ran (real Keycloak, its Kafka event
listener, real broker, service, scim2-server).

Backfill and reconciliation stamp each user with the time taken before the page request that returned
it. Here the listing of a 12-user realm (pages of 5) is held after its first page has been read; a user
of that page is disabled through the Admin API, and its live admin event flows through the listener
into the service, which applies it (the user shows disabled downstream); then the listing resumes and
publishes what page 1 said (the user enabled). That older read must lose: the user stays disabled.
The hold is instrumentation of the real client's page iterator, nothing is faked.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from service.app import Service
from service.keycloak_admin.client import KeycloakAdminClient, UserPage
from tests.conftest import SCIM_TOKEN
from tests.keycloak.conftest import RealKeycloak
from tests.keycloak.setup_realm import MasterAdmin, realm_with_listener
from tests.support import Api, ScimServer, by_external_id, downstream_users, running_service, wait_until

pytestmark = pytest.mark.integration

USERS = 12
PAGE_SIZE = 5  # pages of 5, 5 and 2


@dataclass
class PageGate:
    """Wraps the service's Keycloak client so that the first listing stops after reading its first
    page, before handing it on, until `resume` is set. Later listings pass straight through."""

    client: KeycloakAdminClient
    first_page_read: asyncio.Event = field(default_factory=asyncio.Event)
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    first_page: UserPage | None = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = self.client.iter_user_pages

        async def gated(realm: str, page_size: int = 100, *, brief: bool = False) -> AsyncIterator[UserPage]:
            async for page in original(realm, page_size, brief=brief):
                if self.first_page is None:
                    self.first_page = page
                    self.first_page_read.set()
                    await self.resume.wait()
                yield page

        monkeypatch.setattr(self.client, "iter_user_pages", gated)


@dataclass
class Setup:
    service: Service
    admin: MasterAdmin
    realm: str
    base_url: str
    gate: PageGate

    @property
    def api(self) -> Api:
        return Api(self.service.api_port or 0)

    async def downstream(self) -> dict[str, list[dict[str, Any]]]:
        return by_external_id(await downstream_users(self.base_url, SCIM_TOKEN))

    def changes_done(self) -> float:
        """Changes of this realm the apply stage has finished, whatever their outcome."""
        return sum(
            sample.value
            for family in self.service.metrics.registry.collect()
            if family.name == "outbound_scim_changes"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels.get("tenant") == self.realm
        )

    async def disable_during_the_hold(self) -> str:
        """Wait for the held first page, disable its first user in Keycloak, wait until the live event
        has made it disabled downstream; returns its id."""
        await asyncio.wait_for(self.gate.first_page_read.wait(), timeout=60)
        assert self.gate.first_page is not None and len(self.gate.first_page.users) == PAGE_SIZE
        victim: str = self.gate.first_page.users[0]["id"]
        assert self.gate.first_page.users[0]["enabled"] is True
        await self.admin.ok("PUT", f"/{self.realm}/users/{victim}", {"enabled": False})

        async def disabled_downstream() -> bool:
            found = (await self.downstream()).get(victim, [])
            return bool(found) and found[0].get("active") is False

        await wait_until(disabled_downstream, timeout=30, what="the live disable applied downstream")
        return victim

    async def all_applied(self, expected: int) -> None:
        async def done() -> bool:
            return self.changes_done() >= expected

        await wait_until(done, timeout=60, what=f"{expected} changes of {self.realm} applied")


@pytest.fixture
async def setup(
    keycloak: RealKeycloak, kafka_bootstrap: str, scim_server: ScimServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Setup]:
    """12 enabled users made before the realm enables the test listener (so none of their creations is
    an event), then a service reading the listener's topics, with Keycloak access and pages of 5."""
    listener = keycloak.kafka_listener()
    users = [
        {
            "username": f"st{i:02d}",
            "firstName": f"Given{i}",
            "lastName": "Test",
            "email": f"st{i:02d}@example.com",
            "enabled": True,
        }
        for i in range(USERS)
    ]
    async with aiohttp.ClientSession() as session:
        admin = MasterAdmin(session, keycloak.url, keycloak.admin_user, keycloak.admin_password)
        realm = f"st-{uuid.uuid4().hex[:8]}"
        settings = await realm_with_listener(
            admin,
            listener,
            kafka_bootstrap,
            realm,
            account_roles=("view-users", "query-users", "view-events"),
            users=users,
            keycloak_page_size=PAGE_SIZE,
            keycloak_event_listeners=listener.provider_id,
        )
        async with running_service(settings) as service:
            assert service.keycloak is not None
            gate = PageGate(service.keycloak)
            gate.install(monkeypatch)
            yield Setup(service, admin, realm, scim_server.base_url(realm), gate)
            gate.resume.set()  # never leave a listing held


async def test_a_disable_during_a_backfill_is_not_undone_by_its_older_read(setup: Setup) -> None:
    """Backfill held after page 1; a page-1 user disabled meanwhile (live event applied) stays disabled
    once the backfill publishes page 1, and every other user arrives enabled."""
    started = time.monotonic()
    status, body = await setup.api.call(
        "PUT", f"/tenants/{setup.realm}", {"base_url": setup.base_url, "token": SCIM_TOKEN, "backfill": True}
    )
    assert status == 201, body
    assert body["warnings"] == []
    victim = await setup.disable_during_the_hold()
    setup.gate.resume.set()

    await setup.all_applied(USERS + 1)  # every backfilled user and the live disable
    status, progress = await setup.api.call("GET", f"/tenants/{setup.realm}/backfill")
    assert (status, progress["state"], progress["done"]) == (200, "done", USERS)
    users = await setup.downstream()
    assert len(users) == USERS and all(len(found) == 1 for found in users.values())
    assert users[victim][0]["active"] is False, "the backfill's older read re-enabled the user"
    assert all(found[0]["active"] is True for user_id, found in users.items() if user_id != victim)
    print(f"\nFIGURES snapshot times, backfill: {time.monotonic() - started:.1f}s")


async def test_a_disable_during_a_reconciliation_is_not_undone_by_its_fix(setup: Setup) -> None:
    """Reconciliation (empty downstream) held after page 1; a page-1 user disabled meanwhile is found
    stale (Keycloak's page said enabled), and its fix, older than the disable, changes nothing."""
    started = time.monotonic()
    status, body = await setup.api.call(
        "PUT", f"/tenants/{setup.realm}", {"base_url": setup.base_url, "token": SCIM_TOKEN}
    )
    assert status == 201, body
    reconcile = asyncio.create_task(setup.api.call("POST", f"/tenants/{setup.realm}/reconcile", {"dry_run": False}))
    victim = await setup.disable_during_the_hold()
    setup.gate.resume.set()
    status, report = await reconcile
    assert status == 200, report
    assert (report["missing"]["count"], report["fixes_queued"]) == (USERS - 1, USERS)
    assert report["stale"]["users"] == [{"id": victim, "attributes": ["active"]}]

    await setup.all_applied(USERS + 1)  # every fix and the live disable
    users = await setup.downstream()
    assert len(users) == USERS and all(len(found) == 1 for found in users.values())
    assert users[victim][0]["active"] is False, "the reconciliation's older read re-enabled the user"
    assert all(found[0]["active"] is True for user_id, found in users.items() if user_id != victim)
    print(f"\nFIGURES snapshot times, reconciliation: {time.monotonic() - started:.1f}s")
