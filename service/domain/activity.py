"""Provisioning activity: what happened to each downstream, as the operator console shows it.

Every replica publishes an entry per thing it did (a change applied, parked or dead-lettered, a breaker
opening or closing, backfill progress, a reconciliation's drift, an on-demand sync) to the activity
topic; every replica reads the whole topic back into a bounded view, so a console page shows the same
thing whichever replica behind a load balancer serves it. Entries never hold a secret: requests are
method, path, status and a short answer, never a header.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "ANSWER_CHARS",
    "SENT_KEPT",
    "ActivityBook",
    "ActivityEntry",
    "ActivitySink",
    "ActivitySummary",
    "ActivityView",
    "Kind",
    "SentRequest",
    "decode_entries",
    "decode_entry",
    "encode_entries",
    "encode_entry",
    "matches_user",
]

ANSWER_CHARS = 300  # of a downstream's answer kept in an entry: enough for a SCIM error's detail

Kind = Literal["user", "group", "circuit", "backfill", "reconcile", "sync", "tenant"]


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
    # reconcile: clean, drift; sync: the on-demand result; tenant: enabled, rotated, disabled
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
    changes_last_hour: int = 0  # user and group changes (any outcome) in the last hour; an entry may stand for
    # several (detail `changes`: a write that carried a user's queued changes, a group's batch)
    circuit: str | None = None  # the last breaker transition any replica reported: open, half_open, closed
    last_failure: ActivityEntry | None = None  # the last change that was parked or dead-lettered
    backfill: dict[str, Any] | None = None  # the latest backfill progress (BackfillProgress.public())
    drift: dict[str, Any] | None = None  # the latest reconciliation's report summary, with its time
    tenant: ActivityEntry | None = None  # the last enable, rotation or disable (kind tenant)


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

    def downstreams(self) -> list[tuple[str, str]]:
        """Every (realm, downstream) the log has entries of, disabled ones included."""
        ...


# -- the fold every replica keeps of the activity topic (pure: time is passed in) ---------------------

SENT_KEPT = 20  # requests kept per entry (the first ones: a lookup, then the write it led to)
PATH_CHARS = 300  # of a request's path (with its query) kept in an entry
CHANGE_KINDS = frozenset({"user", "group"})
SET_ASIDE = frozenset({"parked", "dead_lettered"})
NOT_ACCEPTED = SET_ASIDE | {"skipped"}  # a user or group entry with another outcome: the downstream took it
USER_KINDS = frozenset({"user", "sync"})  # the entries a `user` search looks at
MINUTES_COUNTED = 60


def changes_minute(time: float) -> int:
    """The minute a change is counted in (changes_last_hour is counted to the minute)."""
    return int(time // 60)


def changes_of(entry: ActivityEntry) -> int:
    """How many changes a user or group entry stands for: a write may carry several (detail `changes`)."""
    n = entry.detail.get("changes", 1)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def matches_user(entry: ActivityEntry, user: str) -> bool:
    """Whether `entry` is about the user: its id, or a part of its username, ignoring case."""
    if entry.kind not in USER_KINDS:
        return False
    wanted = user.casefold()
    return (entry.subject is not None and entry.subject.casefold() == wanted) or (
        entry.name is not None and wanted in entry.name.casefold()
    )


@dataclass
class _Downstream:
    """One downstream's part of the book: its newest entries (by time) and what its summary needs."""

    recent: list[ActivityEntry] = field(default_factory=list)  # oldest first, at most `keep`
    minutes: dict[int, int] = field(default_factory=dict)  # minute -> user and group changes in it
    last_success: float | None = None
    circuit: ActivityEntry | None = None
    last_failure: ActivityEntry | None = None
    backfill: ActivityEntry | None = None
    drift: ActivityEntry | None = None
    tenant: ActivityEntry | None = None  # the last enable, rotation or disable


def _newer(entry: ActivityEntry, held: ActivityEntry | None) -> bool:
    return held is None or entry.time >= held.time


class ActivityBook:
    """The activity topic folded into what the console shows: per downstream, its `keep` newest entries
    and its summary. Memory is bounded whatever the topic holds: `keep` entries and 60 minute counters per
    downstream, at most `downstreams` downstreams (the one heard of longest ago is forgotten first).
    Entries may arrive out of time order (replicas' clocks, partitions): they are kept ordered by time."""

    def __init__(self, keep: int, downstreams: int = 10_000) -> None:
        self._keep = keep
        self._max_downstreams = downstreams
        self._books: dict[tuple[str, str], _Downstream] = {}  # insertion order: least recently added first

    def add(self, entry: ActivityEntry) -> None:
        key = (entry.realm, entry.downstream)
        book = self._books.pop(key, None) or _Downstream()
        self._books[key] = book  # the most recently heard of, last
        if len(self._books) > self._max_downstreams:
            del self._books[next(iter(self._books))]
        if not book.recent or entry.time >= book.recent[-1].time:
            book.recent.append(entry)
        else:
            bisect.insort(book.recent, entry, key=_time)
        if len(book.recent) > self._keep:
            del book.recent[0]
        if entry.kind in CHANGE_KINDS:
            self._count(book, entry)
        elif entry.kind == "circuit" and _newer(entry, book.circuit):
            book.circuit = entry
        elif entry.kind == "backfill" and _newer(entry, book.backfill):
            book.backfill = entry
        elif entry.kind == "reconcile" and _newer(entry, book.drift):
            book.drift = entry
        elif entry.kind == "tenant" and _newer(entry, book.tenant):
            book.tenant = entry

    def _count(self, book: _Downstream, entry: ActivityEntry) -> None:
        minute = changes_minute(entry.time)
        newest = max(book.minutes, default=minute)
        if minute > newest - MINUTES_COUNTED:
            book.minutes[minute] = book.minutes.get(minute, 0) + changes_of(entry)
            if minute > newest:  # a new minute: those an hour behind it are never counted again
                for old in [m for m in book.minutes if m <= minute - MINUTES_COUNTED]:
                    del book.minutes[old]
        if entry.outcome in SET_ASIDE:
            if _newer(entry, book.last_failure):
                book.last_failure = entry
        elif entry.outcome not in NOT_ACCEPTED and (book.last_success is None or entry.time > book.last_success):
            book.last_success = entry.time

    def recent(self, realm: str, downstream: str, *, user: str | None = None, limit: int = 50) -> list[ActivityEntry]:
        """Newest first, at most `limit`; `user` keeps the entries about that user (see matches_user)."""
        book = self._books.get((realm, downstream))
        if book is None or limit <= 0:
            return []
        found: list[ActivityEntry] = []
        for entry in reversed(book.recent):
            if user is None or matches_user(entry, user):
                found.append(entry)
                if len(found) >= limit:
                    break
        return found

    def downstreams(self) -> list[tuple[str, str]]:
        """Every (realm, downstream) with an entry in the book, disabled ones included."""
        return sorted(self._books)

    def summary(self, realm: str, downstream: str, now: float) -> ActivitySummary:
        book = self._books.get((realm, downstream))
        if book is None:
            return ActivitySummary()
        current = changes_minute(now)
        changes = sum(n for m, n in book.minutes.items() if current - MINUTES_COUNTED < m <= current)
        drift = dict(book.drift.detail, time=book.drift.time) if book.drift is not None else None
        return ActivitySummary(
            last_success=book.last_success,
            changes_last_hour=changes,
            circuit=book.circuit.outcome if book.circuit is not None else None,
            last_failure=book.last_failure,
            backfill=dict(book.backfill.detail) if book.backfill is not None else None,
            drift=drift,
            tenant=book.tenant,
        )


def _time(entry: ActivityEntry) -> float:
    return entry.time


# -- on the topic: one JSON document per entry ------------------------------------------------------


def encode_entry(entry: ActivityEntry) -> bytes:
    """The entry as compact JSON, at most SENT_KEPT requests, answers cut to ANSWER_CHARS (whatever a
    caller built)."""
    return json.dumps(_doc(entry), separators=(",", ":"), default=str).encode()


def encode_entries(entries: Sequence[ActivityEntry]) -> bytes:
    """Entries as one record of the activity topic (a JSON array): under load one Kafka record carries
    many entries of a downstream, which is what keeps the log's cost per change small."""
    return json.dumps([_doc(e) for e in entries], separators=(",", ":"), default=str).encode()


def _doc(entry: ActivityEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {"time": entry.time, "realm": entry.realm, "downstream": entry.downstream}
    doc["kind"], doc["outcome"] = entry.kind, entry.outcome
    for name in ("subject", "name", "action", "reason"):
        value = getattr(entry, name)
        if value is not None:
            doc[name] = value
    if entry.sent:
        doc["sent"] = [
            [s.method, s.path[:PATH_CHARS], s.status, s.answer[:ANSWER_CHARS]] for s in entry.sent[:SENT_KEPT]
        ]
    if entry.detail:
        doc["detail"] = entry.detail
    return doc


KINDS: frozenset[str] = frozenset(("user", "group", "circuit", "backfill", "reconcile", "sync"))


def decode_entries(raw: bytes) -> list[ActivityEntry]:
    """The entries of one record of the activity topic (one entry, or an array of them); ValueError for
    anything else. Bounded as encoded, whoever wrote it."""
    doc = json.loads(raw)
    return [_entry(d) for d in doc] if isinstance(doc, list) else [_entry(doc)]


def decode_entry(raw: bytes) -> ActivityEntry:
    """One entry read back (encode_entry's inverse); ValueError for anything that is not one."""
    return _entry(json.loads(raw))


def _entry(doc: object) -> ActivityEntry:
    if not isinstance(doc, dict) or doc.get("kind") not in KINDS:
        raise ValueError("not an activity entry")
    time, realm, downstream, outcome = doc.get("time"), doc.get("realm"), doc.get("downstream"), doc.get("outcome")
    if not isinstance(time, int | float) or not (
        isinstance(realm, str) and isinstance(downstream, str) and isinstance(outcome, str)
    ):
        raise ValueError("an activity entry lacks its time, realm, downstream or outcome")
    listed = doc.get("sent")
    sent = []
    for item in listed[:SENT_KEPT] if isinstance(listed, list) else ():
        if not (isinstance(item, list) and len(item) == 4):
            raise ValueError("a request of an activity entry is not [method, path, status, answer]")
        method, path, status, answer = item
        code = status if isinstance(status, int) and not isinstance(status, bool) else None
        sent.append(SentRequest(str(method)[:16], str(path)[:PATH_CHARS], code, str(answer)[:ANSWER_CHARS]))
    detail = doc.get("detail")
    return ActivityEntry(
        time=float(time),
        realm=realm,
        downstream=downstream,
        kind=doc["kind"],
        outcome=outcome,
        subject=_text(doc.get("subject")),
        name=_text(doc.get("name")),
        action=_text(doc.get("action")),
        reason=_text(doc.get("reason")),
        sent=tuple(sent),
        detail=detail if isinstance(detail, dict) else {},
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
