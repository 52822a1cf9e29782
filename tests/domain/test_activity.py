"""The activity book: what every replica folds the activity topic into (newest entries per downstream,
searchable by user; the tenants page's summary), bounded whatever the topic holds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.activity import (
    ANSWER_CHARS,
    SENT_KEPT,
    ActivityBook,
    ActivityEntry,
    SentRequest,
    changes_minute,
    decode_entries,
    decode_entry,
    encode_entries,
    encode_entry,
    matches_user,
)
from tests.properties import examples

NOW = 1_800_000_000.0
USERS = [("u-1", "Alice"), ("u-2", "alicia.b"), ("u-3", "BOB"), ("u-4", None)]

entries = st.builds(
    lambda time, kind, outcome, user, downstream, changes: ActivityEntry(
        time=time,
        realm="acme",
        downstream=downstream,
        kind=kind,
        outcome=outcome,
        subject=user[0] if kind in ("user", "sync", "group") else None,
        name=user[1] if kind in ("user", "sync", "group") else None,
        detail={"changes": changes} if changes > 1 else {},
    ),
    st.floats(NOW - 2 * 3600, NOW).map(lambda t: round(t, 1)),
    st.sampled_from(["user", "group", "circuit", "backfill", "reconcile", "sync"]),
    st.sampled_from(["created", "updated", "parked", "dead_lettered", "skipped", "open", "closed", "done"]),
    st.sampled_from(USERS),
    st.sampled_from(["default", "hr"]),
    st.integers(1, 4),
)


@settings(max_examples=examples(500), deadline=None)
@given(
    added=st.lists(entries, max_size=80),
    keep=st.integers(1, 30),
    limit=st.integers(0, 40),
    user=st.none() | st.sampled_from(["u-1", "U-2", "ali", "bob", "zed", "u-4"]),
)
def test_recent_is_newest_first_bounded_and_filtered_exactly(
    added: list[ActivityEntry], keep: int, limit: int, user: str | None
) -> None:
    """recent() holds the `keep` newest entries of the downstream (by time), newest first, at most `limit`;
    with `user`, exactly those of them about that user (id, or a part of the username, ignoring case)."""
    book = ActivityBook(keep)
    for entry in added:
        book.add(entry)
    shown = book.recent("acme", "default", user=user, limit=limit)
    ours = [e for e in added if e.downstream == "default"]
    kept_times = sorted((e.time for e in ours), reverse=True)[:keep]
    assert [e.time for e in shown] == sorted((e.time for e in shown), reverse=True)
    assert len(shown) <= min(limit, keep)
    assert all(e.downstream == "default" for e in shown)
    expected = [t for t, e in _newest(ours, keep) if user is None or matches_user(e, user)][:limit]
    assert [e.time for e in shown] == expected
    assert all(user is None or matches_user(e, user) for e in shown)
    assert len(_newest(ours, keep)) == len(kept_times)


def _newest(ours: list[ActivityEntry], keep: int) -> list[tuple[float, ActivityEntry]]:
    """The kept entries as the book orders them: by time, the later-added first among equal times."""
    ordered = sorted(enumerate(ours), key=lambda p: (p[1].time, p[0]), reverse=True)
    return [(e.time, e) for _, e in ordered[:keep]]


@settings(max_examples=examples(500), deadline=None)
@given(added=st.lists(entries, max_size=80), now=st.floats(NOW, NOW + 3 * 3600))
def test_changes_last_hour_counts_exactly_the_changes_within_the_hour(added: list[ActivityEntry], now: float) -> None:
    """changes_last_hour is the number of changes of the user and group entries (any outcome; an entry
    counts its detail `changes`, else 1) in the 60 minutes up to `now`, to the minute (the current minute
    included), whatever order they arrived in."""
    book = ActivityBook(5)
    for entry in added:
        book.add(entry)
    current = changes_minute(now)
    expected = sum(
        e.detail.get("changes", 1)
        for e in added
        if e.downstream == "default"
        and e.kind in ("user", "group")
        and current - 60 < changes_minute(e.time) <= current
    )
    assert book.summary("acme", "default", now).changes_last_hour == expected


def _entry(time: float, kind: str, outcome: str, **extra: object) -> ActivityEntry:
    return ActivityEntry(time=time, realm="acme", downstream="default", kind=kind, outcome=outcome, **extra)  # type: ignore[arg-type]


def test_summary_holds_the_latest_of_each_kind() -> None:
    """Last success (a change the downstream took), last failure (parked or dead-lettered), the newest
    circuit transition, backfill progress and drift counts (with their time), whatever the arrival order."""
    book = ActivityBook(10)
    for entry in (
        _entry(NOW - 50, "user", "created"),
        _entry(NOW - 40, "user", "parked", reason="circuit_open"),
        _entry(NOW - 30, "circuit", "closed"),
        _entry(NOW - 35, "circuit", "open"),
        _entry(NOW - 20, "backfill", "running", detail={"done": 5}),
        _entry(NOW - 10, "backfill", "done", detail={"done": 9}),
        _entry(NOW - 15, "user", "skipped", reason="no_representation"),
        _entry(NOW - 5, "reconcile", "drift", detail={"missing": 2}),
    ):
        book.add(entry)
    summary = book.summary("acme", "default", NOW)
    assert summary.last_success == NOW - 50
    assert summary.last_failure is not None and summary.last_failure.reason == "circuit_open"
    assert summary.circuit == "closed"
    assert summary.backfill == {"done": 9}
    assert summary.drift == {"missing": 2, "time": NOW - 5}
    assert summary.changes_last_hour == 3
    assert book.summary("acme", "other", NOW).changes_last_hour == 0


def test_the_last_enable_rotation_or_disable_is_kept_and_its_downstream_listed() -> None:
    """A disabled downstream stays known to the book (the console lists it as disabled), with the newest of
    its tenant entries whatever the arrival order; it does not count as a change."""
    book = ActivityBook(10)
    book.add(_entry(NOW - 10, "tenant", "disabled"))
    book.add(_entry(NOW - 30, "tenant", "enabled"))
    book.add(ActivityEntry(NOW - 5, "beta", "crm", "user", "created"))
    summary = book.summary("acme", "default", NOW)
    assert summary.tenant is not None and summary.tenant.outcome == "disabled"
    assert summary.changes_last_hour == 0 and summary.last_success is None
    assert book.downstreams() == [("acme", "default"), ("beta", "crm")]


def test_the_number_of_downstreams_is_bounded() -> None:
    """Past `downstreams`, the downstream heard of longest ago is forgotten."""
    book = ActivityBook(3, downstreams=2)
    for name in ("a", "b", "a", "c"):
        book.add(ActivityEntry(NOW, "acme", name, "user", "created"))
    assert [bool(book.recent("acme", n)) for n in ("a", "b", "c")] == [True, False, True]


def test_an_entry_round_trips_bounded() -> None:
    """What the topic holds reads back as written, with at most SENT_KEPT requests and answers cut."""
    sent = tuple(SentRequest("POST", "/Users", 201, "x" * 1000) for _ in range(SENT_KEPT + 5))
    entry = _entry(NOW, "user", "created", subject="u-1", name="alice", action="create", sent=sent, detail={"a": 1})
    back = decode_entry(encode_entry(entry))
    assert decode_entries(encode_entries([entry, entry])) == [back, back]
    assert len(back.sent) == SENT_KEPT and len(back.sent[0].answer) == ANSWER_CHARS
    assert (back.subject, back.name, back.action, back.detail, back.sent[0].status) == (
        "u-1",
        "alice",
        "create",
        {"a": 1},
        201,
    )


def test_junk_on_the_topic_is_refused() -> None:
    """A record that is not an entry raises ValueError (the follower skips it)."""
    for raw in (
        b"[]",
        b'{"kind": "user"}',
        b'{"kind": "x", "time": 1}',
        b'{"kind":"user","time":1,"realm":"a","downstream":"d","outcome":"o","sent":[[1]]}',
    ):
        try:
            decode_entry(raw)
        except ValueError:
            continue
        raise AssertionError(raw)
