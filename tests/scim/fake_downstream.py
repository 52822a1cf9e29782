"""An in-memory SCIM downstream for unit and property tests (never for integration tests): it
implements the executor's ScimPort and the group executor's GroupScimPort the way scim2-server behaves
(ids of its own, 409 on a duplicate userName ignoring case, PATCH with the paths we send; a member
added twice is held once, a removal of a non-member is accepted, an empty PATCH is a 400), and can
misbehave like real servers do.

`strict_removals=True` answers a removal of a member the group does not hold with 400 `noTarget` (the
whole PATCH fails, as RFC 7644 section 3.5.2.2 allows); `omit_members=True` reads a group without its
`members` (as servers that never return member lists do).

`patch_supported=False` announces no PATCH (the executor then PUTs the full user; a PATCH reaching it is
a 405), and `patch_answers_405=True` announces PATCH but answers every PATCH with 405 (the executor
switches to PUT, as ScimClient does).

`ignore_filters=True` answers every lookup with every account or group (a server that ignores
`filter`); the verification a real client does (service.domain.scim.verify_lookup) is applied to that
answer, as ScimClient.find_user / find_users / find_group do. `unique_group_names=True` (the default) answers 409 to
a group whose displayName another holds, ignoring case, as AWS IAM Identity Center does (scim2-server
does so only with a schema that declares displayName unique). Every write is recorded, so a test can
prove which accounts and groups were touched.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from service.domain import scim
from service.domain.capabilities import UserWrites
from service.errors import ScimConflict, ScimNotFound, ScimRejected
from service.scim.client import Downstream

T = TypeVar("T")

_MEMBER_FILTER = re.compile(r'members\[value eq ("(?:[^"\\]|\\.)*")\]')


@dataclass
class FakeDownstream:
    ignore_filters: bool = False
    unique_group_names: bool = True
    strict_removals: bool = False
    omit_members: bool = False
    patch_supported: bool = True
    patch_answers_405: bool = False
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: list[tuple[str, str]] = field(default_factory=list)  # (method, downstream id)
    reads: list[str] = field(default_factory=list)  # groups whose members were read
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _patch_refused: bool = False

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

    async def find_users(self, ds: Downstream, attribute: str, value: str) -> list[dict[str, Any]]:
        listed = [r for r in self.accounts.values() if self.ignore_filters or scim.matches(r, attribute, value)]
        verified = (r for r in listed if scim.matches(r, attribute, value) and scim.valid_resource_id(r.get("id")))
        return [copy.deepcopy(r) for r in verified]

    async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        if any(scim.matches(r, "userName", body["userName"]) for r in self.accounts.values()):
            raise ScimConflict(409, "POST", "Users", "uniqueness")
        downstream_id = f"d-{next(self._ids)}"
        self.accounts[downstream_id] = {**copy.deepcopy(body), "id": downstream_id}
        self.writes.append(("POST", downstream_id))
        return copy.deepcopy(self.accounts[downstream_id])

    async def user_writes(self, ds: Downstream) -> UserWrites:
        return "patch" if self.patch_supported and not self._patch_refused else "put"

    async def replace_user(self, ds: Downstream, user_id: str, body: dict[str, Any]) -> None:
        """PUT: the account becomes `body` (its id kept); 409 when another account holds the userName."""
        if user_id not in self.accounts:
            raise ScimNotFound(404, "PUT", f"Users/{user_id}")
        others = (r for i, r in self.accounts.items() if i != user_id)
        if any(scim.matches(r, "userName", body["userName"]) for r in others):
            raise ScimConflict(409, "PUT", f"Users/{user_id}", "uniqueness")
        self.accounts[user_id] = {**copy.deepcopy(body), "id": user_id}
        self.writes.append(("PUT", user_id))

    async def patch_user(self, ds: Downstream, user_id: str, operations: list[dict[str, Any]]) -> None:
        if not self.patch_supported or self.patch_answers_405:
            self.writes.append(("PATCH refused", user_id))
            self._patch_refused = self.patch_answers_405
            raise ScimRejected(405, "PATCH", f"Users/{user_id}")
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

    # -- groups ---------------------------------------------------------------------------------------

    def add_group(self, display_name: str, external_id: str | None, members: tuple[str, ...] = ()) -> str:
        """A group that exists downstream before we arrive (made by hand, or another owner's)."""
        downstream_id = f"pre-g-{next(self._ids)}"
        self.groups[downstream_id] = {
            "id": downstream_id,
            "displayName": display_name,
            **({"externalId": external_id} if external_id is not None else {}),
            **({"members": [{"value": m} for m in members]} if members else {}),
        }
        return downstream_id

    def members_of(self, downstream_id: str) -> list[str]:
        """The member ids the group holds, in order, duplicates kept (so a test sees any)."""
        return [m["value"] for m in self.groups[downstream_id].get("members", [])]

    def groups_owned_by(self, external_id: str) -> list[dict[str, Any]]:
        return [g for g in self.groups.values() if g.get("externalId") == external_id]

    async def find_group(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
        listed = list(self.groups.values())
        if not self.ignore_filters:
            listed = [g for g in listed if scim.matches(g, attribute, value)]
        return scim.verify_lookup({"Resources": copy.deepcopy(listed)}, attribute, value).match

    async def create_group(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        self._check_group_name(body["displayName"], None, "POST", "Groups")
        downstream_id = f"g-{next(self._ids)}"
        self.groups[downstream_id] = {**copy.deepcopy(body), "id": downstream_id}
        self.writes.append(("POST", downstream_id))
        return copy.deepcopy(self.groups[downstream_id])

    async def patch_group(self, ds: Downstream, group_id: str, operations: list[dict[str, Any]]) -> None:
        """The operations we send, applied as scim2-server applies them (all or nothing); any other
        shape fails the test."""
        path = f"Groups/{group_id}"
        if group_id not in self.groups:
            raise ScimNotFound(404, "PATCH", path)
        if not operations:
            raise ScimRejected(400, "PATCH", path, "invalidValue", "operations holds one or more operations")
        group = copy.deepcopy(self.groups[group_id])
        for op in operations:
            removed = _MEMBER_FILTER.fullmatch(op["path"])
            if op["op"] == "add" and op["path"] == "members":
                held = {m["value"] for m in group.get("members", [])}
                new = [{"value": m["value"]} for m in op["value"] if m["value"] not in held]
                group["members"] = group.get("members", []) + new
            elif op["op"] == "remove" and removed is not None:
                value = json.loads(removed.group(1))
                if self.strict_removals and all(m["value"] != value for m in group.get("members", [])):
                    raise ScimRejected(400, "PATCH", path, "noTarget", "no member matches the filter")
                group["members"] = [m for m in group.get("members", []) if m["value"] != value]
            elif op["op"] == "replace" and op["path"] in ("displayName", "externalId"):
                if op["path"] == "displayName":
                    self._check_group_name(op["value"], group_id, "PATCH", path)
                group[op["path"]] = copy.deepcopy(op["value"])
            else:
                raise AssertionError(f"an operation the group executor never sends: {op}")
        self.groups[group_id] = group
        self.writes.append(("PATCH", group_id))

    async def read_group_members(self, ds: Downstream, group_id: str) -> Any:
        self.reads.append(group_id)
        group = self.groups.get(group_id)
        if group is None:
            raise ScimNotFound(404, "GET", f"Groups/{group_id}")
        shown = {
            k: v for k, v in group.items() if k in ("id", "members") and not (k == "members" and self.omit_members)
        }
        return copy.deepcopy(shown)

    async def delete_group(self, ds: Downstream, group_id: str) -> None:
        if self.groups.pop(group_id, None) is None:
            raise ScimNotFound(404, "DELETE", f"Groups/{group_id}")
        self.writes.append(("DELETE", group_id))

    def _check_group_name(self, name: str, holder: str | None, method: str, path: str) -> None:
        if not self.unique_group_names:
            return
        if any(scim.matches(g, "displayName", name) for i, g in self.groups.items() if i != holder):
            raise ScimConflict(409, method, path, "uniqueness")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the fake answers at once): thousands of examples stay fast."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return cast(T, stop.value)
    coroutine.close()
    raise AssertionError("the coroutine suspended: something awaited real I/O")
