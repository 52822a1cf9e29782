"""The console's guards: no page or form without a session, no cross-site form post, the session cookie's
flags, and the security headers on every answer."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

from aiohttp.test_utils import TestClient, TestServer
from itsdangerous import URLSafeSerializer

from service.console.app import ConsoleConfig
from service.console.security import CSP, is_public
from service.console.sessions import SESSION_COOKIE, SessionSigner, derive_key
from tests.console.conftest import ADMIN_TOKEN, NOW, Ui, build
from tests.console.fakes import FakeActivity, FakeOidc

FORM = {"realm": "acme", "downstream": "default", "base_url": "https://scim.example/v2", "token": "t-1"}


def console_routes(ui: Ui) -> list[tuple[str, str]]:
    """Every (method, path) the console serves but sign-in and its static files, with sample path values."""
    routes = set()
    for route in ui.client.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = str(info.get("path") or info.get("formatter") or "")
        if not path.startswith("/ui") or route.method == "HEAD" or is_public(path) or "directory" in info:
            continue
        routes.add((route.method, path.replace("{realm}", "acme").replace("{name}", "default")))
    return sorted(routes)


def set_cookie(answer: object, name: str) -> SimpleCookie:
    cookies = SimpleCookie()
    for header in answer.headers.getall("Set-Cookie", []):  # type: ignore[attr-defined]
        cookies.load(header)
    assert name in cookies, f"no {name} cookie set"
    return cookies


async def test_every_console_route_refuses_a_request_without_a_session(ui: Ui) -> None:
    """GET pages send the browser to the sign-in page (and back afterwards); every other method is refused
    with 401; unknown paths under /ui/ reveal nothing either."""
    routes = console_routes(ui)
    assert len(routes) >= 15, routes
    for method, path in [*routes, ("GET", "/ui/no/such/page"), ("POST", "/ui/no/such/form")]:
        async with ui.client.request(method, path, allow_redirects=False, data={"csrf": "x"}) as answer:
            if method == "GET":
                assert answer.status == 303, (method, path)
                assert answer.headers["Location"].startswith("/ui/login?next=%2Fui%2F"), (method, path)
            else:
                assert answer.status == 401, (method, path)
    assert ui.records.writes == [] and ui.parked.replayed == []


async def test_a_forged_or_expired_session_is_no_session(ui: Ui) -> None:
    """A cookie signed with another key, or past its expiry, gets the sign-in page like no cookie at all."""
    other = SessionSigner(derive_key(None, "another-admin-token"), 60)
    _, forged = other.issue("admin", "token", NOW)
    mine = SessionSigner(derive_key(None, ADMIN_TOKEN), 60)
    _, expired = mine.issue("admin", "token", NOW - 3601)
    unsigned = URLSafeSerializer(b"guess").dumps({"sub": "admin", "via": "token", "exp": NOW + 60, "csrf": "c"})
    for cookie in (forged, expired, unsigned, "garbage"):
        ui.client.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie})
        status, _, answer = await ui.get("/ui/tenants")
        assert (status, answer.headers["Location"].split("?")[0]) == (303, "/ui/login")


async def test_a_wrong_admin_token_signs_nobody_in(ui: Ui) -> None:
    """401 and the sign-in page saying so; no session cookie."""
    status, page, _ = await ui.sign_in("not-the-token")
    assert status == 401 and "not the service&#39;s admin token" in page
    assert SESSION_COOKIE not in {c.key for c in ui.client.session.cookie_jar}
    assert (await ui.get("/ui/tenants"))[0] == 303


async def test_with_the_token_sign_in_off_only_keycloak_signs_in() -> None:
    """With a Keycloak sign-in and console_token_sign_in off, the page offers Keycloak only and the right
    admin token is refused (console access follows Keycloak's roles)."""
    app, *_ = build(FakeActivity(), FakeOidc(), None, ConsoleConfig(token_sign_in=False))
    async with TestClient(TestServer(app)) as client:
        ui = Ui(client, *([None] * 7))  # type: ignore[arg-type]
        status, page, _ = await ui.get("/ui/login")
        assert status == 200 and "Sign in with Keycloak" in page and 'name="token"' not in page
        status, page, _ = await ui.post("/ui/login", {"token": ADMIN_TOKEN, "csrf": "any", "next": "/ui/tenants"})
        assert status == 403 and "sign in with Keycloak" in page
        assert SESSION_COOKIE not in {c.key for c in client.session.cookie_jar}


async def test_without_a_keycloak_sign_in_the_token_always_signs_in() -> None:
    """Turning the token off without a Keycloak sign-in would lock everyone out: the token stays."""
    app, *_ = build(FakeActivity(), None, None, ConsoleConfig(token_sign_in=False))
    async with TestClient(TestServer(app)) as client:
        ui = Ui(client, *([None] * 7))  # type: ignore[arg-type]
        status, _, _ = await ui.sign_in(ADMIN_TOKEN)
        assert status == 303 and SESSION_COOKIE in {c.key for c in client.session.cookie_jar}


async def test_the_session_cookie_is_httponly_strict_and_secure_over_tls(ui: Ui) -> None:
    """HttpOnly and SameSite=Strict always, scoped to /ui/; Secure when the request came over TLS (here: a
    proxy's X-Forwarded-Proto https), not over plain http (the browser would drop it)."""
    status, _, answer = await ui.sign_in()
    assert status == 303 and answer.headers["Location"] == "/ui/tenants"
    cookie = set_cookie(answer, SESSION_COOKIE)[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/ui/"
    assert not cookie["secure"]
    _, page, _ = await ui.get("/ui/login")
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    _, _, answer = await ui.post(
        "/ui/login", {"token": ADMIN_TOKEN, "csrf": csrf}, headers={"X-Forwarded-Proto": "https"}
    )
    cookie = set_cookie(answer, SESSION_COOKIE)[SESSION_COOKIE]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"


async def test_a_post_without_the_forms_csrf_token_is_refused(ui: Ui) -> None:
    """Signed in, a POST with no token or another token is refused (403) and does nothing."""
    await ui.sign_in()
    for form in (FORM, {**FORM, "csrf": "not-the-token"}):
        status, _, _ = await ui.post("/ui/tenants", form)
        assert status == 403
    assert ui.records.writes == []


async def test_a_cross_site_post_is_refused_even_with_the_token(ui: Ui) -> None:
    """A foreign Origin, a null one from a browser without Sec-Fetch-Site, or Sec-Fetch-Site cross-site /
    same-site, is refused (403) whatever the form holds; the same form from the console's own origin goes
    through."""
    await ui.sign_in()
    csrf = await ui.csrf()
    form = {**FORM, "csrf": csrf}
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        status, _, _ = await ui.post("/ui/tenants", form, headers=headers)
        assert status == 403, headers
    assert ui.records.writes == []
    own = f"http://{ui.client.host}:{ui.client.port}"
    status, _, answer = await ui.post("/ui/tenants", form, headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert status == 303 and answer.headers["Location"] == "/ui/tenants/acme/default?done=enabled"
    # what Chrome sends with our own forms under Referrer-Policy no-referrer
    status, _, _ = await ui.post("/ui/tenants", form, headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert status == 303
    assert [t.realm for t in ui.records.writes] == ["acme", "acme"]


async def test_the_sign_in_form_needs_its_own_csrf_value(ui: Ui) -> None:
    """The sign-in form has no session yet: its CSRF value lives in a short-lived cookie; a POST without the
    matching value is refused even with the right admin token."""
    status, _, _ = await ui.post("/ui/login", {"token": ADMIN_TOKEN, "csrf": "made-up"})
    assert status == 403
    status, _, _ = await ui.post(
        "/ui/login", {"token": ADMIN_TOKEN, "csrf": "x"}, headers={"Origin": "https://evil.example"}
    )
    assert status == 403


async def test_every_answer_carries_the_security_headers(ui: Ui) -> None:
    """A strict CSP (no inline script or style), nosniff, no referrer, no framing, on pages, errors, the
    sign-in page, redirects and static files alike."""
    paths = ["/ui/login", "/ui/static/console.css", "/ui/static/console.js", "/ui/tenants"]
    checked = [await ui.get(p) for p in paths]
    await ui.sign_in()
    paths = ["/ui/tenants", "/ui/tenants/acme/default", "/ui/tenants/acme/default/disable", "/ui/nope", "/ui/"]
    checked += [await ui.get(p) for p in paths]
    for _, _, answer in checked:
        assert answer.headers["Content-Security-Policy"] == CSP, answer.url
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["X-Frame-Options"] == "DENY"
    for part in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "form-action 'self'"):
        assert part in CSP
    assert "frame-ancestors 'none'" in CSP and "base-uri 'none'" in CSP and "unsafe" not in CSP


async def test_the_pages_have_no_inline_script_or_style(ui: Ui) -> None:
    """What the CSP forbids is not there to be blocked: no <script> body, no style attribute or element."""
    await ui.sign_in()
    for path in ("/ui/tenants", "/ui/tenants/acme/default", "/ui/tenants/acme/default/disable", "/ui/login"):
        _, page, _ = await ui.get(path)
        assert "<style" not in page and " style=" not in page, path
        assert re.search(r"<[^>]*\son[a-z]+=", page) is None, path  # no onclick= and the like
        for script in page.split("<script")[1:]:
            assert script.split(">", 1)[1].startswith("</script>"), path


async def test_the_admin_api_still_wants_its_bearer_token(ui: Ui) -> None:
    """The console's session does not open the API: /tenants with the cookie but no token is 401."""
    await ui.sign_in()
    async with ui.client.get("/tenants") as answer:
        assert answer.status == 401


async def test_after_signing_in_the_browser_goes_to_a_console_page_only(ui: Ui) -> None:
    """The `next` page is honoured for console pages; another site, a //host or a climb out of /ui/ lands on
    the tenants page instead."""
    for asked, landed in (
        ("/ui/tenants/acme/default", "/ui/tenants/acme/default"),
        ("https://evil.example/ui/", "/ui/tenants"),
        ("//evil.example/ui/", "/ui/tenants"),
        ("/ui/../tenants", "/ui/tenants"),
        ("/ui/\\evil", "/ui/tenants"),
    ):
        _, page, _ = await ui.get("/ui/login")
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        _, _, answer = await ui.post("/ui/login", {"token": ADMIN_TOKEN, "csrf": csrf, "next": asked})
        assert answer.headers["Location"] == landed, asked
