"""execute(): a Plan becomes POST / PATCH / DELETE calls against a scripted fake of the ScimClient interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain import scim
from service.domain.capabilities import UserWrites
from service.domain.changes import ChangeOp, UserChange
from service.domain.plan import Action, DeletePolicy, Plan, plan_change
from service.domain.state import UserState
from service.errors import ScimConflict, ScimNotFound, ScimOwnershipConflict, ScimTransient
from service.scim.client import Downstream
from service.scim.executor import Outcome, Result, execute

UID = "3f6c1a2b-7d4e-4f80-a1b2-c3d4e5f60718"
ALL: dict[str, Any] = {
    "userName": "jdoe",
    "givenName": "Jane",
    "familyName": "Doe",
    "email": "jane.doe@example.com",
    "active": True,
}
DS = Downstream("acme", "http://scim.invalid/v2", "token-1")

Script = Exception | dict[str, Any] | None | Callable[[], Any]


class FakeScim:
    """The ScimClient interface; each method answers from a script and records its call."""

    def __init__(
        self,
        *,
        find: dict[tuple[str, str], list[Script]] | None = None,
        find_all: dict[tuple[str, str], list[dict[str, Any]]] | None = None,
        create: list[Script] | None = None,
        patch: list[Script] | None = None,
        delete: list[Script] | None = None,
    ) -> None:
        self.find = find or {}
        self.find_all = find_all or {}
        self.create = create or []
        self.patch = patch or []
        self.delete = delete or []
        self.calls: list[tuple[Any, ...]] = []

    @staticmethod
    def _answer(script: list[Script], default: Any) -> Any:
        answer = script.pop(0) if script else default
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def find_user(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
        assert ds is DS
        self.calls.append(("find", attribute, value))
        found: dict[str, Any] | None = self._answer(self.find.get((attribute, value), []), None)
        return found

    async def find_users(self, ds: Downstream, attribute: str, value: str) -> list[dict[str, Any]]:
        assert ds is DS
        self.calls.append(("find_all", attribute, value))
        return list(self.find_all.get((attribute, value), []))

    async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        assert ds is DS
        self.calls.append(("create", body))
        created: dict[str, Any] = self._answer(self.create, {"id": "new-1", **body})
        return created

    async def patch_user(self, ds: Downstream, user_id: str, operations: list[dict[str, Any]]) -> None:
        assert ds is DS
        self.calls.append(("patch", user_id, operations))
        self._answer(self.patch, None)

    async def replace_user(self, ds: Downstream, user_id: str, body: dict[str, Any]) -> None:
        assert ds is DS
        self.calls.append(("put", user_id, body))

    async def user_writes(self, ds: Downstream) -> UserWrites:
        return "patch"

    async def delete_user(self, ds: Downstream, user_id: str) -> None:
        assert ds is DS
        self.calls.append(("delete", user_id))
        self._answer(self.delete, None)


def change(op: ChangeOp = "upsert", time_ms: int = 10, **attributes: Any) -> UserChange:
    return UserChange("acme", UID, op, time_ms, "USER_UPDATE", "e-1", attributes)


def plan_for(
    attributes: dict[str, Any], state: UserState | None = None, policy: DeletePolicy = DeletePolicy.IGNORE
) -> tuple[Plan, UserChange]:
    c = change(**attributes)
    return plan_change(state or UserState(), c, policy), c


def linked(values: dict[str, Any], downstream_id: str = "d-1") -> UserState:
    """A user created downstream from `values` (set at t=1) and linked."""
    return UserState(downstream_id, dict(values), dict.fromkeys(values, (1, "e-0")), written=dict(values))


def not_found(method: str = "PATCH") -> ScimNotFound:
    return ScimNotFound(404, method, "Users/x")


def conflict() -> ScimConflict:
    return ScimConflict(409, "POST", "Users", "uniqueness")


# -- sync -------------------------------------------------------------------------------------------


async def test_creates_the_user_when_absent_downstream() -> None:
    """No link and no user with our externalId: POST the full user and remember its id."""
    plan, c = plan_for(ALL)
    client = FakeScim(create=[{"id": "d-1"}])
    outcome = await execute(plan, c, DS, client)
    assert client.calls == [("find", "externalId", UID), ("create", scim.user_resource(UID, ALL))]
    assert outcome == Outcome(Result.CREATED, replace(plan.state, downstream_id="d-1", written=ALL))


async def test_links_by_external_id_when_the_state_has_no_id() -> None:
    """No stored link but the downstream knows our externalId: PATCH everything we know, no POST."""
    plan, c = plan_for(ALL)
    client = FakeScim(find={("externalId", UID): [{"id": "d-7"}]})
    outcome = await execute(plan, c, DS, client)
    assert client.calls == [("find", "externalId", UID), ("patch", "d-7", scim.patch_operations(ALL, ALL))]
    assert outcome.result == "updated"
    assert outcome.state.downstream_id == "d-7"


async def test_linked_user_is_patched_with_only_the_changes() -> None:
    """A stored link means a PATCH of just the changed attributes, with no lookup."""
    state = linked(ALL)
    plan, c = plan_for({"active": False}, state)
    client = FakeScim()
    outcome = await execute(plan, c, DS, client)
    assert client.calls == [("patch", "d-1", [{"op": "replace", "path": "active", "value": False}])]
    assert outcome == Outcome(Result.UPDATED, replace(plan.state, written=plan.values))


async def test_conflict_on_post_adopts_by_external_id() -> None:
    """POST 409 (a retried POST that had succeeded): find by externalId, PATCH it with externalId, link it."""
    plan, c = plan_for(ALL)
    client = FakeScim(find={("externalId", UID): [None, {"id": "d-3"}]}, create=[conflict()])
    outcome = await execute(plan, c, DS, client)
    expected_ops = [{"op": "replace", "path": "externalId", "value": UID}, *scim.patch_operations(ALL, ALL)]
    assert client.calls == [
        ("find", "externalId", UID),
        ("create", scim.user_resource(UID, ALL)),
        ("find", "externalId", UID),
        ("patch", "d-3", expected_ops),
    ]
    assert outcome.result == "linked"
    assert outcome.state.downstream_id == "d-3"


async def test_conflict_on_post_adopts_by_user_name() -> None:
    """POST 409 for a user made downstream by hand: found by userName, PATCHed with our externalId."""
    plan, c = plan_for(ALL)
    client = FakeScim(find={("userName", "jdoe"): [{"id": "d-4"}]}, create=[conflict()])
    outcome = await execute(plan, c, DS, client)
    assert [call[:3] for call in client.calls] == [
        ("find", "externalId", UID),
        ("create", scim.user_resource(UID, ALL)),
        ("find", "externalId", UID),
        ("find", "userName", "jdoe"),
        ("patch", "d-4", [{"op": "replace", "path": "externalId", "value": UID}, *scim.patch_operations(ALL, ALL)]),
    ]
    assert outcome.result == "linked"
    assert outcome.state.downstream_id == "d-4"


async def test_conflict_with_no_matching_user_raises_conflict() -> None:
    """POST 409 but neither externalId nor userName matches: a ScimConflict for the caller to dead-letter."""
    plan, c = plan_for(ALL)
    client = FakeScim(create=[conflict()])
    with pytest.raises(ScimConflict):
        await execute(plan, c, DS, client)
    assert not any(call[0] == "patch" for call in client.calls)


async def test_not_found_on_patch_re_resolves_by_external_id() -> None:
    """PATCH 404 on the stored id: look up by externalId and PATCH the user found there with everything."""
    state = linked(ALL, "d-gone")
    plan, c = plan_for({"givenName": "Janet"}, state)
    client = FakeScim(find={("externalId", UID): [{"id": "d-9"}]}, patch=[not_found()])
    outcome = await execute(plan, c, DS, client)
    assert client.calls[0][:2] == ("patch", "d-gone")
    assert client.calls[1:] == [
        ("find", "externalId", UID),
        ("patch", "d-9", scim.patch_operations(plan.values, plan.values)),
    ]
    assert outcome.result == "updated"
    assert outcome.state.downstream_id == "d-9"


async def test_not_found_on_patch_re_creates_the_user() -> None:
    """PATCH 404 and no user with our externalId: POST the full user again."""
    state = linked(ALL, "d-gone")
    plan, c = plan_for({"givenName": "Janet"}, state)
    client = FakeScim(patch=[not_found()], create=[{"id": "d-10"}])
    outcome = await execute(plan, c, DS, client)
    assert client.calls[-1] == ("create", scim.user_resource(UID, {**ALL, "givenName": "Janet"}))
    assert outcome.result == "created"
    assert outcome.state.downstream_id == "d-10"


async def test_absent_user_without_user_name_is_skipped() -> None:
    """A partial change for a user the downstream lacks, with no userName known: nothing can be created."""
    plan, c = plan_for({"active": False})
    client = FakeScim()
    outcome = await execute(plan, c, DS, client)
    assert client.calls == [("find", "externalId", UID)]
    assert outcome.result == "skipped"
    assert outcome.reason == "not_in_downstream_without_username"
    assert outcome.state.downstream_id is None


async def test_not_found_on_patch_without_user_name_is_skipped_and_unlinked() -> None:
    """PATCH 404, nothing found, no userName known: skipped and the stale link is dropped."""
    state = linked({"active": True}, "d-gone")
    plan, c = plan_for({"active": False}, state)
    client = FakeScim(patch=[not_found()])
    outcome = await execute(plan, c, DS, client)
    assert (outcome.result, outcome.state.downstream_id) == ("skipped", None)


async def test_transient_errors_propagate_to_the_caller() -> None:
    """A transient failure is not swallowed: the caller retries the whole plan."""
    plan, c = plan_for(ALL)
    client = FakeScim(create=[ScimTransient(503, "POST", "Users")])
    with pytest.raises(ScimTransient):
        await execute(plan, c, DS, client)


# -- none / deactivate / delete ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "result"), [("unchanged", "unchanged"), ("superseded", "skipped"), ("delete_ignored", "skipped")]
)
async def test_plan_none_makes_no_call(reason: str, result: str) -> None:
    """A plan with nothing to do makes no call; 'unchanged' is reported apart from other skips."""
    state = linked(ALL)
    client = FakeScim()
    outcome = await execute(Plan(Action.NONE, state, reason=reason), change(), DS, client)
    assert client.calls == []
    assert outcome == Outcome(Result(result), state, reason)


async def test_deactivate_patches_active_false() -> None:
    """Delete policy DEACTIVATE on a linked user: PATCH active=false."""
    state = linked(ALL)
    plan = plan_change(state, change("delete"), DeletePolicy.DEACTIVATE)
    client = FakeScim()
    outcome = await execute(plan, change("delete"), DS, client)
    assert client.calls == [("patch", "d-1", [{"op": "replace", "path": "active", "value": False}])]
    assert outcome.result == "deactivated"
    assert outcome.state.downstream_id == "d-1"


async def test_deactivate_resolves_by_external_id_without_link() -> None:
    """DEACTIVATE with no stored link finds the user by externalId first."""
    plan = plan_change(UserState(), change("delete"), DeletePolicy.DEACTIVATE)
    client = FakeScim(find={("externalId", UID): [{"id": "d-5"}]})
    outcome = await execute(plan, change("delete"), DS, client)
    assert client.calls == [
        ("find", "externalId", UID),
        ("patch", "d-5", [{"op": "replace", "path": "active", "value": False}]),
    ]
    assert (outcome.result, outcome.state.downstream_id) == ("deactivated", "d-5")


@pytest.mark.parametrize(
    ("policy", "reason"),
    [(DeletePolicy.DEACTIVATE, "not_in_downstream_without_username"), (DeletePolicy.DELETE, "not_in_downstream")],
)
async def test_deactivate_or_delete_when_absent_is_skipped(policy: DeletePolicy, reason: str) -> None:
    """Nothing downstream to deactivate or delete, and nothing known to create: skipped, no write."""
    plan = plan_change(UserState(), change("delete"), policy)
    client = FakeScim()
    outcome = await execute(plan, change("delete"), DS, client)
    assert client.calls == [("find", "externalId", UID)]
    assert (outcome.result, outcome.reason, outcome.state.downstream_id) == ("skipped", reason, None)


async def test_delete_of_a_stale_link_is_skipped() -> None:
    """DELETE: the stored id answers 404: skipped as not in downstream, and the link is dropped."""
    plan = plan_change(linked(ALL, "d-gone"), change("delete"), DeletePolicy.DELETE)
    client = FakeScim(delete=[not_found("DELETE")])
    outcome = await execute(plan, change("delete"), DS, client)
    assert (outcome.result, outcome.reason, outcome.state.downstream_id) == ("skipped", "not_in_downstream", None)


async def test_deactivate_of_a_vanished_account_re_creates_it_disabled() -> None:
    """DEACTIVATE: the stored id answers 404: the user is what event-time order says, so it is created, inactive."""
    plan = plan_change(linked(ALL, "d-gone"), change("delete"), DeletePolicy.DEACTIVATE)
    client = FakeScim(patch=[not_found()], create=[{"id": "d-11"}])
    outcome = await execute(plan, change("delete"), DS, client)
    assert client.calls[-1] == ("create", scim.user_resource(UID, {**ALL, "active": False}))
    assert (outcome.result, outcome.state.downstream_id) == ("created", "d-11")


async def test_conflict_with_an_account_owned_by_another_user_is_never_written() -> None:
    """POST 409 and the account holding the userName has another externalId: no write, a typed conflict."""
    plan, c = plan_for(ALL)
    client = FakeScim(find={("userName", "jdoe"): [{"id": "d-4", "externalId": "kc-leaver"}]}, create=[conflict()])
    with pytest.raises(ScimOwnershipConflict) as caught:
        await execute(plan, c, DS, client)
    assert (caught.value.downstream_id, caught.value.owner) == ("d-4", "kc-leaver")
    assert not any(call[0] in ("patch", "delete") for call in client.calls)


@pytest.mark.parametrize("owner", ["", None, UID])
async def test_conflict_adopts_an_account_owned_by_nobody_or_us(owner: str | None) -> None:
    """POST 409 and the account has no externalId (or ours): it is adopted."""
    plan, c = plan_for(ALL)
    account: dict[str, Any] = {"id": "d-4"} if owner is None else {"id": "d-4", "externalId": owner}
    client = FakeScim(find={("userName", "jdoe"): [account]}, create=[conflict()])
    outcome = await execute(plan, c, DS, client)
    assert (outcome.result, outcome.state.downstream_id) == ("linked", "d-4")


async def test_operator_link_claims_the_account_and_writes_what_is_known() -> None:
    """A link change: PATCH the declared account with our externalId and every known value, then it is ours."""
    state = plan_change(UserState(), change(**ALL), DeletePolicy.IGNORE).state
    link = UserChange("acme", UID, "link", 20, "LINK", link_to="d-42")
    plan = plan_change(state, link, DeletePolicy.IGNORE)
    client = FakeScim()
    outcome = await execute(plan, link, DS, client)
    expected = [{"op": "replace", "path": "externalId", "value": UID}, *scim.patch_operations(ALL, ALL)]
    assert client.calls == [("patch", "d-42", expected)]
    assert (outcome.result, outcome.state.downstream_id, outcome.state.written) == ("linked", "d-42", ALL)


async def test_delete_removes_the_user_and_the_link() -> None:
    """Delete policy DELETE on a linked user: DELETE /Users/{id}, then the link is forgotten."""
    state = linked(ALL)
    plan = plan_change(state, change("delete"), DeletePolicy.DELETE)
    client = FakeScim()
    outcome = await execute(plan, change("delete"), DS, client)
    assert client.calls == [("delete", "d-1")]
    assert outcome.result == "deleted"
    assert outcome.state == replace(state, downstream_id=None, written={}, deleted_ms=10)


async def test_delete_without_link_resolves_by_external_id() -> None:
    """Delete policy DELETE with no stored link: find by externalId, then DELETE."""
    plan = plan_change(UserState(), change("delete"), DeletePolicy.DELETE)
    client = FakeScim(find={("externalId", UID): [{"id": "d-6"}]})
    outcome = await execute(plan, change("delete"), DS, client)
    assert client.calls == [("find", "externalId", UID), ("delete", "d-6")]
    assert (outcome.result, outcome.state.downstream_id) == ("deleted", None)


async def test_an_orphan_of_a_deleted_user_is_found_by_external_id_and_deleted() -> None:
    """Reconciliation's orphan check for a user the state knows deleted (policy `delete`): the account
    carrying its externalId (a create that landed late) is deleted, after the verified lookup."""
    state = UserState(None, dict(ALL), dict.fromkeys(ALL, (1, "e-0")), deleted_ms=20)
    orphan = UserChange("acme", UID, "upsert", 30, "RECONCILE", orphan=True)
    plan = plan_change(state, orphan, DeletePolicy.DELETE)
    client = FakeScim(find_all={("externalId", UID): [{"id": "d-late", "externalId": UID, "userName": "jdoe"}]})
    outcome = await execute(plan, orphan, DS, client)
    assert client.calls == [("find_all", "externalId", UID), ("delete", "d-late")]
    assert outcome.result == Result.DELETED and outcome.state.downstream_id is None
    assert outcome.reason == "orphans: 1 deleted of 1 found"


# -- the POST's answer ------------------------------------------------------------------------------

OURS_EMAIL = [{"value": "JANE.DOE@example.com", "primary": True}]  # ours, in another case
OTHER_EMAIL = [{"value": "john.smith@example.com"}]


async def test_a_post_answered_with_another_owners_account_is_never_linked() -> None:
    """A downstream that answers POST with an account it already held (another externalId): a typed
    conflict naming it, no link, and no write to it."""
    plan, c = plan_for(ALL)
    client = FakeScim(create=[{"id": "d-9", "userName": "jdoe", "externalId": "kc-leaver"}])
    with pytest.raises(ScimOwnershipConflict) as caught:
        await execute(plan, c, DS, client)
    assert (caught.value.downstream_id, caught.value.owner) == ("d-9", "kc-leaver")
    assert "answered" in caught.value.detail
    assert [call[0] for call in client.calls] == ["find", "create"]


async def test_a_post_answered_with_a_look_alike_is_never_linked() -> None:
    """The answer shows no owner but only another person's email address: a look-alike conflict."""
    plan, c = plan_for(ALL)
    client = FakeScim(create=[{"id": "d-9", "userName": "jdoe", "emails": OTHER_EMAIL}])
    with pytest.raises(ScimOwnershipConflict) as caught:
        await execute(plan, c, DS, client)
    assert (caught.value.downstream_id, caught.value.owner) == ("d-9", "")
    assert [call[0] for call in client.calls] == ["find", "create"]


@given(
    owner=st.sampled_from([None, "", UID, "kc-leaver", UID.upper()]),
    emails=st.sampled_from([None, [], OURS_EMAIL, OTHER_EMAIL, OURS_EMAIL + OTHER_EMAIL]),
)
@settings(max_examples=60, deadline=None)
async def test_a_post_answer_is_linked_only_when_it_is_ours_or_nobodys(
    owner: str | None, emails: list[dict[str, Any]] | None
) -> None:
    """For every answer a downstream may give a POST: the user is linked to it exactly when it carries
    our externalId, or no owner and no email address that excludes ours; otherwise a conflict, and
    nothing is ever written after the POST."""
    answer: dict[str, Any] = {"id": "d-9", "userName": "jdoe"}
    if owner is not None:
        answer["externalId"] = owner
    if emails is not None:
        answer["emails"] = emails
    ours = owner == UID or (not owner and not (emails and all(e in OTHER_EMAIL for e in emails)))
    plan, c = plan_for(ALL)
    client = FakeScim(create=[answer])
    if ours:
        outcome = await execute(plan, c, DS, client)
        assert (outcome.result, outcome.state.downstream_id) == (Result.CREATED, "d-9")
    else:
        with pytest.raises(ScimOwnershipConflict):
            await execute(plan, c, DS, client)
    assert [call[0] for call in client.calls] == ["find", "create"]
