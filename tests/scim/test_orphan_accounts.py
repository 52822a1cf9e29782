"""The executor's side of reconciliation's orphan check (plan.orphan_plan said DELETE or DEACTIVATE): every
account carrying the deleted user's id as externalId, exactly, is deleted or deactivated; an account
inactive already is not written again; look-alikes, other users' accounts and accounts without a usable
id are never written, whatever the lookup answered."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.changes import UserChange
from service.domain.plan import DeletePolicy, plan_change
from service.domain.stamps import ChangeSource
from service.domain.state import UserState
from service.scim.executor import Result, execute
from tests.properties import examples
from tests.scim.fake_downstream import FakeDownstream, run
from tests.scim.test_executor import ALL, DS, UID, FakeScim

DELETED = UserState("pre-1", dict(ALL), dict.fromkeys(ALL, (1, "e-0")), deleted_ms=20, written=dict(ALL))
ORPHAN = UserChange("acme", UID, "upsert", 30, "RECONCILE", source=ChangeSource.RECONCILE, orphan=True)
LOOK_ALIKE_IDS = [UID.upper(), f"{UID} ", f" {UID}", UID[:-1], f"{UID}-2", f"{UID}x"]


def downstream(**options: Any) -> tuple[FakeDownstream, str, str, list[str]]:
    """The linked account deactivated by the deletion, a late account (another userName: the user's
    before a rename), look-alikes and another user's account."""
    fake = FakeDownstream(**options)
    linked = fake.add("jdoe", UID, active=False)
    assert linked == DELETED.downstream_id
    late = fake.add("jdoe.before", UID)
    others = [fake.add(f"other-{n}", external_id) for n, external_id in enumerate([*LOOK_ALIKE_IDS, "someone"])]
    return fake, linked, late, others


async def orphan_check(fake: FakeDownstream | FakeScim, policy: DeletePolicy, state: UserState = DELETED) -> Any:
    return await execute(plan_change(state, ORPHAN, policy), ORPHAN, DS, fake)


def test_under_deactivate_the_late_account_is_deactivated_and_the_inactive_one_left_alone() -> None:
    """One PATCH, active=false, to the late account; the linked one (inactive already) is not written."""
    fake, linked, late, others = downstream()
    before = {i: dict(fake.accounts[i]) for i in others}
    outcome = run(orphan_check(fake, DeletePolicy.DEACTIVATE))
    assert fake.writes == [("PATCH", late)]
    assert fake.accounts[late] == {"id": late, "userName": "jdoe.before", "externalId": UID, "active": False}
    assert fake.accounts[linked]["active"] is False
    assert {i: fake.accounts[i] for i in others} == before
    assert (outcome.result, outcome.reason) == (
        Result.DEACTIVATED,
        "orphans: 1 deactivated, 1 inactive already, of 2 found",
    )
    assert outcome.state is DELETED  # the link and what it holds stay as the deletion left them


def test_a_second_orphan_check_writes_nothing() -> None:
    fake, _, late, _ = downstream()
    run(orphan_check(fake, DeletePolicy.DEACTIVATE))
    outcome = run(orphan_check(fake, DeletePolicy.DEACTIVATE))
    assert fake.writes == [("PATCH", late)]
    assert (outcome.result, outcome.reason) == (
        Result.UNCHANGED,
        "orphans: 0 deactivated, 2 inactive already, of 2 found",
    )


def test_no_account_carrying_the_id_is_skipped() -> None:
    fake = FakeDownstream()
    fake.add("other", UID.upper())
    outcome = run(orphan_check(fake, DeletePolicy.DEACTIVATE))
    assert fake.writes == []
    assert outcome.result == Result.SKIPPED


def test_a_downstream_taking_put_only_gets_the_account_as_found_inactive() -> None:
    """No PATCH: the late account is PUT as the lookup found it with active=false (its own userName kept:
    the user's last one is the linked account's, a PUT of it would collide)."""
    fake, _, late, _ = downstream(patch_supported=False)
    outcome = run(orphan_check(fake, DeletePolicy.DEACTIVATE))
    assert fake.writes == [("PUT", late)]
    assert fake.accounts[late] == {"id": late, "userName": "jdoe.before", "externalId": UID, "active": False}
    assert outcome.result == Result.DEACTIVATED


def test_under_delete_every_account_carrying_the_id_is_deleted() -> None:
    """Several accounts (the linked one the deletion failed to remove, a late one): each goes."""
    fake, linked, late, others = downstream()
    outcome = run(orphan_check(fake, DeletePolicy.DELETE))
    assert sorted(fake.writes) == sorted([("DELETE", linked), ("DELETE", late)])
    assert sorted(fake.accounts) == sorted(others)
    assert (outcome.result, outcome.reason) == (Result.DELETED, "orphans: 2 deleted of 2 found")
    assert outcome.state.downstream_id is None


def test_under_ignore_nothing_is_looked_up_nor_written() -> None:
    client = FakeScim(find_all={("externalId", UID): [{"id": "d-late", "externalId": UID, "active": True}]})
    outcome = run(orphan_check(client, DeletePolicy.IGNORE))
    assert client.calls == []
    assert (outcome.result, outcome.reason) == (Result.SKIPPED, "orphan_delete_ignored")


def test_a_live_user_s_accounts_are_never_looked_up() -> None:
    """Re-created after the deletion: two accounts of a live user are the duplicates report's, not ours."""
    live = UserState(None, dict(ALL), dict.fromkeys(ALL, (40, "e-9")), deleted_ms=20)
    for policy in DeletePolicy:
        client = FakeScim(find_all={("externalId", UID): [{"id": "d-2", "externalId": UID, "active": True}]})
        outcome = run(orphan_check(client, policy, live))
        assert client.calls == []
        assert outcome.reason == "orphan_not_known_deleted"


def test_what_the_lookup_answered_is_verified_again() -> None:
    """A port that passes on look-alikes and ids that cannot be put in a path: none is written."""
    answered: list[dict[str, Any]] = [
        *({"id": f"x-{n}", "externalId": lookalike, "active": True} for n, lookalike in enumerate(LOOK_ALIKE_IDS)),
        {"id": "a/b", "externalId": UID, "active": True},
        {"id": "..", "externalId": UID, "active": True},
        {"id": None, "externalId": UID, "active": True},
        {"id": "d-late", "externalId": UID, "active": True},
    ]
    for policy in (DeletePolicy.DEACTIVATE, DeletePolicy.DELETE):
        client = FakeScim(find_all={("externalId", UID): answered})
        run(orphan_check(client, policy, UserState(None, dict(ALL), dict.fromkeys(ALL, (1, "e-0")), deleted_ms=20)))
        writes = [call for call in client.calls if call[0] != "find_all"]
        assert [call[:2] for call in writes] == [("patch" if policy is DeletePolicy.DEACTIVATE else "delete", "d-late")]


ACCOUNT = st.fixed_dictionaries(
    {
        "externalId": st.one_of(
            st.none(),
            st.sampled_from([UID, *LOOK_ALIKE_IDS, "someone"]),
            st.text(max_size=40),
        ),
        "active": st.sampled_from([True, False, None]),
    }
)


@settings(max_examples=examples(300), deadline=None)
@given(
    accounts=st.lists(ACCOUNT, max_size=8),
    policy=st.sampled_from(list(DeletePolicy)),
    ignore_filters=st.booleans(),
    known_deleted=st.booleans(),
)
def test_only_accounts_carrying_the_id_exactly_are_ever_written(
    accounts: list[dict[str, Any]], policy: DeletePolicy, ignore_filters: bool, known_deleted: bool
) -> None:
    """For any set of downstream accounts (a downstream that ignores filters too): only accounts whose
    externalId is the user's id exactly are written, and only for a user the state knows deleted (else:
    re-created after the deletion). Under `deactivate` none is deleted, each such account ends inactive,
    one inactive already is not written; under `delete` none is left."""
    fake = FakeDownstream(ignore_filters=ignore_filters)
    for n, account in enumerate(accounts):
        downstream_id = fake.add(f"user-{n}", account["externalId"])
        if account["active"] is None:
            del fake.accounts[downstream_id]["active"]  # an account that shows no `active` at all
        else:
            fake.accounts[downstream_id]["active"] = account["active"]
    ours = {i for i, a in fake.accounts.items() if a.get("externalId") == UID}
    inactive = {i for i in ours if fake.accounts[i].get("active") is False}
    others = {i: dict(a) for i, a in fake.accounts.items() if i not in ours}
    newest = 10 if known_deleted else 40  # the deletion at 20 is the newest change, or a re-create came after
    state = UserState(None, dict(ALL), dict.fromkeys(ALL, (newest, "e-9")), deleted_ms=20)

    run(orphan_check(fake, policy, state))

    written = {i for _, i in fake.writes}
    assert written <= (ours if known_deleted and policy is not DeletePolicy.IGNORE else set())
    assert {i: a for i, a in fake.accounts.items() if i not in ours} == others
    if policy is DeletePolicy.DEACTIVATE:
        assert all(method == "PATCH" for method, _ in fake.writes)
        assert not written & inactive
        if known_deleted:
            assert all(fake.accounts[i]["active"] is False for i in ours)
    if policy is DeletePolicy.DELETE and known_deleted:
        assert not ours & set(fake.accounts)
