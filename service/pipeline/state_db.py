"""The on-disk copy of the state changelog: one SQLite file per process and changelog topic.

A row holds a key's newest state record as the changelog carries it (raw bytes, decoded only when read)
and the changelog partition it belongs to. A checkpoint per partition holds the changelog offset the
rows reflect: every record below it is in the rows. Rows and checkpoints change in one transaction,
so a process killed mid-write leaves a checkpoint that is never ahead of the data.

Two processes (replicas on one host, or two services in one test) never share a file: each takes the
first free slot (`<topic>.<n>.sqlite`) under an exclusive lock it holds until it closes the file. A file
that does not open as this schema is deleted and made again: the changelog has everything it held.

A restore into an empty file (a new pod) is a bulk load: rows are appended without indexes, which are
built at the end (one sort of the keys instead of a random insert into the key index per record), and
without a journal or waits for the disk (a row is written once, not to the WAL and then the file). The
file is marked as loading first, durably: a process or host that dies during the load leaves a file
that the next open rebuilds, so nothing written without a journal is ever read.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import IO

import structlog

from service.domain.groups import GROUP_KEY_MARK

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 2  # 1: the key was the table's primary key (such a file is rebuilt)
LOADING_VERSION = 1_000 + SCHEMA_VERSION  # a bulk load is under way: not usable
MAX_SLOTS = 64
PAGE_SIZE = 16_384  # for a new file: a fifth less CPU per restored record than SQLite's 4 KB
WAL_BYTES = 64 * 1024 * 1024  # between checkpoints (each one waits for the disk, off the event loop)
CACHE_KB = 16_384  # SQLite's page cache: the key index of a million users stays mostly in memory
_GROUP_MARK = GROUP_KEY_MARK.encode()
_KEY_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS state_key ON state (key)"
_PARTITION_INDEX = "CREATE INDEX IF NOT EXISTS state_partition ON state (partition, is_group)"
_SCHEMA = (
    # value NULL: a deleted key, only while a bulk load runs
    "CREATE TABLE IF NOT EXISTS state ("
    " key BLOB NOT NULL, partition INTEGER NOT NULL, is_group INTEGER NOT NULL, value BLOB)",
    _KEY_INDEX,
    _PARTITION_INDEX,
    "CREATE TABLE IF NOT EXISTS checkpoint (partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL)",
)
_UPSERT = (
    "INSERT INTO state (key, partition, is_group, value) VALUES {values} "
    "ON CONFLICT (key) DO UPDATE SET partition = excluded.partition, is_group = excluded.is_group, "
    "value = excluded.value"
)
_UPSERT_ONE = _UPSERT.format(values="(?, ?, ?, ?)")
_APPEND = "INSERT INTO state (key, partition, is_group, value) VALUES {values}"
# sqlite3 binds int, str and bytearray parameters as they are, and sends every other type, bytes and bool
# included, through its adapter registry first (a key tuple, a dict miss, two attribute lookups): about
# 3,000 instructions per parameter, more than SQLite's own insert of the row. So rows are bound as
# (bytearray key, int, int, bytearray value): the copies cost less than the lookups.
Row = tuple[bytearray, int, int, bytearray | None]
# most rows per restore statement; fewer go in power-of-two pieces, so sqlite3's cache of prepared
# statements holds a few sizes (one prepared statement per size seen: a 1,024-row one takes about 1 MB)
ROWS_PER_STATEMENT = 1_024


class StateDb:
    """Raw state records by key, with the changelog checkpoint of each partition.

    Writes join one open transaction; `commit` ends it together with the checkpoints. A lock serializes
    callers, so a restore may write from a worker thread while the event loop reads."""

    def __init__(self, path: Path, lock: IO[bytes]) -> None:
        self.path = path
        self._lock_file = lock
        self._lock = threading.Lock()
        self._db = _connect(path)
        self._open = False
        self._loading = False
        self._loaded_deletes = False

    @classmethod
    def open(cls, directory: Path, topic: str) -> StateDb:
        """The first file of `topic` under `directory` that no other process holds, made if needed."""
        directory.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", topic)
        for slot in range(MAX_SLOTS):
            lock = (directory / f"{stem}.{slot}.lock").open("ab")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            path = directory / f"{stem}.{slot}.sqlite"
            try:
                return cls(path, lock)
            except sqlite3.DatabaseError as exc:
                log.warning("state.store.unreadable", path=str(path), error=str(exc))
                remove_files(path)
                return cls(path, lock)
        raise RuntimeError(f"all {MAX_SLOTS} state files of {topic} under {directory} are held by other processes")

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._db.execute("COMMIT")
                self._open = False
            self._db.close()
        self._lock_file.close()

    def reset(self) -> None:
        """Delete the file and start empty (it could not be read): every partition restores from scratch."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            remove_files(self.path)
            self._db = _connect(self.path)
            self._open = False
            self._loading = False

    # -- reads --------------------------------------------------------------------------------------

    def get(self, key: bytes) -> tuple[int, bytes] | None:
        """(partition, raw state) of `key`, or None."""
        with self._lock:
            row = self._db.execute("SELECT partition, value FROM state WHERE key = ?", (bytearray(key),)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def checkpoint(self, partition: int) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT next_offset FROM checkpoint WHERE partition = ?", (partition,)).fetchone()
        return None if row is None else int(row[0])

    def count(self, partitions: Collection[int]) -> tuple[int, int]:
        """(users, groups) committed for `partitions`, read from the index on a connection of its own (WAL
        readers do not wait for the writer): a million rows take a few hundred ms, so call it from a
        worker thread, one at a time."""
        if not partitions:
            return 0, 0
        marks = ",".join("?" * len(partitions))
        reader = sqlite3.connect(self.path, check_same_thread=False)
        try:
            rows = reader.execute(
                f"SELECT is_group, count(*) FROM state WHERE partition IN ({marks}) GROUP BY is_group",  # noqa: S608
                tuple(partitions),
            ).fetchall()
        finally:
            reader.close()
        counts = dict(rows)
        return int(counts.get(0, 0)), int(counts.get(1, 0))

    def wal_bytes(self) -> int:
        """The size of the write-ahead log: what the next checkpoint copies into the file."""
        try:
            return os.path.getsize(f"{self.path}-wal")
        except FileNotFoundError:
            return 0

    def checkpoint_wal(self) -> None:
        """Copy the committed WAL into the file, on a connection of its own and without waiting for the
        writer (PASSIVE): it waits for the disk, so call it from a worker thread, one at a time. The next
        write after it starts the WAL over."""
        checkpointer = sqlite3.connect(self.path, check_same_thread=False)
        try:
            checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            checkpointer.close()

    def items(self, partition: int) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of `partition`, in key order (for tests and tools: it reads them all)."""
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM state WHERE partition = ? ORDER BY key", (partition,))
            return [(bytes(k), bytes(v)) for k, v in rows.fetchall()]

    # -- writes -------------------------------------------------------------------------------------

    def put(self, key: bytes, partition: int, value: bytes) -> None:
        """One key's new state, in the open transaction (visible to `get` at once, durable at `commit`)."""
        with self._lock:
            self._begin()
            self._db.execute(_UPSERT_ONE, _row(key, partition, value))

    def put_records(
        self, batches: Mapping[int, tuple[list[tuple[bytes, bytes | None]], int]], *, commit: bool = True
    ) -> None:
        """Changelog records per partition (a None value deletes the key), each partition's written with
        its checkpoint (the offset after its last record) in the same transaction; committed unless
        `commit` is False (then a later call or `commit` does: fewer, larger transactions write each
        touched index page once for more records)."""
        with self._lock:
            self._begin()
            if self._loading:  # appended, deletes as NULL rows: `finish_load` keeps each key's last row
                count = sum(len(records) for records, _ in batches.values())
                rows = ((k, p, v) for p, (records, _) in batches.items() for k, v in records)
                self._write_rows(_APPEND, rows, count)
                self._loaded_deletes = self._loaded_deletes or any(
                    v is None for records, _ in batches.values() for _, v in records
                )
            else:
                latest: dict[bytes, tuple[int, bytes | None]] = {}
                for partition, (records, _) in batches.items():
                    for key, value in records:  # in offset order: a later record of a key replaces an earlier one
                        latest[key] = (partition, value)
                # in key order, so neighbouring keys share index pages; one row per key, so the order is free
                upserts = [(k, p, v) for k, (p, v) in sorted(latest.items()) if v is not None]
                self._write_rows(_UPSERT, iter(upserts), len(upserts))
                deletes = [(bytearray(k),) for k, (_, v) in latest.items() if v is None]
                self._db.executemany("DELETE FROM state WHERE key = ?", deletes)
            self._set_checkpoints({partition: next_offset for partition, (_, next_offset) in batches.items()})
            if commit:
                self._commit()

    def start_load(self) -> bool:
        """Start a bulk load if no row is held (a new file, or every partition wiped); False otherwise.
        Until `finish_load` only `put_records` and `commit` may write; if the load fails, `reset` the file
        (without a journal, a failed transaction cannot be rolled back)."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM state LIMIT 1").fetchone() is not None:
                return False
            self._db.execute("PRAGMA synchronous = FULL")  # the mark is on disk before any unjournaled write
            self._begin()
            self._db.execute("DROP INDEX state_key")
            self._db.execute("DROP INDEX state_partition")
            self._db.execute(f"PRAGMA user_version = {LOADING_VERSION}")
            self._commit()
            # leaving WAL needs the only connection; when another reader holds the file the load keeps the
            # WAL (slower, as safe)
            self._db.execute("PRAGMA journal_mode = OFF")
            self._db.execute("PRAGMA synchronous = OFF")
            self._loading, self._loaded_deletes = True, False
            return True

    def finish_load(self) -> None:
        """Put the loaded rows on disk, back to WAL; then in one transaction: keep each key's last loaded
        row, drop deleted keys, build the indexes, and clear the loading mark."""
        with self._lock:
            self._commit()
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)  # every unjournaled write, before the transaction that clears the mark
            finally:
                os.close(fd)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._begin()
            try:
                self._db.execute(_KEY_INDEX)
            except sqlite3.IntegrityError:  # a key loaded more than once (a changelog not yet compacted)
                self._db.execute("DELETE FROM state WHERE rowid NOT IN (SELECT max(rowid) FROM state GROUP BY key)")
                self._db.execute(_KEY_INDEX)
            if self._loaded_deletes:
                self._db.execute("DELETE FROM state WHERE value IS NULL")
            self._db.execute(_PARTITION_INDEX)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._commit()
            self._loading = False

    def commit(self, checkpoints: Mapping[int, int] | None = None) -> None:
        """Make the open transaction's writes durable, with the new `checkpoints` (partition -> next offset)."""
        with self._lock:
            if checkpoints:
                self._begin()
                self._set_checkpoints(checkpoints)
            self._commit()

    def wipe(self, partition: int) -> None:
        """Forget `partition`'s rows and checkpoint (they cannot be continued: restore from scratch)."""
        with self._lock:
            self._begin()
            self._db.execute("DELETE FROM state WHERE partition = ?", (partition,))
            self._db.execute("DELETE FROM checkpoint WHERE partition = ?", (partition,))
            self._commit()

    def _begin(self) -> None:
        if not self._open:
            self._db.execute("BEGIN")
            self._open = True

    def _commit(self) -> None:
        if self._open:
            self._db.execute("COMMIT")
            self._open = False

    def _write_rows(self, statement: str, rows: Iterator[tuple[bytes, int, bytes | None]], count: int) -> None:
        """The next `count` (key, partition, value) of `rows`, bound as `Row`s (converted a statement at a
        time, so the copies of a batch are never all held), many rows per statement: sqlite3 releases the
        GIL while a statement runs and takes it back after it (`executemany`: after each row), so a
        restore's writer thread that wrote row by row waited for the busy event loop's thread before each
        row."""
        left = count
        while left:
            size = min(ROWS_PER_STATEMENT, 1 << (left.bit_length() - 1))
            params: list[object] = []
            for key, partition, value in itertools.islice(rows, size):
                params += _row(key, partition, value)
            self._db.execute(statement.format(values=",".join(("(?,?,?,?)",) * size)), params)
            left -= size

    def _set_checkpoints(self, checkpoints: Mapping[int, int]) -> None:
        self._db.executemany(
            "INSERT INTO checkpoint (partition, next_offset) VALUES (?, ?) "
            "ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset",
            list(checkpoints.items()),
        )


def _row(key: bytes, partition: int, value: bytes | None) -> Row:
    """A state row as bound (see `Row`). `find`, not `in`: bytes' `in` first tries the mark as an int and
    raises and clears a TypeError, which costs more than the search."""
    is_group = 1 if key.find(_GROUP_MARK) >= 0 else 0
    return bytearray(key), partition, is_group, None if value is None else bytearray(value)


def _connect(path: Path) -> sqlite3.Connection:
    """Open (or make) the file and check it is ours. WAL with synchronous=NORMAL: a commit does not wait
    for the disk, and a crash loses at most the last commits, never consistency (the changelog has them)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # before WAL: the page size of a WAL file is fixed
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        # no checkpoint inside a commit (the event loop's thread commits): `checkpoint_wal` runs them on a
        # worker thread; the WAL is cut back after each
        db.execute("PRAGMA wal_autocheckpoint = 0")
        db.execute(f"PRAGMA journal_size_limit = {WAL_BYTES}")
        db.execute(f"PRAGMA cache_size = -{CACHE_KB}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == LOADING_VERSION:
            raise sqlite3.DatabaseError("a restore into this file was interrupted")
        if version not in (0, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"schema version {version}, expected {SCHEMA_VERSION}")
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("SELECT count(*) FROM checkpoint").fetchone()
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


def remove_files(path: Path) -> None:
    """The database file and its WAL companions."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")
