"""A backfill's change carrying what its listing saw (service.domain.sighting), executed against the
in-memory downstream: how many requests, and whose account is written."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from service.domain import scim
from service.domain.changes import UserChange
from service.domain.plan import DeletePolicy, plan_change
from service.domain.sighting import ABSENT, HELD, Seen, Sighting
from service.domain.stamps import ChangeSource
from service.domain.state import UserState
from service.errors import ScimOwnershipConflict
from service.scim.client import Downstream
from service.scim.executor import Result, execute
from tests.scim.fake_downstream import FakeDownstream

DS = Downstream("acme", "http://scim.invalid/v2", "token-1")
UID = "kc-1"
WANTED: dict[str, Any] = {"userName": "jdoe", "givenName": "Jane", "familyName": "Doe", "email": None, "active": True}


class CountingDownstream(FakeDownstream):
    """Counts every request; with `unique=False` it takes a second account with a userName already held,
    as some downstreams do."""

    def __init__(self, *, unique: bool = True) -> None:
        super().__init__()
        self.unique = unique
        self.requests: list[str] = []

    async def find_user(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
        self.requests.append(f"GET {attribute}")
        return await super().find_user(ds, attribute, value)

    async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append("POST")
        if self.unique:
            return await super().create_user(ds, body)
        downstream_id = f"d-{next(self._ids)}"
        self.accounts[downstream_id] = {**copy.deepcopy(body), "id": downstream_id}
        self.writes.append(("POST", downstream_id))
        return copy.deepcopy(self.accounts[downstream_id])

    async def patch_user(self, ds: Downstream, user_id: str, operations: list[dict[str, Any]]) -> None:
        self.requests.append("PATCH")
        await super().patch_user(ds, user_id, operations)


def backfilled(sighting: Sighting | None) -> UserChange:
    return UserChange(
        "acme", UID, "upsert", 1000, "BACKFILL", attributes=WANTED, source=ChangeSource.BACKFILL, sighting=sighting
    )


async def apply(downstream: CountingDownstream, change: UserChange, state: UserState | None = None) -> Any:
    state = state or UserState()
    return await execute(plan_change(state, change, DeletePolicy.IGNORE), change, DS, downstream)


async def test_absent_is_one_post_and_nothing_else() -> None:
    downstream = CountingDownstream()
    outcome = await apply(downstream, backfilled(ABSENT))
    assert (outcome.result, downstream.requests) == (Result.CREATED, ["POST"])
    assert outcome.state.downstream_id in downstream.accounts


async def test_absent_but_created_since_by_hand_without_owner_is_adopted_after_the_409() -> None:
    """The listing is a snapshot: an account made after it answers 409, and the adoption rules run."""
    downstream = CountingDownstream()
    made = downstream.add("jdoe", None)
    outcome = await apply(downstream, backfilled(ABSENT))
    assert (outcome.result, outcome.state.downstream_id) == (Result.LINKED, made)
    assert downstream.accounts[made]["externalId"] == UID


@pytest.mark.parametrize("unique", [True, False])
async def test_a_look_alike_owned_by_someone_else_is_never_written_nor_duplicated(unique: bool) -> None:
    """Held by another owner: a conflict, no write, and no second account, even where the downstream
    would take one (no unique userNames)."""
    downstream = CountingDownstream(unique=unique)
    other = downstream.add("JDoe", "someone-else", name={"familyName": "Other"})
    before = copy.deepcopy(downstream.accounts)
    with pytest.raises(ScimOwnershipConflict) as raised:
        await apply(downstream, backfilled(HELD))
    assert raised.value.downstream_id == other
    assert downstream.accounts == before
    assert "POST" not in downstream.requests and "PATCH" not in downstream.requests


async def test_held_by_an_unowned_account_adopts_it() -> None:
    downstream = CountingDownstream(unique=False)
    unowned = downstream.add("jdoe", None)
    outcome = await apply(downstream, backfilled(HELD))
    assert (outcome.result, outcome.state.downstream_id) == (Result.LINKED, unowned)
    assert len(downstream.accounts) == 1


async def test_our_listed_account_that_matches_costs_no_request() -> None:
    downstream = CountingDownstream()
    mine = downstream.add("jdoe", UID, name={"givenName": "Jane", "familyName": "Doe"})
    seen = Sighting(Seen.OURS, mine, dict(WANTED))
    outcome = await apply(downstream, backfilled(seen))
    assert (outcome.result, outcome.state.downstream_id, downstream.requests) == (Result.UNCHANGED, mine, [])


async def test_our_listed_account_gone_since_is_found_again_or_recreated() -> None:
    """The PATCH of a listed account answers 404: resolved again by externalId, then created."""
    downstream = CountingDownstream()
    seen = Sighting(Seen.OURS, "vanished", {**WANTED, "familyName": "Old"})
    outcome = await apply(downstream, backfilled(seen))
    assert outcome.result is Result.CREATED
    assert downstream.requests == ["PATCH", "GET externalId", "POST"]
    assert [a["userName"] for a in downstream.accounts.values()] == [scim.user_resource(UID, WANTED)["userName"]]
