"""Provisioning activity: what happened to each downstream, as the operator console shows it.

Every replica publishes an entry per thing it did (a change applied, parked or dead-lettered, a breaker
opening or closing, backfill progress, a reconciliation's drift, an on-demand sync) to the activity
topic; every replica reads the whole topic back into a bounded view, so a console page shows the same
thing whichever replica behind a load balancer serves it. Entries never hold a secret: requests are
method, path, status and a short answer, never a header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "ANSWER_CHARS",
    "ActivityEntry",
    "ActivitySink",
    "ActivitySummary",
    "ActivityView",
    "Kind",
    "SentRequest",
]

ANSWER_CHARS = 300  # of a downstream's answer kept in an entry: enough for a SCIM error's detail

Kind = Literal["user", "group", "circuit", "backfill", "reconcile", "sync"]


@dataclass(frozen=True, slots=True)
class SentRequest:
    """One request to the downstream and its answer, without headers (they carry the credentials)."""

    method: str
    path: str  # relative to the downstream's base URL, e.g. /Users/2819c223
    status: int | None  # None: no answer (connection refused, timeout)
    answer: str = ""  # a short excerpt of the answer's body or the error (bounded, see ANSWER_CHARS)


@dataclass(frozen=True, slots=True)
class ActivityEntry:
    time: float  # epoch seconds, when it happened
    realm: str
    downstream: str  # the realm's downstream app (service.domain.downstreams.DEFAULT for /tenants/{realm})
    kind: Kind
    outcome: str  # user/group: created, updated, deactivated, deleted, unchanged, coalesced, parked,
    # dead_lettered, skipped...; circuit: open, half_open, closed; backfill: running, done, failed;
    # reconcile: clean, drift; sync: the on-demand result
    subject: str | None = None  # the Keycloak user or group id
    name: str | None = None  # the username or group name, as last known (search matches it too)
    action: str | None = None  # what the plan decided: create, update, deactivate, delete, none...
    reason: str | None = None  # why, in the pipeline's words (e.g. unauthorized, conflict, coalesced)
    sent: tuple[SentRequest, ...] = ()  # what went to the downstream for it, in order
    detail: dict[str, Any] = field(default_factory=dict)  # backfill progress, drift counts, changed attributes


@dataclass(frozen=True, slots=True)
class ActivitySummary:
    """One downstream's row on the tenants page, folded from its entries (every replica's)."""

    last_success: float | None = None  # the last user or group change the downstream accepted
    changes_last_hour: int = 0  # user and group changes applied (any outcome) in the last hour
    circuit: str | None = None  # the last breaker transition any replica reported: open, half_open, closed
    last_failure: ActivityEntry | None = None  # the last change that was parked or dead-lettered
    backfill: dict[str, Any] | None = None  # the latest backfill progress (BackfillProgress.public())
    drift: dict[str, Any] | None = None  # the latest reconciliation's report summary, with its time


class ActivitySink(Protocol):
    """Where the pipeline reports what it did; never blocks and never raises (activity is a log, not the
    source of truth: an entry lost in a crash loses nothing downstream)."""

    def record(self, entry: ActivityEntry) -> None: ...


class ActivityView(Protocol):
    """What the console reads: the same on every replica, from the activity topic."""

    def recent(self, realm: str, downstream: str, *, user: str | None = None, limit: int = 50) -> list[ActivityEntry]:
        """Newest first; `user` matches the user id, or a part of the username, ignoring case."""
        ...

    def summary(self, realm: str, downstream: str, now: float) -> ActivitySummary: ...
