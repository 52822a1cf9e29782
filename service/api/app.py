"""aiohttp application: the routes of service.api.routes behind the admin token, and one error shape.

`/healthz`, `/readyz`, `/metrics` and `/openapi.json` are open, and `/ui/` needs no token (the operator
console checks its own session: service.console); everything else needs
`Authorization: Bearer <OUTBOUND_SCIM_ADMIN_TOKEN>`. Every error, whoever raises it (a handler, the tenant
service, aiohttp's router or body limit, a bug), answers `{"error": <code>, "detail": <text>}`; the status
for each error type is decided in `problem`, and only there. Tokens never leave.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from service.api.adapters import HeldTopicRecords, KeycloakSide, ScimDownstreams
from service.api.errors import ActivityOff, ApiError, InvalidRequest, KeycloakNotConfigured, NoBackfill, NotEnabled
from service.api.models import Problem
from service.api.openapi import rendered
from service.api.routes import OPENAPI, READINESS, REGISTRY, ROUTES, TENANTS, Handler, ReadinessSource
from service.api.tenants import TenantService
from service.console.app import PREFIX as CONSOLE_PREFIX
from service.console.app import ConsoleConfig, console_app
from service.console.oidc import OidcLogin
from service.domain.activity import ActivitySink, ActivityView
from service.errors import EnableRefused, TenantUnreadable
from service.keycloak_admin.client import KeycloakAdminClient
from service.metrics import Metrics
from service.pipeline.backfill import Backfills
from service.pipeline.reconcile import Reconciler
from service.pipeline.set_aside import HeldTopic
from service.scim.client import ScimClient
from service.scim.egress import EgressPolicy
from service.tenants.store import TenantStore

__all__ = ["ApiDeps", "api_app", "build_api", "problem"]

log = structlog.get_logger(__name__)
OPEN_PATHS = frozenset(route.path for route in ROUTES if not route.authenticated)

STATUS_OF: dict[type[ApiError], int] = {
    InvalidRequest: 400,
    NotEnabled: 404,
    NoBackfill: 404,
    KeycloakNotConfigured: 409,
    ActivityOff: 409,
}
URL_REFUSALS = frozenset({"invalid_url", "insecure_url", "forbidden_address"})  # the request's fault: 400
HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


@dataclass(frozen=True)
class ApiDeps:
    admin_token: str
    tenants: TenantStore
    scim: ScimClient
    egress: EgressPolicy
    metrics: Metrics
    readiness: ReadinessSource
    parked: HeldTopic
    dead_letters: HeldTopic
    replay: Callable[[HeldTopic, str | None], Awaitable[int]]
    link: Callable[[str, str, str], Awaitable[None]]
    max_body_bytes: int
    backfills: Backfills | None = None  # None: no Keycloak admin access configured
    reconciler: Reconciler | None = None
    keycloak: KeycloakAdminClient | None = None
    event_listeners: tuple[str, ...] = ()  # listener ids that send to the service's topics
    activity: ActivityView | None = None  # the activity log as every replica reads it; None: it is off
    console: ConsoleConfig | None = None  # None: no console under /ui/ (console_enabled off)
    oidc: OidcLogin | None = None  # the console's Keycloak sign-in; None: admin token only
    activity_sink: ActivitySink | None = None  # where an on-demand sync is reported


def build_api(deps: ApiDeps) -> web.Application:
    keycloak = (
        KeycloakSide(
            deps.keycloak, deps.scim, deps.backfills, deps.reconciler, deps.event_listeners, deps.activity_sink
        )
        if deps.keycloak is not None and deps.backfills is not None and deps.reconciler is not None
        else None
    )
    service = TenantService(
        deps.tenants,
        ScimDownstreams(deps.scim, deps.egress),
        HeldTopicRecords(deps.parked, deps.replay),
        HeldTopicRecords(deps.dead_letters, deps.replay),
        deps.link,
        keycloak,
        activity=deps.activity,
        activity_sink=deps.activity_sink,
    )
    console = None
    if deps.console is not None:
        console = console_app(
            service,
            deps.admin_token,
            deps.console,
            problem,
            activity=deps.activity,
            oidc=deps.oidc,
            keycloak=keycloak is not None,
            max_body_bytes=deps.max_body_bytes,
        )
    return api_app(service, deps.admin_token, deps.readiness, deps.metrics.registry, deps.max_body_bytes, console)


def api_app(
    tenants: TenantService,
    admin_token: str,
    readiness: ReadinessSource,
    registry: CollectorRegistry,
    max_body_bytes: int,
    console: web.Application | None = None,
) -> web.Application:
    """The application around a tenant service (unit tests build one with fakes behind it), with the
    console's sub-application mounted under /ui/ when given."""
    expected = f"Bearer {admin_token}".encode()

    @web.middleware
    async def one_error_shape(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if (
                request.path not in OPEN_PATHS
                and not under_console(request.path)
                and not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected)
            ):
                return _error(401, Problem(error="unauthorized", detail="a valid admin bearer token is required"))
            return await handler(request)
        except Exception as exc:
            status, body = problem(exc, request, max_body_bytes)
            allow = exc.headers.get("Allow") if isinstance(exc, web.HTTPException) else None
            return _error(status, body, {"Allow": allow} if allow else {})

    def under_console(path: str) -> bool:
        return console is not None and (path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/"))

    app = web.Application(middlewares=[one_error_shape], client_max_size=max_body_bytes)
    app[TENANTS] = tenants
    app[READINESS] = readiness
    app[REGISTRY] = registry
    app[OPENAPI] = rendered().encode()
    for route in ROUTES:
        if route.method == "GET":
            app.router.add_get(route.path, route.handler)  # HEAD too, as HTTP has it
        else:
            app.router.add_route(route.method, route.path, route.handler)
    if console is not None:
        app.router.add_get(CONSOLE_PREFIX, _to_console)  # before the sub-application, which matches /ui too
        app.add_subapp(CONSOLE_PREFIX, console)
    return app


async def _to_console(_: web.Request) -> web.Response:
    """/ui as typed in an address bar: the console lives under /ui/."""
    return web.Response(status=308, headers={"Location": CONSOLE_PREFIX + "/"})


def problem(exc: Exception, request: web.Request, max_body_bytes: int) -> tuple[int, Problem]:
    """The status and body answering `exc`: the one place that maps errors to HTTP."""
    match exc:
        case ApiError():
            status = next(status for kind, status in STATUS_OF.items() if isinstance(exc, kind))
            return status, Problem(error=exc.code, detail=exc.detail)
        case EnableRefused():
            refused_request = exc.reason in URL_REFUSALS or exc.reason == "invalid_mapping"
            return (400 if refused_request else 422), Problem(error=exc.reason, detail=exc.detail)
        case TenantUnreadable():
            return 409, Problem(error=TenantUnreadable.label, detail=f"{exc}: {exc.fix}")
        case web.HTTPRequestEntityTooLarge():
            return 413, Problem(error="too_large", detail=f"the body is over {max_body_bytes} bytes")
        case web.HTTPMethodNotAllowed():
            allowed = ", ".join(sorted(exc.allowed_methods))
            detail = f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
            return 405, Problem(error="method_not_allowed", detail=detail)
        case web.HTTPNotFound():
            return 404, Problem(error="not_found", detail=f"no route {request.method} {request.path}")
        case web.HTTPException():
            code = HTTP_CODES.get(exc.status, exc.reason.lower().replace(" ", "_"))
            return exc.status, Problem(error=code, detail=exc.reason)
    log.exception("api.request.failed", method=request.method, route=_route_of(request))
    return 500, Problem(
        error="internal_error", detail="an unexpected error: the service log has it (api.request.failed)"
    )


def _route_of(request: web.Request) -> str:
    """The route's template, not the path: a path may carry anything a client sent."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else "?"


def _error(status: int, body: Problem, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=body.model_dump_json(), status=status, content_type="application/json", headers=headers)
