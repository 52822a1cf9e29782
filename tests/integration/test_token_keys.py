"""Token-key rotation on the real broker and scim2-server: a tenant record the service cannot decrypt holds
its realm (unready, changes waiting or parked, never skipped) until the key is back or the realm is
enabled again; `reencrypt-tenants` moves records to the first key so the old one can go."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from service.app import Service
from service.settings import Settings
from tests import events as ev
from tests.conftest import SCIM_TOKEN
from tests.support import (
    ROOT,
    Api,
    Publisher,
    ScimServer,
    by_external_id,
    create_source_topics,
    downstream_users,
    make_settings,
    running_service,
    settings_env,
    wait_until,
)

pytestmark = pytest.mark.integration

UNREADABLE = "does not decrypt with any OUTBOUND_SCIM_TOKEN_KEY"


def with_keys(settings: Settings, keys: str, **overrides: Any) -> Settings:
    """The same topics and groups (a restart of the same deployment), with other token keys."""
    return settings.model_copy(update={"token_key": SecretStr(keys), **overrides})


@asynccontextmanager
async def assigned_service(settings: Settings) -> AsyncIterator[Service]:
    """A service that has loaded its tenants and been assigned its partitions, ready or not."""
    service = Service(settings)
    await service.start()
    try:

        async def assigned() -> bool:
            return bool(service.apply and service.apply.assigned.is_set())

        await wait_until(assigned, timeout=60, what="apply stage assigned")
        yield service
    finally:
        await service.stop()


async def enable_with(settings: Settings, *realms: str, scim: ScimServer) -> dict[str, str]:
    """Enable each realm through a service running with `settings`' keys; returns their base URLs."""
    bases = {realm: scim.base_url(realm + uuid.uuid4().hex[:6]) for realm in realms}
    async with running_service(settings) as service:
        assert service.api_port is not None
        for realm, base in bases.items():
            status, body = await Api(service.api_port).enable(realm, base, SCIM_TOKEN)
            assert status == 201, body
    return bases


async def wait_downstream(base: str, user_id: str) -> None:
    async def arrived() -> bool:
        return user_id in by_external_id(await downstream_users(base, SCIM_TOKEN))

    await wait_until(arrived, timeout=30, what=f"{user_id} downstream")


def sample(service: Service, name: str, **labels: str) -> float | None:
    return service.metrics.registry.get_sample_value(name, labels)


async def test_a_record_under_a_missing_key_parks_its_changes_until_the_key_is_back(
    kafka_bootstrap: str, scim_server: ScimServer
) -> None:
    """Written with K1, read with K2 only: unready with the realm and the fix, the change parked as
    tenant_unreadable (not skipped); restarted with "K2,K1" the parked change reaches the downstream."""
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    first = make_settings(kafka_bootstrap, token_key=k1)
    await create_source_topics(first)
    realm = f"realm-{uuid.uuid4().hex[:8]}"
    bases = await enable_with(first, realm, scim=scim_server)

    async with (
        assigned_service(with_keys(first, k2, change_retry_budget_seconds=1.0)) as service,
        Publisher(kafka_bootstrap) as publisher,
    ):
        assert service.api_port is not None
        api = Api(service.api_port)
        status, body = await api.call("GET", "/readyz")
        assert status == 503
        [reason] = [r for r in body["reasons"] if realm in r]
        assert reason.startswith(f"the record of realm {realm} {UNREADABLE}: add the key it was written with")
        assert sample(service, "outbound_scim_tenants_unreadable") == 1
        status, body = await api.call("GET", f"/tenants/{realm}")
        assert (status, body["error"]) == (409, "tenant_unreadable")
        await publisher.send_all(first.admin_events_topic, [ev.create_user(realm, "u1", "jdoe")])

        async def parked() -> bool:
            return bool((await api.call("GET", f"/tenants/{realm}/parked"))[1]["parked"])

        await wait_until(parked, what="the change parked")
        [held] = (await api.call("GET", f"/tenants/{realm}/parked"))[1]["parked"]
        assert (held["reason"], held["user_id"]) == ("tenant_unreadable", "u1")
        assert (
            sample(
                service,
                "outbound_scim_changes_total",
                tenant="unknown",
                downstream="unknown",
                outcome="skipped_no_tenant",
            )
            is None
        )
        assert await downstream_users(bases[realm], SCIM_TOKEN) == []
        assert not service.is_ready()

    async with running_service(with_keys(first, f"{k2},{k1}")) as service:
        await wait_downstream(bases[realm], "u1")
        assert service.tenants.unreadable() == []


async def test_enabling_an_unreadable_realm_again_releases_its_waiting_change(
    kafka_bootstrap: str, scim_server: ScimServer
) -> None:
    """Within the retry budget the change waits; enabling the realm again (a record under K2) lets it go
    through without a park, and the replica becomes ready."""
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    first = make_settings(kafka_bootstrap, token_key=k1)
    await create_source_topics(first)
    realm = f"realm-{uuid.uuid4().hex[:8]}"
    bases = await enable_with(first, realm, scim=scim_server)

    async with (
        assigned_service(with_keys(first, k2, change_retry_budget_seconds=120.0)) as service,
        Publisher(kafka_bootstrap) as publisher,
    ):
        assert service.api_port is not None
        api = Api(service.api_port)
        await publisher.send_all(first.admin_events_topic, [ev.create_user(realm, "u2", "jroe")])

        async def waiting() -> bool:
            return sample(service, "outbound_scim_changes_in_flight") == 1

        await wait_until(waiting, what="the change waiting for its tenant record")
        status, body = await api.enable(realm, bases[realm], SCIM_TOKEN)
        assert status == 200, body  # a rotation of the record it could not read
        await wait_downstream(bases[realm], "u2")
        await wait_until(api.ready, what="ready once the record reads")
        assert (await api.call("GET", f"/tenants/{realm}/parked"))[1]["parked"] == []
        assert sample(service, "outbound_scim_tenants_unreadable") == 0


async def test_reencrypt_tenants_lets_a_service_with_only_the_new_key_read_them(
    kafka_bootstrap: str, scim_server: ScimServer
) -> None:
    """Records under K1; `reencrypt-tenants` with "K2,K1" rewrites both (and none the second time);
    a service with K2 alone then reads them and pushes with the stored downstream token."""
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    first = make_settings(kafka_bootstrap, token_key=k1)
    await create_source_topics(first)
    realms = [f"realm-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    bases = await enable_with(first, *realms, scim=scim_server)

    code, out, err = await reencrypt(with_keys(first, f"{k2},{k1}"))
    assert code == 0, err
    assert out.startswith("rewrote 2 tenant record(s) with the first OUTBOUND_SCIM_TOKEN_KEY; 0 already used it")
    for secret in (k1, k2, SCIM_TOKEN):
        assert secret not in out + err
    code, out, err = await reencrypt(with_keys(first, f"{k2},{k1}"))
    assert (code, out.split(";")[0]) == (0, "rewrote 0 tenant record(s) with the first OUTBOUND_SCIM_TOKEN_KEY")

    async with running_service(with_keys(first, k2)) as service, Publisher(kafka_bootstrap) as publisher:
        assert [t.realm for t in service.tenants.all()] == sorted(realms)
        await publisher.send_all(first.admin_events_topic, [ev.create_user(realms[0], "u3", "jdoe3")])
        await wait_downstream(bases[realms[0]], "u3")


async def test_reencrypt_tenants_names_a_record_no_key_decrypts(kafka_bootstrap: str, scim_server: ScimServer) -> None:
    """A record under a key not configured is left alone and named on stderr; the exit code is 1."""
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    first = make_settings(kafka_bootstrap, token_key=k1)
    await create_source_topics(first)
    realm = f"realm-{uuid.uuid4().hex[:8]}"
    await enable_with(first, realm, scim=scim_server)
    code, out, err = await reencrypt(with_keys(first, k2))
    assert code == 1
    assert out.startswith("rewrote 0 tenant record(s)")
    assert f"the record of realm {realm} {UNREADABLE}: left as it is" in err


async def reencrypt(settings: Settings) -> tuple[int, str, str]:
    """`outbound-scim reencrypt-tenants` as an operator runs it, with the service's settings as variables."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service", "reencrypt-tenants"],
        capture_output=True,
        text=True,
        env={**os.environ, **settings_env(settings)},
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr
