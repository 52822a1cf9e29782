"""`make run` (scripts/run.py): the local stack comes up with its tenant enabled, prints where to look and
what to try, provisions what scripts/publish.py sends, and stops everything on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

from devkit.local import ROOT, free_port, wait_until
from devkit.scim import by_external_id, downstream_users
from devkit.service import Api

BANNER_END = "Try, in another terminal:"


async def command(*argv: str, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode()


async def test_make_run_serves_the_printed_commands_until_ctrl_c(kafka_bootstrap: str) -> None:
    """Banner with the API and downstream URLs; the CLI and publish commands it prints work; SIGINT exits 0."""
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "OUTBOUND_SCIM_API_PORT": str(port)}
    stack = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scripts.run",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert stack.stdout is not None
    banner: list[str] = []
    try:
        while not banner or BANNER_END not in banner[-1]:
            line = await asyncio.wait_for(stack.stdout.readline(), timeout=120)
            assert line, "scripts.run ended before printing its banner:\n" + "".join(banner)
            banner.append(line.decode())
        text = "".join(banner)
        api_url = f"http://127.0.0.1:{port}"
        assert f"admin API      {api_url}   (bearer token: local-admin-token)" in text
        [base] = re.findall(r"downstream     (\S+)", text)
        assert base.endswith("/acme")

        cli_env = {"OUTBOUND_SCIM_API_URL": api_url, "OUTBOUND_SCIM_ADMIN_TOKEN": "local-admin-token"}
        code, out = await command("-m", "service", "tenants", "show", "acme", **cli_env)
        assert code == 0, out
        assert base in out

        code, out = await command("-m", "scripts.publish", "--bootstrap", kafka_bootstrap, "create", "jdoe")
        assert code == 0, out

        async def provisioned() -> bool:
            return "kc-jdoe" in by_external_id(await downstream_users(base, "local-downstream-token"))

        await wait_until(provisioned, timeout=30, what="jdoe downstream")
        assert await Api(port, "local-admin-token").ready()
    finally:
        if stack.returncode is None:
            stack.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(stack.communicate(), timeout=90)
    assert stack.returncode == 0, rest.decode()
    assert "stopping everything make run started" in rest.decode()
