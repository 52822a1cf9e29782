"""Publish one Keycloak event the way the plugin does (JSON value, null key), for trying `make run`.

    python -m scripts.publish --bootstrap 127.0.0.1:PORT create jdoe --email jane@acme.test
    python -m scripts.publish --bootstrap 127.0.0.1:PORT update jdoe --last-name Doe-Smith
    python -m scripts.publish --bootstrap 127.0.0.1:PORT disable jdoe | enable jdoe | delete jdoe
    python -m scripts.publish --bootstrap 127.0.0.1:PORT garbage      # a record no parser accepts

The Keycloak user id is `kc-<username>`; admin events go to the plugin's default admin topic.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from devkit import events as ev
from devkit.kafka import Publisher
from service.settings import Settings

ADMIN_TOPIC = Settings.model_fields["admin_events_topic"].default


def event(args: argparse.Namespace) -> dict[str, Any] | bytes:
    if args.action == "garbage":
        return b"{not json"
    user_id = f"kc-{args.username}"
    if args.action == "create":
        return ev.create_user(args.realm, user_id, args.username, args.first_name, args.last_name, args.email)
    if args.action == "update":
        fields = {"firstName": args.first_name, "lastName": args.last_name, "email": args.email}
        return ev.update_user(args.realm, user_id, **{k: v for k, v in fields.items() if v is not None})
    if args.action in ("disable", "enable"):
        return ev.update_user(args.realm, user_id, enabled=args.action == "enable")
    return ev.delete_user(args.realm, user_id)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scripts.publish", description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True, help="the broker `make run` printed")
    p.add_argument("--realm", default="acme")
    p.add_argument("--topic", default=ADMIN_TOPIC)
    sub = p.add_subparsers(dest="action", required=True)
    for action in ("create", "update", "disable", "enable", "delete"):
        cmd = sub.add_parser(action)
        cmd.add_argument("username")
        if action in ("create", "update"):
            create = action == "create"
            cmd.add_argument("--first-name", default="Jane" if create else None)
            cmd.add_argument("--last-name", default="Doe" if create else None)
            cmd.add_argument("--email")
    sub.add_parser("garbage")
    return p


async def publish(args: argparse.Namespace) -> None:
    async with Publisher(args.bootstrap) as publisher:
        await publisher.send(args.topic, event(args))
        await publisher.flush()


def main() -> int:
    args = parser().parse_args()
    asyncio.run(publish(args))
    what = " ".join(filter(None, (args.action, getattr(args, "username", None))))
    print(f"published {what} to {args.topic}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
