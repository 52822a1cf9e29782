"""Tenant management through the admin API: validation on enable, disable, rotate, never the token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests import events as ev
from tests.conftest import SCIM_TOKEN
from tests.integration.conftest import Pipeline
from tests.support import Api, downstream_users, free_port, start_scim_server, wait_until


@pytest.fixture
async def html_site() -> AsyncIterator[str]:
    """A web server that answers every path with an HTML page (a login portal, not a SCIM API)."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<html><body>Welcome</body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/scim/v2"
    await runner.cleanup()


async def test_enable_refuses_a_url_that_is_not_found(pipeline: Pipeline) -> None:
    """ServiceProviderConfig answers 404 -> 422 not_found, nothing stored."""
    status, body = await pipeline.api.enable("r404", pipeline.scim.base_url("x") + "/no/such/path", SCIM_TOKEN)
    assert (status, body["error"]) == (422, "not_found")
    assert (await pipeline.api.call("GET", "/tenants/r404"))[0] == 404


async def test_enable_refuses_a_wrong_token(pipeline: Pipeline) -> None:
    """The authenticated probe answers 401 -> 422 unauthorized, nothing stored."""
    status, body = await pipeline.api.enable("r401", pipeline.scim.base_url(), "not-the-token")
    assert (status, body["error"]) == (422, "unauthorized")
    assert "not-the-token" not in str(body)
    assert (await pipeline.api.call("GET", "/tenants/r401"))[0] == 404


async def test_enable_refuses_an_html_page(pipeline: Pipeline, html_site: str) -> None:
    """A 200 HTML page instead of SCIM JSON -> 422 not_scim, nothing stored."""
    status, body = await pipeline.api.enable("rhtml", html_site, SCIM_TOKEN)
    assert (status, body["error"]) == (422, "not_scim")
    assert (await pipeline.api.call("GET", "/tenants/rhtml"))[0] == 404


async def test_enable_refuses_a_closed_port(pipeline: Pipeline) -> None:
    """Nothing listens -> 422 unreachable, nothing stored."""
    status, body = await pipeline.api.enable("rclosed", f"http://127.0.0.1:{free_port()}/scim", SCIM_TOKEN)
    assert (status, body["error"]) == (422, "unreachable")
    assert (await pipeline.api.call("GET", "/tenants/rclosed"))[0] == 404


async def test_enable_list_show_never_return_the_token(pipeline: Pipeline) -> None:
    """A valid downstream -> 201 enabled; list and show give status and URL, never the token."""
    base = pipeline.scim.base_url()
    status, body = await pipeline.api.enable("rok", base, SCIM_TOKEN, "deactivate")
    assert status == 201
    assert body["status"] == "enabled"
    shown = await pipeline.api.call("GET", "/tenants/rok")
    listed = await pipeline.api.call("GET", "/tenants")
    assert shown == (200, {**body})
    assert listed[1]["tenants"] == [shown[1]]
    assert shown[1]["base_url"] == base
    assert shown[1]["delete_policy"] == "deactivate"
    for answer in (body, shown, listed):
        assert SCIM_TOKEN not in str(answer)


async def test_admin_api_needs_the_admin_token(pipeline: Pipeline) -> None:
    """Without the admin bearer token the tenant API answers 401; health and metrics stay open."""
    anonymous = Api(pipeline.service.api_port or 0, token="wrong")
    assert (await anonymous.call("GET", "/tenants"))[0] == 401
    assert (await anonymous.enable("x", pipeline.scim.base_url(), SCIM_TOKEN))[0] == 401
    assert (await anonymous.call("GET", "/healthz"))[0] == 200
    assert (await anonymous.call("GET", "/readyz"))[0] == 200
    assert (await anonymous.call("GET", "/metrics"))[0] == 200


async def test_disable_stops_propagation(pipeline: Pipeline) -> None:
    """After disable, the realm's events are skipped and counted, and nothing reaches the downstream."""
    realm = pipeline.realm()
    await pipeline.enable(realm)
    await pipeline.admin(ev.create_user(realm, "before", "before"))
    await pipeline.wait_user(realm, "before", userName="before")
    assert (await pipeline.api.call("DELETE", f"/tenants/{realm}"))[0] == 200
    assert (await pipeline.api.call("GET", f"/tenants/{realm}"))[0] == 404
    await pipeline.admin(ev.create_user(realm, "after", "after"), ev.update_user(realm, "before", enabled=False))

    async def skipped() -> bool:
        return (
            pipeline.counter(
                "outbound_scim_changes_total", tenant="unknown", downstream="unknown", outcome="skipped_no_tenant"
            )
            >= 2
        )

    await wait_until(skipped, what="two events skipped for the disabled realm")
    users = await pipeline.users(realm)
    assert [u["externalId"] for u in users] == ["before"]
    assert users[0]["active"] is True


async def test_rotation_gives_a_fresh_gate_and_disable_drops_it(pipeline: Pipeline) -> None:
    """The replica learns both from the tenants topic: a rotation replaces the tenant's gate (fresh breaker),
    a disable removes it and its outbound_scim_circuit_state series."""
    realm = pipeline.realm()
    base = await pipeline.enable(realm)
    await pipeline.admin(ev.create_user(realm, "u1", "u1"))
    await pipeline.wait_user(realm, "u1", userName="u1")
    scim = pipeline.service.scim
    assert scim is not None
    before = scim.breakers()[realm]
    status, body = await pipeline.api.enable(realm, base, SCIM_TOKEN)
    assert status == 200, body
    assert scim.breakers()[realm] is not before
    series = {"tenant": realm, "downstream": "default"}
    assert pipeline.service.metrics.registry.get_sample_value("outbound_scim_circuit_state", series) == 0
    assert (await pipeline.api.call("DELETE", f"/tenants/{realm}"))[0] == 200
    assert realm not in scim.breakers()
    assert pipeline.service.metrics.registry.get_sample_value("outbound_scim_circuit_state", series) is None


async def test_rotation_while_the_breaker_is_open_goes_around_it_and_resets_it(pipeline: Pipeline) -> None:
    """The downstream went away and the tenant's breaker opened; a rotation to a working downstream is not
    refused by that breaker (validation goes around it), answers a fresh closed breaker, and the changes
    held meanwhile reach the new downstream."""
    realm = pipeline.realm()
    old = start_scim_server("old-token")
    base = old.base_url(realm)
    assert (await pipeline.api.enable(realm, base, "old-token"))[0] == 201
    old.stop()
    await pipeline.admin(*(ev.create_user(realm, f"u{i}", f"u{i}") for i in range(3)))

    async def breaker_open() -> bool:
        return (await pipeline.api.call("GET", f"/tenants/{realm}"))[1]["circuit"] in ("open", "half_open")

    await wait_until(breaker_open, what="the breaker of the unreachable downstream open")
    new = start_scim_server("new-token", port=old.port)
    try:
        status, body = await pipeline.api.enable(realm, base, "new-token")
        assert (status, body["circuit"]) == (200, "closed"), body

        async def all_delivered() -> bool:
            users = await downstream_users(base, "new-token")
            return sorted(u["externalId"] for u in users) == ["u0", "u1", "u2"]

        await wait_until(all_delivered, what="the held changes delivered with the new token")
    finally:
        new.stop()


async def test_rotate_uses_the_new_token(pipeline: Pipeline) -> None:
    """The downstream now only accepts a new token; rotating to it makes changes flow again with it."""
    realm = pipeline.realm()
    old = start_scim_server("old-token")
    base = old.base_url(realm)
    assert (await pipeline.api.enable(realm, base, "old-token"))[0] == 201
    await pipeline.admin(ev.create_user(realm, "first", "first"))
    pipeline.bases[realm] = base

    async def created_with_old_token() -> bool:
        return pipeline.counter("outbound_scim_changes_total", tenant=realm, outcome="created") >= 1

    await wait_until(created_with_old_token, what="first user created")
    old.stop()
    new = start_scim_server("new-token", port=old.port)
    try:
        status, body = await pipeline.api.enable(realm, base, "new-token")
        assert status == 200, body
        await pipeline.admin(ev.create_user(realm, "second", "second"))

        async def created_with_new_token() -> bool:
            return pipeline.counter("outbound_scim_changes_total", tenant=realm, outcome="created") >= 2

        await wait_until(created_with_new_token, what="second user created with the new token")
        from tests.support import downstream_users

        users = await downstream_users(base, "new-token")
        assert [u["externalId"] for u in users] == ["second"]
    finally:
        new.stop()


async def test_existing_downstream_user_is_linked_not_duplicated(pipeline: Pipeline) -> None:
    """A user already downstream with the same userName (no externalId) -> 409 -> adopted and patched."""
    import aiohttp

    realm = pipeline.realm()
    base = await pipeline.enable(realm)
    headers = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}
    body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "preexisting", "active": False}
    async with aiohttp.ClientSession() as http, http.post(f"{base}/Users", json=body, headers=headers) as r:
        assert r.status == 201
        manual_id = (await r.json(content_type=None))["id"]
    await pipeline.admin(ev.create_user(realm, "kc-42", "preexisting", "Pre", "Existing"))
    user = await pipeline.wait_user(realm, "kc-42", userName="preexisting", active=True)
    assert user["id"] == manual_id
    assert user["displayName"] == "Pre Existing"
    assert len(await pipeline.users(realm)) == 1

    async def counted_as_linked() -> bool:
        return pipeline.counter("outbound_scim_changes_total", tenant=realm, outcome="linked") == 1

    await wait_until(counted_as_linked, what="the change counted as linked")
