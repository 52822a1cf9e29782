"""Production-shaped traffic on the real broker: every user ends downstream as event-time order says.

Each user's life (a create or a self-registration, console saves, partial updates, self-service
edits, lockouts, re-enables, and for some a deletion by an admin or by themselves) is interleaved in
time with every other user's, published in that order with local reordering (Keycloak nodes publish
with different delays), every record on a random partition of its topic (the plugin's null keys) and
user and admin events on their two topics, to a downstream that fails now and then. One realm per
delete policy. The expected end state comes from tests/convergence.py's reference (event-time order).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.domain.changes import UserChange, change_from_event
from service.domain.drift import downstream_attributes
from service.domain.keycloak import parse_record
from service.domain.plan import DeletePolicy
from tests import events
from tests.conftest import SCIM_TOKEN
from tests.convergence import downstream_view, reference
from tests.faults import FaultMix, FaultProxy
from tests.integration.conftest import Pipeline
from tests.support import ScimServer, by_external_id, downstream_users, wait_until

USERS_PER_REALM = 40
Event = tuple[str, dict[str, Any]]  # (topic kind: "admin" | "user", plugin record)


def user_life(rng: random.Random, realm: str, user_id: str) -> list[Event]:
    """One user's events, in the order Keycloak produced them (their times are set by `interleave`)."""
    login = f"u{user_id[:8]}"
    first, last, email = "First", "Last", f"{login}@example.com"
    life: list[Event] = []
    if rng.random() < 0.5:
        life.append(("admin", events.create_user(realm, user_id, login, first, last, email)))
    else:
        life.append(("user", events.user_event(realm, user_id, "REGISTER", {
            "username": login, "email": email, "first_name": first, "last_name": last})))
    for _ in range(rng.randint(2, 7)):
        kind = rng.choice(["console_save", "disable", "enable", "rename", "self_service", "email", "lockout"])
        if kind == "console_save":
            last = rng.choice(["Last", "Last-B", "Last-C"])
            rep = {"id": user_id, "username": login, "firstName": first, "lastName": last, "email": email,
                   "enabled": rng.random() < 0.6, "emailVerified": True, "attributes": {}}
            life.append(("admin", events.admin_event(realm, user_id, "UPDATE", rep)))
        elif kind in ("disable", "enable"):
            life.append(("admin", events.update_user(realm, user_id, enabled=kind == "enable")))
        elif kind == "rename":
            first = rng.choice(["First", "Fern", "Fay"])
            life.append(("admin", events.update_user(realm, user_id, firstName=first)))
        elif kind == "self_service":
            new_last = rng.choice(["Last", "Self-Made", "Changed"])
            life.append(("user", events.user_event(realm, user_id, "UPDATE_PROFILE", {
                "previous_last_name": last, "updated_last_name": new_last})))
            last = new_last
        elif kind == "email":
            new_email = f"{login}.{rng.randint(1, 9)}@example.com"
            life.append(("user", events.user_event(realm, user_id, "UPDATE_EMAIL", {
                "previous_email": email, "updated_email": new_email})))
            email = new_email
        else:
            life.append(("user", events.user_event(realm, user_id, "USER_DISABLED_BY_PERMANENT_LOCKOUT")))
    roll = rng.random()
    if roll < 0.2:
        life.append(("admin", events.delete_user(realm, user_id)))
    elif roll < 0.3:
        life.append(("user", events.user_event(realm, user_id, "DELETE_ACCOUNT")))
    return life


def interleave(rng: random.Random, lives: list[list[Event]], start_ms: int) -> list[Event]:
    """Every user's events merged into one timeline (each user's order kept), stamped with increasing
    times, then shuffled within small windows: the order the records reach Kafka."""
    pending = [list(life) for life in lives]
    timeline: list[Event] = []
    now = start_ms
    while any(pending):
        life = rng.choice([p for p in pending if p])
        kind, record = life.pop(0)
        now += rng.randint(0, 3)  # several events may share a millisecond
        record["time"] = now
        timeline.append((kind, record))
    window = 12
    for i in range(0, len(timeline), window):
        chunk = timeline[i:i + window]
        rng.shuffle(chunk)
        timeline[i:i + window] = chunk
    return timeline


def expected_users(timeline: list[Event], policy: DeletePolicy) -> dict[str, dict[str, Any] | None]:
    changes: dict[str, list[UserChange]] = {}
    for _, record in timeline:
        change = change_from_event(parse_record(json.dumps(record).encode()))
        if isinstance(change, UserChange):
            changes.setdefault(change.user_id, []).append(change)
    return {uid: downstream_view(reference(user_changes, policy)) for uid, user_changes in changes.items()}


@pytest.fixture
async def faulty(scim_server: ScimServer) -> AsyncIterator[FaultProxy]:
    mix = FaultMix(error_500=0.03, throttle_429=0.03, reset_after=0.04)
    proxy = await FaultProxy(f"http://127.0.0.1:{scim_server.port}", mix, seed=11, hang_seconds=1.0).start()
    yield proxy
    await proxy.stop()


async def test_interleaved_lives_spread_over_partitions_converge_for_every_delete_policy(
    pipeline: Pipeline, faulty: FaultProxy, scim_server: ScimServer
) -> None:
    """40 users per realm, one realm per delete policy: after the traffic drains, each user downstream
    equals the event-time-order result (or is absent), with exactly one account per user."""
    rng = random.Random(20261201)
    realms: dict[str, tuple[DeletePolicy, str]] = {}
    lives: list[list[Event]] = []
    for policy in DeletePolicy:
        realm = pipeline.realm()
        space = f"{realm}-{uuid.uuid4().hex[:6]}"
        status, body = await pipeline.api.enable(realm, faulty.base_url(space), SCIM_TOKEN, str(policy))
        assert status == 201, body
        realms[realm] = (policy, f"http://127.0.0.1:{scim_server.port}/{space}")
        lives += [user_life(rng, realm, str(uuid.uuid4())) for _ in range(USERS_PER_REALM)]
    ordered = interleave(rng, lives, events.now_ms())
    for kind, record in ordered:
        topic = pipeline.settings.admin_events_topic if kind == "admin" else pipeline.settings.events_topic
        await pipeline.publisher.send(topic, record, partition=rng.randrange(3))
    await pipeline.publisher.flush()

    wanted = {realm: expected_users([e for e in ordered if e[1]["realmName"] == realm], policy)
              for realm, (policy, _) in realms.items()}
    mismatches: dict[str, Any] = {}

    async def converged() -> bool:
        mismatches.clear()
        for realm, (_, base) in realms.items():
            found = by_external_id(await downstream_users(base, SCIM_TOKEN))
            for uid, expected in wanted[realm].items():
                accounts = found.get(uid, [])
                assert len(accounts) <= 1, f"{uid} has {len(accounts)} accounts"
                have = downstream_attributes(accounts[0]) if accounts else None
                want = {k: expected[k] for k in have or expected} if expected else None
                if have != want:
                    mismatches[uid] = {"realm": realm, "have": have, "want": want}
            assert set(found) <= set(wanted[realm]), "accounts for users we never sent"
        return not mismatches

    try:
        await wait_until(converged, timeout=180, what="every user converged")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still different: {mismatches}") from None
    assert sum(faulty.injected.values()) > 0, "the downstream never failed: the test lost its faults"
    deleted = sum(1 for realm in wanted for v in wanted[realm].values() if v is None)
    assert deleted > 0, "no user ends absent: the delete policy was not exercised"
