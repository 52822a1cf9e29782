"""`make demo`: local Kafka, a scim2-server downstream, the service, sample Keycloak events, the result.

Everything runs on 127.0.0.1 and is stopped at the end. Set KAFKA_BOOTSTRAP_SERVERS to use a broker of
your own instead of the one assembled from Maven Central.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from devkit import events as ev
from devkit.kafka import Publisher
from devkit.local import free_port, wait_until
from devkit.scim import downstream_users
from devkit.stack import ServiceExited, local_stack

DOWNSTREAM_TOKEN = "demo-downstream-token"
REALM = "acme"


def show(title: str, users: list[dict[str, Any]]) -> None:
    print(f"\n== {title}: {len(users)} user(s) downstream")
    print(f"   {'userName':<10} {'externalId':<10} {'displayName':<14} {'email':<24} active")
    for u in sorted(users, key=lambda u: u.get("userName", "")):
        email = (u.get("emails") or [{}])[0].get("value", "")
        print(
            f"   {u['userName']:<10} {u.get('externalId', ''):<10} {u.get('displayName', ''):<14} {email:<24} {u['active']}"
        )


async def scenario(workdir: Path) -> None:
    async with local_stack(
        workdir, REALM, DOWNSTREAM_TOKEN, api_port=free_port(), group_id="demo", log_level="INFO"
    ) as stack:
        settings, api, base, bootstrap = stack.settings, stack.api, stack.base_url, stack.bootstrap
        print(f"-- tenant {REALM} enabled on {base} (delete policy: delete)")
        show("before", await downstream_users(base, DOWNSTREAM_TOKEN))

        steps: list[tuple[str, str, dict[str, Any] | bytes]] = [
            ("admin CREATE jdoe", "admin", ev.create_user(REALM, "kc-jdoe", "jdoe", "Jane", "Doe", "jane@acme.test")),
            (
                "user REGISTER asmith",
                "user",
                ev.user_event(
                    REALM,
                    "kc-asmith",
                    "REGISTER",
                    {"username": "asmith", "email": "al@acme.test", "first_name": "Al", "last_name": "Smith"},
                ),
            ),
            ("admin CREATE bgone", "admin", ev.create_user(REALM, "kc-bgone", "bgone", "Bo", "Gone")),
            (
                "UPDATE_PROFILE jdoe: last name",
                "user",
                ev.user_event(
                    REALM, "kc-jdoe", "UPDATE_PROFILE", {"previous_last_name": "Doe", "updated_last_name": "Doe-Smith"}
                ),
            ),
            ("admin UPDATE asmith: email", "admin", ev.update_user(REALM, "kc-asmith", email="alan@acme.test")),
            ("admin UPDATE jdoe: disable", "admin", ev.update_user(REALM, "kc-jdoe", enabled=False)),
            ("admin UPDATE jdoe: re-enable", "admin", ev.update_user(REALM, "kc-jdoe", enabled=True)),
            ("lockout asmith", "user", ev.user_event(REALM, "kc-asmith", "USER_DISABLED_BY_PERMANENT_LOCKOUT")),
            ("admin DELETE bgone", "admin", ev.delete_user(REALM, "kc-bgone")),
            ("LOGIN (ignored)", "user", ev.user_event(REALM, "kc-jdoe", "LOGIN", {"username": "jdoe"})),
            ("malformed record (dead-lettered)", "admin", b"{not json"),
        ]
        async with Publisher(bootstrap) as publisher:
            for i, (label, source, event) in enumerate(steps):
                topic = settings.admin_events_topic if source == "admin" else settings.events_topic
                await publisher.send(topic, event, partition=i % 3)  # spread like the plugin's null keys
                print(f"-- published {label}")
            await publisher.flush()

        async def settled() -> bool:
            users = {u["externalId"]: u for u in await downstream_users(base, DOWNSTREAM_TOKEN)}
            jdoe, asmith = users.get("kc-jdoe"), users.get("kc-asmith")
            return (
                "kc-bgone" not in users
                and jdoe is not None
                and asmith is not None
                and jdoe["active"] is True
                and jdoe["name"]["familyName"] == "Doe-Smith"
                and asmith["active"] is False
                and asmith["emails"][0]["value"] == "alan@acme.test"
            )

        await wait_until(settled, timeout=60, what="the downstream to reflect the events")
        show("after", await downstream_users(base, DOWNSTREAM_TOKEN))
        metrics = ""

        async def dead_letter_counted() -> bool:  # stage 1's child reports its counts about once a second
            nonlocal metrics
            _, metrics = await api.call("GET", "/metrics")
            return "outbound_scim_dead_letters_total{" in str(metrics)

        await wait_until(dead_letter_counted, timeout=10, what="the malformed record counted")
        print("\n== a few metrics")
        for line in str(metrics).splitlines():
            if line.startswith(("outbound_scim_changes_total{", "outbound_scim_dead_letters_total{")):
                print("  ", line)
        print(f"\nservice log: {stack.log}")


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="outbound-scim-demo-"))
    try:
        asyncio.run(scenario(workdir))
    except (RuntimeError, ServiceExited) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
