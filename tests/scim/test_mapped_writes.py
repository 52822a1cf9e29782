"""The executor writes what the tenant's mapping says: the POST with the extension, PATCHes at
URN-qualified paths (a removal as `remove`), the full user in a PUT where the downstream takes no
PATCH, and the userName from the email where the mapping takes it from there."""

from __future__ import annotations

from typing import Any

from service.domain.changes import UserChange
from service.domain.mapping import ENTERPRISE_USER, parse_mapping
from service.domain.plan import DeletePolicy, plan_change
from service.domain.state import UserState
from service.scim.client import Downstream
from service.scim.executor import Result, execute
from tests.scim.fake_downstream import FakeDownstream

UID = "3f6c1a2b-7d4e-4f80-a1b2-c3d4e5f60718"
E = ENTERPRISE_USER
MAPPING = parse_mapping(
    [
        {"source": "email", "target": "userName"},
        {"source": "attributes.department", "target": f"{E}:department"},
        {"source": "attributes.manager", "target": f"{E}:manager"},
    ]
)
DS = Downstream("acme", "http://scim.invalid/v2", "token-1", mapping=MAPPING)


class Recording(FakeDownstream):
    """The fake downstream, recording each PATCH and applying URN-qualified paths (its own splits at dots)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.patches: list[list[dict[str, Any]]] = []

    async def patch_user(self, ds: Downstream, user_id: str, operations: list[dict[str, Any]]) -> None:
        plain = [op for op in operations if not op["path"].startswith(E + ":")]
        await super().patch_user(ds, user_id, plain)
        self.patches.append(operations)
        extension = self.accounts[user_id].setdefault(E, {})
        for op in operations:
            if op["path"].startswith(E + ":"):
                name = op["path"][len(E) + 1 :]
                extension.pop(name, None) if op["op"] == "remove" else extension.update({name: op["value"]})


def change(time_ms: int, custom: dict[str, str | None], *, complete: bool = False, **attrs: Any) -> UserChange:
    return UserChange(
        "acme", UID, "upsert", time_ms, "USER_UPDATE", f"e-{time_ms}", attrs,
        user_attributes=custom, user_attributes_complete=complete,
    )  # fmt: skip


async def apply(fake: Recording, state: UserState, c: UserChange) -> tuple[Result, UserState]:
    outcome = await execute(plan_change(state, c, DeletePolicy.IGNORE, MAPPING.keys), c, DS, fake)
    return outcome.result, outcome.state


async def test_create_then_patch_then_remove_with_a_mapping() -> None:
    """POST with the extension and userName = email; a department change is one PATCH at its URN path;
    a listing without the department removes it."""
    fake = Recording()
    first = change(1, {"department": "Sales", "manager": "m-1"}, complete=True, userName="jdoe", email="j@x.example")
    result, state = await apply(fake, UserState(), first)
    assert result is Result.CREATED
    [(_, account_id)] = fake.writes
    created = fake.accounts[account_id]
    assert (created["userName"], created["schemas"][-1]) == ("j@x.example", E)
    assert created[E] == {"department": "Sales", "manager": {"value": "m-1"}}
    result, state = await apply(fake, state, change(2, {"department": "Ops"}))
    assert fake.patches[-1] == [{"op": "replace", "path": f"{E}:department", "value": "Ops"}]
    result, state = await apply(fake, state, change(3, {"manager": "m-1"}, complete=True))
    assert fake.patches[-1] == [{"op": "remove", "path": f"{E}:department"}]


async def test_without_patch_the_put_carries_the_mapped_attributes() -> None:
    """A downstream without PATCH: the update is a PUT of the full user, extension included."""
    fake = Recording(patch_supported=False)
    first = change(1, {"department": "Sales"}, complete=True, userName="jdoe", email="j@x.example", active=True)
    _, state = await apply(fake, UserState(), first)
    [(_, account_id)] = fake.writes
    result, state = await apply(fake, state, change(2, {"department": "Ops"}))
    assert result is Result.UPDATED
    held = fake.accounts[account_id]
    assert (held["userName"], held[E], E in held["schemas"]) == ("j@x.example", {"department": "Ops"}, True)
    assert fake.writes[-1] == ("PUT", account_id)
    assert fake.patches == []
