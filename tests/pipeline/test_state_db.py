"""StateDb on a real SQLite file: rows and checkpoints commit together, one file per process, bad files are replaced."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from structlog.testing import capture_logs

from service.pipeline.state_db import WAL_BYTES, StateDb

TOPIC = "outbound-scim.user-state"


def test_written_rows_and_checkpoints_survive_a_reopen(tmp_path: Path) -> None:
    """What was committed with a checkpoint is read back, value and partition, by the next process."""
    db = StateDb.open(tmp_path, TOPIC)
    db.put(b"acme/u1", 2, b'{"a":1}')
    db.commit({2: 17})
    db.close()
    again = StateDb.open(tmp_path, TOPIC)
    assert again.get(b"acme/u1") == (2, b'{"a":1}')
    assert again.checkpoint(2) == 17
    assert again.checkpoint(0) is None
    assert again.get(b"acme/none") is None
    again.close()


def test_a_write_is_visible_before_it_is_committed(tmp_path: Path) -> None:
    """The applier reads a user's state right after saving it, before the next flush commits it."""
    db = StateDb.open(tmp_path, TOPIC)
    db.put(b"acme/u1", 0, b"v1")
    db.put(b"acme/u1", 0, b"v2")
    assert db.get(b"acme/u1") == (0, b"v2")
    db.close()


def test_a_killed_process_leaves_no_checkpoint_ahead_of_its_data(tmp_path: Path) -> None:
    """Rows written after the last commit are lost with the process, and so is any newer checkpoint:
    the checkpoint on disk only ever covers rows on disk."""
    child = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from service.pipeline.state_db import WAL_BYTES, StateDb
        db = StateDb.open(Path({str(tmp_path)!r}), {TOPIC!r})
        db.put(b"acme/u1", 0, b"committed")
        db.commit({{0: 1}})
        db.put(b"acme/u2", 0, b"not committed")
        os._exit(9)
        """
    )
    subprocess.run([sys.executable, "-c", child], check=False)
    db = StateDb.open(tmp_path, TOPIC)
    assert db.checkpoint(0) == 1
    assert db.get(b"acme/u1") == (0, b"committed")
    assert db.get(b"acme/u2") is None
    db.close()


def test_restored_records_commit_with_their_checkpoint_and_tombstones_delete(tmp_path: Path) -> None:
    """A restore batch lands in one transaction with the offset after its last record; a None value deletes."""
    db = StateDb.open(tmp_path, TOPIC)
    db.put_records({1: ([(b"acme/u1", b"v1"), (b"acme/u2", b"v2")], 2), 2: ([(b"acme/u3", b"v3")], 1)})
    db.put_records({1: ([(b"acme/u1", None)], 3)})
    assert db.items(1) == [(b"acme/u2", b"v2")]
    assert (db.checkpoint(1), db.checkpoint(2)) == (3, 1)
    db.close()


def test_the_last_record_of_a_key_in_a_batch_wins(tmp_path: Path) -> None:
    """Records of one key in one batch apply in offset order, whatever their values sort like."""
    db = StateDb.open(tmp_path, TOPIC)
    db.put_records(
        {0: ([(b"acme/u1", b"newer:z"), (b"acme/u1", b"newest:a"), (b"acme/u2", b"v"), (b"acme/u2", None)], 4)}
    )
    assert db.items(0) == [(b"acme/u1", b"newest:a")]
    db.put_records({0: ([(b"acme/u2", None), (b"acme/u2", b"back")], 6)})
    assert db.items(0) == [(b"acme/u1", b"newest:a"), (b"acme/u2", b"back")]
    db.close()


def test_wipe_forgets_one_partition_only(tmp_path: Path) -> None:
    """A partition restored from scratch loses its rows and checkpoint; other partitions keep theirs."""
    db = StateDb.open(tmp_path, TOPIC)
    db.put_records({0: ([(b"acme/u0", b"v")], 1), 1: ([(b"acme/u1", b"v")], 1)})
    db.wipe(0)
    assert db.items(0) == []
    assert db.checkpoint(0) is None
    assert db.items(1) == [(b"acme/u1", b"v")]
    assert db.checkpoint(1) == 1
    db.close()


def test_count_tells_users_from_groups_in_the_given_partitions(tmp_path: Path) -> None:
    """The state gauge counts users and groups of the owned partitions from the index."""
    db = StateDb.open(tmp_path, TOPIC)
    db.put_records({0: ([(b"acme/u1", b"v"), (b"acme/u2", b"v"), (b"acme/group:g1", b"v")], 3)})
    db.put_records({1: ([(b"acme/u3", b"v")], 1)})
    assert db.count({0}) == (2, 1)
    assert db.count({0, 1}) == (3, 1)
    assert db.count(set()) == (0, 0)
    db.close()


def test_two_processes_never_share_a_file(tmp_path: Path) -> None:
    """A second open of the same directory and topic takes the next slot; a closed slot is taken again."""
    first = StateDb.open(tmp_path, TOPIC)
    second = StateDb.open(tmp_path, TOPIC)
    assert first.path != second.path
    path = first.path
    first.close()
    third = StateDb.open(tmp_path, TOPIC)
    assert third.path == path
    second.close()
    third.close()


def test_an_unreadable_file_is_replaced_by_an_empty_one(tmp_path: Path) -> None:
    """A file that is not a database is logged and deleted: the partitions restore from scratch."""
    StateDb.open(tmp_path, TOPIC).close()
    path = tmp_path / f"{TOPIC}.0.sqlite"
    path.write_bytes(b"this is not a database" * 1000)
    with capture_logs() as logs:
        db = StateDb.open(tmp_path, TOPIC)
    assert [e["event"] for e in logs] == ["state.store.unreadable"]
    assert db.checkpoint(0) is None
    db.put(b"acme/u1", 0, b"v")
    db.commit({0: 1})
    assert db.get(b"acme/u1") == (0, b"v")
    db.close()


def test_a_load_into_an_empty_file_keeps_the_last_record_of_each_key(tmp_path: Path) -> None:
    """Loaded without the key index, a key written in several batches (a changelog not yet compacted) or
    deleted ends as after upserts: its last record, or gone; the indexed file then takes upserts again."""
    db = StateDb.open(tmp_path, TOPIC)
    assert db.start_load() is True
    db.put_records({0: ([(b"acme/u1", b"old"), (b"acme/u2", b"v2")], 2)}, commit=False)
    db.put_records({0: ([(b"acme/u1", b"new"), (b"acme/u3", b"v3")], 4), 1: ([(b"acme/u4", b"v4")], 1)})
    db.put_records({0: ([(b"acme/u3", None)], 5)})
    db.finish_load()
    assert db.items(0) == [(b"acme/u1", b"new"), (b"acme/u2", b"v2")]
    assert db.get(b"acme/u4") == (1, b"v4")
    assert (db.checkpoint(0), db.checkpoint(1)) == (5, 1)
    db.put(b"acme/u1", 0, b"newest")
    db.commit()
    assert db.items(0) == [(b"acme/u1", b"newest"), (b"acme/u2", b"v2")]
    db.close()


def test_a_load_starts_only_in_an_empty_file(tmp_path: Path) -> None:
    """Rows of any partition (not wiped) keep the key index: their restore upserts."""
    db = StateDb.open(tmp_path, TOPIC)
    db.put_records({1: ([(b"acme/u1", b"v")], 1)})
    assert db.start_load() is False
    db.put_records({0: ([(b"acme/u1", b"again")], 1)})
    assert db.get(b"acme/u1") == (0, b"again")
    db.close()


def test_a_file_left_by_an_interrupted_load_is_rebuilt(tmp_path: Path) -> None:
    """A process killed during a load leaves a file without its key index: the next open logs it and
    starts empty, so every partition restores from scratch again."""
    child = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from service.pipeline.state_db import WAL_BYTES, StateDb
        db = StateDb.open(Path({str(tmp_path)!r}), {TOPIC!r})
        db.start_load()
        db.put_records({{0: ([(b"acme/u1", b"v")], 1)}})
        os._exit(9)
        """
    )
    subprocess.run([sys.executable, "-c", child], check=False)
    with capture_logs() as logs:
        db = StateDb.open(tmp_path, TOPIC)
    assert [e["event"] for e in logs] == ["state.store.unreadable"]
    assert db.checkpoint(0) is None
    assert db.get(b"acme/u1") is None
    db.close()


def test_a_file_of_the_previous_layout_is_rebuilt(tmp_path: Path) -> None:
    """Schema 1 (the key as the table's primary key) is not read: the file is replaced by an empty one."""
    old = sqlite3.connect(tmp_path / f"{TOPIC}.0.sqlite")
    old.execute(
        "CREATE TABLE state (key BLOB PRIMARY KEY, partition INTEGER NOT NULL, is_group INTEGER NOT NULL,"
        " value BLOB NOT NULL)"
    )
    old.execute("CREATE TABLE checkpoint (partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL)")
    old.execute("INSERT INTO state VALUES (?, 0, 0, ?)", (b"acme/u1", b"v"))
    old.execute("INSERT INTO checkpoint VALUES (0, 1)")
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    with capture_logs() as logs:
        db = StateDb.open(tmp_path, TOPIC)
    assert [e["event"] for e in logs] == ["state.store.unreadable"]
    assert db.checkpoint(0) is None
    assert db.get(b"acme/u1") is None
    db.close()


def _wal_frames(path: Path) -> int:
    """Frames in the WAL now (a PASSIVE checkpoint on a connection of its own reports them)."""
    probe = sqlite3.connect(path)
    try:
        return int(probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        probe.close()


def test_a_commit_never_checkpoints_the_wal_itself(tmp_path: Path) -> None:
    """The event loop's thread commits: the copy of the WAL into the file (which waits for the disk) is
    left to checkpoint_wal on a worker thread, however large the WAL grows."""
    db = StateDb.open(tmp_path, TOPIC)
    file_bytes = db.path.stat().st_size
    value = b"x" * 4000
    batch = 0
    while db.wal_bytes() < WAL_BYTES * 1.2:  # past any automatic checkpoint: SQLite's (1,000 pages) and ours
        for i in range(100):
            db.put(f"acme/u{batch}-{i}".encode(), 0, value)
        db.commit({0: batch})
        batch += 1
    assert db.path.stat().st_size == file_bytes, "rows were copied into the file by a commit"

    db.checkpoint_wal()
    assert db.path.stat().st_size > WAL_BYTES // 2, "the checkpoint copied the rows into the file"
    db.put(b"acme/next", 0, value)
    db.commit({0: batch})
    assert _wal_frames(db.path) < 10, "the write after a checkpoint starts the WAL over"
    assert db.get(f"acme/u{batch - 1}-99".encode()) == (0, value)
    db.close()
