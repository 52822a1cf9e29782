"""What every console handler reads: the tenant service, the activity log, the session signer, the
templates, the Keycloak sign-in; kept on the console's application under CONSOLE."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import jinja2
from aiohttp import web

from service.api.models import Problem
from service.api.tenants import TenantService
from service.console.oidc import Identity, PendingLogin
from service.console.sessions import SessionSigner
from service.console.throttle import SignInThrottle
from service.console.words import refusal, warning
from service.domain.activity import ActivityView

__all__ = ["CONSOLE", "Console", "KeycloakSignIn", "templates"]

HERE = Path(__file__).parent


Problems = Callable[[Exception, web.Request, int], tuple[int, Problem]]


class KeycloakSignIn(Protocol):
    """service.console.oidc.OidcLogin, as the console calls it (a fake in unit tests): `start` answers the
    authorize URL and the pending login, `finish` who signed in, or raises OidcRefused."""

    async def start(self, redirect_uri: str) -> tuple[str, PendingLogin]: ...

    async def finish(self, *, code: str, state: str, redirect_uri: str, pending: PendingLogin) -> Identity: ...


@dataclass
class Console:
    service: TenantService
    signer: SessionSigner
    templates: jinja2.Environment
    admin_token: str
    problem: Problems  # service.api.app.problem: the status and error code of what a handler raised
    activity: ActivityView | None = None
    oidc: KeycloakSignIn | None = None
    keycloak: bool = False  # the service has Keycloak admin access (backfill, reconciliation, sync)
    clock: Callable[[], float] = field(default=time.time)
    token_sign_in: bool = True  # the sign-in page takes the admin token
    throttle: SignInThrottle = field(default_factory=SignInThrottle)  # wrong admin tokens per address

    def render(self, template: str, status: int = 200, **values: Any) -> web.Response:
        html = self.templates.get_template(template).render(**values)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


CONSOLE = web.AppKey("console", Console)


def when(epoch: float | None) -> str:
    """A time as operators read it in logs: UTC, to the second."""
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def segment(value: str) -> str:
    """A path segment (a realm name may hold anything)."""
    return quote(value, safe="")


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped; no template marks anything safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["seg"] = segment
    env.globals["refusal"] = refusal
    env.globals["warning"] = warning
    return env
