"""A downstream keeps only the Keycloak user attributes its mapping sends: the rest never reaches its
per-user state (personal data it has no use for)."""

from __future__ import annotations

from functools import reduce

from service.domain.changes import UserChange
from service.domain.mapping import DEFAULT_MAPPING, kept_user_attributes, parse_mapping
from service.domain.state import UserState, merge
from service.pipeline.applier import _for_tenant
from service.tenants.models import Tenant

DEPARTMENT = parse_mapping(
    [
        {"source": "username", "target": "userName"},
        {
            "source": "attributes.department",
            "target": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        },
    ]
)
SEEN = {"department": "Sales", "phone": "+33 1", "badge": "7"}


def test_the_default_mapping_keeps_none() -> None:
    assert kept_user_attributes(SEEN, True, DEFAULT_MAPPING) == ({}, False)


def test_a_mapping_keeps_what_it_sends_and_a_complete_listing_stays_complete() -> None:
    assert kept_user_attributes(SEEN, True, DEPARTMENT) == ({"department": "Sales"}, True)
    assert kept_user_attributes({"phone": "+33 1"}, True, DEPARTMENT) == ({}, True)  # department was removed


def test_the_state_holds_only_mapped_attributes() -> None:
    """Through the applier's view of a change: under the default mapping no user attribute reaches the
    state; under a department mapping only department, and a later complete listing without it removes it."""
    changes = [
        UserChange(
            "acme",
            "u-1",
            "upsert",
            t,
            "USER_UPDATE",
            f"e-{t}",
            {"userName": "jdoe"},
            user_attributes=seen,
            user_attributes_complete=True,
        )
        for t, seen in ((1, SEEN), (2, {"phone": "+33 2"}))
    ]
    default = Tenant("acme", "https://scim.example", "t")
    mapped = Tenant("acme", "https://scim.example", "t", mapping=DEPARTMENT)
    plain = reduce(merge, (_for_tenant(c, default) for c in changes[:1]), UserState())
    assert not any(key.startswith("attributes.") for key in plain.values)
    first = merge(UserState(), _for_tenant(changes[0], mapped))
    assert {k: v for k, v in first.values.items() if k.startswith("attributes.")} == {"attributes.department": "Sales"}
    second = merge(first, _for_tenant(changes[1], mapped))
    assert second.values.get("attributes.department") is None
