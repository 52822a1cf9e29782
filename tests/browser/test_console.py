"""The operator console in a real Chromium against the real service, broker and scim2-server: sign in,
enable (refused, then right), a user arriving in the activity log, disable, a parked change replayed,
the enable flow by keyboard alone, and both pages fitting a 1366x768 screen.

One service for the module; each test its own realm and browser context.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from playwright.async_api import Page, expect

from service.app import Service
from service.settings import Settings
from tests import events as ev
from tests.browser.fixtures import screenshot
from tests.faults import FaultProxy
from tests.support import (
    ADMIN_TOKEN,
    Api,
    Publisher,
    ScimServer,
    create_source_topics,
    downstream_users,
    make_settings,
    running_service,
    start_scim_server,
    wait_until,
)

TOKEN, ROTATED = "browser-scim-token-1", "browser-scim-token-2"  # both accepted by the scim2-server


@dataclass
class Stack:
    settings: Settings
    service: Service
    api: Api
    publisher: Publisher
    scim: ScimServer
    faults: FaultProxy  # in front of the same scim2-server; refuses a token on demand

    @property
    def url(self) -> str:
        return self.api.url

    def realm(self) -> str:
        return f"ui-{uuid.uuid4().hex[:8]}"

    async def users(self, realm: str) -> list[str]:
        return [u["userName"] for u in await downstream_users(self.scim.base_url(realm), TOKEN)]


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str) -> AsyncIterator[Stack]:
    scim = start_scim_server(TOKEN, ROTATED)
    faults = await FaultProxy(f"http://127.0.0.1:{scim.port}").start()
    # a downstream that is away parks a change after 2 s of retries, without opening the breaker (whose
    # recovery would replay it before the test's button does)
    settings = make_settings(kafka_bootstrap, change_retry_budget_seconds=2.0, breaker_threshold=1000)
    await create_source_topics(settings)
    try:
        async with running_service(settings) as service, Publisher(kafka_bootstrap) as publisher:
            assert service.api_port is not None
            yield Stack(settings, service, Api(service.api_port), publisher, scim, faults)
    finally:
        await faults.stop()
        scim.stop()


async def sign_in(page: Page, stack: Stack, next_page: str = "/ui/tenants") -> None:
    await page.goto(stack.url + next_page)
    await expect(page).to_have_url(f"{stack.url}/ui/login?next={next_page.replace('/', '%2F')}")
    await page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(stack.url + next_page)


async def fill_enable(page: Page, realm: str, base_url: str, token: str) -> None:
    await page.get_by_label("Keycloak realm").fill(realm)
    await page.get_by_label("SCIM base URL").fill(base_url)
    await page.get_by_label("Bearer token").fill(token)


def csp_violations(page: Page) -> list[str]:
    """What the browser refused to load or run under the CSP: the pages must need nothing it forbids."""
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text) if "Content Security Policy" in message.text else None)
    return seen


async def test_sign_in_with_the_admin_token(page: Page, stack: Stack) -> None:
    """A page asked without a session leads to the sign-in form; a wrong token is refused there, the right
    one leads back to the page asked for."""
    refused = csp_violations(page)
    await page.goto(stack.url + "/ui/tenants")
    await page.get_by_label("Admin token").fill("not-the-admin-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not the service's admin token")
    await page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(stack.url + "/ui/tenants")
    await expect(page.get_by_role("heading", name="Tenants", exact=True)).to_be_visible()
    await expect(page.locator(".who")).to_contain_text("Signed in as admin")
    assert refused == []


async def test_enable_with_a_wrong_token_shows_the_401(page: Page, stack: Stack) -> None:
    """The downstream answers 401 to the validation: the page says the token was refused (with the 401) and
    keeps the form filled but the token; nothing is enabled."""
    realm = stack.realm()
    await sign_in(page, stack)
    await fill_enable(page, realm, stack.scim.base_url(realm), "a-wrong-token")
    await page.get_by_role("button", name="Enable").click()
    refusal = page.locator("#refusal")
    await expect(refusal).to_contain_text("answered 401")
    await expect(refusal).to_contain_text("refused the token")
    await expect(page.get_by_label("Keycloak realm")).to_have_value(realm)
    await expect(page.get_by_label("Bearer token")).to_have_value("")
    assert (await stack.api.call("GET", f"/tenants/{realm}"))[0] == 404


async def test_enable_right_and_watch_a_user_arrive_in_the_activity_log(page: Page, stack: Stack) -> None:
    """Enabled from the form, the tenant page opens; a Keycloak user created then shows in its activity
    log (refreshed in place by the page's script) with the POST /Users and the downstream's 201."""
    realm = stack.realm()
    await sign_in(page, stack)
    await fill_enable(page, realm, stack.scim.base_url(realm), TOKEN)
    await page.get_by_role("button", name="Enable").click()
    await expect(page).to_have_url(f"{stack.url}/ui/tenants/{realm}/default?done=enabled")
    await expect(page.locator('[data-badge="enabled"]')).to_be_visible()
    await stack.publisher.send_all(stack.settings.admin_events_topic, [ev.create_user(realm, "u-ada", "ada.lovelace")])
    row = page.locator("#activity-rows tr", has_text="ada.lovelace")
    await expect(row).to_contain_text("POST /Users", timeout=30_000)
    await expect(row).to_contain_text("201")


async def test_disable_asks_for_confirmation(page: Page, stack: Stack) -> None:
    """Disable leads to a confirmation page; confirming disables it and the tenants page says so."""
    realm = stack.realm()
    assert (await stack.api.enable(realm, stack.scim.base_url(realm), TOKEN))[0] == 201
    await sign_in(page, stack, f"/ui/tenants/{realm}/default")
    await page.get_by_role("link", name="Disable this downstream").click()
    await expect(page.get_by_role("heading", name=f"Disable {realm} / default?")).to_be_visible()
    assert (await stack.api.call("GET", f"/tenants/{realm}"))[0] == 200  # nothing happened yet
    await page.get_by_role("button", name="Yes, disable it").click()
    await expect(page).to_have_url(f"{stack.url}/ui/tenants?done=disabled")
    await expect(page.get_by_role("status")).to_contain_text("Disabled")
    assert (await stack.api.call("GET", f"/tenants/{realm}"))[0] == 404
    await expect(page.locator(f'[data-tenant="{realm}/default"]')).to_have_count(0)


async def test_a_parked_change_is_replayed_from_the_tenant_page(page: Page, stack: Stack) -> None:
    """The downstream is away for longer than a change's retry budget: a new user is parked, and the
    tenants page (one read of the parking topic for every row) and the tenant page show one parked change.
    The downstream comes back (nothing replays by itself then): the replay button brings the user
    downstream and leaves nothing parked, on either page."""
    realm = stack.realm()
    base = stack.faults.base_url(realm)
    assert (await stack.api.enable(realm, base, TOKEN))[0] == 201
    stack.faults.down = True  # every connection reset
    try:
        await stack.publisher.send_all(
            stack.settings.admin_events_topic, [ev.create_user(realm, "u-pat", "pat.parked")]
        )

        async def parked() -> bool:
            status, body = await stack.api.call("GET", f"/tenants/{realm}/parked")
            return status == 200 and len(body["parked"]) == 1

        await wait_until(parked, timeout=30, what="the new user's change parked")
    finally:
        stack.faults.down = False  # the downstream is back; the change stays parked
    await sign_in(page, stack)
    row = page.locator(f'tr[data-tenant="{realm}/default"]')
    await expect(row.locator('[data-badge="parked"]')).to_have_text("1 parked")
    await page.goto(f"{stack.url}/ui/tenants/{realm}/default")
    await expect(page.locator('[data-badge="parked"]')).to_have_text("1 parked")
    assert "pat.parked" not in await stack.users(realm)
    await page.get_by_role("button", name="Replay 1 parked").click()
    await expect(page.get_by_role("status")).to_contain_text("Replayed")

    async def arrived() -> bool:
        return "pat.parked" in await stack.users(realm)

    await wait_until(arrived, timeout=30, what="the parked user created downstream")

    async def nothing_parked() -> bool:
        status, body = await stack.api.call("GET", f"/tenants/{realm}/parked")
        return status == 200 and body == {"parked": []}

    await wait_until(nothing_parked, timeout=30, what="nothing left parked")
    await page.goto(f"{stack.url}/ui/tenants/{realm}/default")
    await expect(page.locator('[data-badge="parked"]')).to_have_count(0)
    await page.goto(f"{stack.url}/ui/tenants")
    await expect(row.locator('[data-badge="parked"]')).to_have_count(0)


ENABLE_ORDER = [
    "realm",
    "downstream",
    "base_url",
    "auth_type",
    "token",
    "username",
    "password",
    "token_url",
    "client_id",
    "client_secret",
    "scope",
    "audience",
    "delete_policy",
    "max_concurrency",
    "rate_limit_per_minute",
]


async def focused(page: Page) -> str:
    return str(await page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))


async def test_the_whole_enable_flow_by_keyboard_alone(page: Page, stack: Stack) -> None:
    """Sign in, reach the enable form, fill it and submit with Tab, typing and Enter only: the fields come
    in reading order, each focused one shows a visible outline, and the tenant is enabled."""
    realm = stack.realm()
    await page.goto(stack.url + "/ui/tenants")
    assert await focused(page) == "token"  # the sign-in form's only field has the focus
    await page.keyboard.type(ADMIN_TOKEN)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(stack.url + "/ui/tenants")
    for _ in range(40):  # past the skip link, the header and the table to the form
        await page.keyboard.press("Tab")
        if await focused(page) == "realm":
            break
    assert await focused(page) == "realm"
    values = {"realm": realm, "base_url": stack.scim.base_url(realm), "token": TOKEN}
    order = []
    for _ in ENABLE_ORDER:
        current = await focused(page)
        order.append(current)
        outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", f"no visible focus on {current}"
        if current in values:
            await page.keyboard.type(values[current])
        await page.keyboard.press("Tab")
    assert order == ENABLE_ORDER
    assert await focused(page) == "Enable"
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{stack.url}/ui/tenants/{realm}/default?done=enabled")
    assert (await stack.api.call("GET", f"/tenants/{realm}"))[0] == 200


async def test_both_pages_fit_a_1366x768_screen(page: Page, stack: Stack) -> None:
    """No horizontal scroll on the tenants page or a tenant page (a long base URL, a user in the activity
    log); the screenshots the docs show are taken here."""
    realm = stack.realm()
    base = stack.scim.base_url(realm + "-with-a-rather-long-path-segment-to-show-wrapping")
    assert (await stack.api.enable(realm, base, TOKEN))[0] == 201
    await stack.publisher.send_all(
        stack.settings.admin_events_topic, [ev.create_user(realm, "u-grace", "grace.hopper", "Grace", "Hopper")]
    )

    async def arrived() -> bool:
        return [u["userName"] for u in await downstream_users(base, TOKEN)] == ["grace.hopper"]

    await wait_until(arrived, timeout=30, what="the user created downstream")
    await sign_in(page, stack)
    assert page.viewport_size == {"width": 1366, "height": 768}
    for path, name in (("/ui/tenants", "console-tenants"), (f"/ui/tenants/{realm}/default", "console-tenant")):
        await page.goto(stack.url + path)
        if name == "console-tenant" and getattr(stack.service, "activity", None) is not None:
            await expect(page.locator("#activity-rows")).to_contain_text("grace.hopper", timeout=30_000)
        widths = await page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"{path}: scrollWidth {widths[0]} > innerWidth {widths[1]}"
        await screenshot(page, name)
