"""ScimClient's group operations over a scripted transport: the requests they send, and what they make of
the answers (verified lookups, checked ids, paging, listings without members)."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain import scim
from service.errors import ScimRejected
from service.scim.client import Downstream
from tests.scim.scripted import client

DS = Downstream("acme", "http://scim.invalid/v2", "token-1")
GID = "9b1f2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
FILTERS = {"schemas": [scim.SPC_SCHEMA], "filter": {"supported": True}}
NO_FILTERS = {"schemas": [scim.SPC_SCHEMA], "filter": {"supported": False}}


def listing(*groups: dict[str, Any], total: int | None = None) -> dict[str, Any]:
    return {
        "schemas": [scim.LIST_SCHEMA],
        "totalResults": len(groups) if total is None else total,
        "Resources": list(groups),
    }


OURS = {"id": "g-1", "displayName": "Eng", "externalId": GID}
OTHER = {"id": "g-2", "displayName": "Sales", "externalId": "another-group"}


async def test_find_group_filters_and_verifies() -> None:
    """A filter on /Groups; the one group that satisfies it is the answer."""
    c, sent = client({("GET", "ServiceProviderConfig"): [FILTERS], ("GET", "Groups"): [listing(OURS)]})
    assert await c.find_group(DS, "externalId", GID) == OURS
    [request] = sent.sent("GET", "Groups")
    assert request.params == {"filter": scim.eq_filter("externalId", GID)}


async def test_find_group_by_display_name_ignores_case() -> None:
    """displayName is not caseExact: "eng" finds the group named "Eng"."""
    c, _ = client({("GET", "ServiceProviderConfig"): [FILTERS], ("GET", "Groups"): [listing(OURS)]})
    assert await c.find_group(DS, "displayName", "eng") == OURS


async def test_find_group_of_two_matches_is_none() -> None:
    """Two groups of one name (ignoring case): neither is provably the one."""
    twin = {**OURS, "id": "g-3", "displayName": "ENG"}
    c, _ = client({("GET", "ServiceProviderConfig"): [FILTERS], ("GET", "Groups"): [listing(OURS, twin)]})
    assert await c.find_group(DS, "displayName", "Eng") is None


async def test_a_filter_answered_with_other_groups_switches_to_scanning_without_members() -> None:
    """An answer holding a group that does not satisfy the filter: the groups are listed without their
    members and matched here, and later lookups (users' too) scan from then on."""
    c, sent = client(
        {
            ("GET", "ServiceProviderConfig"): [FILTERS],
            ("GET", "Groups"): [listing(OTHER, OURS), listing(OTHER, OURS)],
        }
    )
    assert await c.find_group(DS, "externalId", GID) == OURS
    scan = sent.sent("GET", "Groups")[1]
    assert scan.params == {"startIndex": "1", "count": "500", "excludedAttributes": "members"}
    assert c.lookup_mode(DS.tenant) == "scan"


async def test_a_downstream_without_filters_is_scanned_from_the_first_group_lookup() -> None:
    """filter.supported false: no filter is sent, the listing is matched here."""
    c, sent = client({("GET", "ServiceProviderConfig"): [NO_FILTERS], ("GET", "Groups"): [listing(OTHER, OURS)]})
    assert await c.find_group(DS, "externalId", GID) == OURS
    [request] = sent.sent("GET", "Groups")
    assert request.params is not None
    assert "filter" not in request.params
    assert request.params["excludedAttributes"] == "members"


async def test_list_groups_pages_and_asks_for_members_only_when_wanted() -> None:
    """startIndex / count paging until totalResults; `members=False` adds excludedAttributes=members."""
    page1 = listing(OURS, total=2)
    page2 = listing(OTHER, total=2)
    c, sent = client({("GET", "Groups"): [page1, page2]})
    assert [g["id"] async for g in c.list_groups(DS, page_size=1, members=False)] == ["g-1", "g-2"]
    assert [r.params for r in sent.sent("GET", "Groups")] == [
        {"startIndex": "1", "count": "1", "excludedAttributes": "members"},
        {"startIndex": "2", "count": "1", "excludedAttributes": "members"},
    ]
    c, sent = client({("GET", "Groups"): [listing(OURS)]})
    assert [g["id"] async for g in c.list_groups(DS)] == ["g-1"]
    assert sent.sent("GET", "Groups")[0].params == {"startIndex": "1", "count": "200"}


async def test_list_groups_stops_when_a_page_repeats() -> None:
    """A downstream that ignores startIndex answers page one again: the listing ends."""
    c, _ = client({("GET", "Groups"): [listing(OURS, total=5), listing(OURS, total=5)]})
    assert [g["id"] async for g in c.list_groups(DS, page_size=1)] == ["g-1"]


async def test_create_group_posts_the_body_and_checks_the_id() -> None:
    """POST /Groups with our body; the answer's id must be one path segment."""
    body = scim.group_resource(GID, "Eng")
    c, sent = client({("POST", "Groups"): [{**body, "id": "g-1"}]})
    assert (await c.create_group(DS, body))["id"] == "g-1"
    assert sent.requests[0].body == body
    c, _ = client({("POST", "Groups"): [{**body, "id": "../Users/x"}]})
    with pytest.raises(ScimRejected) as raised:
        await c.create_group(DS, body)
    assert raised.value.reason == "invalid_id"


async def test_patch_and_delete_address_the_group_as_one_segment() -> None:
    """PATCH carries a PatchOp body; both go to Groups/<id> with the id percent-encoded."""
    c, sent = client({})
    operations = [scim.members_add(["u-1"])]
    await c.patch_group(DS, "a b", operations)
    await c.delete_group(DS, "a b")
    assert [(r.method, r.path) for r in sent.requests] == [("PATCH", "Groups/a%20b"), ("DELETE", "Groups/a%20b")]
    assert sent.requests[0].body == scim.patch_request(operations)


async def test_patch_refuses_an_id_that_is_not_one_segment() -> None:
    """An id holding "/" never reaches a path."""
    c, sent = client({})
    with pytest.raises(ScimRejected):
        await c.patch_group(DS, "x/../y", [scim.display_name_replace("Eng")])
    assert sent.requests == []
