"""Downstreams without PATCH: the executor sends a linked user's changes as a PUT of the full user (the
attributes a POST sends), claims with that same PUT, and a 405 to a PATCH resends the change as a PUT.
ScimClient learns PUT from the ServiceProviderConfig, the tenant's override or a 405."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.domain import scim
from service.domain.capabilities import Overrides
from service.domain.changes import ChangeOp, UserChange
from service.domain.plan import DeletePolicy, plan_change
from service.domain.state import UserState
from service.errors import ScimRejected, ScimTransient
from service.metrics import Metrics
from service.scim.client import Downstream, ScimClient
from service.scim.executor import Result, execute
from tests.scim.fake_downstream import FakeDownstream
from tests.scim.scripted import Scripted, client

UID = "3f6c1a2b-7d4e-4f80-a1b2-c3d4e5f60718"
DS = Downstream("acme", "http://scim.invalid/v2", "token-1")
ALL: dict[str, Any] = {
    "userName": "jdoe",
    "givenName": "Jane",
    "familyName": "Doe",
    "email": "jane.doe@example.com",
    "active": True,
}


def change(op: ChangeOp, time_ms: int, **attributes: Any) -> UserChange:
    return UserChange("acme", UID, op, time_ms, "USER_UPDATE", f"e-{time_ms}", attributes)


async def apply(
    fake: FakeDownstream, state: UserState, c: UserChange, policy: DeletePolicy = DeletePolicy.IGNORE
) -> tuple[Result, UserState]:
    outcome = await execute(plan_change(state, c, policy), c, DS, fake)
    return outcome.result, outcome.state


async def test_updates_and_active_flips_are_puts_of_the_full_user() -> None:
    """Create (POST), rename, disable, enable: every update is one PUT holding the whole merged user."""
    fake = FakeDownstream(patch_supported=False)
    result, state = await apply(fake, UserState(), change("upsert", 1, **ALL))
    assert result is Result.CREATED
    [(_, account_id)] = fake.writes
    result, state = await apply(fake, state, change("upsert", 2, familyName="Smith"))
    assert result is Result.UPDATED
    assert fake.accounts[account_id] == {
        **scim.user_resource(UID, {**ALL, "familyName": "Smith"}),
        "id": account_id,
    }
    result, state = await apply(fake, state, change("upsert", 3, active=False))
    assert fake.accounts[account_id]["active"] is False
    assert fake.accounts[account_id]["name"]["familyName"] == "Smith"  # a PUT keeps what a PATCH left alone
    result, state = await apply(fake, state, change("upsert", 4, active=True))
    assert fake.accounts[account_id]["active"] is True
    assert [m for m, _ in fake.writes] == ["POST", "PUT", "PUT", "PUT"]


async def test_deactivate_policy_puts_the_user_inactive() -> None:
    """A deletion under the deactivate policy is a PUT of the full user with active false."""
    fake = FakeDownstream(patch_supported=False)
    _, state = await apply(fake, UserState(), change("upsert", 1, **ALL), DeletePolicy.DEACTIVATE)
    result, _ = await apply(fake, state, change("delete", 2), DeletePolicy.DEACTIVATE)
    assert result is Result.DEACTIVATED
    [account] = fake.owned_by(UID)
    assert account["active"] is False
    assert account["userName"] == "jdoe"
    assert [m for m, _ in fake.writes] == ["POST", "PUT"]


async def test_an_unowned_account_is_claimed_with_a_put() -> None:
    """A 409 on POST finds an account nobody owns: one PUT sets our externalId and everything we know."""
    fake = FakeDownstream(patch_supported=False)
    held = fake.add("JDoe", None, displayName="hand-made")
    result, state = await apply(fake, UserState(), change("upsert", 1, **ALL))
    assert result is Result.LINKED
    assert state.downstream_id == held
    assert fake.accounts[held] == {**scim.user_resource(UID, ALL), "id": held}
    assert fake.writes == [("PUT", held)]


async def test_a_405_to_a_patch_resends_the_change_as_a_put() -> None:
    """PATCH announced but answered 405: the change goes out as a PUT at once, later ones as PUTs only."""
    fake = FakeDownstream(patch_answers_405=True)
    _, state = await apply(fake, UserState(), change("upsert", 1, **ALL))
    [(_, account_id)] = fake.writes
    result, state = await apply(fake, state, change("upsert", 2, email="jane@example.org"))
    assert result is Result.UPDATED
    assert fake.accounts[account_id]["emails"][0]["value"] == "jane@example.org"
    await apply(fake, state, change("upsert", 3, givenName="Janet"))
    assert [m for m, _ in fake.writes] == ["POST", "PATCH refused", "PUT", "PUT"]


# -- ScimClient: what it learns, what it sends --------------------------------------------------------


def spc(**sections: Any) -> dict[str, Any]:
    return {"schemas": [scim.SPC_SCHEMA], **sections}


async def test_client_puts_when_the_config_announces_no_patch() -> None:
    """patch.supported false: user_writes says put, and replace_user sends PUT /Users/{id} with the body."""
    c, sent = client({("GET", "ServiceProviderConfig"): [spc(patch={"supported": False})]})
    assert c.writes_mode(DS.tenant) == "unknown"
    assert await c.user_writes(DS) == "put"
    assert c.writes_mode(DS.tenant) == "put"
    body = scim.user_resource(UID, ALL)
    await c.replace_user(DS, "d 1", body)
    assert (sent.requests[-1].method, sent.requests[-1].path, sent.requests[-1].body) == ("PUT", "Users/d%201", body)


async def test_client_override_wins_over_the_config() -> None:
    """The tenant's `patch: false` override makes a downstream announcing PATCH get PUTs."""
    ds = Downstream("acme", "http://scim.invalid/v2", "token-1", capabilities=Overrides(patch=False))
    c, _ = client({("GET", "ServiceProviderConfig"): [spc(patch={"supported": True})]})
    assert await c.user_writes(ds) == "put"


async def test_client_switches_to_put_after_a_405() -> None:
    """A 405 to a PATCH is raised (the executor resends) and the tenant's users are PUT from then on."""
    refused = ScimRejected(405, "PATCH", "Users/d-1")
    c, _ = client(
        {
            ("GET", "ServiceProviderConfig"): [spc(patch={"supported": True})],
            ("PATCH", "Users/d-1"): [refused],
        }
    )
    assert await c.user_writes(DS) == "patch"
    with pytest.raises(ScimRejected) as refusal:
        await c.patch_user(DS, "d-1", [{"op": "replace", "path": "active", "value": False}])
    assert refusal.value.status == 405
    assert await c.user_writes(DS) == "put"
    assert c.writes_mode(DS.tenant) == "put"


async def test_listings_never_ask_for_more_than_max_results() -> None:
    """list_users with page_size 500 against maxResults 2 asks for pages of 2."""
    page = {"schemas": [scim.LIST_SCHEMA], "totalResults": 3}
    c, sent = client(
        {
            ("GET", "ServiceProviderConfig"): [spc(filter={"supported": True, "maxResults": 2})],
            ("GET", "Users"): [
                {**page, "Resources": [{"id": "a"}, {"id": "b"}]},
                {**page, "Resources": [{"id": "c"}]},
            ],
        }
    )
    assert [u["id"] async for u in c.list_users(DS, page_size=500)] == ["a", "b", "c"]
    assert [r.params for r in sent.requests if r.path == "Users"] == [
        {"startIndex": "1", "count": "2"},
        {"startIndex": "3", "count": "2"},
    ]


async def test_the_config_is_read_again_after_the_refresh_period() -> None:
    """Within the period the config read once serves; after it, one read again, and a downstream that
    dropped PATCH meanwhile gets PUTs. A transient failure of a later read keeps the config in use and
    tries again a minute later."""
    now = [0.0]
    transport = Scripted(
        {
            ("GET", "ServiceProviderConfig"): [
                spc(patch={"supported": True}),
                spc(patch={"supported": False}),
                ScimTransient(None, "GET", "ServiceProviderConfig"),
                spc(patch={"supported": True}),
            ]
        }
    )
    c = ScimClient(transport, Metrics(CollectorRegistry()), capabilities_refresh_seconds=600, clock=lambda: now[0])
    assert await c.user_writes(DS) == "patch"
    now[0] = 599
    assert await c.user_writes(DS) == "patch"
    assert len(transport.sent("GET", "ServiceProviderConfig")) == 1
    now[0] = 600
    assert await c.user_writes(DS) == "put"
    now[0] = 1200
    assert await c.user_writes(DS) == "put"  # the read failed: the config already read stays
    now[0] = 1259
    assert await c.user_writes(DS) == "put"
    now[0] = 1260
    assert await c.user_writes(DS) == "patch"
    assert len(transport.sent("GET", "ServiceProviderConfig")) == 4
