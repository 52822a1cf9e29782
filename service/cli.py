"""Console entry point: `outbound-scim run | tenants ... | parked ... | dead-letters ... | gen-key |
reencrypt-tenants`.

`tenants` commands call the admin HTTP API of a running service, so the CLI and the API share one
implementation. Downstream secrets (a bearer token, a Basic password, an OAuth2 client secret) are
read from an environment variable or stdin, never from argv
(argv is visible to every local user in `ps`). `run` and `reencrypt-tenants` read the OUTBOUND_SCIM_*
settings and talk to Kafka themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from cryptography.fernet import Fernet

T = TypeVar("T")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outbound-scim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True, metavar="command")

    run = sub.add_parser("run", help="run the service (settings from OUTBOUND_SCIM_* variables and ./.env)")
    run.set_defaults(func=_run)

    # internal: stage 1 as the child process of `run` (OUTBOUND_SCIM_REKEY_PROCESS); no help, so not listed
    stage = sub.add_parser("rekey-stage")
    stage.add_argument("--report-fd", type=int, required=True)
    stage.set_defaults(func=_rekey_stage)

    gen = sub.add_parser("gen-key", help="print a new key for OUTBOUND_SCIM_TOKEN_KEY")
    gen.set_defaults(func=lambda _: print(Fernet.generate_key().decode()))

    reencrypt = sub.add_parser(
        "reencrypt-tenants",
        help="re-encrypt every tenant record with the first OUTBOUND_SCIM_TOKEN_KEY (settings as for run)",
    )
    reencrypt.set_defaults(func=_reencrypt)

    tenants = sub.add_parser("tenants", help="manage tenants through the admin API")
    tenants.add_argument("--api-url", default=os.environ.get("OUTBOUND_SCIM_API_URL", "http://127.0.0.1:8080"))
    tsub = tenants.add_subparsers(required=True, metavar="action")
    tsub.add_parser("list", help="list enabled tenants").set_defaults(func=_list)
    downstreams = tsub.add_parser("downstreams", help="list the downstream apps of one realm")
    downstreams.add_argument("realm")
    downstreams.set_defaults(func=lambda a: _call(a, "GET", f"/tenants/{_segment(a.realm)}/downstreams"))
    show = tsub.add_parser("show", help="show one tenant")
    show.add_argument("realm")
    show.add_argument(
        "--downstream", default="default", help="which of the realm's downstream apps (default: `default`)"
    )
    show.set_defaults(func=_show)
    enable = tsub.add_parser(
        "enable",
        help="enable or rotate (validates the downstream first); a rotation keeps every field not passed",
        description="Enable a realm, or rotate it: the current settings are read first and only the options "
        "passed replace them. `none` clears an optional setting back to its default.",
    )
    enable.add_argument("realm")
    enable.add_argument(
        "--downstream", default="default", help="which of the realm's downstream apps (default: `default`)"
    )
    enable.add_argument("--base-url", help="SCIM base URL (required to enable; kept on a rotation)")
    enable.add_argument(
        "--delete-policy",
        choices=["ignore", "deactivate", "delete"],
        help="what a Keycloak deletion does downstream (default when enabling: ignore)",
    )
    enable.add_argument(
        "--max-concurrency",
        type=_optional(_positive_int),
        help="requests in flight to this downstream (`none`: the service default)",
    )
    enable.add_argument(
        "--rate-limit-per-minute",
        type=_optional(_positive_int),
        help="pace requests, e.g. Slack: 180 (`none`: unpaced)",
    )
    enable.add_argument(
        "--realm-id",
        type=_optional(str),
        help="the realm's internal id, for plugins that send no realm name (`none`: unset)",
    )
    enable.add_argument(
        "--reconcile-interval-minutes",
        type=_optional(_positive_float),
        help="reconcile with Keycloak periodically (`none`: off)",
    )
    enable.add_argument(
        "--groups", action=argparse.BooleanOptionalAction, help="push groups and memberships too (--no-groups: off)"
    )
    enable.add_argument("--group-display", choices=["name", "path"], help="a group's displayName: name or full path")
    enable.add_argument(
        "--group-flatten",
        action=argparse.BooleanOptionalAction,
        help="send a sub-group's members as members of its ancestors too",
    )
    enable.add_argument(
        "--group-path",
        dest="group_paths",
        action="append",
        type=_optional(str),
        help="push only groups under this path (repeat for several; `none`: all groups)",
    )
    enable.add_argument(
        "--group-pattern",
        type=_optional(str),
        help="... or whose path matches this regular expression (`none`: unset)",
    )
    enable.add_argument(
        "--group-members-per-request",
        type=_optional(_positive_int),
        help="member operations in one PATCH request (`none`: 100)",
    )
    enable.add_argument(
        "--bulk",
        choices=["auto", "off"],
        help="user writes as SCIM /Bulk when the downstream announces it (default auto), or one by one (off)",
    )
    enable.add_argument(
        "--auth",
        choices=sorted(AUTH_TYPES),
        help="how requests to the downstream authenticate (default: as now, else bearer); the secret "
        "(token, password or client secret) comes from --token-env or --token-stdin",
    )
    enable.add_argument("--token-url", help="oauth2: the token endpoint")
    enable.add_argument("--client-id", help="oauth2: the client id")
    enable.add_argument("--scope", type=_optional(str), help="oauth2: the scope to ask for (`none`: unset)")
    enable.add_argument("--audience", type=_optional(str), help="oauth2: the audience to ask for (`none`: unset)")
    enable.add_argument("--username", help="basic: the user name")
    enable.add_argument(
        "--preset", type=_optional(str), help="a known kind of downstream: keycloak, django-scim2 (`none`: unset)"
    )
    enable.add_argument(
        "--user-lookup",
        type=_optional(str),
        help="how an account not linked yet is found: externalId or userName (`none`: the preset's)",
    )
    enable.add_argument(
        "--capabilities",
        type=_optional(_json_object),
        help="overrides for a downstream that announces wrongly, as JSON, e.g. '{\"patch\": false}' "
        "(keys patch, filter, bulk, etag, max_results; `none`: unset)",
    )
    enable.add_argument(
        "--mapping",
        type=_optional(_mapping_file),
        metavar="FILE",
        help="a JSON file holding the attribute mapping, a list of {source, target[, type]} (see the "
        "operations guide; `none`: the default mapping)",
    )
    enable.add_argument(
        "--token-env",
        default="OUTBOUND_SCIM_DOWNSTREAM_TOKEN",
        help="environment variable holding the downstream's secret: its token, Basic password or OAuth2 client "
        "secret (default: %(default)s)",
    )
    enable.add_argument("--token-stdin", action="store_true", help="read the downstream's secret from stdin")
    enable.set_defaults(func=_enable)
    enable.add_argument("--backfill", action="store_true", help="then push every existing Keycloak user")
    backfill = tsub.add_parser("backfill", help="push every user of the realm as Keycloak stores it now")
    backfill.add_argument("realm")
    backfill.add_argument(
        "--downstream", default="default", help="which of the realm's downstream apps (default: `default`)"
    )
    backfill.add_argument("--no-wait", action="store_true", help="start it and return")
    backfill.set_defaults(func=_backfill)
    reconcile = tsub.add_parser("reconcile", help="compare Keycloak with the downstream, fix and report drift")
    reconcile.add_argument("realm")
    reconcile.add_argument(
        "--downstream", default="default", help="which of the realm's downstream apps (default: `default`)"
    )
    reconcile.add_argument("--dry-run", action="store_true", help="report only, change nothing")
    reconcile.add_argument(
        "--remove-extra-members",
        action="store_true",
        help="with group sync: remove members of our groups downstream that Keycloak does not have",
    )
    reconcile.set_defaults(
        func=lambda a: _call(
            a,
            "POST",
            f"{_tenant_path(a)}/reconcile",
            {"dry_run": a.dry_run, "remove_extra_members": a.remove_extra_members},
        )
    )
    sync = tsub.add_parser("sync", help="provision one user now from Keycloak; prints the step trace")
    sync.add_argument("realm")
    sync.add_argument(
        "--downstream", default="default", help="which of the realm's downstream apps (default: `default`)"
    )
    sync.add_argument("user_id")
    sync.set_defaults(func=lambda a: _call(a, "POST", f"{_tenant_path(a)}/users/{_segment(a.user_id)}/sync"))
    link = tsub.add_parser(
        "link",
        help="declare which downstream account is a Keycloak user's (resolves a "
        "conflict; replay the user's dead letters afterwards)",
    )
    link.add_argument("realm")
    link.add_argument(
        "--downstream", default="default", help="which of the realm's downstream apps (default: `default`)"
    )
    link.add_argument("user_id", help="the Keycloak user id")
    link.add_argument("downstream_id", help="the downstream account's SCIM id (see the conflict's dead letter)")
    link.set_defaults(
        func=lambda a: _call(
            a,
            "POST",
            f"{_tenant_path(a)}/users/{_segment(a.user_id)}/link",
            {"downstream_id": a.downstream_id},
        )
    )
    disable = tsub.add_parser("disable", help="disable: events for the realm stop propagating")
    disable.add_argument("realm")
    disable.add_argument(
        "--downstream", default="default", help="which of the realm's downstream apps (default: `default`)"
    )
    disable.set_defaults(func=_disable)

    parked = sub.add_parser("parked", help="changes parked per tenant (refused token, breaker, retries)")
    parked.add_argument("--api-url", default=os.environ.get("OUTBOUND_SCIM_API_URL", "http://127.0.0.1:8080"))
    psub = parked.add_subparsers(required=True, metavar="action")
    for action, method, suffix in (("list", "GET", ""), ("replay", "POST", "/replay")):
        cmd = psub.add_parser(action, help=f"{action} the parked changes of a tenant, oldest first")
        cmd.add_argument("realm")
        cmd.add_argument("--downstream", default="default", help="which of the realm's downstream apps")
        cmd.set_defaults(func=lambda a, m=method, x=suffix: _call(a, m, f"{_tenant_path(a)}/parked{x}"))

    letters = sub.add_parser("dead-letters", help="records and changes that were dead-lettered")
    letters.add_argument("--api-url", default=os.environ.get("OUTBOUND_SCIM_API_URL", "http://127.0.0.1:8080"))
    lsub = letters.add_subparsers(required=True, metavar="action")
    listing = lsub.add_parser("list", help="list dead letters not replayed yet (all, or a tenant's)")
    listing.add_argument("--tenant", help="only this realm's (default: all, those without a realm included)")
    listing.add_argument("--downstream", default="default", help="with --tenant: which of its downstream apps")
    listing.set_defaults(func=lambda a: _call(a, "GET", _dead_letters(a.tenant, a.downstream)))
    replay = lsub.add_parser("replay", help="send dead letters back to the topic they came from")
    replay.add_argument("--tenant", help="only this realm's (default: all, those without a realm included)")
    replay.add_argument("--downstream", default="default", help="with --tenant: which of its downstream apps")
    replay.set_defaults(func=lambda a: _call(a, "POST", _dead_letters(a.tenant, a.downstream) + "/replay"))
    return parser


def _dead_letters(tenant: str | None, downstream: str = "default") -> str:
    """A realm's dead letters live under its tenant (one of its downstream apps); the global list also holds
    records without a realm."""
    if not tenant:
        return "/dead-letters"
    return f"{_tenant_path(argparse.Namespace(realm=tenant, downstream=downstream))}/dead-letters"


def _tenant_path(args: argparse.Namespace) -> str:
    """The API path of one downstream app of a realm: `/tenants/{realm}` is the one named `default`."""
    realm = f"/tenants/{_segment(args.realm)}"
    return realm if args.downstream == "default" else f"{realm}/downstreams/{_segment(args.downstream)}"


def _segment(value: str) -> str:
    """`value` as one path segment: a "/" in a realm or user id must not make another path."""
    return quote(value, safe="")


def _run(_: argparse.Namespace) -> int:
    """Exit 2, with what to fix and no traceback, when the settings cannot work."""
    from service import eventloop
    from service.app import run
    from service.errors import ConfigError, StageExited
    from service.logs import configure_logging
    from service.settings import load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"outbound-scim run: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        eventloop.run(run(settings), settings.event_loop)
    except ConfigError as exc:  # found at start, e.g. a topic that cannot be created
        print(f"outbound-scim run: {exc}", file=sys.stderr)
        return 2
    except StageExited as exc:  # stopped cleanly without it; a restart brings both back
        print(f"outbound-scim run: {exc}", file=sys.stderr)
        return 3
    return 0


def _rekey_stage(args: argparse.Namespace) -> int:
    """Stage 1 alone, reporting to the `run` process that started it over `--report-fd`."""
    from service import eventloop
    from service.logs import configure_logging
    from service.pipeline.rekey_process import read_settings, serve_rekey

    settings = read_settings(sys.stdin.buffer.readline())  # the parent's, exactly
    configure_logging(settings.log_level)
    try:
        eventloop.run(serve_rekey(settings, args.report_fd), settings.event_loop)
    except Exception:  # reported to the parent, which says what to do about it
        return 2
    return 0


def _list(args: argparse.Namespace) -> int:
    return _call(args, "GET", "/tenants")


def _show(args: argparse.Namespace) -> int:
    return _call(args, "GET", _tenant_path(args))


def _disable(args: argparse.Namespace) -> int:
    return _call(args, "DELETE", _tenant_path(args))


# the tenant fields an enable / rotation sends; tokens are not among them (they come from env / stdin)
TENANT_FIELDS = (
    "base_url",
    "delete_policy",
    "max_concurrency",
    "rate_limit_per_minute",
    "realm_id",
    "reconcile_interval_minutes",
    "groups",
    "group_display",
    "group_flatten",
    "group_paths",
    "group_pattern",
    "group_members_per_request",
    "bulk",
    "preset",
    "user_lookup",
    "capabilities",
    "mapping",
)
AUTH_TYPES = {"bearer": "bearer", "basic": "basic", "oauth2": "oauth2_client_credentials"}  # --auth -> API type
AUTH_FIELDS = {"basic": ("username",), "oauth2_client_credentials": ("token_url", "client_id", "scope", "audience")}
AUTH_SECRET = {"basic": "password", "oauth2_client_credentials": "client_secret"}
CLEAR = "none"


class _Clear:
    """An option given as `none`: send the field as null (its default)."""

    def __repr__(self) -> str:
        return CLEAR


CLEARED = _Clear()


def _optional(parse: Callable[[str], T]) -> Callable[[str], T | _Clear]:
    def parse_or_clear(text: str) -> T | _Clear:
        return CLEARED if text.strip().lower() == CLEAR else parse(text)

    parse_or_clear.__name__ = getattr(parse, "__name__", "value")
    return parse_or_clear


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _mapping_file(path: str) -> list[Any]:
    """The mapping in a JSON file; the API checks its entries (and the downstream's /Schemas)."""
    try:
        with open(path, encoding="utf-8") as file:
            value = json.load(file)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"{path} must hold a JSON list of {{source, target}} entries")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def enable_body(current: dict[str, Any] | None, given: dict[str, Any], secret: str) -> dict[str, Any]:
    """The PUT body: the tenant's current fields (none when enabling), overridden by the options given
    (None: not given; CLEARED: back to the default). `secret` is the token, or with `auth` the Basic
    password or OAuth2 client secret; the other auth fields are kept from the current tenant likewise."""
    body = {k: current.get(k) for k in TENANT_FIELDS} if current else {}
    _override(body, given, TENANT_FIELDS)
    now = (current or {}).get("auth") or {}
    now = {**now, "token_url": now.get("endpoint")}  # shown as `endpoint`: an answer holds nothing named token
    kind = AUTH_TYPES[given["auth"]] if given.get("auth") else now.get("type", "bearer")
    if kind == "bearer":
        body["token"] = secret
    else:
        fields = AUTH_FIELDS[kind]
        auth = {k: now.get(k) for k in fields} if now.get("type") == kind else {}
        _override(auth, given, fields)
        body["auth"] = {"type": kind, **{k: v for k, v in auth.items() if v is not None}, AUTH_SECRET[kind]: secret}
    return {k: v for k, v in body.items() if v is not None}  # the API defaults what is left out


def _override(fields: dict[str, Any], given: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        value = given.get(name)
        if value is CLEARED:
            fields[name] = None
        elif value is not None:
            fields[name] = value


def _enable(args: argparse.Namespace) -> int:
    token = sys.stdin.readline().strip() if args.token_stdin else os.environ.get(args.token_env, "")
    if not token:
        print(
            f"no downstream token (or password, client secret): set {args.token_env} or pass --token-stdin",
            file=sys.stderr,
        )
        return 2
    path = _tenant_path(args)
    try:
        status, current = _request(args, "GET", path)
    except urllib.error.URLError as exc:
        print(f"cannot reach {args.api_url}: {exc.reason}", file=sys.stderr)
        return 1
    if status == 409 and current.get("error") == "tenant_unreadable":
        print(f"{current.get('detail')}\nenabling it again with only the options passed", file=sys.stderr)
        current = None
    elif status == 404:
        current = None
    elif status >= 300:
        print(json.dumps(current, indent=2), file=sys.stderr)
        return 1
    given = {name: getattr(args, name) for name in (*TENANT_FIELDS, "auth", *AUTH_FIELDS["basic"])}
    given |= {name: getattr(args, name) for name in AUTH_FIELDS["oauth2_client_credentials"]}
    if isinstance(given["group_paths"], list):  # repeated --group-path; `none` among them clears the list
        given["group_paths"] = CLEARED if CLEARED in given["group_paths"] else given["group_paths"]
    body = enable_body(current, given, token)
    if not body.get("base_url"):
        print(f"{args.realm} is not enabled: --base-url is required", file=sys.stderr)
        return 2
    if args.backfill:
        body["backfill"] = True
    return _call(args, "PUT", path, body)


def _reencrypt(_: argparse.Namespace) -> int:
    """Prints how many records were rewritten, and which realms no key decrypts; never a token."""
    from service.errors import ConfigError
    from service.settings import load_settings
    from service.tenants.reencrypt import reencrypt_tenants

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"outbound-scim reencrypt-tenants: {exc}", file=sys.stderr)
        return 2
    report = asyncio.run(reencrypt_tenants(settings))
    print(
        f"rewrote {len(report.rewritten)} tenant record(s) with the first OUTBOUND_SCIM_TOKEN_KEY; "
        f"{len(report.current)} already used it"
    )
    for unreadable in report.unreadable:
        print(f"{unreadable}: left as it is; {unreadable.fix}", file=sys.stderr)
    return 1 if report.unreadable else 0


def _backfill(args: argparse.Namespace) -> int:
    """Start a backfill, then draw its progress until it ends (done / total, rate) on stderr."""
    status, doc = _request(args, "POST", f"{_tenant_path(args)}/backfill")
    while status < 300 and not args.no_wait and doc.get("state") == "running":
        _draw_progress(doc)
        time.sleep(0.5)
        status, doc = _request(args, "GET", f"{_tenant_path(args)}/backfill")
    if status < 300 and not args.no_wait:
        _draw_progress(doc)
        print(file=sys.stderr)
    print(json.dumps(doc, indent=2), file=sys.stdout if status < 300 else sys.stderr)
    return 0 if status < 300 and doc.get("state") != "failed" else 1


def _draw_progress(doc: dict[str, Any]) -> None:
    total, done = doc.get("total") or 0, doc.get("done", 0)
    width = 30
    filled = int(width * done / total) if total else 0
    bar = "#" * filled + "." * (width - filled)
    print(f"\r[{bar}] {done}/{total or '?'} users  {doc.get('rate_per_second') or 0}/s", end="", file=sys.stderr)


def _request(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    admin_token = os.environ.get("OUTBOUND_SCIM_ADMIN_TOKEN", "")
    request = urllib.request.Request(  # noqa: S310 - the operator chooses the API URL
        args.api_url.rstrip("/") + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    """One API call; the JSON answer on stdout (success) or stderr (error)."""
    try:
        status, doc = _request(args, method, path, body)
    except urllib.error.URLError as exc:
        print(f"cannot reach {args.api_url}: {exc.reason}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2), file=sys.stdout if status < 300 else sys.stderr)
    return 0 if status < 300 else 1
