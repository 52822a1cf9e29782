"""Signing in to the console: with the admin token (a form), or with Keycloak when it is configured
(service.console.oidc: authorization code + PKCE, a role required). Either way the result is a session
cookie (service.console.sessions); nothing is kept on the server.

The sign-in form has no session to hold its CSRF value: a short-lived signed cookie holds it instead
(and, for Keycloak, the pending login's state, nonce and PKCE verifier between the redirect and the
callback).
"""

from __future__ import annotations

import hmac
import math
import secrets

import structlog
from aiohttp import web

from service.console.context import CONSOLE, Console
from service.console.oidc import Identity, OidcRefused, PendingLogin
from service.console.security import CSRF_FIELD, is_tls, see_other
from service.console.sessions import LOGIN_COOKIE, LOGIN_MINUTES, SESSION_COOKIE, Via

__all__ = ["keycloak_callback", "keycloak_start", "logout", "page", "with_token"]

log = structlog.get_logger(__name__)
HOME = "/ui/tenants"


def _next(value: object) -> str:
    """Where to go after signing in: a console page only (never another site, never //host)."""
    if isinstance(value, str) and value.startswith("/ui/") and ".." not in value and "\\" not in value:
        return value
    return HOME


def _cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, minutes: float) -> None:
    response.set_cookie(
        name,
        value,
        max_age=int(minutes * 60),
        path="/ui/",
        httponly=True,
        samesite="Strict" if name == SESSION_COOKIE else "Lax",
        secure=is_tls(request),
    )


def _login_page(
    request: web.Request, status: int = 200, *, refused: str | None = None, next_page: str = HOME
) -> web.Response:
    """The sign-in page, with a fresh CSRF value in the form and in the short-lived login cookie."""
    console = request.app[CONSOLE]
    csrf = secrets.token_urlsafe(24)
    response = console.render(
        "login.html",
        status,
        session=None,
        csrf=csrf,
        refused=refused,
        next_page=next_page,
        keycloak=console.oidc is not None,
        token_sign_in=console.token_sign_in,
    )
    _cookie(request, response, LOGIN_COOKIE, console.signer.login_state({"csrf": csrf}, console.clock()), LOGIN_MINUTES)
    return response


async def page(request: web.Request) -> web.Response:
    return _login_page(request, next_page=_next(request.query.get("next")))


def _signed_in(request: web.Request, console: Console, subject: str, via: Via, next_page: str) -> web.Response:
    """The session cookie, then on to `next_page`. Back from Keycloak the redirect chain began on another
    site, and the browser would not send a SameSite=Strict cookie along it: a page of ours moves on instead."""
    session, cookie = console.signer.issue(subject, via, console.clock())
    if via == "keycloak":
        response = console.render("signed_in.html", session=None, next_page=next_page)
    else:
        response = see_other(next_page)
    _cookie(request, response, SESSION_COOKIE, cookie, (session.expires - console.clock()) / 60)
    response.del_cookie(LOGIN_COOKIE, path="/ui/")
    log.info("console.signed_in", subject=subject, via=via)
    return response


async def with_token(request: web.Request) -> web.Response:
    """The admin token, compared in constant time; the form's CSRF value must match the login cookie's."""
    console = request.app[CONSOLE]
    if not console.token_sign_in:
        log.info("console.sign_in.refused", via="token", reason="token_sign_in_off")
        return _login_page(request, 403, refused="Sign-in with the admin token is off here: sign in with Keycloak.")
    form = await request.post()
    state = console.signer.read_login_state(request.cookies.get(LOGIN_COOKIE), console.clock())
    sent = form.get(CSRF_FIELD)
    expected = state.get("csrf") if state else None
    if not (isinstance(sent, str) and expected and hmac.compare_digest(sent.encode(), expected.encode())):
        return web.Response(status=403, text="the sign-in form is stale: reload the page\n", content_type="text/plain")
    token = form.get("token")
    next_page = _next(form.get("next"))
    address = request.remote or "unknown"
    if (wait := console.throttle.wait_seconds(address)) > 0:
        log.warning("console.sign_in.refused", via="token", reason="too_many_failures", address=address)
        response = _login_page(
            request,
            429,
            refused=f"Too many wrong tokens from this address: try again in {math.ceil(wait)} s.",
            next_page=next_page,
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), console.admin_token.encode()):
        console.throttle.failed(address)
        log.info("console.sign_in.refused", via="token", address=address)
        return _login_page(request, 401, refused="That is not the service's admin token.", next_page=next_page)
    return _signed_in(request, console, "admin", "token", next_page)


async def logout(request: web.Request) -> web.Response:
    response = see_other("/ui/login")
    response.del_cookie(SESSION_COOKIE, path="/ui/")
    return response


def _callback_url(request: web.Request) -> str:
    return f"{'https' if is_tls(request) else 'http'}://{request.host}/ui/login/callback"


async def keycloak_start(request: web.Request) -> web.Response:
    """Off to Keycloak's sign-in page; what the callback needs is kept in the signed login cookie (10 min)."""
    console = request.app[CONSOLE]
    if console.oidc is None:
        raise web.HTTPNotFound()
    url, pending = await console.oidc.start(_callback_url(request))
    response = see_other(url)
    kept = {**pending.to_dict(), "next": _next(request.query.get("next"))}
    _cookie(request, response, LOGIN_COOKIE, console.signer.login_state(kept, console.clock()), LOGIN_MINUTES)
    return response


async def keycloak_callback(request: web.Request) -> web.Response:
    """Keycloak sent the browser back: its refusal (`error=`) is shown; a code is exchanged and checked."""
    console = request.app[CONSOLE]
    if console.oidc is None:
        raise web.HTTPNotFound()
    query = request.query
    if "error" in query:
        said = query.get("error_description") or query["error"]
        return _login_page(request, 401, refused=f"Keycloak refused the sign-in: {said}")
    kept = console.signer.read_login_state(request.cookies.get(LOGIN_COOKIE), console.clock())
    try:
        if kept is None:
            raise OidcRefused("bad_state", "the sign-in took longer than 10 minutes or began in another browser")
        identity = await console.oidc.finish(
            code=query.get("code", ""),
            state=query.get("state", ""),
            redirect_uri=_callback_url(request),
            pending=PendingLogin.from_dict(kept),
        )
    except OidcRefused as exc:
        log.info("console.sign_in.refused", via="keycloak", reason=exc.reason)
        return _login_page(request, 401, refused=_oidc_words(exc.reason, exc.detail))
    return _signed_in(request, console, _username(identity), "keycloak", _next(kept.get("next")))


def _username(identity: Identity) -> str:
    return str(identity.username or identity.subject)


OIDC_WORDS = {
    "bad_state": "The sign-in could not be matched to this browser: start again.",
    "denied": "Keycloak did not let you in.",
    "token_refused": "Keycloak refused to exchange the sign-in code: check the console client's secret.",
    "invalid_token": "Keycloak's answer did not check out (signature, issuer, audience or expiry).",
    "missing_role": "You signed in, but your account lacks the role the console requires.",
    "unreachable": "Keycloak could not be reached.",
}


def _oidc_words(reason: str, detail: str) -> str:
    return f"{OIDC_WORDS.get(reason, 'The Keycloak sign-in failed.')} ({detail})"
