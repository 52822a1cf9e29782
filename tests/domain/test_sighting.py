"""What a backfill's listing says of each user (service.domain.sighting), and the plan it leads to."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.changes import UserChange
from service.domain.plan import Action, DeletePolicy, plan_change
from service.domain.sighting import ABSENT, HELD, DownstreamIndex, Seen, Sighting, account_of, written_as_seen
from service.domain.stamps import ChangeSource
from service.domain.state import UserState

UID = "kc-1"
WANTED: dict[str, Any] = {
    "userName": "jdoe",
    "givenName": "Jane",
    "familyName": "Doe",
    "email": "jane@example.com",
    "active": True,
}


def resource(rid: str, user_name: str, external_id: str | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": rid, "userName": user_name, **extra}
    if external_id is not None:
        doc["externalId"] = external_id
    return doc


def index(*resources: dict[str, Any]) -> DownstreamIndex:
    return DownstreamIndex(account_of(r, r["id"]) for r in resources)


def ours(**overrides: Any) -> dict[str, Any]:
    return resource(
        "d-1",
        overrides.pop("userName", "jdoe"),
        UID,
        name={"givenName": "Jane", "familyName": overrides.pop("familyName", "Doe")},
        emails=[{"value": overrides.pop("email", "jane@example.com"), "primary": True}],
        active=overrides.pop("active", True),
    )


@pytest.mark.parametrize(
    ("listed", "user_name", "seen"),
    [
        ((), "jdoe", Seen.ABSENT),
        ((resource("x", "someone", "kc-2"),), "jdoe", Seen.ABSENT),
        ((resource("x", "JDoe", "kc-2"),), "jdoe", Seen.HELD),  # another owner's, userName ignoring case
        ((resource("x", "jdoe"),), "jdoe", Seen.HELD),  # nobody's: adoptable, but only after a live lookup
        ((resource("x", "jdoe", ""),), "jdoe", Seen.HELD),
        ((resource("x", "jdoe", UID),), "jdoe", Seen.OURS),
        ((resource("x", "renamed", UID),), "jdoe", Seen.OURS),  # ours by externalId whatever its userName
    ],
)
def test_a_listing_sees_each_user_as_absent_ours_or_held(
    listed: tuple[dict[str, Any], ...], user_name: str, seen: Seen
) -> None:
    """externalId first (ours), then the userName ignoring case (held), else absent."""
    sighting = index(*listed).sight(UID, user_name)
    assert sighting is not None and sighting.seen is seen


def test_a_listing_says_nothing_of_a_user_whose_externalid_two_accounts_carry() -> None:
    """Two accounts carry our externalId: not provably one account, so the applier looks up as usual."""
    assert index(resource("a", "jdoe", UID), resource("b", "jdoe2", UID)).sight(UID, "jdoe") is None


def test_a_listing_says_nothing_of_a_user_without_username() -> None:
    assert index().sight(UID, None) is None


def test_a_sighting_travels_in_the_change_and_back() -> None:
    """The keyed topic carries the sighting; an OURS keeps its account id and values."""
    seen = index(ours(familyName="Old")).sight(UID, "jdoe")
    change = UserChange(
        "acme", UID, "upsert", 1, "BACKFILL", attributes=WANTED, source=ChangeSource.BACKFILL, sighting=seen
    )
    assert UserChange.from_json(change.to_json()) == change
    plain = UserChange("acme", UID, "upsert", 1, "BACKFILL", attributes=WANTED)
    assert b"sighting" not in plain.to_json()


def test_written_as_seen_takes_our_value_where_the_downstream_compares_it_equal() -> None:
    """userName and email compare ignoring case: no PATCH for a case difference."""
    seen = {"userName": "JDOE", "givenName": "Jane", "familyName": "Other", "email": "JANE@example.com", "active": True}
    assert written_as_seen(WANTED, seen) == {**WANTED, "familyName": "Other"}


def change(sighting: Sighting | None) -> UserChange:
    return UserChange(
        "acme", UID, "upsert", 1000, "BACKFILL", attributes=WANTED, source=ChangeSource.BACKFILL, sighting=sighting
    )


def test_absent_plans_a_create_without_lookup() -> None:
    plan = plan_change(UserState(), change(ABSENT), DeletePolicy.IGNORE)
    assert (plan.action, plan.values) == (Action.CREATE, WANTED)


def test_held_plans_the_adoption_rules_never_a_create() -> None:
    assert plan_change(UserState(), change(HELD), DeletePolicy.IGNORE).action is Action.ADOPT


def test_our_account_as_listed_costs_nothing_when_it_matches() -> None:
    """Linked to the listed account, nothing to write: no request at all."""
    seen = index(ours()).sight(UID, "jdoe")
    plan = plan_change(UserState(), change(seen), DeletePolicy.IGNORE)
    assert plan.action is Action.NONE
    assert (plan.state.downstream_id, plan.state.written) == ("d-1", WANTED)


def test_our_account_as_listed_is_patched_only_where_it_differs() -> None:
    seen = index(ours(familyName="Old", active=False)).sight(UID, "jdoe")
    plan = plan_change(UserState(), change(seen), DeletePolicy.IGNORE)
    assert (plan.action, plan.state.downstream_id) == (Action.SYNC, "d-1")
    assert plan.changed == {"familyName": "Doe", "active": True}


def test_a_stored_link_ignores_the_sighting_and_patches_only_what_differs_from_last_written() -> None:
    """The state's link and "last written" are newer knowledge than any listing."""
    linked = UserState(downstream_id="mine", values=dict(WANTED), versions=dict.fromkeys(WANTED, (1, "")))
    linked = UserState(
        downstream_id="mine", values=linked.values, versions=linked.versions, written={**WANTED, "givenName": "J"}
    )
    for sighting in (ABSENT, HELD, index(ours(familyName="Old")).sight(UID, "jdoe")):
        plan = plan_change(linked, change(sighting), DeletePolicy.IGNORE)
        assert (plan.action, plan.state.downstream_id, plan.changed) == (Action.SYNC, "mine", {"givenName": "Jane"})
