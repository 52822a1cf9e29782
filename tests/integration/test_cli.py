"""The console commands drive the same admin API an operator script would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from tests import events as ev
from tests.conftest import SCIM_TOKEN
from tests.integration.conftest import Pipeline
from tests.support import ADMIN_TOKEN, ROOT, wait_until


async def cli(pipeline: Pipeline, *args: str, input_text: str | None = None, **env: str) -> tuple[int, str, str]:
    environment = {
        **os.environ,
        "OUTBOUND_SCIM_ADMIN_TOKEN": ADMIN_TOKEN,
        "OUTBOUND_SCIM_API_URL": pipeline.api.url,
        **env,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        check=False,
        input=input_text,
    )
    return done.returncode, done.stdout, done.stderr


async def test_tenant_commands_enable_list_show_disable(pipeline: Pipeline) -> None:
    """`tenants enable` (token from the environment) -> list / show without the token -> disable."""
    realm, base = pipeline.realm(), pipeline.scim.base_url()
    code, out, err = await cli(
        pipeline,
        "tenants",
        "enable",
        realm,
        "--base-url",
        base,
        "--delete-policy",
        "deactivate",
        OUTBOUND_SCIM_DOWNSTREAM_TOKEN=SCIM_TOKEN,
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "enabled"
    _, out, _ = await cli(pipeline, "tenants", "list")
    assert [t["realm"] for t in json.loads(out)["tenants"]] == [realm]
    _, out, _ = await cli(pipeline, "tenants", "show", realm)
    assert json.loads(out)["delete_policy"] == "deactivate"
    code, out, err = await cli(pipeline, "parked", "list", realm)
    assert (code, json.loads(out)) == (0, {"parked": []})
    _, out, _ = await cli(pipeline, "tenants", "disable", realm)
    assert json.loads(out)["status"] == "disabled"
    code, _, err = await cli(pipeline, "tenants", "show", realm)
    assert code == 1
    assert json.loads(err)["error"] == "not_enabled"


async def test_enable_refusal_and_missing_token_are_reported(pipeline: Pipeline) -> None:
    """A refused downstream prints the reason on stderr and exits 1; no token at all exits 2."""
    code, _, err = await cli(
        pipeline,
        "tenants",
        "enable",
        "r",
        "--base-url",
        pipeline.scim.base_url(),
        OUTBOUND_SCIM_DOWNSTREAM_TOKEN="wrong",
    )
    assert code == 1
    assert json.loads(err)["error"] == "unauthorized"
    code, _, err = await cli(pipeline, "tenants", "enable", "r", "--base-url", pipeline.scim.base_url())
    assert code == 2
    assert "no downstream token" in err


async def test_dead_letter_commands_list_and_replay(pipeline: Pipeline) -> None:
    """`dead-letters list` shows a poison record with its reason; `replay` sends it back to its source topic,
    where it fails again (nothing was fixed) and comes back as a new dead letter instead of the old one."""
    await pipeline.publisher.send(pipeline.settings.admin_events_topic, b"{broken", partition=0)
    await pipeline.admin(ev.create_user("realm-cli", "u", "u"), partitions=1)

    async def listed() -> list[dict[str, Any]]:
        code, out, err = await cli(pipeline, "dead-letters", "list")
        assert code == 0, err
        return list(json.loads(out)["dead_letters"])

    letters: list[dict[str, Any]] = []

    async def listed_after(offset: int) -> bool:
        letters[:] = await listed()
        return bool(letters) and letters[0]["offset"] > offset

    await wait_until(lambda: listed_after(-1), timeout=20, what="the dead letter listed")
    assert [x["reason"] for x in letters] == ["malformed_json"]
    first = letters[0]["offset"]
    code, out, _ = await cli(pipeline, "dead-letters", "replay")
    assert (code, json.loads(out)) == (0, {"replayed": 1})
    await wait_until(lambda: listed_after(first), timeout=20, what="the replayed record dead-lettered again")
    assert [(x["reason"], x["offset"] > first) for x in letters] == [("malformed_json", True)]


async def test_rotation_keeps_what_it_does_not_mention(pipeline: Pipeline) -> None:
    """`tenants enable` of an enabled realm reads it first: with only a token every field stays, an option
    passed replaces its field, and `none` clears one back to its default."""
    realm, base = pipeline.realm(), pipeline.scim.base_url()
    code, _, err = await cli(
        pipeline,
        "tenants",
        "enable",
        realm,
        "--base-url",
        base,
        "--delete-policy",
        "delete",
        "--max-concurrency",
        "3",
        "--rate-limit-per-minute",
        "600",
        "--realm-id",
        "id-1",
        "--reconcile-interval-minutes",
        "90",
        OUTBOUND_SCIM_DOWNSTREAM_TOKEN=SCIM_TOKEN,
    )
    assert code == 0, err
    fields = {
        "base_url": base,
        "delete_policy": "delete",
        "max_concurrency": 3,
        "rate_limit_per_minute": 600,
        "realm_id": "id-1",
        "reconcile_interval_minutes": 90,
    }

    async def shown() -> dict[str, object]:
        _, out, _ = await cli(pipeline, "tenants", "show", realm)
        doc = json.loads(out)
        return {k: doc[k] for k in fields}

    assert await shown() == fields
    code, out, err = await cli(pipeline, "tenants", "enable", realm, "--token-stdin", input_text=SCIM_TOKEN + "\n")
    assert code == 0, err
    assert SCIM_TOKEN not in out + err
    assert await shown() == fields
    code, _, err = await cli(
        pipeline,
        "tenants",
        "enable",
        realm,
        "--max-concurrency",
        "none",
        "--realm-id",
        "none",
        "--delete-policy",
        "deactivate",
        OUTBOUND_SCIM_DOWNSTREAM_TOKEN=SCIM_TOKEN,
    )
    assert code == 0, err
    assert await shown() == {**fields, "max_concurrency": None, "realm_id": None, "delete_policy": "deactivate"}


async def test_enabling_a_new_realm_needs_a_base_url(pipeline: Pipeline) -> None:
    """No current tenant to keep fields from: without --base-url the CLI exits 2 and stores nothing."""
    realm = pipeline.realm()
    code, _, err = await cli(pipeline, "tenants", "enable", realm, OUTBOUND_SCIM_DOWNSTREAM_TOKEN=SCIM_TOKEN)
    assert code == 2
    assert "--base-url is required" in err
    assert (await pipeline.api.call("GET", f"/tenants/{realm}"))[0] == 404


async def test_dead_letters_without_a_realm_are_listed_globally_not_under_a_tenant(pipeline: Pipeline) -> None:
    """A poison record belongs to no tenant: `dead-letters list` shows it (tenant null), `--tenant <realm>`
    lists and replays only that realm's (none here), and leaves the poison record where it was."""
    await pipeline.publisher.send(pipeline.settings.admin_events_topic, b"{broken", partition=0)
    letters: list[dict[str, object]] = []

    async def listed() -> bool:
        code, out, err = await cli(pipeline, "dead-letters", "list")
        assert code == 0, err
        letters[:] = json.loads(out)["dead_letters"]
        return bool(letters)

    await wait_until(listed, what="the poison record dead-lettered")
    assert [(x["reason"], x["tenant"]) for x in letters] == [("malformed_json", None)]
    code, out, err = await cli(pipeline, "dead-letters", "list", "--tenant", "realm-cli")
    assert (code, json.loads(out)) == (0, {"dead_letters": []}), err
    code, out, err = await cli(pipeline, "dead-letters", "replay", "--tenant", "realm-cli")
    assert (code, json.loads(out)) == (0, {"replayed": 0}), err
    assert await listed()
    assert [x["reason"] for x in letters] == ["malformed_json"]
