"""`make demo`: local Kafka, a scim2-server downstream, the service, sample Keycloak events, the result.

Everything runs on 127.0.0.1 and is stopped at the end. Set KAFKA_BOOTSTRAP_SERVERS to use a broker of
your own instead of the one assembled from Maven Central.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from devkit import events as ev
from devkit.kafka import Publisher, create_source_topics
from devkit.local import ROOT, free_port, wait_until
from devkit.scim import downstream_users, start_scim_server
from devkit.service import Api, make_settings, spawn_service

KAFKA = ROOT / "scripts" / "kafka" / "kafka.sh"
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


async def scenario(bootstrap: str, workdir: Path) -> None:
    scim = start_scim_server(DOWNSTREAM_TOKEN)
    settings = make_settings(bootstrap, api_port=free_port(), group_id="demo", log_level="INFO")
    await create_source_topics(settings)
    log = workdir / "service.log"
    service = spawn_service(settings, log)
    try:
        api = Api(settings.api_port)

        async def ready() -> bool:
            return await api.ready() if service.poll() is None else _died(log)

        print("-- waiting for the service to be ready")
        await wait_until(ready, timeout=90, what="service ready")
        base = scim.base_url(REALM)
        status, body = await api.enable(REALM, base, DOWNSTREAM_TOKEN, delete_policy="delete")
        print(f"-- PUT /tenants/{REALM} -> {status} {json.dumps(body)}")
        show("before", await downstream_users(base, DOWNSTREAM_TOKEN))

        steps = [
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
        status, metrics = await api.call("GET", "/metrics")
        print("\n== a few metrics")
        for line in str(metrics).splitlines():
            if line.startswith(("outbound_scim_changes_total{", "outbound_scim_dead_letters_total{")):
                print("  ", line)
        print(f"\nservice log: {log}")
    finally:
        service.terminate()
        service.wait(timeout=60)
        scim.stop()


def _died(log: Path) -> bool:
    raise SystemExit(f"the service exited:\n{log.read_text()[-3000:]}")


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="outbound-scim-demo-"))
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    started = False
    if not bootstrap:
        print("-- starting a local Kafka broker (assembled from Maven Central)")
        result = subprocess.run(
            ["bash", str(KAFKA), "start", "0", str(workdir / "kafka")], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return 1
        bootstrap, started = result.stdout.strip().splitlines()[-1], True
    try:
        asyncio.run(scenario(bootstrap, workdir))
    finally:
        if started:
            subprocess.run(["bash", str(KAFKA), "stop", str(workdir / "kafka")], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
