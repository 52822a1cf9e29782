"""A ScimPort wrapper that records every call it passes on: the step trace of an on-demand sync."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from service.errors import ScimError
from service.scim.client import Downstream
from service.scim.executor import ScimPort

T = TypeVar("T")


class TracingClient:
    """The executor's ScimPort around another one (the ScimClient): each call is appended to `steps`."""

    def __init__(self, inner: ScimPort) -> None:
        self._inner = inner
        self.steps: list[dict[str, Any]] = []

    async def find_user(self, ds: Downstream, attribute: str, value: str) -> dict[str, Any] | None:
        step = self._step("GET", "Users", query=f"filter={attribute} eq {value!r}")
        found = await self._run(step, self._inner.find_user(ds, attribute, value))
        step["answer"] = {"found": found is not None, "id": found.get("id") if found else None}
        return found

    async def create_user(self, ds: Downstream, body: dict[str, Any]) -> dict[str, Any]:
        step = self._step("POST", "Users", request=body)
        created = await self._run(step, self._inner.create_user(ds, body))
        step["answer"] = {"id": created.get("id")}
        return created

    async def patch_user(self, ds: Downstream, user_id: str, operations: list[dict[str, Any]]) -> None:
        step = self._step("PATCH", f"Users/{user_id}", request={"Operations": operations})
        await self._run(step, self._inner.patch_user(ds, user_id, operations))

    async def delete_user(self, ds: Downstream, user_id: str) -> None:
        step = self._step("DELETE", f"Users/{user_id}")
        await self._run(step, self._inner.delete_user(ds, user_id))

    def _step(self, method: str, path: str, **details: Any) -> dict[str, Any]:
        step = {"step": "scim_request", "method": method, "path": path, **details}
        self.steps.append(step)
        return step

    async def _run(self, step: dict[str, Any], call: Awaitable[T]) -> T:
        try:
            result = await call
        except ScimError as exc:
            step["outcome"] = {"error": type(exc).__name__, "status": exc.status, "detail": exc.detail}
            raise
        step["outcome"] = "ok"
        return result
