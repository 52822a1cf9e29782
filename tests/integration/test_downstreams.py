"""Several downstream apps of one realm: the realm's default downstream and a second app, `crm`, each on a
scim2-server of its own (their latency must not depend on what other tests left in the session's server)
with a token of its own, crm behind a fault proxy that can take it down. Each receives every change, in
order; one down leaves the other current; each has its metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import pytest

from tests import events as ev
from tests.conftest import SCIM_TOKEN
from tests.faults import FaultProxy
from tests.integration.conftest import Pipeline
from tests.support import (
    Api,
    Publisher,
    ScimServer,
    by_external_id,
    create_source_topics,
    downstream_users,
    make_settings,
    running_service,
    start_scim_server,
    wait_until,
)

CRM_TOKEN = "crm-downstream-token"
USERS = 20
SETTINGS = {
    "change_retry_budget_seconds": 60.0,
    "breaker_threshold": 3,
    "breaker_open_seconds": 1.0,
    "breaker_max_open_seconds": 4.0,
}


@pytest.fixture
def default_server() -> Iterator[ScimServer]:
    server = start_scim_server(SCIM_TOKEN)
    yield server
    server.stop()


@pytest.fixture
def crm_server() -> Iterator[ScimServer]:
    server = start_scim_server(CRM_TOKEN)
    yield server
    server.stop()


@pytest.fixture
async def crm_proxy(crm_server: ScimServer) -> AsyncIterator[FaultProxy]:
    faults = await FaultProxy(f"http://127.0.0.1:{crm_server.port}").start()
    yield faults
    await faults.stop()


@pytest.fixture
async def two_apps(
    kafka_bootstrap: str, default_server: ScimServer, crm_server: ScimServer, crm_proxy: FaultProxy
) -> AsyncIterator[tuple[Pipeline, str, str]]:
    """A running service with realm R enabled twice: `default` on one scim2-server, `crm` on another through
    the proxy. Yields (pipeline, R, the crm app's base URL read directly)."""
    settings = make_settings(kafka_bootstrap, **SETTINGS)
    await create_source_topics(settings)
    async with running_service(settings) as service, Publisher(kafka_bootstrap) as publisher:
        pipeline = Pipeline(settings, service, Api(service.api_port or 0), publisher, default_server)
        realm = pipeline.realm()
        await pipeline.enable(realm)
        status, body = await pipeline.api.call(
            "PUT", f"/tenants/{realm}/downstreams/crm", {"base_url": crm_proxy.base_url(realm), "token": CRM_TOKEN}
        )
        assert (status, body["downstream"], body["realm"]) == (201, "crm", realm), body
        assert CRM_TOKEN not in str(body)
        crm_base = crm_server.base_url(realm)
        # Stage 1 (a child process) learns of `crm` from the tenants topic: a first user reaching both apps
        # says it has (an event routed before it had would reach crm by a backfill, not by itself).
        await pipeline.admin(ev.create_user(realm, "probe", "probe"))
        await pipeline.wait_user(realm, "probe", userName="probe")
        await wait_until(
            lambda: _has(crm_base, "probe"), timeout=30, what="the probe user at the crm app (stage 1 knows it)"
        )
        yield pipeline, realm, crm_base


async def _has(base: str, user_id: str) -> bool:
    return user_id in by_external_id(await downstream_users(base, CRM_TOKEN))


async def _counted(pipeline: Pipeline, realm: str, downstream: str, expected: int) -> bool:
    """outbound_scim_changes_total of one downstream, summed over its outcomes, is `expected`."""
    total = sum(
        sample.value
        for family in pipeline.service.metrics.changes.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels["tenant"] == realm
        and sample.labels["downstream"] == downstream
    )
    assert total <= expected, f"{downstream}: {total} changes counted, {expected} sent"
    return total == expected


def interleaved(realm: str, prefix: str) -> list[dict[str, Any]]:
    """Each user's create, three renames and a final enable or disable, the users' steps interleaved."""
    histories = [
        [
            ev.create_user(realm, f"{prefix}{n}", f"{prefix}-{n}", "First", "L0"),
            *(ev.update_user(realm, f"{prefix}{n}", lastName=f"L{v}") for v in (1, 2, 3)),
            ev.update_user(realm, f"{prefix}{n}", enabled=n % 2 == 0),
        ]
        for n in range(USERS)
    ]
    return [history[step] for step in range(5) for history in histories]


def all_current(users: list[dict[str, Any]], prefix: str) -> bool:
    """Every user once, in its last state (no duplicate, no lost or reordered change)."""
    found = by_external_id(users)
    for n in range(USERS):
        matches = found.get(f"{prefix}{n}", [])
        assert len(matches) <= 1, f"{len(matches)} accounts for {prefix}{n}"
        if not matches or matches[0]["name"]["familyName"] != "L3" or matches[0]["active"] is not (n % 2 == 0):
            return False
    return True


async def test_each_downstream_of_a_realm_receives_the_same_interleaved_changes(
    two_apps: tuple[Pipeline, str, str],
) -> None:
    """Twenty users' creates, renames and (de)activations, interleaved across users and partitions: both
    apps end with every user once in its last state; each app's writes are counted under its own
    `downstream` label, and each is listed under the realm."""
    pipeline, realm, crm_base = two_apps
    await pipeline.admin(*interleaved(realm, "u"), partitions=3)

    async def default_current() -> bool:
        return all_current(await pipeline.users(realm), "u")

    async def crm_current() -> bool:
        return all_current(await downstream_users(crm_base, CRM_TOKEN), "u")

    await wait_until(default_current, timeout=60, what="every user current at the default app")
    await wait_until(crm_current, timeout=60, what="every user current at the crm app")
    for downstream in ("default", "crm"):
        # every change of the realm (and the probe) counted once under each downstream, whatever its outcome
        await wait_until(partial(_counted, pipeline, realm, downstream, 5 * USERS + 1), what=f"{downstream} counted")
        requests = sum(
            pipeline.counter(
                "outbound_scim_scim_requests_total", tenant=realm, downstream=downstream, method=m, status_class="2xx"
            )
            for m in ("GET", "POST", "PATCH", "PUT")
        )
        assert requests > 0, downstream  # its own series (writes may go out as /Bulk POSTs)
    status, listed = await pipeline.api.call("GET", f"/tenants/{realm}/downstreams")
    assert (status, [d["downstream"] for d in listed["downstreams"]]) == (200, ["crm", "default"])


async def test_a_downstream_that_is_down_leaves_the_other_current(
    two_apps: tuple[Pipeline, str, str], crm_proxy: FaultProxy
) -> None:
    """The crm app goes down: the default app still gets every change while crm's breaker opens and its
    changes park (counted under crm only); when crm comes back it catches up by itself."""
    pipeline, realm, crm_base = two_apps
    crm_proxy.down = True
    await pipeline.admin(*interleaved(realm, "d"), partitions=3)

    async def default_current() -> bool:
        return all_current(await pipeline.users(realm), "d")

    await wait_until(default_current, timeout=60, what="every user current at the default app while crm is down")

    async def crm_open() -> bool:
        status, body = await pipeline.api.call("GET", f"/tenants/{realm}/downstreams/crm")
        return status == 200 and body["circuit"] in ("open", "half_open")

    await wait_until(crm_open, timeout=30, what="the crm app's breaker open")
    status, default = await pipeline.api.call("GET", f"/tenants/{realm}")
    assert (status, default["circuit"]) == (200, "closed")
    assert pipeline.counter("outbound_scim_parked_total", tenant=realm, downstream="crm", reason="circuit_open") > 0
    assert (
        pipeline.counter("outbound_scim_parked_total", tenant=realm, downstream="default", reason="circuit_open") == 0
    )

    crm_proxy.down = False

    async def crm_current() -> bool:
        return all_current(await downstream_users(crm_base, CRM_TOKEN), "d")

    await wait_until(crm_current, timeout=90, what="the crm app caught up by itself")
    assert pipeline.counter("outbound_scim_replayed_total", tenant=realm, downstream="crm") > 0
