"""Keycloak user attributes: read from events, merged per attribute like the built-in ones (a complete
listing removes what it omits), and sent where a mapping says, converging whatever the arrival order."""

from __future__ import annotations

import json
from functools import reduce
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.changes import UserChange, change_from_event
from service.domain.keycloak import KeycloakEvent
from service.domain.mapping import ENTERPRISE_USER, TARGETS, AttributeMapping, Shape, parse_mapping
from service.domain.plan import Action, DeletePolicy, plan_change
from service.domain.scim import patch_operations, user_resource
from service.domain.state import UserState, merge
from tests.properties import examples

UID = "u-1"
E = ENTERPRISE_USER


def admin(operation: str, rep: dict[str, Any]) -> KeycloakEvent:
    return KeycloakEvent(
        "admin", "e-1", 1000, "acme", f"USER_{operation}", UID, representation=rep,
        resource_type="USER", operation_type=operation, resource_path=f"users/{UID}",
    )  # fmt: skip


def change(time_ms: int, custom: dict[str, str | None], *, complete: bool = False, **attrs: Any) -> UserChange:
    return UserChange(
        "acme", UID, "upsert", time_ms, "USER_UPDATE", f"e-{time_ms}", attrs,
        user_attributes=custom, user_attributes_complete=complete,
    )  # fmt: skip


# -- from events ------------------------------------------------------------------------------------


def test_an_admin_representation_lists_every_user_attribute_with_its_first_value() -> None:
    """`attributes` of a request body: first value of each, an empty list or "" is cleared, the listing complete."""
    result = change_from_event(
        admin("UPDATE", {"attributes": {"department": ["Sales", "Ops"], "title": [], "cost": [""], "n": [7]}})
    )
    assert isinstance(result, UserChange)
    assert dict(result.user_attributes) == {"department": "Sales", "title": None, "cost": None, "n": None}
    assert result.user_attributes_complete is True


def test_a_body_without_attributes_says_nothing_of_them() -> None:
    """A partial update without `attributes` leaves the user's attributes as they are."""
    result = change_from_event(admin("UPDATE", {"firstName": "Jane"}))
    assert isinstance(result, UserChange)
    assert (dict(result.user_attributes), result.user_attributes_complete) == ({}, False)


def test_an_empty_attributes_map_removes_them_all() -> None:
    """`attributes: {}` is a change (complete, empty): every attribute held is removed."""
    result = change_from_event(admin("UPDATE", {"attributes": {}}))
    assert isinstance(result, UserChange)
    state = merge(merge(UserState(), change(500, {"department": "Sales"})), result)
    assert state.values == {"attributes.department": None}


def test_update_profile_sends_the_changed_user_attributes_only() -> None:
    """UPDATE_PROFILE's previous_/updated_<name> details: the new value, or cleared; not a complete listing."""
    event = KeycloakEvent(
        "user", "e-2", 1000, "acme", "UPDATE_PROFILE", UID,
        details={"context": "ACCOUNT", "previous_department": "Sales", "updated_department": "Ops",
                 "previous_title": "Rep", "previous_first_name": "J", "updated_first_name": "Jane"},
    )  # fmt: skip
    result = change_from_event(event)
    assert isinstance(result, UserChange)
    assert dict(result.attributes) == {"givenName": "Jane"}
    assert (dict(result.user_attributes), result.user_attributes_complete) == (
        {"department": "Ops", "title": None},
        False,
    )


def test_a_change_with_user_attributes_survives_its_record() -> None:
    """The keyed topic's record keeps the user attributes and the completeness; one without them is as before."""
    full = change(1, {"department": "Sales", "title": None}, complete=True, userName="jdoe")
    assert UserChange.from_json(full.to_json()) == full
    plain = change(1, {}, userName="jdoe")
    assert "user_attributes" not in json.loads(plain.to_json())


# -- merge ------------------------------------------------------------------------------------------


def test_an_older_value_arriving_after_a_removal_stays_removed() -> None:
    """A complete listing at t=2 without `department` beats department=Sales from t=1, in either arrival order."""
    set_at_1 = change(1, {"department": "Sales"})
    removed_at_2 = change(2, {"title": "Rep"}, complete=True)
    first = reduce(merge, [set_at_1, removed_at_2], UserState())
    second = reduce(merge, [removed_at_2, set_at_1], UserState())
    assert first.values == second.values == {"attributes.department": None, "attributes.title": "Rep"}
    assert first == second
    assert UserState.from_json(second.to_json()) == second


def test_a_newer_value_beats_an_older_removal() -> None:
    """department=Ops at t=3 survives a complete listing at t=2 that omitted it."""
    state = reduce(merge, [change(3, {"department": "Ops"}), change(2, {}, complete=True)], UserState())
    assert state.values == {"attributes.department": "Ops"}


def test_an_unmapped_attribute_changes_nothing_downstream() -> None:
    """With the default mapping, a change of a user attribute alone plans nothing for a linked user."""
    linked = UserState("d-1", {"userName": "jdoe"}, {"userName": (1, "e-1")}, written={"userName": "jdoe"})
    plan = plan_change(linked, change(2, {"department": "Sales"}), DeletePolicy.IGNORE)
    assert (plan.action, plan.reason) == (Action.NONE, "unchanged")
    mapped = parse_mapping(
        [{"source": "username", "target": "userName"}, {"source": "attributes.department", "target": f"{E}:department"}]
    )
    plan = plan_change(linked, change(2, {"department": "Sales"}), DeletePolicy.IGNORE, mapped.keys)
    assert (plan.action, plan.changed) == (Action.SYNC, {"attributes.department": "Sales"})


# -- the property -----------------------------------------------------------------------------------

NAMES = ("a", "b", "c")
CUSTOM_TARGETS = ("title", "locale", "phoneNumbers", f"{E}:department", f"{E}:employeeNumber", f"{E}:manager")


@st.composite
def mappings(draw: st.DrawFn) -> AttributeMapping:
    user_name = draw(st.sampled_from(["username", "email"]))
    targets = draw(st.lists(st.sampled_from(CUSTOM_TARGETS), unique=True, max_size=len(CUSTOM_TARGETS)))
    rules = [{"source": user_name, "target": "userName"}]
    if draw(st.booleans()):
        rules.append({"source": "email", "target": "emails"})
    rules += [{"source": f"attributes.{draw(st.sampled_from(NAMES))}", "target": t} for t in targets]
    return parse_mapping(rules)


@st.composite
def histories(draw: st.DrawFn) -> list[UserChange]:
    """One user's changes at distinct times: the first sets username and email, the others change
    user attributes (partially, or as a complete listing) and sometimes the email."""
    times = draw(st.lists(st.integers(2, 10_000), unique=True, min_size=1, max_size=8))
    made = [change(1, {}, userName="jdoe", email="j@x.example", active=True)]
    for t in times:
        custom = draw(st.dictionaries(st.sampled_from(NAMES), st.sampled_from(["x", "y", "z", None]), max_size=3))
        extra = {"email": draw(st.sampled_from(["j@x.example", "k@x.example"]))} if draw(st.booleans()) else {}
        made.append(change(t, custom, complete=draw(st.booleans()), **extra))
    return made


def last_values(changes: list[UserChange]) -> dict[str, Any]:
    """The reference: every change applied in event-time order, a complete listing removing what it omits."""
    values: dict[str, Any] = {}
    for c in sorted(changes, key=lambda c: c.time_ms):
        values.update(c.attributes)
        if c.user_attributes_complete:
            values.update({k: None for k in values if k.startswith("attributes.")})
        values.update({f"attributes.{n}": v for n, v in c.user_attributes.items()})
    return values


def apply_patch(resource: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    """What a SCIM server does with our PatchOps (replace / remove of plain, dotted and URN paths)."""
    for op in operations:
        path = op["path"]
        holder, key = resource, path
        if path.startswith(E + ":"):
            holder, key = resource.setdefault(E, {}), path[len(E) + 1 :]
        elif "." in path:
            parent, key = path.split(".", 1)
            holder = resource.setdefault(parent, {})
        if op["op"] == "replace":
            holder[key] = op["value"]
        else:
            holder.pop(key, None)


def held(resource: dict[str, Any], target: str) -> Any:
    """The value a downstream resource holds at a mapping's target (None: none)."""
    spec = TARGETS[target]
    holder = resource.get(E, {}) if spec.schema == E else resource
    value = holder.get(spec.attribute)
    if spec.sub is not None:
        value = (value or {}).get(spec.sub)
    if spec.shape is Shape.TYPED:
        return value[0]["value"] if value else None
    if spec.shape is Shape.REFERENCE:
        return value["value"] if value else None
    return value


@settings(max_examples=examples(1500), deadline=None)
@given(data=st.data(), mapping=mappings(), changes=histories())
def test_any_mapping_and_arrival_order_converge_to_the_last_values(
    data: st.DataObject, mapping: AttributeMapping, changes: list[UserChange]
) -> None:
    """Applying the plans of any arrival order (state restored from its record in between) leaves the
    downstream holding, at every mapped target, the last value of its source in event-time order."""
    arrivals = data.draw(st.permutations(changes))
    state, resource = UserState(), None
    for arrived in arrivals:
        plan = plan_change(UserState.from_json(state.to_json()), arrived, DeletePolicy.IGNORE, mapping.keys)
        state = plan.state
        if plan.action is not Action.SYNC:
            continue
        if resource is None:
            if not mapping.user_name(plan.values):
                continue  # not creatable yet: the change that sets the userName has not arrived
            resource = user_resource(UID, plan.values, mapping)
        else:
            apply_patch(resource, patch_operations(plan.changed, plan.values, mapping))
        state = UserState("d-1", state.values, state.versions, written=plan.values, **_rest(state))
    expected = last_values(changes)
    assert resource is not None
    for rule in mapping.rules:
        assert held(resource, rule.target) == expected.get(rule.key), rule


def _rest(state: UserState) -> dict[str, Any]:
    return {"attributes_cleared": state.attributes_cleared, "deleted_ms": state.deleted_ms}
