"""Per-user state kept in the compacted user-state topic, and the race rule that updates it.

Events of one user can come from different source partitions, so they may arrive out of order. The
event `time` decides, per attribute: each attribute keeps the time of the change that last set it,
and an older change still applies to the attributes nothing newer has set. Dropping a whole older
change would lose, say, a name edit that raced with a newer disable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from service.domain.changes import UserChange


@dataclass(frozen=True, slots=True)
class UserState:
    downstream_id: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # attributes as last written downstream
    times: dict[str, int] = field(default_factory=dict)  # attribute -> time of the change that set it
    deleted_ms: int | None = None
    parked: str | None = None  # why this user's changes go to the parking topic until a replay

    def to_json(self) -> bytes:
        doc = {
            "downstream_id": self.downstream_id,
            "values": self.values,
            "times": self.times,
            "deleted_ms": self.deleted_ms,
            "parked": self.parked,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> UserState:
        doc = json.loads(raw)
        return cls(
            downstream_id=doc.get("downstream_id"),
            values=dict(doc.get("values") or {}),
            times={k: int(v) for k, v in (doc.get("times") or {}).items()},
            deleted_ms=doc.get("deleted_ms"),
            parked=doc.get("parked"),
        )


def newer_attributes(state: UserState, change: UserChange) -> dict[str, Any]:
    """The attributes of `change` that no newer change has already set."""
    return {
        attr: value
        for attr, value in change.attributes.items()
        if change.time_ms >= state.times.get(attr, -1)
    }
