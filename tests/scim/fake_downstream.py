"""An in-memory SCIM downstream for unit and property tests (never for integration tests): it
implements the executor's ScimPort the way scim2-server behaves (ids of its own, 409 on a duplicate
userName ignoring case, PATCH with the paths we send), and can misbehave like real servers do.

`ignore_filters=True` answers every lookup with every account (a server that ignores `filter`); the
verification a real client does (service.domain.scim.verify_lookup) is applied to that answer, as
ScimClient.find_user does. Every write is recorded, so a test can prove which accounts were touched.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from service.domain import scim
from service.errors import ScimConflict, ScimNotFound
from service.scim.client import Downstream

T = TypeVar("T")


@dataclass
class FakeDownstream:
    ignore_filters: bool = False
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: list[tuple[str, str]] = field(default_factory=list)  # (method, downstream id)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, user_name: str, external_id: str | None, **attributes: Any) -> str:
        """An account that exists downstream before we arrive (made by hand, or another user's)."""
        downstream_id = f"pre-{next(self._ids)}"
        self.accounts[downstream_id] = {
            "id": downstream_id,
            "userName": user_name,
            "active": True,
            **({"externalId": external_id} if external_id is not None else {}),
            **attributes,
        }
        return downstream_id

    async def find_user(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
        listed = list(self.accounts.values())
        if not self.ignore_filters:
            listed = [r for r in listed if scim.matches(r, attribute, value)]
        return scim.verify_lookup({"Resources": copy.deepcopy(listed)}, attribute, value).match

    async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        if any(scim.matches(r, "userName", body["userName"]) for r in self.accounts.values()):
            raise ScimConflict(409, "POST", "Users", "uniqueness")
        downstream_id = f"d-{next(self._ids)}"
        self.accounts[downstream_id] = {**copy.deepcopy(body), "id": downstream_id}
        self.writes.append(("POST", downstream_id))
        return copy.deepcopy(self.accounts[downstream_id])

    async def patch_user(self, ds: Downstream, user_id: str, operations: list[dict[str, Any]]) -> None:
        account = self.accounts.get(user_id)
        if account is None:
            raise ScimNotFound(404, "PATCH", f"Users/{user_id}")
        self.writes.append(("PATCH", user_id))
        for op in operations:
            head, _, tail = op["path"].partition(".")
            target = account.setdefault(head, {}) if tail else account
            key = tail or head
            if op["op"] == "remove":
                target.pop(key, None)
            else:
                target[key] = copy.deepcopy(op["value"])

    async def delete_user(self, ds: Downstream, user_id: str) -> None:
        if self.accounts.pop(user_id, None) is None:
            raise ScimNotFound(404, "DELETE", f"Users/{user_id}")
        self.writes.append(("DELETE", user_id))

    def owned_by(self, external_id: str) -> list[dict[str, Any]]:
        return [r for r in self.accounts.values() if r.get("externalId") == external_id]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the fake answers at once): thousands of examples stay fast."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return cast(T, stop.value)
    coroutine.close()
    raise AssertionError("the coroutine suspended: something awaited real I/O")
