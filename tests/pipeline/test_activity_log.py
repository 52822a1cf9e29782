"""The activity log's moving parts without a broker: the publisher never blocks nor raises and drops
(counted) past its bound; verdicts become entries; requests are recorded for the change that sent them."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

from service.domain.activity import SENT_KEPT, ActivityEntry, SentRequest, decode_entries
from service.domain.changes import UserChange
from service.domain.state import UserState
from service.errors import ScimRejected, ScimTransient
from service.metrics import Metrics
from service.pipeline.activity import RECORD_ENTRIES, ActivityPublisher, user_entries
from service.pipeline.applier import Applied, SetAside, Skipped
from service.pipeline.backfill import Backfills
from service.scim.breaker import BreakerState, CircuitBreaker
from service.scim.client import Downstream
from service.scim.executor import Result
from service.scim.transport import GatedTransport, Request, note_sent, recording
from tests.pipeline.test_backfill_listing import Producer as ChangesProducer
from tests.pipeline.test_backfill_listing import Realm
from tests.scim.test_bulk import DS, Scripted, port, user
from tests.support import wait_until

ENTRY = ActivityEntry(1.0, "acme", "hr", "user", "created", "u-1", "alice")
OTHER = ActivityEntry(2.0, "acme", "default", "circuit", "open")


class Producer:
    """What the publisher needs of AIOKafkaProducer: `send` queues a record and returns its delivery."""

    def __init__(self, *, fail: bool = False, hold: asyncio.Event | None = None) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []
        self.fail = fail
        self.hold = hold

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
        if self.hold is not None:
            await self.hold.wait()  # the accumulator is full: send waits
        if self.fail:
            raise RuntimeError("broker away")
        self.records.append((topic, key, value))
        delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered


def counted(metrics: Metrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("outbound_scim_activity_entries_total", {"outcome": outcome}) or 0.0


async def test_entries_go_to_the_topic_keyed_by_tenant_key() -> None:
    """Each entry is published on the activity topic under its downstream's tenant key, as it was recorded."""
    producer, metrics = Producer(), Metrics()
    publisher = ActivityPublisher(producer, "activity", metrics)  # type: ignore[arg-type]
    publisher.start()
    publisher.record(ENTRY)
    publisher.record(OTHER)
    await publisher.stop()
    assert [(topic, key, decode_entries(value)) for topic, key, value in producer.records] == [
        ("activity", b"acme/hr", [ENTRY]),
        ("activity", b"acme", [OTHER]),
    ]
    assert counted(metrics, "published") == 2


async def test_entries_coming_together_share_a_record_per_downstream() -> None:
    """Entries recorded within the linger of the first go out as few records, each holding one
    downstream's entries in their order (at most RECORD_ENTRIES)."""
    producer = Producer()
    publisher = ActivityPublisher(producer, "activity", Metrics())  # type: ignore[arg-type]
    publisher.start()
    sent = [replace(ENTRY, time=float(i)) for i in range(RECORD_ENTRIES + 5)]
    for entry in sent:
        publisher.record(entry)
    await publisher.stop()
    assert [len(decode_entries(value)) for _, _, value in producer.records] == [RECORD_ENTRIES, 5]
    assert [e for _, _, value in producer.records for e in decode_entries(value)] == sent


async def test_record_never_blocks_and_drops_counted_past_the_bound() -> None:
    """While the producer cannot take more, at most `unsent_max` entries wait; record() returns at once
    and each entry beyond is dropped and counted."""
    hold, metrics = asyncio.Event(), Metrics()
    producer = Producer(hold=hold)
    publisher = ActivityPublisher(producer, "activity", metrics, unsent_max=3)  # type: ignore[arg-type]
    publisher.start()
    for _ in range(10):
        publisher.record(ENTRY)
    assert counted(metrics, "dropped") == 7
    hold.set()
    await publisher.stop()
    assert sum(len(decode_entries(value)) for _, _, value in producer.records) == 3


async def test_a_failing_producer_never_reaches_the_caller() -> None:
    """Kafka refusing every entry costs the pipeline nothing: record() does not raise, the entries are
    counted as dropped."""
    metrics = Metrics()
    publisher = ActivityPublisher(Producer(fail=True), "activity", metrics)  # type: ignore[arg-type]
    publisher.start()
    publisher.record(ENTRY)
    publisher.record(ENTRY)
    await publisher.stop()
    assert counted(metrics, "dropped") == 2


def _change(i: int) -> UserChange:
    return UserChange("acme", "u-1", "upsert", i, "UPDATE", attributes={"userName": "alice", "email": f"a{i}@x"})


def test_a_run_sharing_one_write_is_one_entry_counting_its_changes() -> None:
    """A user's queued changes that went out in one write (coalesced before it, superseded after it) are
    one entry: the write's outcome and requests, the number of changes and every attribute they changed."""
    changes = [_change(1), replace(_change(2), attributes={"givenName": "A"}), _change(3)]
    state = UserState(downstream_id="d-1", values={"userName": "alice"})
    verdicts = [
        Applied(changes[0], Result.UPDATED, "coalesced", state),
        Applied(changes[1], Result.UPDATED, "", state),
        Applied(changes[2], Result.SKIPPED, "superseded", state),
    ]
    sent = [SentRequest("PATCH", "/Users/d-1", 204)]
    [entry] = user_entries(changes, verdicts, sent, lambda key: UserState(), 5.0)
    assert (entry.outcome, entry.action, entry.sent, entry.name) == ("updated", "update", tuple(sent), "alice")
    assert entry.detail["changes"] == 3 and entry.detail["attributes"] == ["email", "givenName", "userName"]


def test_a_failure_shared_by_a_run_is_one_entry() -> None:
    """The same verdict for every change of a run (parked together) is one entry counting them."""
    changes = [_change(1), _change(2)]
    parked = SetAside(True, "circuit_open", ScimRejected(None, "PATCH", "Users/{id}"), "acme", "k", "parked")
    [entry] = user_entries(changes, [parked, parked], (), lambda key: UserState(), 5.0)
    assert (entry.outcome, entry.reason, entry.detail["changes"]) == ("parked", "circuit_open", 2)


def test_set_aside_and_skipped_changes_of_a_known_tenant_are_entries_others_are_not() -> None:
    """Parked and dead-lettered changes carry their reason and error, the username from the stored state;
    a change of a realm no tenant knows makes no entry."""
    change = UserChange("acme", "u-1", "upsert", 1, "UPDATE")
    error = ScimRejected(400, "PATCH", "Users/{id}", detail="bad value")
    verdicts: list[SetAside | Skipped] = [
        SetAside(True, "circuit_open", error, "acme/hr", change.key, "parked"),
        SetAside(False, "rejected", error, "acme/hr", change.key, "rejected"),
        Skipped("acme/hr", "no_representation", "no_representation"),
        Skipped(None, "no_enabled_tenant", "skipped_no_tenant"),
    ]
    entries = [
        e
        for v in verdicts
        for e in user_entries([change], [v], (), lambda key: UserState(values={"userName": "alice"}), 5.0)
    ]
    assert [(e.downstream, e.outcome, e.reason, e.name) for e in entries] == [
        ("hr", "parked", "circuit_open", "alice"),
        ("hr", "dead_lettered", "rejected", "alice"),
        ("hr", "skipped", "no_representation", "alice"),
    ]
    assert "bad value" in entries[1].detail["error"]


def test_requests_are_recorded_only_inside_recording_bounded_and_without_the_credential() -> None:
    """Outside a recording nothing is kept; inside, at most SENT_KEPT requests, an answer echoing the
    credential has it redacted."""
    note_sent("GET", "/Users", 200, {"x": 1})
    with recording() as sent:
        note_sent("POST", "/Users", 401, {"detail": "token s3cret-token refused"}, "s3cret-token")
        for _ in range(SENT_KEPT + 5):
            note_sent("GET", "/Users", 200, None)
    assert len(sent) == SENT_KEPT
    assert sent[0] == SentRequest("POST", "/Users", 401, '{"detail":"token [redacted] refused"}')


async def test_a_bulk_request_records_each_operation_for_its_own_caller() -> None:
    """Operations coalesced into one POST /Bulk are each recorded in the record of the change that asked
    for it, not in that of whichever caller started the bulk request."""
    bulk = port(Scripted())

    async def create(i: int) -> list[SentRequest]:
        with recording() as sent:
            await bulk.create_user(DS, user(i))
        return sent

    records = await asyncio.gather(*(create(i) for i in range(3)))
    assert [[(s.method, s.path, s.status) for s in r] for r in records] == [
        [("POST", "/Users (in /Bulk)", 201)] for _ in range(3)
    ]


def test_the_breaker_observer_hears_each_transition_once() -> None:
    """open, half_open (the probe), open again (probe failed), half_open, closed; no repeat of a state."""
    heard: list[BreakerState] = []
    breaker = CircuitBreaker(threshold=2, observer=heard.append)
    breaker.failed(0.0)
    breaker.failed(0.0)
    breaker.failed(0.0)
    breaker.start_probe()
    breaker.failed(10.0)
    breaker.start_probe()
    breaker.succeeded()
    breaker.succeeded()
    assert heard == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


class Sink:
    def __init__(self) -> None:
        self.entries: list[ActivityEntry] = []

    def record(self, entry: ActivityEntry) -> None:
        self.entries.append(entry)


async def test_backfill_progress_is_reported_about_once_a_second_and_at_its_end() -> None:
    """A fast backfill of 300 users reports its first progress and its end, not an entry per user; the
    last entry is the final progress (done, every user counted)."""
    sink = Sink()
    backfills = Backfills(Realm(300, 100), ChangesProducer(), "changes", Metrics(), activity=sink)
    backfills.start("acme")
    await wait_until(_finished(backfills), timeout=5, what="the backfill done")
    assert [e.kind for e in sink.entries] == ["backfill"] * len(sink.entries)
    assert 2 <= len(sink.entries) <= 3
    assert (sink.entries[-1].outcome, sink.entries[-1].detail["done"]) == ("done", 300)


def _finished(backfills: Backfills) -> Any:
    async def check() -> bool:
        progress = backfills.get("acme")
        return progress is not None and progress.finished is not None

    return check


class Refusing:
    """A transport whose downstream is unreachable (every request a transient failure)."""

    async def send(self, request: Request) -> Any:
        raise ScimTransient(None, request.method, request.path, detail="down")


async def test_the_gate_reports_each_breaker_transition_with_its_tenant() -> None:
    """A tenant's breaker opening after `threshold` failures is heard once, with the tenant key."""
    heard: list[tuple[str, BreakerState]] = []
    gates = GatedTransport(Refusing(), Metrics(), breaker=CircuitBreaker(threshold=2), on_transition=_append(heard))
    ds = Downstream("acme/hr", "http://scim.invalid/v2", "t")
    for _ in range(3):
        with contextlib.suppress(ScimTransient):
            await gates.send(Request(ds, "GET", "Users"))
    assert heard == [("acme/hr", BreakerState.OPEN)]


def _append(heard: list[tuple[str, BreakerState]]) -> Any:
    return lambda key, state: heard.append((key, state))
