"""`make run`: a local stack to try the service by hand, up until Ctrl-C.

A Kafka broker (assembled from Maven Central; KAFKA_BOOTSTRAP_SERVERS to use your own), a scim2-server
downstream, and the service (`outbound-scim run`) on the plugin's default topic names with tenant `acme`
enabled on that downstream. It prints the URLs and the commands to try, then waits. Everything it
started is stopped on Ctrl-C (or SIGTERM), and when the service exits on its own (its log's end is shown).
Settings of its own, so no .env is needed; OUTBOUND_SCIM_API_PORT picks the API port (default 8080).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import sys
import tempfile
from contextlib import suppress
from pathlib import Path

from devkit.local import ROOT, free_port
from devkit.stack import LocalStack, ServiceExited, exit_report, local_stack
from service.settings import Settings

REALM = "acme"
DOWNSTREAM_TOKEN = "local-downstream-token"
ADMIN_TOKEN = "local-admin-token"
TOPICS = (
    "events_topic",
    "admin_events_topic",
    "changes_topic",
    "user_state_topic",
    "tenants_topic",
    "dead_letter_topic",
    "parking_topic",
    "replay_cursors_topic",
    "activity_topic",
)


def api_port() -> int:
    """OUTBOUND_SCIM_API_PORT, else 8080 when it is free, else any free port."""
    if os.environ.get("OUTBOUND_SCIM_API_PORT"):
        return int(os.environ["OUTBOUND_SCIM_API_PORT"])
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8080))
        except OSError:
            return free_port()
    return 8080


def banner(stack: LocalStack) -> str:
    s = stack.settings
    api = stack.api.url
    bin_dir = Path(sys.executable).parent
    cli = shlex.quote(str(bin_dir.relative_to(ROOT) if bin_dir.is_relative_to(ROOT) else bin_dir))
    return f"""
outbound-scim is running; Ctrl-C stops everything.

  admin API      {api}   (bearer token: {ADMIN_TOKEN})
  console        {api}/ui/   (sign in with the admin token)
  health         {api}/healthz   {api}/readyz
  metrics        {api}/metrics
  Kafka          {stack.bootstrap}   (the plugin writes to {s.events_topic} and {s.admin_events_topic})
  downstream     {stack.base_url}   (scim2-server, bearer token: {DOWNSTREAM_TOKEN})
  tenant         {REALM}, delete policy "delete"
  service log    {stack.log}

Try, in another terminal:

  export OUTBOUND_SCIM_API_URL={api} OUTBOUND_SCIM_ADMIN_TOKEN={ADMIN_TOKEN}
  {cli}/outbound-scim tenants list
  {cli}/outbound-scim tenants show {REALM}

  # Keycloak events as the plugin writes them (admin CREATE / UPDATE / DELETE), then the downstream:
  {cli}/python -m scripts.publish --bootstrap {stack.bootstrap} create jdoe --email jane@acme.test
  {cli}/python -m scripts.publish --bootstrap {stack.bootstrap} update jdoe --last-name Doe-Smith
  curl -s -H 'Authorization: Bearer {DOWNSTREAM_TOKEN}' {stack.base_url}/Users
  {cli}/python -m scripts.publish --bootstrap {stack.bootstrap} delete jdoe

  # a record that cannot be parsed is dead-lettered; list and replay them:
  {cli}/python -m scripts.publish --bootstrap {stack.bootstrap} garbage
  {cli}/outbound-scim dead-letters list
  {cli}/outbound-scim parked list {REALM}
"""


async def serve(workdir: Path) -> None:
    defaults = {name: Settings.model_fields[name].default for name in TOPICS}
    overrides = {**defaults, "group_id": "outbound-scim", "admin_token": ADMIN_TOKEN, "api_port": api_port()}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with local_stack(workdir, REALM, DOWNSTREAM_TOKEN, log_level="INFO", **overrides) as stack:
        print(banner(stack), flush=True)
        while not stop.is_set():
            if stack.service.poll() is not None:
                raise ServiceExited(exit_report(stack.service, stack.log))
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)
        print("-- stopping everything make run started", flush=True)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="outbound-scim-run-"))
    try:
        asyncio.run(serve(workdir))
    except (RuntimeError, ServiceExited) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
