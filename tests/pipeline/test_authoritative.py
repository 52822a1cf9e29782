"""read_truth(): the change applied is the user as Keycloak stores it, not what the event claimed."""

from __future__ import annotations

from typing import Any

from service.domain.changes import UserChange
from service.domain.stamps import ChangeSource
from service.pipeline.authoritative import read_truth


class ScriptedKeycloak:
    """Answers get_user from a script: one answer per call (None = 404 user not found)."""

    def __init__(self, *answers: dict[str, Any] | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def get_user(self, realm: str, user_id: str) -> dict[str, Any] | None:
        self.calls += 1
        return self.answers.pop(0)


async def no_sleep(_: float) -> None:
    return None


STORED = {"id": "u1", "username": "jdoe", "firstName": "Jane", "lastName": "Doe", "email": "j@x.io", "enabled": True}


async def test_a_partial_update_becomes_the_whole_stored_user() -> None:
    """A partial UPDATE ({"enabled": false}) -> every attribute, as stored (here: still enabled)."""
    change = UserChange("acme", "u1", "upsert", 10, "USER_UPDATE", attributes={"active": False})
    truth = await read_truth(ScriptedKeycloak(STORED), change, sleep=no_sleep)
    assert truth.op == "upsert"
    assert truth.attributes == {
        "userName": "jdoe",
        "givenName": "Jane",
        "familyName": "Doe",
        "email": "j@x.io",
        "active": True,
    }
    assert truth.time_ms >= 10


async def test_a_create_read_too_early_is_retried() -> None:
    """404 right after a CREATE (the event precedes the commit) -> read again; found the third time."""
    keycloak = ScriptedKeycloak(None, None, STORED)
    change = UserChange("acme", "u1", "upsert", 10, "USER_CREATE", attributes={"userName": "jdoe"})
    truth = await read_truth(keycloak, change, sleep=no_sleep)
    assert (truth.op, keycloak.calls) == ("upsert", 3)


async def test_a_user_that_stays_absent_is_a_deletion() -> None:
    """A CREATE whose user never appears (rolled back) -> delete (the tenant's policy decides)."""
    keycloak = ScriptedKeycloak(None, None, None, None)
    change = UserChange("acme", "u1", "upsert", 10, "USER_CREATE", attributes={"userName": "jdoe"})
    truth = await read_truth(keycloak, change, sleep=no_sleep)
    assert (truth.op, truth.attributes, keycloak.calls) == ("delete", {}, 4)


async def test_an_update_of_an_absent_user_is_read_once() -> None:
    """Only creates are retried: an UPDATE for an absent user is a deletion after one read."""
    keycloak = ScriptedKeycloak(None)
    truth = await read_truth(keycloak, UserChange("acme", "u1", "upsert", 10, "USER_UPDATE"), sleep=no_sleep)
    assert (truth.op, keycloak.calls) == ("delete", 1)


async def test_backfill_and_reconcile_changes_pass_through() -> None:
    """Changes read from Keycloak already are not read again."""
    keycloak = ScriptedKeycloak()
    change = UserChange(
        "acme", "u1", "upsert", 10, "BACKFILL", attributes={"userName": "jdoe"}, source=ChangeSource.BACKFILL
    )
    assert await read_truth(keycloak, change, sleep=no_sleep) is change
    assert keycloak.calls == 0
