"""Group and membership events as a real Keycloak 26.5 sent them (tests/fixtures/keycloak-groups, recorded
by tests/keycloak/record_group_events.py) become the expected group changes and user memberships."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.domain.changes import Skip, UserChange, change_from_event, decode_change
from service.domain.groups import GroupChange
from service.domain.keycloak import parse_record

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "keycloak-groups"


def recorded(step: str) -> tuple[list[UserChange | GroupChange | Skip], dict[str, str]]:
    doc = json.loads((FIXTURES / f"{step}.json").read_text())
    results = [change_from_event(parse_record(json.dumps(e).encode())) for e in doc["admin_events"]]
    return results, doc["ids"]


def only(step: str) -> tuple[UserChange | GroupChange | Skip, dict[str, str]]:
    results, ids = recorded(step)
    assert len(results) == 1, results
    return results[0], ids


def test_a_top_level_group_is_created_with_its_name_and_no_parent() -> None:
    change, ids = only("01-create-top-level-group")
    assert isinstance(change, GroupChange)
    assert (change.op, change.group_id, change.name, change.parent, change.parent_known) == (
        "upsert",
        ids["/eng"],
        "eng",
        None,
        True,
    )


def test_a_sub_group_is_created_under_the_parent_of_its_path() -> None:
    """`groups/<parent>/children`: the new group's id comes from the representation, the parent from the path."""
    change, ids = only("02-create-sub-group")
    assert isinstance(change, GroupChange)
    assert (change.group_id, change.name, change.parent, change.parent_known) == (
        ids["/eng/backend"],
        "backend",
        ids["/eng"],
        True,
    )


def test_a_rename_sets_the_name_only() -> None:
    """The representation's path is the stale one the client sent back: only the name is taken."""
    change, ids = only("03-rename-sub-group")
    assert isinstance(change, GroupChange)
    assert (change.group_id, change.name, change.parent_known) == (ids["/eng/platform"], "platform", False)


def test_moves_set_the_new_parent() -> None:
    """UPDATE on `groups` moves to the top level; on `groups/<parent>/children` under that parent."""
    to_top, ids = only("04b-move-sub-group-to-top-level")
    under, after = only("04c-move-group-under-other-parent")
    assert isinstance(to_top, GroupChange) and isinstance(under, GroupChange)
    assert (to_top.group_id, to_top.parent, to_top.parent_known) == (ids["/platform"], None, True)
    assert (under.group_id, under.parent, under.parent_known) == (after["/ops/platform"], after["/ops"], True)


def test_memberships_are_user_changes_keyed_by_the_user() -> None:
    """GROUP_MEMBERSHIP CREATE / DELETE on users/<user>/groups/<group>: the user joins / leaves the group."""
    added, ids = only("06a-add-member")
    removed, _ = only("06b-remove-member")
    for change, member in ((added, True), (removed, False)):
        assert isinstance(change, UserChange)
        assert (change.op, change.user_id, change.group_id, change.member) == (
            "membership",
            ids["user:bob"],
            ids["/eng"],
            member,
        )
        assert change.key == f"{change.realm}/{ids['user:bob']}"


def test_a_user_created_with_groups_carries_their_paths() -> None:
    """No membership event follows a create with `groups`: the change keeps the paths."""
    change, _ = only("05-create-user-with-groups")
    assert isinstance(change, UserChange)
    assert (change.op, change.group_paths) == ("upsert", ("/eng",))


def test_a_group_deletion_is_one_group_change() -> None:
    results, ids = recorded("07b-delete-group-with-members-and-sub-groups")
    assert [(r.op, r.group_id) for r in results if isinstance(r, GroupChange)] == [("delete", ids["deleted:/eng"])]


def test_an_attribute_change_is_a_rename_to_the_same_name() -> None:
    change, ids = only("08-change-group-attributes")
    assert isinstance(change, GroupChange)
    assert (change.group_id, change.name, change.parent_known) == (ids["/ops"], "ops", False)


@pytest.mark.parametrize(
    ("path", "representation", "expected"),
    [
        ("groups/g-1", None, ("upsert", True)),  # a re-read says what changed
        ("groups/g-1/children", None, "no_representation"),  # the new group's id is only in the representation
        ("groups/g-1/role-mappings/realm", [{"id": "r"}], "group_subresource"),
        ("groups/g-1/management/permissions", {"enabled": True}, "group_subresource"),
    ],
)
def test_group_events_without_representation_or_on_sub_resources(
    path: str, representation: Any, expected: tuple[str, bool] | str
) -> None:
    doc = {
        "id": "e-1",
        "time": 1,
        "realmName": "acme",
        "realmId": "acme",
        "resourceType": "GROUP",
        "operationType": "UPDATE",
        "resourcePath": path,
        "representation": None if representation is None else json.dumps(representation),
    }
    result = change_from_event(parse_record(json.dumps(doc).encode()))
    if isinstance(expected, str):
        assert result == Skip(expected)
    else:
        assert isinstance(result, GroupChange) and (result.op, result.reread) == expected


def test_group_changes_and_memberships_survive_the_changes_topic() -> None:
    """Every recorded change, written to the changes topic and read back, is the same change."""
    for path in sorted(FIXTURES.glob("[0-9]*.json")):
        for event in json.loads(path.read_text())["admin_events"]:
            change = change_from_event(parse_record(json.dumps(event).encode()))
            if isinstance(change, UserChange | GroupChange):
                assert decode_change(change.to_json()) == change, path.name
