"""The activity log end to end: the real broker's activity topic, the real scim2-server, the service's API.
What one replica did is read back the same by every replica, also by one started afterwards, and the
topic never holds a token."""

from __future__ import annotations

import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer

from service.kafka_topics import read_whole_topic
from service.metrics import Metrics
from service.pipeline.activity import ActivityFollower
from tests import events as ev
from tests.conftest import SCIM_TOKEN
from tests.integration.conftest import Pipeline
from tests.support import ADMIN_TOKEN, wait_until


async def _activity(pipeline: Pipeline, realm: str, query: str = "") -> dict[str, Any]:
    status, body = await pipeline.api.call("GET", f"/tenants/{realm}/activity{query}")
    assert status == 200, body
    return dict(body)


async def _created(pipeline: Pipeline, username: str) -> tuple[str, str]:
    """A realm enabled, and a user created in it, applied downstream: (realm, user id)."""
    realm, user_id = pipeline.realm(), f"u-{uuid.uuid4().hex[:6]}"
    await pipeline.enable(realm)
    await pipeline.admin(ev.create_user(realm, user_id, username))
    await pipeline.wait_user(realm, user_id, userName=username)
    return realm, user_id


async def test_a_created_user_shows_in_the_activity_with_its_post_and_201(pipeline: Pipeline) -> None:
    """The user's entry (found by a part of its username, any case) says created, with POST /Users answered
    201; the summary counts the change and its success; a realm not enabled answers 404."""
    realm, user_id = await _created(pipeline, "grace.hopper")
    seen: dict[str, Any] = {}

    async def shown() -> bool:
        seen.update(await _activity(pipeline, realm, "?user=HOPPER&limit=10"))
        return any(e["subject"] == user_id and e["outcome"] == "created" for e in seen["entries"])

    await wait_until(shown, timeout=30, what=f"{user_id} in the activity log; last seen {seen}")
    [entry] = [e for e in seen["entries"] if e["outcome"] == "created"]
    assert (entry["kind"], entry["name"], entry["action"]) == ("user", "grace.hopper", "create")
    assert any(s["method"] == "POST" and s["path"].startswith("/Users") and s["status"] == 201 for s in entry["sent"])
    assert "userName" in entry["detail"]["attributes"]
    assert seen["summary"]["changes_last_hour"] >= 1 and seen["summary"]["last_success"] is not None
    assert (await _activity(pipeline, realm, "?user=nobody-like-this"))["entries"] == []
    assert (await pipeline.api.call("GET", "/tenants/not-enabled-here/activity"))[0] == 404


async def test_every_replica_reads_the_same_entries_also_one_started_afterwards(pipeline: Pipeline) -> None:
    """Two followers reading while the entries are written (the service's own and another replica's) and
    a third started after them all hold the same entries of the downstream."""
    other = ActivityFollower(pipeline.settings, Metrics())
    await other.start()
    try:
        realm, user_id = await _created(pipeline, "ada.lovelace")
        assert pipeline.service.activity is not None
        own = pipeline.service.activity

        async def in_both() -> bool:
            return all(any(e.subject == user_id for e in f.recent(realm, "default")) for f in (own, other))

        await wait_until(in_both, timeout=30, what="the entry in both followers")
        late = ActivityFollower(pipeline.settings, Metrics())
        await late.start()
        try:
            await wait_until(_loaded(late), timeout=30, what="the late follower caught up")
            views = [f.recent(realm, "default", limit=100) for f in (own, other, late)]
            assert views[0] and views[0] == views[1] == views[2]
        finally:
            await late.stop()
    finally:
        await other.stop()


def _loaded(follower: ActivityFollower) -> Any:
    async def check() -> bool:
        return follower.loaded.is_set()

    return check


async def test_the_activity_topic_holds_no_token(pipeline: Pipeline) -> None:
    """After a run with a known downstream token (enable, create), no record of the activity
    topic holds the downstream token or the admin token, in any byte."""
    realm, user_id = await _created(pipeline, "alan.turing")

    async def logged() -> bool:
        return bool((await _activity(pipeline, realm))["entries"])

    await wait_until(logged, timeout=30, what="an entry in the activity log")
    raw = await _whole_topic(pipeline)
    assert any(user_id.encode() in value for value in raw)
    assert not [value for value in raw if SCIM_TOKEN.encode() in value or ADMIN_TOKEN.encode() in value]


async def _whole_topic(pipeline: Pipeline) -> list[bytes]:
    """Every record of the activity topic, key and value bytes, as the broker holds them."""
    settings = pipeline.settings
    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        end = await read_whole_topic(consumer, settings, settings.activity_topic)
        values: list[bytes] = []
        for tp, offset in end.items():
            while await consumer.position(tp) < offset:
                for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                    values += [(r.key or b"") + (r.value or b"") for r in records]
        return values
    finally:
        await consumer.stop()
