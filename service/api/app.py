"""aiohttp application: `/healthz`, `/readyz`, `/metrics` open; everything else behind the admin token.

Handlers are thin: they parse, call one collaborator, and shape the answer. Tokens never leave.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.domain.plan import DeletePolicy
from service.domain.scim import valid_resource_id
from service.errors import EnableRefused, TenantUnreadable
from service.keycloak_admin.client import KeycloakAdminClient
from service.keycloak_admin.realm_check import check_realm
from service.metrics import Metrics
from service.pipeline.backfill import Backfills
from service.pipeline.on_demand import provision_now
from service.pipeline.reconcile import Reconciler
from service.pipeline.set_aside import HeldTopic
from service.scim.breaker import BreakerState
from service.scim.client import ScimClient
from service.scim.discovery import validate_downstream
from service.scim.egress import EgressPolicy
from service.tenants.models import Tenant
from service.tenants.store import TenantStore

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class Readiness(Protocol):
    def is_ready(self) -> bool: ...

    def unready_reasons(self) -> list[str]:
        """Why the replica is not ready, each with what to do; empty when ready."""
        ...


@dataclass(frozen=True)
class ApiDeps:
    admin_token: str
    tenants: TenantStore
    scim: ScimClient
    egress: EgressPolicy
    metrics: Metrics
    readiness: Readiness
    parked: HeldTopic
    dead_letters: HeldTopic
    replay: Callable[[HeldTopic, str | None], Awaitable[int]]
    link: Callable[[str, str, str], Awaitable[None]]
    max_body_bytes: int
    backfills: Backfills | None = None  # None: no Keycloak admin access configured
    reconciler: Reconciler | None = None
    keycloak: KeycloakAdminClient | None = None
    event_listeners: tuple[str, ...] = ()  # listener ids that send to the service's topics


def build_api(deps: ApiDeps) -> web.Application:
    background: set[asyncio.Task[int]] = set()

    @web.middleware
    async def require_admin(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {deps.admin_token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return _error(401, "unauthorized", "a valid admin bearer token is required")
        try:
            return await handler(request)
        except TenantUnreadable as exc:  # one answer for every endpoint that needs the realm's record
            return _error(409, "tenant_unreadable", f"{exc}: {exc.fix}")

    def describe(tenant: Tenant) -> dict[str, Any]:
        breaker = deps.scim.breakers().get(tenant.realm)
        state = breaker.state if breaker else BreakerState.CLOSED
        return {**tenant.public(), "circuit": state.name.lower(), "lookups": deps.scim.lookup_mode(tenant.realm)}

    async def realm_warnings(realm: str) -> list[dict[str, str]]:
        """What in the realm's event settings keeps its events away, read now (Keycloak access only)."""
        assert deps.keycloak is not None
        return [w.public() for w in await check_realm(deps.keycloak, realm, deps.event_listeners)]

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready = deps.readiness.is_ready()
        if ready:
            return web.json_response({"ready": True})
        return web.json_response({"ready": False, "reasons": deps.readiness.unready_reasons()}, status=503)

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(deps.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def list_tenants(_: web.Request) -> web.Response:
        unreadable = [
            {"realm": e.realm, "status": "unreadable", "detail": f"{e}: {e.fix}"} for e in deps.tenants.unreadable()
        ]
        listed = [describe(t) for t in deps.tenants.all()] + unreadable
        return web.json_response({"tenants": sorted(listed, key=lambda t: str(t["realm"]))})

    async def show_tenant(request: web.Request) -> web.Response:
        tenant = deps.tenants.get(request.match_info["realm"])
        if tenant is None:
            return _error(404, "not_enabled", "outbound SCIM is not enabled for this realm")
        answer = describe(tenant)
        if deps.keycloak is not None:
            answer["warnings"] = await realm_warnings(tenant.realm)
        return web.json_response(answer)

    async def enable_tenant(request: web.Request) -> web.Response:
        """Enable or rotate: validate the downstream first; store nothing if it fails."""
        realm = request.match_info["realm"]
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        parsed = _parse_enable(realm, body)
        if isinstance(parsed, web.Response):
            return parsed
        try:
            await validate_downstream(deps.scim, parsed.downstream, deps.egress)
        except EnableRefused as exc:
            log.info("tenant.enable.refused", tenant=realm, reason=exc.reason, detail=exc.detail)
            return _error(
                400 if exc.reason in ("invalid_url", "insecure_url", "forbidden_address") else 422,
                exc.reason,
                exc.detail,
            )
        backfill = body.get("backfill", False)
        if backfill and deps.backfills is None:
            return _error(400, "keycloak_not_configured", "backfill needs OUTBOUND_SCIM_KEYCLOAK_* settings")
        previous = deps.tenants.last_generation(realm)  # also of a record this replica cannot read
        tenant = replace(parsed, generation=deps.tenants.next_generation(realm))
        await deps.tenants.put(tenant)
        log.info("tenant.enabled", tenant=realm, base_url=tenant.base_url, rotated=previous is not None)
        if previous is not None:  # a rotation: what was parked (e.g. by a refused token) goes through now
            task = asyncio.create_task(deps.replay(deps.parked, realm))
            background.add(task)
            task.add_done_callback(background.discard)
        answer = describe(tenant)
        if deps.keycloak is not None:  # never blocks: the realm may be set up after the enable
            answer["warnings"] = await realm_warnings(realm)
            for warning in answer["warnings"]:
                log.warning("tenant.enable.warning", tenant=realm, code=warning["code"])
        if backfill and deps.backfills is not None:
            answer["backfill"] = deps.backfills.start(realm).public()
        return web.json_response(answer, status=200 if previous is not None else 201)

    async def disable_tenant(request: web.Request) -> web.Response:
        realm = request.match_info["realm"]
        if deps.tenants.last_generation(realm) is None:  # an unreadable record may be disabled too
            return _error(404, "not_enabled", "outbound SCIM is not enabled for this realm")
        await deps.tenants.remove(realm)
        log.info("tenant.disabled", tenant=realm)
        return web.json_response({"realm": realm, "status": "disabled"})

    async def list_parked(request: web.Request) -> web.Response:
        records = await deps.parked.list(request.match_info["realm"])
        return web.json_response({"parked": [r.public() for r in records]})

    async def replay_parked(request: web.Request) -> web.Response:
        return web.json_response({"replayed": await deps.replay(deps.parked, request.match_info["realm"])})

    async def start_backfill(request: web.Request) -> web.Response:
        realm = request.match_info["realm"]
        if deps.backfills is None:
            return _error(409, "keycloak_not_configured", "backfill needs OUTBOUND_SCIM_KEYCLOAK_* settings")
        if deps.tenants.get(realm) is None:
            return _error(404, "not_enabled", "outbound SCIM is not enabled for this realm")
        return web.json_response(deps.backfills.start(realm).public(), status=202)

    async def show_backfill(request: web.Request) -> web.Response:
        progress = deps.backfills.get(request.match_info["realm"]) if deps.backfills else None
        if progress is None:
            return _error(404, "no_backfill", "no backfill was started for this realm on this replica")
        return web.json_response(progress.public())

    async def reconcile(request: web.Request) -> web.Response:
        """Compare Keycloak with the downstream; fix what differs unless dry_run; report either way."""
        realm = request.match_info["realm"]
        if deps.reconciler is None:
            return _error(409, "keycloak_not_configured", "reconciliation needs OUTBOUND_SCIM_KEYCLOAK_* settings")
        tenant = deps.tenants.get(realm)
        if tenant is None:
            return _error(404, "not_enabled", "outbound SCIM is not enabled for this realm")
        body = await _json_object(request, empty_ok=True)
        if isinstance(body, web.Response):
            return body
        return web.json_response(await deps.reconciler.run(tenant.downstream, bool(body.get("dry_run", False))))

    async def sync_user(request: web.Request) -> web.Response:
        """Provision one user now, from Keycloak, and answer the step trace."""
        realm = request.match_info["realm"]
        if deps.keycloak is None:
            return _error(409, "keycloak_not_configured", "on-demand sync needs OUTBOUND_SCIM_KEYCLOAK_* settings")
        tenant = deps.tenants.get(realm)
        if tenant is None:
            return _error(404, "not_enabled", "outbound SCIM is not enabled for this realm")
        return web.json_response(await provision_now(deps.keycloak, deps.scim, tenant, request.match_info["user_id"]))

    async def link_user(request: web.Request) -> web.Response:
        """Declare which downstream account is this Keycloak user's (resolving a conflict). Queued on the
        user's keyed partition, so a replay sent afterwards finds the user linked."""
        realm, user_id = request.match_info["realm"], request.match_info["user_id"]
        if deps.tenants.get(realm) is None:
            return _error(404, "not_enabled", "outbound SCIM is not enabled for this realm")
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        downstream_id = valid_resource_id(body.get("downstream_id"))
        if downstream_id is None:
            return _error(
                400,
                "invalid_request",
                "downstream_id is the account's id: a non-empty string without /, ?, # or control characters",
            )
        await deps.link(realm, user_id, downstream_id)
        log.info("user.link.queued", tenant=realm, user_id=user_id, downstream_id=downstream_id)
        return web.json_response(
            {"realm": realm, "user_id": user_id, "downstream_id": downstream_id, "queued": True}, status=202
        )

    async def list_dead_letters(request: web.Request) -> web.Response:
        records = await deps.dead_letters.list(request.query.get("tenant"))
        return web.json_response({"dead_letters": [r.public() for r in records]})

    async def replay_dead_letters(request: web.Request) -> web.Response:
        body = await _json_object(request, empty_ok=True)
        if isinstance(body, web.Response):
            return body
        tenant = body.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            return _error(400, "invalid_request", "tenant is a string")
        return web.json_response({"replayed": await deps.replay(deps.dead_letters, tenant)})

    app = web.Application(middlewares=[require_admin], client_max_size=deps.max_body_bytes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/tenants", list_tenants)
    app.router.add_get("/tenants/{realm}", show_tenant)
    app.router.add_put("/tenants/{realm}", enable_tenant)
    app.router.add_delete("/tenants/{realm}", disable_tenant)
    app.router.add_get("/tenants/{realm}/parked", list_parked)
    app.router.add_post("/tenants/{realm}/parked/replay", replay_parked)
    app.router.add_post("/tenants/{realm}/backfill", start_backfill)
    app.router.add_get("/tenants/{realm}/backfill", show_backfill)
    app.router.add_post("/tenants/{realm}/reconcile", reconcile)
    app.router.add_post("/tenants/{realm}/users/{user_id}/sync", sync_user)
    app.router.add_post("/tenants/{realm}/users/{user_id}/link", link_user)
    app.router.add_get("/dead-letters", list_dead_letters)
    app.router.add_post("/dead-letters/replay", replay_dead_letters)
    return app


async def _json_object(request: web.Request, empty_ok: bool = False) -> dict[str, Any] | web.Response:
    if empty_ok and not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "invalid_request", "the body must be a JSON object")
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "too_large", "the request body is too large")
    if not isinstance(body, dict):
        return _error(400, "invalid_request", "the body must be a JSON object")
    return body


def _parse_enable(realm: str, body: dict[str, Any]) -> Tenant | web.Response:
    base_url, token = body.get("base_url"), body.get("token")
    if not isinstance(base_url, str) or not isinstance(token, str) or not base_url or not token:
        return _error(400, "invalid_request", "base_url and token are required strings")
    try:
        policy = DeletePolicy(body.get("delete_policy", "ignore"))
    except ValueError:
        return _error(400, "invalid_request", "delete_policy is one of ignore, deactivate, delete")
    limits = {k: body.get(k) for k in ("max_concurrency", "rate_limit_per_minute")}
    for name, value in limits.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return _error(400, "invalid_request", f"{name} is a positive integer")
    interval = body.get("reconcile_interval_minutes")
    if interval is not None and (not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0):
        return _error(400, "invalid_request", "reconcile_interval_minutes is a positive number")
    realm_id = body.get("realm_id")
    if realm_id is not None and (not isinstance(realm_id, str) or not realm_id):
        return _error(400, "invalid_request", "realm_id is a non-empty string")
    return Tenant(
        realm,
        base_url.rstrip("/"),
        token,
        policy,
        datetime.now(UTC).isoformat(timespec="seconds"),
        max_concurrency=limits["max_concurrency"],
        rate_limit_per_minute=limits["rate_limit_per_minute"],
        realm_id=realm_id,
        reconcile_interval_minutes=interval,
    )


def _error(status: int, reason: str, detail: str) -> web.Response:
    return web.json_response({"error": reason, "detail": detail}, status=status)
