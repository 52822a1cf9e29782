"""Production-shaped traffic for the integration tests: users' lives interleaved in time.

Each user's life (a create or a self-registration, console saves, partial updates, self-service
edits, lockouts, re-enables, and for some a deletion by an admin or by themselves) is merged with
every other user's into one timeline, published in that order with local reordering (Keycloak nodes
publish with different delays), every record on a random partition of its topic (the plugin's null
keys), user and admin events on their two topics. The expected end state comes from
tests/convergence.py's reference (event-time order), never from the code under test's merge.
"""

from __future__ import annotations

import json
import random
from typing import Any

from service.domain.changes import UserChange, change_from_event
from service.domain.drift import downstream_attributes
from service.domain.keycloak import parse_record
from service.domain.plan import DeletePolicy
from service.settings import Settings
from tests import events
from tests.conftest import SCIM_TOKEN
from tests.convergence import downstream_view, reference
from tests.support import Publisher, by_external_id, downstream_users

Event = tuple[str, dict[str, Any]]  # (topic kind: "admin" | "user", plugin record)


def user_life(rng: random.Random, realm: str, user_id: str) -> list[Event]:
    """One user's events, in the order Keycloak produced them (their times are set by `interleave`)."""
    login = f"u{user_id.replace('-', '')[:10]}"
    first, last, email = "First", "Last", f"{login}@example.com"
    life: list[Event] = []
    if rng.random() < 0.5:
        life.append(("admin", events.create_user(realm, user_id, login, first, last, email)))
    else:
        life.append(
            (
                "user",
                events.user_event(
                    realm,
                    user_id,
                    "REGISTER",
                    {"username": login, "email": email, "first_name": first, "last_name": last},
                ),
            )
        )
    for _ in range(rng.randint(2, 7)):
        kind = rng.choice(["console_save", "disable", "enable", "rename", "self_service", "email", "lockout"])
        if kind == "console_save":
            last = rng.choice(["Last", "Last-B", "Last-C"])
            rep = {
                "id": user_id,
                "username": login,
                "firstName": first,
                "lastName": last,
                "email": email,
                "enabled": rng.random() < 0.6,
                "emailVerified": True,
                "attributes": {},
            }
            life.append(("admin", events.admin_event(realm, user_id, "UPDATE", rep)))
        elif kind in ("disable", "enable"):
            life.append(("admin", events.update_user(realm, user_id, enabled=kind == "enable")))
        elif kind == "rename":
            first = rng.choice(["First", "Fern", "Fay"])
            life.append(("admin", events.update_user(realm, user_id, firstName=first)))
        elif kind == "self_service":
            new_last = rng.choice(["Last", "Self-Made", "Changed"])
            life.append(
                (
                    "user",
                    events.user_event(
                        realm, user_id, "UPDATE_PROFILE", {"previous_last_name": last, "updated_last_name": new_last}
                    ),
                )
            )
            last = new_last
        elif kind == "email":
            new_email = f"{login}.{rng.randint(1, 9)}@example.com"
            life.append(
                (
                    "user",
                    events.user_event(
                        realm, user_id, "UPDATE_EMAIL", {"previous_email": email, "updated_email": new_email}
                    ),
                )
            )
            email = new_email
        else:
            life.append(("user", events.user_event(realm, user_id, "USER_DISABLED_BY_PERMANENT_LOCKOUT")))
    roll = rng.random()
    if roll < 0.2:
        life.append(("admin", events.delete_user(realm, user_id)))
    elif roll < 0.3:
        life.append(("user", events.user_event(realm, user_id, "DELETE_ACCOUNT")))
    return life


def interleave(rng: random.Random, lives: list[list[Event]], start_ms: int, window: int = 12) -> list[Event]:
    """Every user's events merged into one timeline (each user's order kept), stamped with increasing
    times (several may share a millisecond), then shuffled within windows of `window` records: the
    order the records reach Kafka."""
    pending = [list(life) for life in lives]
    timeline: list[Event] = []
    now = start_ms
    while any(pending):
        life = rng.choice([p for p in pending if p])
        kind, record = life.pop(0)
        now += rng.randint(0, 3)
        record["time"] = now
        timeline.append((kind, record))
    for i in range(0, len(timeline), window):
        chunk = timeline[i : i + window]
        rng.shuffle(chunk)
        timeline[i : i + window] = chunk
    return timeline


async def publish(
    publisher: Publisher, settings: Settings, timeline: list[Event], rng: random.Random, partitions: int = 3
) -> None:
    """Each record on a random partition of its topic, as the plugin's null keys spread them."""
    for kind, record in timeline:
        topic = settings.admin_events_topic if kind == "admin" else settings.events_topic
        await publisher.send(topic, record, partition=rng.randrange(partitions))
    await publisher.flush()


def expected_users(timeline: list[Event], policy: DeletePolicy) -> dict[str, dict[str, Any] | None]:
    """User id -> the attributes it ends with downstream (None: absent), by event-time order."""
    changes: dict[str, list[UserChange]] = {}
    for _, record in timeline:
        change = change_from_event(parse_record(json.dumps(record).encode()))
        if isinstance(change, UserChange):
            changes.setdefault(change.user_id, []).append(change)
    return {uid: downstream_view(reference(user_changes, policy)) for uid, user_changes in changes.items()}


async def differences(base: str, wanted: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """The users whose downstream account differs from `wanted` (empty: converged). Two accounts for one
    user, or an account for a user never sent, fail at once: waiting cannot fix them."""
    found = by_external_id(await downstream_users(base, SCIM_TOKEN))
    assert set(found) <= set(wanted), f"accounts for users never sent: {set(found) - set(wanted)}"
    different: dict[str, Any] = {}
    for uid, want in wanted.items():
        accounts = found.get(uid, [])
        assert len(accounts) <= 1, f"{uid} has {len(accounts)} accounts"
        have = downstream_attributes(accounts[0]) if accounts else None
        want_shown = {k: want[k] for k in have or want} if want else None
        if have != want_shown:
            different[uid] = {"have": have, "want": want_shown}
    return different
