"""Admin events without a representation (a listener that honours the realm's "Include representation"
switch, off by default) and no Keycloak access to re-read the user: never silently skipped."""

from __future__ import annotations

import uuid

from structlog.testing import capture_logs

from tests import events
from tests.integration.conftest import Pipeline
from tests.support import wait_until


async def test_changes_without_representation_are_counted_warned_once_and_shown_on_the_tenant(
    pipeline: Pipeline,
) -> None:
    """Two representation-less UPDATEs: counted as no_representation, one warning for the realm naming
    the fix, a `no_representation` notice on the tenant; the downstream keeps what it knew."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    user_id = str(uuid.uuid4())
    await pipeline.admin(events.create_user(realm, user_id, "quiet.user"))
    await pipeline.wait_user(realm, user_id, userName="quiet.user", active=True)

    with capture_logs() as logs:
        await pipeline.admin(
            events.admin_event(realm, user_id, "UPDATE", None), events.admin_event(realm, user_id, "UPDATE", None)
        )

        async def counted() -> bool:
            return pipeline.counter("outbound_scim_changes_total", tenant=realm, outcome="no_representation") == 2

        await wait_until(counted, what="two no_representation changes")
    warnings = [e for e in logs if e["event"] == "change.no_representation"]
    assert len(warnings) == 1
    assert "Include representation" in warnings[0]["hint"] and "OUTBOUND_SCIM_KEYCLOAK_" in warnings[0]["hint"]

    async def noticed() -> bool:
        status, tenant = await pipeline.api.call("GET", f"/tenants/{realm}")
        assert status == 200, tenant
        return [n["code"] for n in tenant["notices"]] == ["no_representation"]

    await wait_until(noticed, what="the notice on the tenant")
    _, tenant = await pipeline.api.call("GET", f"/tenants/{realm}")
    assert "Include representation" in tenant["notices"][0]["detail"]
    assert (await pipeline.user_by_external_id(realm, user_id) or {}).get("active") is True
