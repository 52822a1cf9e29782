"""What a change needs downstream: (known state, change, delete policy) -> `Plan`. Pure.

The executor turns a plan into HTTP calls; everything that can be decided without the network is
decided here, so it is table-tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

from service.domain.changes import UserChange
from service.domain.state import UserState, newer_attributes


class DeletePolicy(StrEnum):
    IGNORE = "ignore"  # a Keycloak deletion is not propagated
    DEACTIVATE = "deactivate"  # PATCH active=false
    DELETE = "delete"  # DELETE /Users/{id}


Action = Literal["none", "sync", "deactivate", "delete"]


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    state: UserState  # the state once the plan has been carried out (downstream id filled in by the executor)
    changed: dict[str, Any] = field(default_factory=dict)  # attributes to PATCH on a linked user
    reason: str = ""

    @property
    def values(self) -> dict[str, Any]:
        """Everything known of the user: what a POST would send if the downstream lacks it."""
        return self.state.values


def plan_change(state: UserState, change: UserChange, delete_policy: DeletePolicy) -> Plan:
    if change.op == "delete":
        return _plan_delete(state, change, delete_policy)
    if state.deleted_ms is not None and change.time_ms < state.deleted_ms:
        return Plan("none", state, reason="older_than_delete")
    newer = newer_attributes(state, change)
    if not newer:
        return Plan("none", state, reason="superseded")
    new_state = replace(
        state,
        values={**state.values, **newer},
        times={**state.times, **dict.fromkeys(newer, change.time_ms)},
    )
    if state.downstream_id is None or change.force:
        return Plan("sync", new_state, changed=newer)
    changed = {attr: value for attr, value in newer.items() if state.values.get(attr, _MISSING) != value}
    if not changed:
        return Plan("none", new_state, reason="unchanged")
    return Plan("sync", new_state, changed=changed)


def _plan_delete(state: UserState, change: UserChange, policy: DeletePolicy) -> Plan:
    if state.deleted_ms is not None and state.deleted_ms >= change.time_ms:
        return Plan("none", state, reason="already_deleted")
    if policy is DeletePolicy.IGNORE:
        return Plan("none", replace(state, deleted_ms=change.time_ms), reason="delete_ignored")
    if policy is DeletePolicy.DEACTIVATE:
        new_state = replace(
            state,
            values={**state.values, "active": False},
            times={**state.times, "active": change.time_ms},
            deleted_ms=change.time_ms,
        )
        return Plan("deactivate", new_state, changed={"active": False})
    # The state keeps the downstream id until the executor has deleted the user.
    return Plan("delete", replace(state, values={}, deleted_ms=change.time_ms))


_MISSING = object()
