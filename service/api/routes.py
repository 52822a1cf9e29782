"""The route table: every operation of the admin API, its handler, its models and its status codes.

The aiohttp application registers these routes and the OpenAPI document is generated from them
(service.api.openapi), so what is served and what is documented cannot differ. Handlers are thin: parse
the request model, call the tenant service, answer its response model; errors are raised and turned into
the one error shape by the application's middleware (service.api.app).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ValidationError

from service.api.errors import InvalidRequest
from service.api.models import (
    ActivityList,
    BackfillProgressView,
    DeadLetterList,
    DisabledTenant,
    DownstreamList,
    EnabledTenant,
    EnableTenant,
    Health,
    LinkQueued,
    LinkUser,
    ParkedList,
    Readiness,
    Reconcile,
    ReconcileReport,
    ReplayAll,
    Replayed,
    SyncReport,
    TenantList,
    TenantView,
)
from service.api.tenants import TenantService
from service.domain.downstreams import DEFAULT, NAME_PATTERN, is_name, tenant_key

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Method = Literal["GET", "PUT", "POST", "DELETE"]
M = TypeVar("M", bound=BaseModel)


class ReadinessSource(Protocol):
    def unready_reasons(self) -> list[str]:
        """Why the replica is not ready, each with what to do; empty when ready."""
        ...


TENANTS = web.AppKey("tenants", TenantService)
READINESS: web.AppKey[ReadinessSource] = web.AppKey("readiness")
REGISTRY = web.AppKey("registry", CollectorRegistry)
OPENAPI = web.AppKey("openapi", bytes)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    model: type[BaseModel] | None  # None: a text body (Prometheus exposition, the OpenAPI document)
    description: str
    media_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Route:
    method: Method
    path: str
    operation_id: str
    summary: str
    handler: Handler
    answers: tuple[Answer, ...]
    errors: Mapping[int, str] = field(default_factory=dict)  # besides 401, 413 and 500 (added where they apply)
    body: type[BaseModel] | None = None
    body_required: bool = True
    authenticated: bool = True
    tag: str = "tenants"
    query: Mapping[str, tuple[str, Mapping[str, object]]] = field(default_factory=dict)  # name -> (what, schema)


# --- helpers ------------------------------------------------------------------------------------------


def _tenants(request: web.Request) -> TenantService:
    return request.app[TENANTS]


def _realm(request: web.Request) -> str:
    return request.match_info["realm"]


def _key(request: web.Request) -> str:
    """The tenant key the path names: `/tenants/{realm}/downstreams/{name}/...`, or the realm's default
    downstream for `/tenants/{realm}/...` (service.domain.downstreams)."""
    name = request.match_info.get("name", DEFAULT)
    if not is_name(name):
        raise InvalidRequest(f"a downstream name matches {NAME_PATTERN}")
    return tenant_key(_realm(request), name)


def _answer(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(text=model.model_dump_json(), status=status, content_type="application/json")


async def parse(request: web.Request, model: type[M], required: bool = True) -> M:
    """The body as `model`; InvalidRequest naming what is wrong (never the values: they may hold a token).
    An empty body is `{}` where the body is optional."""
    raw = await request.read()  # over the size limit: aiohttp raises 413, answered as too_large
    if not raw.strip():
        if required:
            raise InvalidRequest("the body must be a JSON object")
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidRequest(_invalid(exc)) from None


def _invalid(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        if error["type"] == "json_invalid":
            return "the body is not valid JSON"
        if error["type"] == "model_type" and not error["loc"]:
            return "the body must be a JSON object"
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"])
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


# --- handlers -----------------------------------------------------------------------------------------


async def healthz(_: web.Request) -> web.Response:
    return _answer(Health())


async def readyz(request: web.Request) -> web.Response:
    reasons = request.app[READINESS].unready_reasons()
    return _answer(Readiness(ready=not reasons, reasons=reasons), 503 if reasons else 200)


async def prometheus(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[REGISTRY]), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def list_tenants(request: web.Request) -> web.Response:
    return _answer(_tenants(request).tenants())


async def list_downstreams(request: web.Request) -> web.Response:
    return _answer(_tenants(request).downstreams(_realm(request)))


async def show_tenant(request: web.Request) -> web.Response:
    return _answer(await _tenants(request).show(_key(request)))


async def enable_tenant(request: web.Request) -> web.Response:
    enabled = await _tenants(request).enable(_key(request), await parse(request, EnableTenant))
    return _answer(enabled.tenant, 201 if enabled.created else 200)


async def disable_tenant(request: web.Request) -> web.Response:
    return _answer(await _tenants(request).disable(_key(request)))


async def list_parked(request: web.Request) -> web.Response:
    return _answer(await _tenants(request).parked(_key(request)))


async def replay_parked(request: web.Request) -> web.Response:
    return _answer(await _tenants(request).replay_parked(_key(request)))


async def list_tenant_dead_letters(request: web.Request) -> web.Response:
    return _answer(await _tenants(request).dead_letters(_key(request)))


async def replay_tenant_dead_letters(request: web.Request) -> web.Response:
    return _answer(await _tenants(request).replay_dead_letters(_key(request)))


async def list_dead_letters(request: web.Request) -> web.Response:
    if "tenant" in request.query:  # the old filter: say where it went rather than list everything
        raise InvalidRequest("a tenant's dead letters are listed by GET /tenants/{realm}/dead-letters")
    return _answer(await _tenants(request).dead_letters(None))


async def replay_dead_letters(request: web.Request) -> web.Response:
    await parse(request, ReplayAll, required=False)
    return _answer(await _tenants(request).replay_dead_letters(None))


async def start_backfill(request: web.Request) -> web.Response:
    return _answer(_tenants(request).start_backfill(_key(request)), 202)


async def show_backfill(request: web.Request) -> web.Response:
    return _answer(_tenants(request).backfill(_key(request)))


async def reconcile(request: web.Request) -> web.Response:
    body = await parse(request, Reconcile, required=False)
    return _answer(await _tenants(request).reconcile(_key(request), body))


async def sync_user(request: web.Request) -> web.Response:
    return _answer(await _tenants(request).sync(_key(request), request.match_info["user_id"]))


async def link_user(request: web.Request) -> web.Response:
    body = await parse(request, LinkUser)
    return _answer(await _tenants(request).link(_key(request), request.match_info["user_id"], body), 202)


ACTIVITY_LIMIT = 500


async def show_activity(request: web.Request) -> web.Response:
    raw = request.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= ACTIVITY_LIMIT:
        raise InvalidRequest(f"limit is a whole number from 1 to {ACTIVITY_LIMIT}")
    user = request.query.get("user", "").strip()[:200] or None
    return _answer(_tenants(request).activity(_key(request), user, int(raw)))


# --- the table ----------------------------------------------------------------------------------------

NOT_ENABLED = "not_enabled: outbound SCIM is not enabled for this realm"
UNREADABLE = "tenant_unreadable: the realm's tenant record cannot be read here (the detail says how to fix it)"
NO_KEYCLOAK = "keycloak_not_configured: needs the OUTBOUND_SCIM_KEYCLOAK_* settings"
HELD = "Records of a realm that was disabled are listed too (and still replayable)."

REALM_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/healthz",
        "health",
        "Liveness: the process answers",
        healthz,
        (Answer(200, Health, "alive"),),
        authenticated=False,
        tag="probes",
    ),
    Route(
        "GET",
        "/readyz",
        "readiness",
        "Readiness: tenant store loaded, both stages assigned, every tenant record readable",
        readyz,
        (Answer(200, Readiness, "ready"), Answer(503, Readiness, "not ready: `reasons` says why, each with its fix")),
        authenticated=False,
        tag="probes",
    ),
    Route(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics",
        prometheus,
        (Answer(200, None, "the Prometheus text exposition format", "text/plain"),),
        authenticated=False,
        tag="probes",
    ),
    Route(
        "GET",
        "/openapi.json",
        "openapi",
        "This document (OpenAPI 3.1)",
        openapi,
        (Answer(200, None, "the OpenAPI document"),),
        authenticated=False,
        tag="probes",
    ),
    Route(
        "GET",
        "/tenants",
        "listTenants",
        "List tenants (readable ones, and records this replica cannot read as status unreadable)",
        list_tenants,
        (Answer(200, TenantList, "the tenants, by realm"),),
    ),
    Route(
        "GET",
        "/tenants/{realm}",
        "showTenant",
        "Show a tenant; with Keycloak access, the realm's event settings are read again (`warnings`)",
        show_tenant,
        (Answer(200, TenantView, "the tenant"),),
        {404: NOT_ENABLED, 409: UNREADABLE},
    ),
    Route(
        "PUT",
        "/tenants/{realm}",
        "enableTenant",
        "Enable a realm, or rotate it (the body is the whole tenant); nothing is stored unless the "
        "downstream validates; a rotation replays what the realm parked",
        enable_tenant,
        (Answer(201, EnabledTenant, "enabled"), Answer(200, EnabledTenant, "rotated")),
        {
            400: "invalid_request: the body does not validate; invalid_url, insecure_url, forbidden_address: "
            "the egress policy refuses the base URL",
            409: "keycloak_not_configured: backfill asked without the OUTBOUND_SCIM_KEYCLOAK_* settings",
            422: "the downstream failed validation: not_found, unauthorized, not_scim, unreachable, redirect or "
            "downstream_error (the detail says which request and what to check)",
        },
        body=EnableTenant,
    ),
    Route(
        "DELETE",
        "/tenants/{realm}",
        "disableTenant",
        "Disable a realm: its events are skipped (and counted) from now on",
        disable_tenant,
        (Answer(200, DisabledTenant, "disabled"),),
        {404: NOT_ENABLED},
    ),
    Route(
        "GET",
        "/tenants/{realm}/parked",
        "listParked",
        "The realm's parked changes, oldest first. " + HELD,
        list_parked,
        (Answer(200, ParkedList, "the parked changes"),),
        tag="held",
    ),
    Route(
        "POST",
        "/tenants/{realm}/parked/replay",
        "replayParked",
        "Replay the realm's parked changes, in order",
        replay_parked,
        (Answer(200, Replayed, "sent back to the changes topic"),),
        tag="held",
    ),
    Route(
        "GET",
        "/tenants/{realm}/dead-letters",
        "listTenantDeadLetters",
        "The realm's dead letters not replayed yet, oldest first. " + HELD,
        list_tenant_dead_letters,
        (Answer(200, DeadLetterList, "the realm's dead letters"),),
        tag="held",
    ),
    Route(
        "POST",
        "/tenants/{realm}/dead-letters/replay",
        "replayTenantDeadLetters",
        "Replay the realm's dead letters to the topic each came from",
        replay_tenant_dead_letters,
        (Answer(200, Replayed, "sent back"),),
        tag="held",
    ),
    Route(
        "GET",
        "/dead-letters",
        "listDeadLetters",
        "Every dead letter not replayed yet, of every realm and those without one (poison records)",
        list_dead_letters,
        (Answer(200, DeadLetterList, "all dead letters"),),
        {400: "invalid_request: the old `tenant` query parameter (use /tenants/{realm}/dead-letters)"},
        tag="held",
    ),
    Route(
        "POST",
        "/dead-letters/replay",
        "replayDeadLetters",
        "Replay every dead letter (of every realm, and those without one) to the topic each came from",
        replay_dead_letters,
        (Answer(200, Replayed, "sent back"),),
        {400: "invalid_request: the body is not a JSON object, or names a tenant (use its own replay)"},
        body=ReplayAll,
        body_required=False,
        tag="held",
    ),
    Route(
        "POST",
        "/tenants/{realm}/backfill",
        "startBackfill",
        "Push every user of the realm as Keycloak stores it now (one backfill per realm at a time)",
        start_backfill,
        (Answer(202, BackfillProgressView, "started, or the one running"),),
        {404: NOT_ENABLED, 409: NO_KEYCLOAK + "; " + UNREADABLE},
        tag="keycloak",
    ),
    Route(
        "GET",
        "/tenants/{realm}/backfill",
        "showBackfill",
        "The progress of the realm's last backfill on this replica",
        show_backfill,
        (Answer(200, BackfillProgressView, "its progress"),),
        {404: "no_backfill: none was started for this realm on this replica"},
        tag="keycloak",
    ),
    Route(
        "POST",
        "/tenants/{realm}/reconcile",
        "reconcile",
        "Compare every Keycloak user with the downstream; queue a fix of each missing or stale one unless "
        "dry_run; extra downstream users are reported, and deleted only when one carries the id of a user the "
        "service knows deleted and the delete policy is delete (decision 0017)",
        reconcile,
        (Answer(200, ReconcileReport, "the drift found, and the fixes queued"),),
        {404: NOT_ENABLED, 409: NO_KEYCLOAK + "; " + UNREADABLE},
        body=Reconcile,
        body_required=False,
        tag="keycloak",
    ),
    Route(
        "POST",
        "/tenants/{realm}/users/{user_id}/sync",
        "syncUser",
        "Provision one user now from Keycloak (every attribute written); the answer is the step trace",
        sync_user,
        (Answer(200, SyncReport, "what was done, step by step (result failed: the error)"),),
        {404: NOT_ENABLED, 409: NO_KEYCLOAK + "; " + UNREADABLE},
        tag="keycloak",
    ),
    Route(
        "POST",
        "/tenants/{realm}/users/{user_id}/link",
        "linkUser",
        "Declare which downstream account is this Keycloak user's (resolves a conflict); applied in order "
        "with the user's changes, so replay its dead letters afterwards",
        link_user,
        (Answer(202, LinkQueued, "queued on the user's partition"),),
        {404: NOT_ENABLED, 409: UNREADABLE},
        body=LinkUser,
    ),
    Route(
        "GET",
        "/tenants/{realm}/activity",
        "showActivity",
        "The realm's recent provisioning activity, newest first, as every replica reads it from the activity "
        "topic (query `user`: a user id or part of a username, any case; `limit`: 1-500, default 50), with the "
        "summary the tenants page shows",
        show_activity,
        (Answer(200, ActivityList, "the entries and the summary"),),
        {
            400: "invalid_request: limit is not a whole number from 1 to 500",
            404: NOT_ENABLED,
            409: "activity_off: OUTBOUND_SCIM_ACTIVITY_ENABLED is false; " + UNREADABLE,
        },
        tag="activity",
        query={
            "user": ("a Keycloak user id, or a part of a username (any case)", {"type": "string"}),
            "limit": ("the most entries answered", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
        },
    ),
)

DOWNSTREAM_PATH = "/tenants/{realm}/downstreams/{name}"
BAD_NAME = f"invalid_request: the downstream name does not match {NAME_PATTERN}"


def _of_downstream(route: Route) -> Route:
    """A realm route's twin for one named downstream app of the realm: same handler, models and answers
    (the handler reads the name from the path; `/tenants/{realm}` is the downstream named `default`)."""
    operation = route.operation_id
    return replace(
        route,
        path=route.path.replace("/tenants/{realm}", DOWNSTREAM_PATH, 1),
        operation_id=operation.replace("Tenant", "Downstream") if "Tenant" in operation else f"{operation}OfDownstream",
        summary=f"As {route.method} {route.path}, for the realm's downstream app {{name}}",
        errors={**route.errors, 400: "; ".join(filter(None, (route.errors.get(400), BAD_NAME)))},
    )


ROUTES: tuple[Route, ...] = (
    *REALM_ROUTES,
    Route(
        "GET",
        "/tenants/{realm}/downstreams",
        "listDownstreams",
        "List the realm's downstream apps (readable ones, and records this replica cannot read as unreadable)",
        list_downstreams,
        (Answer(200, DownstreamList, "the realm's downstreams, by name; empty when none is enabled"),),
    ),
    *(_of_downstream(r) for r in REALM_ROUTES if r.path.startswith("/tenants/{realm}")),
)
