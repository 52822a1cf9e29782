"""Console entry point: `outbound-scim run | tenants ... | parked ... | dead-letters ... | gen-key`.

`tenants` commands call the admin HTTP API of a running service, so the CLI and the API share one
implementation. Downstream tokens are read from an environment variable or stdin, never from argv
(argv is visible to every local user in `ps`).
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
from typing import Any
from urllib.parse import quote

from cryptography.fernet import Fernet


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outbound-scim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True, metavar="command")

    run = sub.add_parser("run", help="run the service (settings from OUTBOUND_SCIM_* variables)")
    run.set_defaults(func=_run)

    gen = sub.add_parser("gen-key", help="print a new key for OUTBOUND_SCIM_TOKEN_KEY")
    gen.set_defaults(func=lambda _: print(Fernet.generate_key().decode()))

    tenants = sub.add_parser("tenants", help="manage tenants through the admin API")
    tenants.add_argument("--api-url", default=os.environ.get("OUTBOUND_SCIM_API_URL", "http://127.0.0.1:8080"))
    tsub = tenants.add_subparsers(required=True, metavar="action")
    tsub.add_parser("list", help="list enabled tenants").set_defaults(func=_list)
    show = tsub.add_parser("show", help="show one tenant")
    show.add_argument("realm")
    show.set_defaults(func=_show)
    enable = tsub.add_parser("enable", help="enable or rotate (validates the downstream first)")
    enable.add_argument("realm")
    enable.add_argument("--base-url", required=True)
    enable.add_argument("--delete-policy", choices=["ignore", "deactivate", "delete"], default="ignore")
    enable.add_argument("--max-concurrency", type=int, help="requests in flight to this downstream")
    enable.add_argument("--rate-limit-per-minute", type=int, help="pace requests (e.g. Slack: 180)")
    enable.add_argument("--token-env", default="OUTBOUND_SCIM_DOWNSTREAM_TOKEN",
                        help="environment variable holding the downstream token (default: %(default)s)")
    enable.add_argument("--token-stdin", action="store_true", help="read the downstream token from stdin")
    enable.set_defaults(func=_enable)
    enable.add_argument("--backfill", action="store_true", help="then push every existing Keycloak user")
    backfill = tsub.add_parser("backfill", help="push every user of the realm as Keycloak stores it now")
    backfill.add_argument("realm")
    backfill.add_argument("--no-wait", action="store_true", help="start it and return")
    backfill.set_defaults(func=_backfill)
    reconcile = tsub.add_parser("reconcile", help="compare Keycloak with the downstream, fix and report drift")
    reconcile.add_argument("realm")
    reconcile.add_argument("--dry-run", action="store_true", help="report only, change nothing")
    reconcile.set_defaults(
        func=lambda a: _call(a, "POST", f"/tenants/{quote(a.realm)}/reconcile", {"dry_run": a.dry_run})
    )
    sync = tsub.add_parser("sync", help="provision one user now from Keycloak; prints the step trace")
    sync.add_argument("realm")
    sync.add_argument("user_id")
    sync.set_defaults(
        func=lambda a: _call(a, "POST", f"/tenants/{quote(a.realm)}/users/{quote(a.user_id, safe='')}/sync")
    )
    link = tsub.add_parser("link", help="declare which downstream account is a Keycloak user's (resolves a "
                           "conflict; replay the user's dead letters afterwards)")
    link.add_argument("realm")
    link.add_argument("user_id", help="the Keycloak user id")
    link.add_argument("downstream_id", help="the downstream account's SCIM id (see the conflict's dead letter)")
    link.set_defaults(func=lambda a: _call(
        a, "POST", f"/tenants/{quote(a.realm)}/users/{quote(a.user_id, safe='')}/link",
        {"downstream_id": a.downstream_id}))
    disable = tsub.add_parser("disable", help="disable: events for the realm stop propagating")
    disable.add_argument("realm")
    disable.set_defaults(func=_disable)

    parked = sub.add_parser("parked", help="changes parked per tenant (refused token, breaker, retries)")
    parked.add_argument("--api-url", default=os.environ.get("OUTBOUND_SCIM_API_URL", "http://127.0.0.1:8080"))
    psub = parked.add_subparsers(required=True, metavar="action")
    for action, method, suffix in (("list", "GET", ""), ("replay", "POST", "/replay")):
        cmd = psub.add_parser(action, help=f"{action} the parked changes of a tenant, oldest first")
        cmd.add_argument("realm")
        cmd.set_defaults(func=lambda a, m=method, x=suffix: _call(a, m, f"/tenants/{quote(a.realm)}/parked{x}"))

    letters = sub.add_parser("dead-letters", help="records and changes that were dead-lettered")
    letters.add_argument("--api-url", default=os.environ.get("OUTBOUND_SCIM_API_URL", "http://127.0.0.1:8080"))
    lsub = letters.add_subparsers(required=True, metavar="action")
    listing = lsub.add_parser("list", help="list dead letters not replayed yet")
    listing.add_argument("--tenant")
    listing.set_defaults(func=lambda a: _call(a, "GET", "/dead-letters" + _tenant_query(a.tenant)))
    replay = lsub.add_parser("replay", help="send dead letters back to the topic they came from")
    replay.add_argument("--tenant")
    replay.set_defaults(func=lambda a: _call(a, "POST", "/dead-letters/replay", {"tenant": a.tenant}))
    return parser


def _tenant_query(tenant: str | None) -> str:
    return f"?tenant={quote(tenant)}" if tenant else ""


def _run(_: argparse.Namespace) -> int:
    from service.app import run
    from service.logs import configure_logging
    from service.settings import Settings

    settings = Settings()  # type: ignore[call-arg]
    configure_logging(settings.log_level)
    asyncio.run(run(settings))
    return 0


def _list(args: argparse.Namespace) -> int:
    return _call(args, "GET", "/tenants")


def _show(args: argparse.Namespace) -> int:
    return _call(args, "GET", f"/tenants/{quote(args.realm)}")


def _disable(args: argparse.Namespace) -> int:
    return _call(args, "DELETE", f"/tenants/{quote(args.realm)}")


def _enable(args: argparse.Namespace) -> int:
    token = sys.stdin.readline().strip() if args.token_stdin else os.environ.get(args.token_env, "")
    if not token:
        print(f"no downstream token: set {args.token_env} or pass --token-stdin", file=sys.stderr)
        return 2
    body = {
        "base_url": args.base_url,
        "token": token,
        "delete_policy": args.delete_policy,
        "max_concurrency": args.max_concurrency,
        "rate_limit_per_minute": args.rate_limit_per_minute,
        "backfill": args.backfill,
    }
    return _call(args, "PUT", f"/tenants/{quote(args.realm)}", body)


def _backfill(args: argparse.Namespace) -> int:
    """Start a backfill, then draw its progress until it ends (done / total, rate) on stderr."""
    status, doc = _request(args, "POST", f"/tenants/{quote(args.realm)}/backfill")
    while status < 300 and not args.no_wait and doc.get("state") == "running":
        _draw_progress(doc)
        time.sleep(0.5)
        status, doc = _request(args, "GET", f"/tenants/{quote(args.realm)}/backfill")
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
