"""The console's guards: security headers on every answer, a session on every route but sign-in and the
stylesheet/script, and on every POST a same-origin check and the session's CSRF token.

A GET without a session is sent to the sign-in page; anything else without one is refused (401), and a
POST from another site, or without the form's CSRF token, is refused (403) before any handler runs.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Middleware

from service.console.sessions import SESSION_COOKIE, Session, SessionSigner

__all__ = ["CSP", "SESSION", "cross_site", "guard", "is_tls", "secure_headers", "see_other"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
PUBLIC = frozenset({"/ui", "/ui/login", "/ui/login/keycloak", "/ui/login/callback"})  # /ui: a redirect to /ui/
STATIC = "/ui/static/"
CSRF_FIELD = "csrf"
SESSION = web.RequestKey("console_session", Session)


def is_public(path: str) -> bool:
    """Sign-in and the stylesheet / script: reachable without a session (nothing in them is the service's)."""
    return path in PUBLIC or path.startswith(STATIC)


def is_tls(request: web.Request) -> bool:
    """Served over TLS here, or behind a proxy that terminated it (X-Forwarded-Proto: https)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def cross_site(request: web.Request) -> bool:
    """The browser says the request comes from another site (Sec-Fetch-Site), or its Origin is another.

    Under Referrer-Policy no-referrer Chrome sends `Origin: null` with our own forms, so a `null` Origin
    is taken as cross-site only from a browser that sends no Sec-Fetch-Site. Browsers send at least one
    of the two on a form POST; a request with neither is a script's (no cookie to ride on) and still
    needs the CSRF token."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    if origin == "null":
        return site is None
    ours = f"{'https' if is_tls(request) else 'http'}://{request.host}"
    return origin.lower() != ours.lower()


def secure_headers(response: web.StreamResponse) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)


def guard(signer: SessionSigner, clock: Callable[[], float]) -> Middleware:
    """The middleware: the session check (and, for a POST, the origin and CSRF checks) before any handler."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        posting = request.method not in ("GET", "HEAD", "OPTIONS")
        if posting and cross_site(request):
            return _refused(403, "a form of another site cannot post here")
        if is_public(request.path):
            return await handler(request)
        session = signer.read(request.cookies.get(SESSION_COOKIE), clock())
        if session is None:
            if posting:
                return _refused(401, "sign in first")
            return see_other(f"/ui/login?next={quote(request.path_qs, safe='')}")
        if posting:
            form = await request.post()
            token = form.get(CSRF_FIELD)
            if not isinstance(token, str) or not hmac.compare_digest(token.encode(), session.csrf.encode()):
                return _refused(403, "the form's CSRF token is missing or stale: reload the page and try again")
        request[SESSION] = session
        return await handler(request)

    return check


def see_other(location: str) -> web.Response:
    """Where to go next after a POST (or to sign in): 303, so the browser GETs it."""
    return web.Response(status=303, headers={"Location": location})


def _refused(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=f"{text}\n", content_type="text/plain")
