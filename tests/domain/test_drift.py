"""compare(): Keycloak users against downstream resources -> missing, stale (which attributes), extra."""

from __future__ import annotations

from service.domain.changes import UserChange
from service.domain.drift import compare, downstream_attributes
from service.domain.plan import DeletePolicy, plan_change
from service.domain.stamps import ChangeSource
from service.domain.state import UserState

ALICE = {"userName": "alice", "givenName": "Alice", "familyName": "Test", "email": "alice@example.com", "active": True}


def resource(external_id: str | None, **overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "id": f"d-{external_id}",
        "externalId": external_id,
        "userName": "alice",
        "active": True,
        "name": {"givenName": "Alice", "familyName": "Test"},
        "emails": [{"value": "alice@example.com", "type": "work", "primary": True}],
    }
    doc.update(overrides)
    return doc


def test_identical_users_show_no_drift() -> None:
    """Same five attributes -> nothing missing, stale or extra."""
    drift = compare({"k1": ALICE}, [resource("k1")])
    assert (drift.missing, drift.stale, drift.extra) == ([], {}, [])


def test_missing_stale_and_extra_are_told_apart() -> None:
    """Absent downstream -> missing; differing attributes -> stale with their names; unknown -> extra."""
    drift = compare(
        {"k1": ALICE, "k2": {**ALICE, "userName": "bob"}, "k3": {**ALICE, "active": False}},
        [
            resource("k1", emails=[{"value": "x@example.com", "primary": True}]),
            resource("k3"),
            resource("zz"),
            resource(None),
        ],
    )
    assert drift.missing == ["k2"]
    assert drift.stale == {"k1": ["email"], "k3": ["active"]}
    assert [e["externalId"] for e in drift.extra] == ["zz", None]
    assert drift.to_fix == ["k2", "k1", "k3"]


def test_user_name_and_email_compare_case_insensitively() -> None:
    """RFC 7643: userName is not case-exact; email neither in practice."""
    drift = compare(
        {"k1": ALICE}, [resource("k1", userName="ALICE", emails=[{"value": "Alice@Example.com", "primary": True}])]
    )
    assert drift.stale == {}


def test_absent_downstream_values_read_as_none() -> None:
    """No name, no emails, no active -> None, None, None, active True (the SCIM default)."""
    assert downstream_attributes({"userName": "u"}) == {
        "userName": "u",
        "givenName": None,
        "familyName": None,
        "email": None,
        "active": True,
    }


def test_a_forced_change_writes_even_what_was_last_written() -> None:
    """Reconciliation's forced change PATCHes attributes that equal the stored last-written values."""
    state = UserState(downstream_id="d1", values=dict(ALICE), versions=dict.fromkeys(ALICE, (1, "e-1")), written=ALICE)
    change = UserChange(
        "r", "k1", "upsert", 2, "RECONCILE", attributes=dict(ALICE), force=True, source=ChangeSource.RECONCILE
    )
    plan = plan_change(state, change, DeletePolicy.IGNORE)
    assert (plan.action, plan.changed) == ("sync", ALICE)
    unforced = plan_change(state, UserChange("r", "k1", "upsert", 2, "X", attributes=dict(ALICE)), DeletePolicy.IGNORE)
    assert (unforced.action, unforced.reason) == ("none", "unchanged")


def test_a_user_with_two_accounts_carrying_its_id_is_reported_with_both() -> None:
    """A create that landed after its client gave up left a second account: both are listed under the
    user (only its state knows which one is linked), neither is called extra, and the user is stale only
    when even its closest account differs (a fix writes the linked one; the other keeps differing)."""
    current = {**resource("k1"), "id": "d-1"}
    late = {**resource("k1"), "id": "d-2", "name": {"givenName": "Old", "familyName": "Name"}}
    drift = compare({"k1": ALICE}, [current, late])
    assert drift.duplicates == {
        "k1": [
            {"id": "d-1", "externalId": "k1", "userName": current["userName"]},
            {"id": "d-2", "externalId": "k1", "userName": late["userName"]},
        ]
    }
    assert drift.extra == [] and drift.missing == []
    assert drift.stale == {}
    stale = compare({"k1": {**ALICE, "email": "new@example.com"}}, [current, late])
    assert stale.stale == {"k1": ["email"]}


def test_one_account_per_user_is_no_duplicate() -> None:
    assert compare({"k1": ALICE}, [resource("k1")]).duplicates == {}
