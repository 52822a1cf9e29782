"""aiohttp application: `/healthz`, `/readyz`, `/metrics` open; `/tenants...` behind the admin token."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.domain.plan import DeletePolicy
from service.errors import EnableRefused
from service.metrics import Metrics
from service.scim.client import ScimClient
from service.scim.discovery import validate_downstream
from service.tenants.models import Tenant
from service.tenants.store import TenantStore

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class Readiness(Protocol):
    def is_ready(self) -> bool: ...


def build_api(
    *,
    admin_token: str,
    tenants: TenantStore,
    scim: ScimClient,
    metrics: Metrics,
    readiness: Readiness,
    max_body_bytes: int,
) -> web.Application:
    @web.middleware
    async def require_admin(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {admin_token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return _error(401, "unauthorized", "a valid admin bearer token is required")
        return await handler(request)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready = readiness.is_ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def list_tenants(_: web.Request) -> web.Response:
        return web.json_response({"tenants": [t.public() for t in tenants.all()]})

    async def show_tenant(request: web.Request) -> web.Response:
        tenant = tenants.get(request.match_info["realm"])
        if tenant is None:
            return _error(404, "not_enabled", "outbound SCIM is not enabled for this realm")
        return web.json_response(tenant.public())

    async def enable_tenant(request: web.Request) -> web.Response:
        """Enable or rotate: validate the downstream first; store nothing if it fails."""
        realm = request.match_info["realm"]
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request", "the body must be a JSON object")
        if not isinstance(body, dict):
            return _error(400, "invalid_request", "the body must be a JSON object")
        parsed = _parse_enable(realm, body)
        if isinstance(parsed, web.Response):
            return parsed
        try:
            await validate_downstream(scim, parsed.downstream)
        except EnableRefused as exc:
            log.info("tenant.enable.refused", tenant=realm, reason=exc.reason, detail=exc.detail)
            return _error(422 if exc.reason != "invalid_url" else 400, exc.reason, exc.detail)
        rotated = tenants.get(realm) is not None
        await tenants.put(parsed)
        log.info("tenant.enabled", tenant=realm, base_url=parsed.base_url, rotated=rotated)
        return web.json_response(parsed.public(), status=200 if rotated else 201)

    async def disable_tenant(request: web.Request) -> web.Response:
        realm = request.match_info["realm"]
        if tenants.get(realm) is None:
            return _error(404, "not_enabled", "outbound SCIM is not enabled for this realm")
        await tenants.remove(realm)
        log.info("tenant.disabled", tenant=realm)
        return web.json_response({"realm": realm, "status": "disabled"})

    app = web.Application(middlewares=[require_admin], client_max_size=max_body_bytes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/tenants", list_tenants)
    app.router.add_get("/tenants/{realm}", show_tenant)
    app.router.add_put("/tenants/{realm}", enable_tenant)
    app.router.add_delete("/tenants/{realm}", disable_tenant)
    return app


def _parse_enable(realm: str, body: dict[str, Any]) -> Tenant | web.Response:
    base_url, token = body.get("base_url"), body.get("token")
    if not isinstance(base_url, str) or not isinstance(token, str) or not base_url or not token:
        return _error(400, "invalid_request", "base_url and token are required strings")
    try:
        policy = DeletePolicy(body.get("delete_policy", "ignore"))
    except ValueError:
        return _error(400, "invalid_request", "delete_policy is one of ignore, deactivate, delete")
    return Tenant(realm, base_url.rstrip("/"), token, policy, datetime.now(UTC).isoformat(timespec="seconds"))


def _error(status: int, reason: str, detail: str) -> web.Response:
    return web.json_response({"error": reason, "detail": detail}, status=status)
