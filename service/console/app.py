"""The console as an aiohttp sub-application, mounted under /ui/ on the API's application (same process
and port): its routes and its middlewares (security headers, error pages, the session guard)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from service.api.tenants import TenantService
from service.console import login, views
from service.console.context import CONSOLE, HERE, Console, KeycloakSignIn, Problems, templates
from service.console.security import Handler, guard, secure_headers
from service.console.sessions import SessionSigner, derive_key
from service.domain.activity import ActivityView

__all__ = ["PREFIX", "ConsoleConfig", "console_app"]

PREFIX = "/ui"


@dataclass(frozen=True)
class ConsoleConfig:
    """The console's settings (service.settings: console_*)."""

    secret: str | None = None  # console_secret; None: derived from the admin token
    session_minutes: float = 480.0
    token_sign_in: bool = True  # the admin token is taken for a sign-in (console_token_sign_in)


def console_app(
    service: TenantService,
    admin_token: str,
    config: ConsoleConfig,
    problem: Problems,
    *,
    activity: ActivityView | None = None,
    oidc: KeycloakSignIn | None = None,
    keycloak: bool = False,
    max_body_bytes: int = 1 << 20,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The sub-application; errors are answered with the API's status and code for them (`problem`)."""
    signer = SessionSigner(derive_key(config.secret, admin_token), config.session_minutes)
    console = Console(service, signer, templates(), admin_token, problem, activity, oidc, keycloak, clock)
    console.token_sign_in = config.token_sign_in or oidc is None  # never a console nobody can sign in to

    @web.middleware
    async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        secure_headers(response)
        return response

    @web.middleware
    async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Whatever a handler raises becomes a page in the API's terms (its status and error code)."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                return web.Response(status=exc.status, headers=exc.headers)
            status, body = problem(exc, request, max_body_bytes)
        except Exception as exc:
            status, body = problem(exc, request, max_body_bytes)
        return console.render("error.html", status, error=body.error, detail=body.detail, session=None)

    app = web.Application(middlewares=[headers, error_pages, guard(signer, clock)], client_max_size=max_body_bytes)
    app[CONSOLE] = console
    routes = app.router
    routes.add_get("/", views.home)
    routes.add_get("/login", login.page)
    routes.add_post("/login", login.with_token)
    routes.add_post("/logout", login.logout)
    routes.add_get("/login/keycloak", login.keycloak_start)
    routes.add_get("/login/callback", login.keycloak_callback)
    routes.add_get("/tenants", views.tenants_page)
    routes.add_post("/tenants", views.enable)
    routes.add_get("/tenants/{realm}/{name}", views.tenant_page)
    routes.add_get("/tenants/{realm}/{name}/activity", views.activity_rows)
    routes.add_get("/tenants/{realm}/{name}/backfill", views.backfill_progress)
    routes.add_post("/tenants/{realm}/{name}/backfill", views.start_backfill)
    routes.add_post("/tenants/{realm}/{name}/rotate", views.rotate)
    routes.add_get("/tenants/{realm}/{name}/disable", views.confirm_disable)
    routes.add_post("/tenants/{realm}/{name}/disable", views.disable)
    routes.add_post("/tenants/{realm}/{name}/parked/replay", views.replay_parked)
    routes.add_post("/tenants/{realm}/{name}/dead-letters/replay", views.replay_dead_letters)
    routes.add_post("/tenants/{realm}/{name}/reconcile", views.reconcile)
    routes.add_post("/tenants/{realm}/{name}/sync", views.sync)
    routes.add_static("/static/", HERE / "static")
    return app
