"""ScimClient.find_users over a scripted transport: every account whose attribute equals the value, each
verified here whatever the downstream answered (an orphan check acts on all of a user's accounts, so a
look-alike, an id that cannot be put in a path, or a filter the downstream ignores must never slip in)."""

from __future__ import annotations

from typing import Any

from service.domain import scim
from service.scim.client import Downstream
from tests.scim.scripted import client

DS = Downstream("acme", "http://scim.invalid/v2", "token-1")
UID = "3f6c1a2b-7d4e-4f80-a1b2-c3d4e5f60718"
FILTERS = {"schemas": [scim.SPC_SCHEMA], "filter": {"supported": True}}
NO_FILTERS = {"schemas": [scim.SPC_SCHEMA], "filter": {"supported": False}}

LINKED = {"id": "d-1", "externalId": UID, "userName": "jdoe", "active": False}
LATE = {"id": "d-2", "externalId": UID, "userName": "jdoe.old", "active": True}
LOOK_ALIKES = [
    {"id": "x-1", "externalId": UID.upper(), "userName": "upper"},
    {"id": "x-2", "externalId": f"{UID} ", "userName": "trailing-space"},
    {"id": "x-3", "externalId": UID[:-1], "userName": "prefix"},
    {"id": "x-4", "externalId": f"{UID}-2", "userName": "suffix"},
    {"id": "x-5", "userName": "no-external-id"},
]


def listing(*users: dict[str, Any], total: int | None = None) -> dict[str, Any]:
    return {
        "schemas": [scim.LIST_SCHEMA],
        "totalResults": len(users) if total is None else total,
        "Resources": list(users),
    }


async def test_every_account_carrying_the_id_is_found() -> None:
    """Two accounts carry the id (the deactivated linked one, a late one): both, where find_user says none."""
    answers = {("GET", "ServiceProviderConfig"): [FILTERS], ("GET", "Users"): [listing(LINKED, LATE)]}
    c, sent = client(answers)
    assert await c.find_users(DS, "externalId", UID) == [LINKED, LATE]
    [request] = sent.sent("GET", "Users")
    assert request.params == {"startIndex": "1", "count": "500", "filter": scim.eq_filter("externalId", UID)}

    c, _ = client({("GET", "ServiceProviderConfig"): [FILTERS], ("GET", "Users"): [listing(LINKED, LATE)]})
    assert await c.find_user(DS, "externalId", UID) is None, "find_user keeps its answer: several is none"


async def test_no_account_carrying_the_id_is_an_empty_list() -> None:
    c, _ = client({("GET", "ServiceProviderConfig"): [FILTERS], ("GET", "Users"): [listing()]})
    assert await c.find_users(DS, "externalId", UID) == []


async def test_a_filtered_answer_is_paged_to_its_end() -> None:
    """More accounts than one page shows: the next pages are asked for with the same filter."""
    third = {**LATE, "id": "d-3"}
    answers = {
        ("GET", "ServiceProviderConfig"): [FILTERS],
        ("GET", "Users"): [listing(LINKED, LATE, total=3), listing(third, total=3)],
    }
    c, sent = client(answers)
    assert [a["id"] for a in await c.find_users(DS, "externalId", UID)] == ["d-1", "d-2", "d-3"]
    assert [r.params and r.params["startIndex"] for r in sent.sent("GET", "Users")] == ["1", "3"]
    assert all(r.params and "filter" in r.params for r in sent.sent("GET", "Users"))


async def test_a_downstream_ignoring_the_filter_is_scanned_and_only_exact_ids_are_kept() -> None:
    """The filtered answer holds every account (look-alikes too): not honoured, so the accounts are listed
    and matched here, case-exact; later lookups scan from then on."""
    everyone = listing(*LOOK_ALIKES, LINKED, LATE)
    answers = {("GET", "ServiceProviderConfig"): [FILTERS], ("GET", "Users"): [everyone, everyone]}
    c, sent = client(answers)
    assert await c.find_users(DS, "externalId", UID) == [LINKED, LATE]
    scan = sent.sent("GET", "Users")[1]
    assert scan.params == {"startIndex": "1", "count": "500"}
    assert c.lookup_mode(DS.tenant) == "scan"


async def test_a_look_alike_alone_in_a_filtered_answer_is_never_returned() -> None:
    """A downstream matching externalId loosely (ignoring case, by prefix) answers look-alikes only: none of
    them is ours; the scan that follows finds nothing either."""
    loose = listing(*LOOK_ALIKES[:4])
    answers = {("GET", "ServiceProviderConfig"): [FILTERS], ("GET", "Users"): [loose, loose]}
    c, _ = client(answers)
    assert await c.find_users(DS, "externalId", UID) == []


async def test_accounts_whose_id_cannot_be_put_in_a_path_are_left_out() -> None:
    """Empty, ".", "..", a slash, a query, a control character, no string at all: never written, so never
    returned; the same account listed twice is returned once."""
    invalid = [{**LATE, "id": bad} for bad in ("", ".", "..", "a/b", "a?b", "a\nb", None, 7)]
    answers = {
        ("GET", "ServiceProviderConfig"): [FILTERS],
        ("GET", "Users"): [listing(*invalid, LATE, dict(LATE))],
    }
    c, _ = client(answers)
    assert await c.find_users(DS, "externalId", UID) == [LATE]


async def test_a_downstream_without_filters_is_scanned() -> None:
    """filter.supported false: no filter is sent, the listing is matched here."""
    answers = {("GET", "ServiceProviderConfig"): [NO_FILTERS], ("GET", "Users"): [listing(*LOOK_ALIKES, LATE)]}
    c, sent = client(answers)
    assert await c.find_users(DS, "externalId", UID) == [LATE]
    [request] = sent.sent("GET", "Users")
    assert request.params is not None
    assert "filter" not in request.params
