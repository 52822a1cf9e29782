"""The console's pages over a tenant service with fakes behind it: what each shows, and what each form does."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from service.console.oidc import OidcRefused
from service.console.sessions import LOGIN_COOKIE, SESSION_COOKIE, SessionSigner, derive_key
from service.console.words import REFUSALS, WARNINGS
from service.domain.activity import ActivityEntry, ActivitySummary, SentRequest
from service.errors import EnableRefused
from service.keycloak_admin.realm_check import RealmWarning, WarningCode
from service.pipeline.set_aside import REPLAY_TO, TENANT, HeldRecord
from service.scim.credentials import BasicAuth, ClientCredentials
from tests.console.conftest import NOW, Ui, build, csrf_of

REASONS = {  # every reason EnableRefused can carry, and the API's status for it
    "not_found": 422,
    "unauthorized": 422,
    "not_scim": 422,
    "unreachable": 422,
    "redirect": 422,
    "downstream_error": 422,
    "invalid_url": 400,
    "insecure_url": 400,
    "forbidden_address": 400,
    "invalid_mapping": 400,
}
ENABLE = {"realm": "acme", "downstream": "default", "base_url": "https://scim.example/v2", "token": "secret-token-1"}


async def enable(ui: Ui, **form: str) -> tuple[int, str, Any]:
    return await ui.post("/ui/tenants", {**ENABLE, **form, "csrf": await ui.csrf()})


async def test_an_enable_refusal_is_shown_in_an_operators_words(ui: Ui) -> None:
    """Each reason the enable can give shows its sentence and the service's detail; the form keeps what was
    typed but never the token; nothing is stored."""
    await ui.sign_in()
    for reason, expected in REASONS.items():
        ui.downstreams.refusal = EnableRefused(reason, f"GET ServiceProviderConfig: {reason} detail")
        status, page, _ = await enable(ui)
        assert status == expected, reason  # as the API answers it
        assert REFUSALS[reason].replace("'", "&#39;") in page, reason
        assert f"{reason} detail" in page and 'value="https://scim.example/v2"' in page
        assert "secret-token-1" not in page
    ui.downstreams.refusal = EnableRefused(
        "unauthorized", "GET ServiceProviderConfig answered 401: the token was refused"
    )
    _, page, _ = await enable(ui)
    assert "answered 401" in page and "refused the token" in page
    assert ui.records.writes == []


async def test_an_invalid_form_says_which_field(ui: Ui) -> None:
    """A limit that is not a number, or no realm: 400 naming the field, nothing validated or stored."""
    await ui.sign_in()
    status, page, _ = await enable(ui, max_concurrency="lots")
    assert status == 400 and "max_concurrency" in page
    status, page, _ = await enable(ui, realm="")
    assert status == 400 and "realm" in page
    assert ui.downstreams.validated == [] and ui.records.writes == []


async def test_enable_stores_the_form_and_lands_on_the_tenant_page(ui: Ui) -> None:
    """Base URL, token, delete policy and limits reach the tenant service; the tenants page then lists it."""
    await ui.sign_in()
    status, _, answer = await enable(ui, delete_policy="deactivate", max_concurrency="4", rate_limit_per_minute="600")
    assert status == 303 and answer.headers["Location"] == "/ui/tenants/acme/default?done=enabled"
    (stored,) = ui.records.writes
    assert (stored.base_url, stored.token, stored.delete_policy.value) == (
        "https://scim.example/v2",
        "secret-token-1",
        "deactivate",
    )
    assert (stored.max_concurrency, stored.rate_limit_per_minute) == (4, 600)
    _, page, _ = await ui.get("/ui/tenants")
    assert 'data-tenant="acme/default"' in page and 'data-badge="enabled"' in page and "deactivate" in page
    status, page, _ = await ui.get("/ui/tenants/acme/default?done=enabled")
    assert status == 200 and "Enabled: the downstream answered" in page


async def test_the_tenants_page_shows_the_activity_summary(ui: Ui) -> None:
    """Last success and changes in the last hour come from the activity log, with its badges."""
    await ui.sign_in()
    await enable(ui)
    ui.activity.summaries[("acme", "default")] = ActivitySummary(
        last_success=NOW - 30, changes_last_hour=17, circuit="open", drift={"missing": 2}
    )
    _, page, _ = await ui.get("/ui/tenants")
    row = page.split('data-tenant="acme/default"')[1].split("</tr>")[0]
    assert ">17<" in row and "UTC" in row
    assert 'data-badge="circuit_open"' in row and 'data-badge="drift"' in row


async def test_without_the_activity_log_the_pages_say_it_is_off() -> None:
    """deps.activity None: both pages say the activity log is off instead of showing empty numbers."""
    app, *_ = build(None, None, None)
    async with TestClient(TestServer(app)) as client:
        page = await (await client.get("/ui/login")).text()
        await client.post("/ui/login", data={"token": "admin-token", "csrf": csrf_of(page)})
        for path in ("/ui/tenants", "/ui/tenants/acme/default"):
            text = await (await client.get(path)).text()
            assert "The activity log is off" in text, path


async def test_the_tenant_page_shows_activity_newest_first_and_searches_by_user(ui: Ui) -> None:
    """Each change with its time, user, outcome, the requests sent and the answer; ?user= narrows it."""
    await ui.sign_in()
    await enable(ui)
    ui.activity.entries += [
        ActivityEntry(
            NOW - 20,
            "acme",
            "default",
            "user",
            "created",
            "u-1",
            "alice",
            "create",
            sent=(SentRequest("POST", "/Users", 201, '{"id": "d-1"}'),),
        ),
        ActivityEntry(
            NOW - 10,
            "acme",
            "default",
            "user",
            "parked",
            "u-2",
            "bob",
            "update",
            "unauthorized",
            sent=(SentRequest("PATCH", "/Users/d-2", 401, "token refused"),),
        ),
    ]
    _, page, _ = await ui.get("/ui/tenants/acme/default")
    assert page.index("bob") < page.index("alice")
    assert "POST /Users" in page and "201" in page and "token refused" in page
    _, page, _ = await ui.get("/ui/tenants/acme/default?user=ALI")
    assert "alice" in page and "bob" not in page
    status, rows, _ = await ui.get("/ui/tenants/acme/default/activity?user=bob")
    assert status == 200 and "bob" in rows and "alice" not in rows and "<html" not in rows


async def test_parked_changes_are_listed_and_replayed(ui: Ui) -> None:
    """The parked list shows each change; the replay button replays this downstream's and says how many."""
    await ui.sign_in()
    await enable(ui)
    headers = {TENANT: "acme", REPLAY_TO: "changes", "outbound_scim.reason": "unauthorized"}
    ui.parked.records.append(HeldRecord(0, 1, int(NOW * 1000), b"k", b'{"user_id": "u-9", "op": "upsert"}', headers))
    status, page, _ = await ui.get("/ui/tenants/acme/default")
    assert "u-9" in page and "Replay 1 parked" in page
    status, _, answer = await ui.post("/ui/tenants/acme/default/parked/replay", {"csrf": csrf_of(page)})
    assert status == 303 and answer.headers["Location"] == "/ui/tenants/acme/default?done=replayed&n=1"
    assert ui.parked.replayed == ["acme"]
    _, tenants, _ = await ui.get("/ui/tenants")
    assert 'data-badge="parked"' in tenants and "1 parked" in tenants


async def test_disable_needs_its_confirmation(ui: Ui) -> None:
    """The disable link leads to a confirmation page; only its "yes" disables."""
    await ui.sign_in()
    await enable(ui)
    status, page, _ = await ui.get("/ui/tenants/acme/default/disable")
    assert status == 200 and "Yes, disable it" in page
    csrf = csrf_of(page)
    status, _, answer = await ui.post("/ui/tenants/acme/default/disable", {"csrf": csrf})
    assert status == 303 and "acme" in ui.records.tenants
    status, _, answer = await ui.post("/ui/tenants/acme/default/disable", {"csrf": csrf, "confirm": "yes"})
    assert status == 303 and answer.headers["Location"] == "/ui/tenants?done=disabled"
    assert "acme" not in ui.records.tenants
    _, page, _ = await ui.get("/ui/tenants/acme/default")
    assert 'data-badge="disabled"' in page


async def test_a_downstream_disabled_within_the_logs_retention_keeps_a_disabled_row(ui: Ui) -> None:
    """The tenants page lists, besides the enabled downstreams, those the activity log knows but the tenant
    store does not: disabled, with when, its last success and its changes."""
    await ui.sign_in()
    await enable(ui)
    disabled = ActivityEntry(NOW - 60, "beta", "crm", "tenant", "disabled")
    ui.activity.summaries[("beta", "crm")] = ActivitySummary(
        last_success=NOW - 120, changes_last_hour=4, tenant=disabled
    )
    _, page, _ = await ui.get("/ui/tenants")
    assert page.index('data-tenant="acme/default"') < page.index('data-tenant="beta/crm"')
    row = page.split('data-tenant="beta/crm"')[1].split("</tr>")[0]
    assert 'data-badge="disabled"' in row and 'data-badge="enabled"' not in row
    assert "disabled 20" in row and ">4<" in row


async def test_who_enabled_and_disabled_from_the_console_shows_in_the_activity(ui: Ui) -> None:
    """An enable and a disable made in the console are activity entries naming the signed-in user and
    how they signed in; the tenant page shows them."""
    await ui.sign_in()
    await enable(ui)
    _, page, _ = await ui.get("/ui/tenants/acme/default/disable")
    await ui.post("/ui/tenants/acme/default/disable", {"csrf": csrf_of(page), "confirm": "yes"})
    tenant = [(e.outcome, e.detail["by"]) for e in ui.activity.entries if e.kind == "tenant"]
    assert tenant == [("enabled", "admin (console, admin token)"), ("disabled", "admin (console, admin token)")]
    _, page, _ = await ui.get("/ui/tenants/acme/default")
    assert "by admin (console, admin token)" in page


async def test_rotate_keeps_every_other_setting(ui: Ui) -> None:
    """A rotation sends the new token with the tenant's other settings as they were."""
    await ui.sign_in()
    await enable(ui, delete_policy="delete", max_concurrency="3")
    csrf = await ui.csrf("/ui/tenants/acme/default")
    status, _, answer = await ui.post(
        "/ui/tenants/acme/default/rotate",
        {"csrf": csrf, "base_url": "https://scim.example/v2", "token": "secret-token-2"},
    )
    assert status == 303 and answer.headers["Location"] == "/ui/tenants/acme/default?done=rotated"
    rotated = ui.records.writes[-1]
    assert (rotated.token, rotated.delete_policy.value, rotated.max_concurrency) == ("secret-token-2", "delete", 3)


async def test_reconcile_sync_and_backfill_show_their_results(ui: Ui) -> None:
    """The dry run's drift table (then a fix button), the sync's step trace, the backfill's progress."""
    await ui.sign_in()
    await enable(ui)
    csrf = await ui.csrf("/ui/tenants/acme/default")
    ui.keycloak.report = {
        "realm": "acme",
        "dry_run": True,
        "keycloak_users": 3,
        "downstream_users": 2,
        "missing": {"count": 1, "ids": ["u-7"]},
        "stale": {"count": 1, "users": [{"id": "u-8", "attributes": ["emails"]}]},
        "extra": {"count": 0, "users": []},
        "fixes_queued": 0,
        "seconds": 0.1,
    }
    status, page, _ = await ui.post("/ui/tenants/acme/default/reconcile", {"csrf": csrf, "mode": "dry_run"})
    assert status == 200 and "u-7" in page and "emails" in page and 'value="fix"' in page
    assert ui.keycloak.reconciled[-1][1] is True
    await ui.post("/ui/tenants/acme/default/reconcile", {"csrf": csrf, "mode": "fix"})
    assert ui.keycloak.reconciled[-1][1] is False
    ui.keycloak.report = {
        "realm": "acme",
        "user_id": "u-7",
        "result": "created",
        "steps": [
            {"step": "read_keycloak", "found": True},
            {"step": "scim_request", "method": "POST", "path": "Users"},
        ],
    }
    status, page, _ = await ui.post("/ui/tenants/acme/default/sync", {"csrf": csrf, "user_id": "u-7"})
    assert status == 200 and "read_keycloak" in page and "scim_request" in page and "created" in page
    status, _, answer = await ui.post("/ui/tenants/acme/default/backfill", {"csrf": csrf})
    assert status == 303 and answer.headers["Location"].endswith("done=backfill")
    status, progress, _ = await ui.get("/ui/tenants/acme/default/backfill")
    assert status == 200 and '"state":"running"' in progress
    _, page, _ = await ui.get("/ui/tenants/acme/default")
    assert '<progress id="backfill-bar"' in page


async def test_keycloak_sign_in_goes_there_and_back(ui: Ui) -> None:
    """The Keycloak link redirects to its authorize URL with the pending login in a signed cookie; the
    callback finishes it and the session names the Keycloak user."""
    _, page, _ = await ui.get("/ui/login")
    assert 'href="/ui/login/keycloak' in page
    status, _, answer = await ui.get("/ui/login/keycloak?next=%2Fui%2Ftenants%2Facme%2Fdefault")
    assert status == 303 and answer.headers["Location"] == "https://keycloak.example/auth?state=state-1"
    assert ui.oidc.redirects[-1].endswith("/ui/login/callback")
    assert LOGIN_COOKIE in {c.key for c in ui.client.session.cookie_jar}
    status, page, answer = await ui.get("/ui/login/callback?code=c-1&state=state-1")
    assert status == 200 and 'content="0;url=/ui/tenants/acme/default"' in page
    assert SESSION_COOKIE in answer.cookies
    status, page, _ = await ui.get("/ui/tenants")
    assert status == 200 and "Signed in as alice (Keycloak)" in page


async def test_keycloak_refusals_are_shown(ui: Ui) -> None:
    """Keycloak's own error=, a state that does not match, and a missing role each show on the sign-in page."""
    status, page, _ = await ui.get("/ui/login/callback?error=access_denied&error_description=User+said+no")
    assert status == 401 and "Keycloak refused the sign-in: User said no" in page
    await ui.get("/ui/login/keycloak")
    status, page, _ = await ui.get("/ui/login/callback?code=c-1&state=forged")
    assert status == 401 and "start again" in page
    ui.oidc.refusal = OidcRefused("missing_role", "needs outbound-scim-operator")
    await ui.get("/ui/login/keycloak")
    status, page, _ = await ui.get("/ui/login/callback?code=c-1&state=state-1")
    assert status == 401 and "lacks the role" in page
    assert (await ui.get("/ui/tenants"))[0] == 303


async def test_without_keycloak_sign_in_its_routes_are_not_there() -> None:
    """deps.oidc None: no Keycloak button, and its routes answer 404."""
    app, *_ = build(None, None, None)
    async with TestClient(TestServer(app)) as client:
        page = await (await client.get("/ui/login")).text()
        assert "/ui/login/keycloak" not in page
        for path in ("/ui/login/keycloak", "/ui/login/callback?code=c&state=s"):
            assert (await client.get(path, allow_redirects=False)).status == 404


async def test_sign_out_ends_the_session(ui: Ui) -> None:
    """The sign-out form (CSRF-checked like every form) drops the cookie."""
    await ui.sign_in()
    csrf = await ui.csrf()
    status, _, answer = await ui.post("/ui/logout", {"csrf": csrf})
    assert status == 303 and answer.headers["Location"] == "/ui/login"
    assert (await ui.get("/ui/tenants"))[0] == 303


async def test_the_realms_event_settings_warnings_are_shown_in_words(ui: Ui) -> None:
    """With Keycloak access the tenant page re-reads the realm's event settings: each warning in words,
    with its code and the service's detail."""
    await ui.sign_in()
    await enable(ui)
    ui.keycloak.warnings = [RealmWarning(WarningCode.LISTENER_MISSING, "add outbound-scim to the listeners")]
    _, page, _ = await ui.get("/ui/tenants/acme/default")
    assert WARNINGS["listener_missing"].replace("'", "&#39;").replace(">", "&gt;") in page
    assert "add outbound-scim to the listeners" in page


async def test_without_keycloak_access_its_operations_say_what_they_need() -> None:
    """Reconcile, sync and backfill without the KEYCLOAK_* settings: 409 and the page says what is missing."""
    app, *_ = build(None, None, None)
    async with TestClient(TestServer(app)) as client:
        page = await (await client.get("/ui/login")).text()
        await client.post("/ui/login", data={"token": "admin-token", "csrf": csrf_of(page)})
        page = await (await client.get("/ui/tenants")).text()
        form = {**ENABLE, "csrf": csrf_of(page)}
        await client.post("/ui/tenants", data=form, allow_redirects=False)
        for path, body in (("reconcile", {"mode": "dry_run"}), ("sync", {"user_id": "u-1"}), ("backfill", {})):
            answer = await client.post(f"/ui/tenants/acme/default/{path}", data={**body, "csrf": form["csrf"]})
            text = await answer.text()
            assert answer.status == 409, path
            assert "keycloak_not_configured" in text and "needs Keycloak admin access" in text, path


async def test_a_session_from_one_replica_is_good_on_another() -> None:
    """Two replicas with the same admin token (no console secret) derive the same signing key: a cookie one
    issued is a session on the other; with another admin token it is not."""
    first, *_ = build(None, None, None)
    second, *_ = build(None, None, None)
    async with TestClient(TestServer(first)) as one, TestClient(TestServer(second)) as two:
        page = await (await one.get("/ui/login")).text()
        await one.post("/ui/login", data={"token": "admin-token", "csrf": csrf_of(page)}, allow_redirects=False)
        cookie = next(c.value for c in one.session.cookie_jar if c.key == SESSION_COOKIE)
        two.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie})
        assert (await two.get("/ui/tenants", allow_redirects=False)).status == 200
    other = SessionSigner(derive_key(None, "another-admin-token"), 60)
    assert other.read(cookie, NOW) is None
    assert SessionSigner(derive_key(None, "admin-token"), 60).read(cookie, NOW) is not None


async def test_backfill_progress_comes_from_the_activity_log_first(ui: Ui) -> None:
    """A backfill another replica runs shows here: its progress from the activity log, this replica having
    started none."""
    await ui.sign_in()
    await enable(ui)
    status, _, _ = await ui.get("/ui/tenants/acme/default/backfill")
    assert status == 404  # none anywhere yet
    progress = {
        "realm": "acme", "downstream": "default", "state": "running", "done": 40, "total": 100, "skipped": 0,
        "groups": 0, "memberships": 0, "downstream_listed": None, "rate_per_second": 20.0,
        "elapsed_seconds": 2.0, "error": None,
    }  # fmt: skip
    ui.activity.summaries[("acme", "default")] = ActivitySummary(backfill=progress)
    status, body, _ = await ui.get("/ui/tenants/acme/default/backfill")
    assert status == 200 and '"done":40' in body and '"total":100' in body
    _, page, _ = await ui.get("/ui/tenants/acme/default")
    assert 'max="100" value="40"' in page and "data-running" in page


async def test_the_console_without_its_trailing_slash_is_redirected_to_it(ui: Ui) -> None:
    status, _, answer = await ui.get("/ui")
    assert (status, answer.headers["Location"]) == (308, "/ui/")


async def test_enable_with_http_basic_and_rotate_its_password(ui: Ui) -> None:
    """The form's HTTP Basic fields become the tenant's credentials; a rotation asks for the new password
    and keeps the username."""
    await ui.sign_in()
    status, page, _ = await enable(ui, token="", auth_type="basic", username="svc", password="pw-1")
    assert status == 303, page
    auth = ui.records.writes[-1].auth
    assert isinstance(auth, BasicAuth) and (auth.username, auth.password) == ("svc", "pw-1")
    _, tenant_page, _ = await ui.get("/ui/tenants/acme/default")
    assert 'name="password"' in tenant_page and 'value="svc"' in tenant_page
    csrf = await ui.csrf("/ui/tenants/acme/default")
    status, _, _ = await ui.post(
        "/ui/tenants/acme/default/rotate",
        {"csrf": csrf, "base_url": "https://scim.example/v2", "username": "svc", "password": "pw-2"},
    )
    assert status == 303
    auth = ui.records.writes[-1].auth
    assert isinstance(auth, BasicAuth) and (auth.username, auth.password) == ("svc", "pw-2")


async def test_enable_with_oauth2_client_credentials(ui: Ui) -> None:
    await ui.sign_in()
    status, page, _ = await enable(
        ui,
        token="",
        auth_type="oauth2_client_credentials",
        token_url="https://idp.example/oauth2/token",
        client_id="outbound",
        client_secret="cs-1",
        scope="scim",
    )
    assert status == 303, page
    auth = ui.records.writes[-1].auth
    assert isinstance(auth, ClientCredentials)
    assert (auth.token_url, auth.client_id, auth.client_secret, auth.scope) == (
        "https://idp.example/oauth2/token",
        "outbound",
        "cs-1",
        "scim",
    )


async def test_a_refused_credentials_form_keeps_the_names_typed_never_a_secret(ui: Ui) -> None:
    """Basic without a password is refused naming the field; the page shows the username again, not the
    token or client secret typed into the other fields."""
    await ui.sign_in()
    status, page, _ = await enable(
        ui, auth_type="basic", username="svc-user", password="", client_secret="cs-typed", token="tok-typed"
    )
    assert status == 400
    assert "password" in page and 'value="svc-user"' in page
    assert "cs-typed" not in page and "tok-typed" not in page
    assert not ui.records.writes
