"""A downstream's identity: one key function for every part, and the fan-out of a change to a realm's apps."""

from __future__ import annotations

import pytest

from service.domain.changes import UserChange, decode_change
from service.domain.downstreams import (
    DEFAULT,
    change_key,
    fan_out,
    is_name,
    labels,
    split_tenant_key,
    tenant_key,
)
from service.domain.groups import GroupChange, group_key, is_group_key

CHANGE = UserChange("acme", "u-1", "upsert", 1, "REGISTER", "e-1", {"userName": "ann"})


def test_the_default_downstream_keeps_the_keys_a_realm_always_had() -> None:
    """The realm alone for the tenant record; `<realm>/<user id>` and `<realm>/group:<id>` on the keyed topic:
    no existing record, user state or partition moves."""
    assert tenant_key("acme") == tenant_key("acme", DEFAULT) == "acme"
    assert CHANGE.key == change_key("acme", DEFAULT, "u-1") == "acme/u-1"
    assert group_key("acme", "g-1") == "acme/group:g-1"
    assert GroupChange("acme", "g-1", "upsert", 1).key == "acme/group:g-1"


def test_a_named_downstream_has_keys_of_its_own() -> None:
    """`<realm>/<name>` for the record, `<realm>/<name>/<user id>` for its changes: never one of the
    default downstream's (those hold one `/`), and a group's key is still recognized as a group's."""
    assert tenant_key("acme", "crm") == "acme/crm"
    assert CHANGE.__class__("acme", "u-1", "upsert", 1, "X", downstream="crm").key == "acme/crm/u-1"
    key = group_key("acme", "g-1", "crm")
    assert key == "acme/crm/group:g-1"
    assert is_group_key(key)
    assert not is_group_key("acme/crm/u-1")


@pytest.mark.parametrize(("key", "parts"), [("acme", ("acme", "default")), ("acme/crm", ("acme", "crm"))])
def test_a_tenant_key_splits_back_into_realm_and_name(key: str, parts: tuple[str, str]) -> None:
    """The inverse of tenant_key, which also gives the (tenant, downstream) metric labels."""
    assert split_tenant_key(key) == labels(key) == parts
    assert tenant_key(*parts) == key


@pytest.mark.parametrize("name", ["default", "crm", "a", "hr-2", "x" * 40])
def test_names_that_may_name_a_downstream(name: str) -> None:
    assert is_name(name)


@pytest.mark.parametrize("name", ["", "CRM", "-crm", "crm/x", "group:1", "x" * 41, "crm "])
def test_names_that_may_not(name: str) -> None:
    """Lower-case letters, digits and dashes, 1 to 40, not starting with a dash: never a `/` or `:`."""
    assert not is_name(name)


def test_a_change_is_fanned_out_once_per_downstream_of_its_realm() -> None:
    """One copy per name (sorted), each naming its downstream and keyed for it; the rest is unchanged."""
    copies = fan_out(CHANGE, ["crm", "default", "crm"])
    assert [c.downstream for c in copies] == ["crm", "default"]
    assert [c.key for c in copies] == ["acme/crm/u-1", "acme/u-1"]
    assert {(c.user_id, c.event_id, dict(c.attributes)["userName"]) for c in copies} == {("u-1", "e-1", "ann")}


def test_a_change_of_a_realm_with_no_downstream_known_goes_out_as_today() -> None:
    """No name: the change as it is (the default's key), for stage 2 to skip as an unknown tenant."""
    assert fan_out(CHANGE, []) == [CHANGE]


def test_group_changes_fan_out_too() -> None:
    change = GroupChange("acme", "g-1", "upsert", 1, name="eng")
    assert [c.key for c in fan_out(change, ["hr"])] == ["acme/hr/group:g-1"]


def test_the_downstream_survives_the_keyed_topic() -> None:
    """Written only when not the default (records of the default downstream are byte for byte as before)."""
    named = fan_out(CHANGE, ["crm"])[0]
    assert b"downstream" not in CHANGE.to_json()
    assert decode_change(named.to_json()) == named
    group = GroupChange("acme", "g-1", "member", 1, user_id="u-1", downstream="crm")
    assert decode_change(group.to_json()) == group
    assert b"downstream" not in GroupChange("acme", "g-1", "member", 1).to_json()
