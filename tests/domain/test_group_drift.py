"""Keycloak's groups against a downstream's (service.domain.drift.compare_groups, wanted_members)."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.drift import compare_groups, wanted_members

USER_IDS = {"ds-alice": "alice", "ds-bob": "bob"}  # downstream user id -> externalId


def resource(external_id: Any, name: str, *members: dict[str, Any], gid: str = "ds-1") -> dict[str, Any]:
    return {"id": gid, "externalId": external_id, "displayName": name, "members": list(members)}


def test_a_group_in_step_has_no_drift() -> None:
    """Same displayName, the same members (matched through their user's externalId): nothing to report."""
    drift = compare_groups(
        {"g1": "eng"},
        {"g1": {"alice", "bob"}},
        [resource("g1", "eng", {"value": "ds-alice"}, {"value": "ds-bob", "type": "User"})],
        USER_IDS,
    )
    assert (drift.missing, drift.stale, drift.extra, drift.members_missing, drift.members_extra) == ([], {}, [], {}, {})


def test_missing_group_lacks_all_its_members() -> None:
    """A wanted group nobody holds downstream is missing, and each of its members is a missing membership."""
    drift = compare_groups({"g1": "eng"}, {"g1": {"bob", "alice"}}, [], USER_IDS)
    assert drift.missing == ["g1"]
    assert drift.members_missing == {"g1": ["alice", "bob"]}
    assert drift.members_missing_count == 2


def test_stale_displayname_is_compared_exactly() -> None:
    """A case change is a rename too: displayName is compared as written."""
    drift = compare_groups({"g1": "Eng"}, {}, [resource("g1", "eng")], USER_IDS)
    assert drift.stale == {"g1": "eng"}


@pytest.mark.parametrize(
    ("member", "extra"),
    [
        ({"value": "ds-unknown"}, ["ds-unknown"]),  # no known downstream user
        ({"value": "ds-bob"}, ["ds-bob"]),  # a user Keycloak does not have in this group
        ({"value": "ds-group", "type": "Group"}, []),  # nested groups downstream: not ours to compare
        ({"value": "ds-group", "type": "group"}, []),
    ],
)
def test_members_keycloak_does_not_have_are_extra(member: dict[str, Any], extra: list[str]) -> None:
    """Extra members are reported by their downstream id; members of type Group are left out."""
    drift = compare_groups(
        {"g1": "eng"}, {"g1": {"alice"}}, [resource("g1", "eng", {"value": "ds-alice"}, member)], USER_IDS
    )
    assert drift.members_extra == ({"g1": extra} if extra else {})
    assert drift.members_missing == {}


def test_groups_that_are_no_wanted_groups_are_extra() -> None:
    """No externalId, one that is no wanted group's, or a second group with the same externalId: extra."""
    drift = compare_groups(
        {"g1": "eng"},
        {},
        [
            resource("g1", "eng", gid="ds-1"),
            resource("g1", "eng-copy", gid="ds-2"),
            resource(None, "manual", gid="ds-3"),
            resource("g9", "gone", gid="ds-4"),
        ],
        USER_IDS,
    )
    assert [g["id"] for g in drift.extra] == ["ds-2", "ds-3", "ds-4"]
    assert drift.stale == {}


def test_wanted_members_are_direct_without_flattening() -> None:
    """Without flattening a group should hold its direct members only."""
    parents = {"eng": None, "backend": "eng", "db": "backend"}
    direct = {"eng": {"a"}, "backend": {"b"}, "db": {"c"}}
    assert wanted_members(direct, parents, flatten=False) == {
        "eng": frozenset({"a"}),
        "backend": frozenset({"b"}),
        "db": frozenset({"c"}),
    }


def test_wanted_members_with_flattening_include_every_member_below() -> None:
    """With flattening, members of every group below, at any depth; a group without members wants none."""
    parents = {"eng": None, "backend": "eng", "db": "backend", "ops": None}
    direct = {"eng": {"a"}, "backend": {"b"}, "db": {"c"}}
    assert wanted_members(direct, parents, flatten=True) == {
        "eng": frozenset({"a", "b", "c"}),
        "backend": frozenset({"b", "c"}),
        "db": frozenset({"c"}),
        "ops": frozenset(),
    }


def test_wanted_members_survive_a_parent_cycle() -> None:
    """Parents read from a listing that changed underneath cannot loop forever."""
    parents: dict[str, str | None] = {"a": "b", "b": "a"}
    assert wanted_members({"a": {"x"}}, parents, flatten=True) == {"a": frozenset({"x"}), "b": frozenset({"x"})}
