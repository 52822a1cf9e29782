"""The console's pages and form handlers: thin, each calls the tenant service (what the admin API does)
and the activity log, then renders a template or redirects (POST, then 303 to a page).

A refusal the operator can act on (an enable the downstream refused, an operation that needs Keycloak
access) is shown on the page the form was on, in the operator's words (service.console.words), with the
service's own detail under it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from service.api.errors import ApiError, InvalidRequest, NoBackfill, NotEnabled
from service.api.models import (
    BackfillProgressView,
    Reconcile,
    ReconcileReport,
    SyncReport,
    TenantView,
    UnreadableTenant,
)
from service.console.badges import Badge, badges
from service.console.context import CONSOLE, Console, segment
from service.console.forms import enable_request, rotate_request
from service.console.security import SESSION, see_other
from service.domain.activity import ActivityEntry, ActivitySummary
from service.domain.downstreams import DEFAULT, NAME_PATTERN, is_name, tenant_key
from service.errors import EnableRefused, TenantUnreadable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ACTIVITY_ROWS = 50  # newest entries shown; the search narrows them to one user
DONE = {
    "enabled": "Enabled: the downstream answered as a SCIM API with this token.",
    "rotated": "Rotated: the new settings are stored, and what was parked is being replayed.",
    "disabled": "Disabled: this downstream's events are skipped from now on.",
    "replayed": "Replayed: the records were sent back to be applied again.",
    "backfill": "Backfill started: every user of the realm is being sent.",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """What the page shows when a form was refused: the operator's words for `code`, and the detail."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Row:
    """One downstream on the tenants page."""

    realm: str
    downstream: str
    view: TenantView | None
    unreadable: str | None
    badges: list[Badge]
    summary: ActivitySummary | None


def page(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    console = request.app[CONSOLE]
    on = console.activity is not None
    return console.render(template, status, session=request[SESSION], activity_on=on, **values)


def _key(request: web.Request) -> tuple[str, str, str]:
    realm, name = request.match_info["realm"], request.match_info["name"]
    if not is_name(name):
        raise InvalidRequest(f"a downstream name matches {NAME_PATTERN}")
    return realm, name, tenant_key(realm, name)


def _tenant_url(realm: str, name: str, **query: str) -> str:
    url = f"/ui/tenants/{segment(realm)}/{segment(name)}"
    return url + ("?" + "&".join(f"{k}={segment(v)}" for k, v in query.items()) if query else "")


async def home(request: web.Request) -> web.StreamResponse:
    return see_other("/ui/tenants")


# --- tenants page -------------------------------------------------------------------------------------


async def tenants_page(request: web.Request) -> web.Response:
    return await _tenants(request)


async def _tenants(
    request: web.Request, status: int = 200, refused: Refusal | None = None, form: dict[str, str] | None = None
) -> web.Response:
    console = request.app[CONSOLE]
    listed = console.service.tenants().tenants
    parked = await console.service.parked_counts()  # one read of the parking topic for every row
    rows = [_row(console, t, parked) for t in listed]
    enabled = {(t.realm, t.downstream) for t in listed}
    if console.activity is not None:  # disabled within the log's retention: still a row, badge "disabled"
        gone = [known for known in console.activity.downstreams() if known not in enabled]
        rows += [_disabled_row(console, realm, name, parked) for realm, name in gone]
        rows.sort(key=lambda row: (row.realm, row.downstream))
    done = DONE.get(request.query.get("done", ""))
    return page(
        request,
        "tenants.html",
        status,
        rows=rows,
        refused=refused,
        form=form or {"downstream": DEFAULT, "delete_policy": "ignore"},
        done=done,
        keycloak=console.keycloak,
    )


def _row(console: Console, listed: TenantView | UnreadableTenant, parked: dict[str, int]) -> Row:
    key = tenant_key(listed.realm, listed.downstream)
    if isinstance(listed, UnreadableTenant):
        broken = Badge("unreadable", "unreadable", "bad", listed.detail)
        return Row(listed.realm, listed.downstream, None, listed.detail, [broken], None)
    summary = console.activity.summary(listed.realm, listed.downstream, console.clock()) if console.activity else None
    return Row(listed.realm, listed.downstream, listed, None, badges(listed, summary, parked.get(key, 0)), summary)


def _disabled_row(console: Console, realm: str, name: str, parked: dict[str, int]) -> Row:
    assert console.activity is not None
    summary = console.activity.summary(realm, name, console.clock())
    return Row(realm, name, None, None, badges(None, summary, parked.get(tenant_key(realm, name), 0)), summary)


async def enable(request: web.Request) -> web.Response:
    """Enable (or replace) a downstream from the form; refused: the tenants page again, with the reason."""
    console = request.app[CONSOLE]
    form = await request.post()
    realm = str(form.get("realm", "")).strip()
    name = str(form.get("downstream", "")).strip() or DEFAULT
    kept = {k: str(form.get(k, "")) for k in (*KEPT, *LIMITS)}  # never a secret
    try:
        if not realm:
            raise InvalidRequest("realm: the Keycloak realm's name is required")
        if not is_name(name):
            raise InvalidRequest(f"downstream: a name matching {NAME_PATTERN} (default for the realm's first)")
        enabled = await console.service.enable(
            tenant_key(realm, name), enable_request(form, backfill=console.keycloak), actor=_actor(request)
        )
    except (EnableRefused, ApiError) as exc:
        status, refused = _refused(request, exc)
        return await _tenants(request, status, refused, kept)
    return see_other(_tenant_url(realm, name, done="enabled" if enabled.created else "rotated"))


LIMITS = ("max_concurrency", "rate_limit_per_minute")
KEPT = (  # what a refused form shows again (never a secret)
    "realm",
    "downstream",
    "base_url",
    "delete_policy",
    "auth_type",
    "username",
    "token_url",
    "client_id",
    "scope",
    "audience",
)


# --- tenant page --------------------------------------------------------------------------------------


async def tenant_page(request: web.Request) -> web.Response:
    return await _tenant(request)


async def _tenant(
    request: web.Request,
    status: int = 200,
    *,
    refused: Refusal | None = None,
    report: ReconcileReport | None = None,
    sync_report: SyncReport | None = None,
) -> web.Response:
    console = request.app[CONSOLE]
    realm, name, key = _key(request)
    view: TenantView | None = None
    unreadable = None
    try:
        view = await console.service.show(key)
    except NotEnabled:
        pass
    except TenantUnreadable as exc:
        unreadable = f"{exc}: {exc.fix}"
    parked = (await console.service.parked(key)).parked
    dead = (await console.service.dead_letters(key)).dead_letters
    user = request.query.get("user", "").strip()
    summary, entries = _activity(console, realm, name, user)
    return page(
        request,
        "tenant.html",
        status,
        realm=realm,
        name=name,
        url=_tenant_url(realm, name),
        view=view,
        unreadable=unreadable,
        badges=badges(view, summary, len(parked)) if unreadable is None else [],
        summary=summary,
        entries=entries,
        user=user,
        parked=parked,
        dead_letters=dead,
        backfill=_backfill(console, key, summary),
        refused=refused,
        report=report,
        sync_report=sync_report,
        done=DONE.get(request.query.get("done", "")),
        count=request.query.get("n", ""),
        keycloak=console.keycloak,
    )


def _activity(console: Console, realm: str, name: str, user: str) -> tuple[ActivitySummary | None, list[ActivityEntry]]:
    if console.activity is None:
        return None, []
    summary = console.activity.summary(realm, name, console.clock())
    entries = console.activity.recent(realm, name, user=user or None, limit=ACTIVITY_ROWS)
    return summary, entries


def _backfill(console: Console, key: str, summary: ActivitySummary | None) -> BackfillProgressView | None:
    """The latest backfill progress any replica reported (the activity log), else this replica's own."""
    if summary is not None and summary.backfill is not None:
        try:
            return BackfillProgressView.model_validate(summary.backfill)
        except ValueError:
            pass  # an entry of another version: this replica's own view below
    try:
        return console.service.backfill(key)
    except NoBackfill:
        return None


async def activity_rows(request: web.Request) -> web.Response:
    """The activity table's rows alone, for the page's script to refresh in place."""
    console = request.app[CONSOLE]
    realm, name, _ = _key(request)
    _, entries = _activity(console, realm, name, request.query.get("user", "").strip())
    user = request.query.get("user", "").strip()
    return page(request, "activity_rows.html", entries=entries, user=user)


async def backfill_progress(request: web.Request) -> web.Response:
    """The backfill's progress as JSON, for the progress bar's script."""
    console = request.app[CONSOLE]
    realm, name, key = _key(request)
    summary, _ = _activity(console, realm, name, "")
    progress = _backfill(console, key, summary)
    if progress is None:
        raise NoBackfill(key)
    return web.Response(text=progress.model_dump_json(), content_type="application/json")


async def rotate(request: web.Request) -> web.Response:
    """Enable again with a new token (and base URL), every other setting as it is: what a rotation is."""
    console = request.app[CONSOLE]
    realm, name, key = _key(request)
    form = await request.post()
    try:
        view = await console.service.show(key)
        await console.service.enable(key, rotate_request(view, form), actor=_actor(request))
    except (EnableRefused, ApiError, TenantUnreadable) as exc:
        status, refused = _refused(request, exc)
        return await _tenant(request, status, refused=refused)
    return see_other(_tenant_url(realm, name, done="rotated"))


async def confirm_disable(request: web.Request) -> web.Response:
    realm, name, _ = _key(request)
    return page(request, "disable.html", realm=realm, name=name, url=_tenant_url(realm, name))


async def disable(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    realm, name, key = _key(request)
    form = await request.post()
    if form.get("confirm") != "yes":
        return see_other(_tenant_url(realm, name) + "/disable")
    await console.service.disable(key, actor=_actor(request))
    return see_other("/ui/tenants?done=disabled")


async def replay_parked(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    realm, name, key = _key(request)
    replayed = await console.service.replay_parked(key)
    return see_other(_tenant_url(realm, name, done="replayed", n=str(replayed.replayed)))


async def replay_dead_letters(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    realm, name, key = _key(request)
    replayed = await console.service.replay_dead_letters(key)
    return see_other(_tenant_url(realm, name, done="replayed", n=str(replayed.replayed)))


async def start_backfill(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    realm, name, key = _key(request)
    try:
        console.service.start_backfill(key)
    except (ApiError, TenantUnreadable) as exc:
        status, refused = _refused(request, exc)
        return await _tenant(request, status, refused=refused)
    return see_other(_tenant_url(realm, name, done="backfill"))


async def reconcile(request: web.Request) -> web.Response:
    """A dry run shows the drift table; `fix` queues the fixes and shows the same table with their count."""
    console = request.app[CONSOLE]
    _, _, key = _key(request)
    form = await request.post()
    try:
        report = await console.service.reconcile(key, Reconcile(dry_run=form.get("mode") != "fix"))
    except (ApiError, TenantUnreadable) as exc:
        status, refused = _refused(request, exc)
        return await _tenant(request, status, refused=refused)
    return await _tenant(request, report=report)


async def sync(request: web.Request) -> web.Response:
    """Provision one user now; the page shows every step."""
    console = request.app[CONSOLE]
    _, _, key = _key(request)
    form = await request.post()
    user_id = str(form.get("user_id", "")).strip()
    try:
        if not user_id:
            raise InvalidRequest("user_id: the Keycloak user's id is required")
        report = await console.service.sync(key, user_id)
    except (ApiError, TenantUnreadable) as exc:
        status, refused = _refused(request, exc)
        return await _tenant(request, status, refused=refused)
    return await _tenant(request, sync_report=report)


def _refused(request: web.Request, exc: Exception) -> tuple[int, Refusal]:
    """The status the API answers `exc` with, and what the page says: the same mapping (one place)."""
    status, problem = request.app[CONSOLE].problem(exc, request, 0)
    return status, Refusal(problem.error, problem.detail)


def _actor(request: web.Request) -> str:
    """Who did it, for the activity log: the signed-in user and how they signed in."""
    session = request[SESSION]
    return f"{session.subject} (console, {'Keycloak' if session.via == 'keycloak' else 'admin token'})"
