"""execute() for a tenant whose user_lookup is `userName` (the keycloak preset): an account not linked yet
is found by its userName, never by an externalId filter, and taken only when no other user's externalId
is on it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from service.domain import scim
from service.domain.plan import DeletePolicy, plan_change
from service.domain.state import UserState
from service.errors import ScimOwnershipConflict
from service.scim.client import Downstream
from service.scim.executor import Result, execute
from tests.scim.test_executor import ALL, DS, UID, FakeScim, change, conflict, plan_for

BY_NAME = replace(DS, user_lookup="userName")
EXTERNAL_ID = [{"op": "replace", "path": "externalId", "value": UID}]


class ByUserName(FakeScim):
    """FakeScim for the BY_NAME downstream."""

    async def find_user(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
        assert ds is BY_NAME
        return await super().find_user(DS, attribute, value)

    async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        assert ds is BY_NAME
        return await super().create_user(DS, body)

    async def patch_user(self, ds: Downstream, user_id: str, operations: list[dict[str, Any]]) -> None:
        assert ds is BY_NAME
        await super().patch_user(DS, user_id, operations)

    async def delete_user(self, ds: Downstream, user_id: str) -> None:
        assert ds is BY_NAME
        await super().delete_user(DS, user_id)


async def test_an_account_with_our_external_id_is_found_by_user_name() -> None:
    """No link: the userName lookup finds our account (its externalId is ours) and it gets every value."""
    plan, c = plan_for(ALL)
    client = ByUserName(find={("userName", "jdoe"): [{"id": "d-7", "userName": "jdoe", "externalId": UID}]})
    outcome = await execute(plan, c, BY_NAME, client)
    assert client.calls == [("find", "userName", "jdoe"), ("patch", "d-7", scim.patch_operations(ALL, ALL))]
    assert (outcome.result, outcome.state.downstream_id) == ("updated", "d-7")


async def test_an_account_without_external_id_is_claimed() -> None:
    """No link, and the account holding the userName shows no externalId (Keycloak 26.7 never answers
    one): it is claimed as the 409 adoption would, externalId set and every value written."""
    plan, c = plan_for(ALL)
    client = ByUserName(find={("userName", "jdoe"): [{"id": "d-8", "userName": "JDoe"}]})
    outcome = await execute(plan, c, BY_NAME, client)
    assert client.calls == [
        ("find", "userName", "jdoe"),
        ("patch", "d-8", EXTERNAL_ID + scim.patch_operations(ALL, ALL)),
    ]
    assert (outcome.result, outcome.state.downstream_id) == (Result.LINKED, "d-8")


async def test_another_users_account_is_never_written() -> None:
    """The account holding the userName carries another externalId: not ours; the POST's 409 then ends
    in an ownership conflict, and nothing is written to it."""
    plan, c = plan_for(ALL)
    theirs = {"id": "d-9", "userName": "jdoe", "externalId": "someone-else"}
    client = ByUserName(find={("userName", "jdoe"): [theirs, theirs]}, create=[conflict()])
    with pytest.raises(ScimOwnershipConflict):
        await execute(plan, c, BY_NAME, client)
    assert client.calls == [
        ("find", "userName", "jdoe"),
        ("create", scim.user_resource(UID, ALL)),
        ("find", "userName", "jdoe"),
    ]


async def test_nothing_found_creates_without_an_external_id_filter() -> None:
    """No account holds the userName: POST, and no request filters on externalId."""
    plan, c = plan_for(ALL)
    client = ByUserName(create=[{"id": "d-1"}])
    outcome = await execute(plan, c, BY_NAME, client)
    assert client.calls == [("find", "userName", "jdoe"), ("create", scim.user_resource(UID, ALL))]
    assert outcome.result == Result.CREATED


async def test_a_deletion_without_link_resolves_by_user_name() -> None:
    """Delete policy `delete`, no stored link: the account holding the user's userName is deleted."""
    state = UserState(None, dict(ALL), dict.fromkeys(ALL, (1, "e-0")))
    plan = plan_change(state, change("delete", time_ms=20), DeletePolicy.DELETE)
    client = ByUserName(find={("userName", "jdoe"): [{"id": "d-4", "userName": "jdoe"}]})
    outcome = await execute(plan, change("delete", time_ms=20), BY_NAME, client)
    assert client.calls == [("find", "userName", "jdoe"), ("delete", "d-4")]
    assert outcome.result == Result.DELETED


# -- look-alikes: an account that shows no owner but another person's email address ----------------------

OTHER = {"id": "d-5", "userName": "jdoe", "emails": [{"value": "john.doe@elsewhere.example", "primary": True}]}


async def test_a_look_alike_is_neither_claimed_nor_adopted() -> None:
    """No externalId on it (as Keycloak 26.7 answers every account) but an address that is not the
    user's: not claimed by the lookup, and the POST's 409 ends in a look-alike conflict; nothing written."""
    plan, c = plan_for(ALL)
    client = ByUserName(find={("userName", "jdoe"): [OTHER, OTHER]}, create=[conflict()])
    with pytest.raises(ScimOwnershipConflict) as refused:
        await execute(plan, c, BY_NAME, client)
    assert (refused.value.downstream_id, refused.value.owner) == ("d-5", "")
    assert "look-alike" in str(refused.value)
    assert [call[0] for call in client.calls] == ["find", "create", "find"]


async def test_the_same_address_in_another_case_is_claimed() -> None:
    """The account lists the user's address (case aside) among others: the user's, claimed."""
    plan, c = plan_for(ALL)
    mine = {**OTHER, "emails": [*OTHER["emails"], {"value": "Jane.Doe@Example.com"}]}
    client = ByUserName(find={("userName", "jdoe"): [mine]})
    outcome = await execute(plan, c, BY_NAME, client)
    assert (outcome.result, outcome.state.downstream_id) == (Result.LINKED, "d-5")


async def test_a_look_alike_after_a_409_is_not_adopted_with_external_id_lookups() -> None:
    """The default lookup (externalId) finds nothing, the POST says 409, the account holding the userName
    has no externalId and another address: a look-alike conflict, not an adoption."""
    plan, c = plan_for(ALL)
    client = FakeScim(find={("userName", "jdoe"): [OTHER]}, create=[conflict()])
    with pytest.raises(ScimOwnershipConflict):
        await execute(plan, c, DS, client)
    assert [call for call in client.calls if call[0] == "patch"] == []


async def test_a_deletion_never_reaches_a_look_alike() -> None:
    """A never-linked user deleted under policy delete: the look-alike holding its userName is not ours to
    delete; the deletion is skipped as not in the downstream."""
    state = UserState(None, dict(ALL), dict.fromkeys(ALL, (1, "e-0")))
    plan = plan_change(state, change("delete", time_ms=20), DeletePolicy.DELETE)
    client = ByUserName(find={("userName", "jdoe"): [OTHER]})
    outcome = await execute(plan, change("delete", time_ms=20), BY_NAME, client)
    assert client.calls == [("find", "userName", "jdoe")]
    assert (outcome.result, outcome.reason) == (Result.SKIPPED, "not_in_downstream")


async def test_an_orphan_check_never_resolves_by_user_name() -> None:
    """An orphan check is about an account carrying our externalId: where accounts are found by userName
    (the tenant switched since the reconciliation), nothing is looked up nor deleted."""
    state = UserState(None, dict(ALL), dict.fromkeys(ALL, (1, "e-0")), deleted_ms=20)
    orphan = replace(change(time_ms=30), attributes={}, orphan=True)
    plan = plan_change(state, orphan, DeletePolicy.DELETE)
    client = ByUserName(find={("userName", "jdoe"): [{"id": "d-4", "userName": "jdoe"}]})
    outcome = await execute(plan, orphan, BY_NAME, client)
    assert client.calls == []
    assert outcome.result == Result.SKIPPED and outcome.state is state
