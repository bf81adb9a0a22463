"""The per-instance SQLite file: one database per workflow instance.

Each file holds the instance row, its event history, the operation records the
executor replays from (steps, timers, recorded values, waits), and the signal
inbox. The file is the source of truth for the instance once it exists; the
index (``hot/index.py``) is a cache of it that can be rebuilt.

Files are created from an in-memory template image (schema already in place,
WAL mode set) written with ``O_EXCL``: half the cost of letting SQLite build
the schema, and ``O_EXCL`` makes "create if absent" atomic even across
processes. Spares (``hot/spares.py``) are such files made ahead of need; the
records read and written here are declared in ``hot/records.py``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tierflow.hot.errors import CorruptInstance, StorageError, WorkflowAlreadyFinished
from tierflow.hot.models import TERMINAL_STATUSES
from tierflow.hot.records import EventRow, InstanceState, OpRecord
from tierflow.hot.rows import (
    HISTORY,
    WORKFLOWS,
    Column,
    LogicalType,
    names,
    sqlite_columns,
    without,
)

__all__ = [
    "EVENT_COLUMNS",
    "INSTANCE_COLUMNS",
    "INSTANCE_FILE_SUFFIXES",
    "INSTANCE_STATE",
    "SCHEMA_VERSION",
    "IncompleteInstance",
    "InstanceFile",
    "delete_instance_file",
    "quarantine",
    "read_for_archive",
    "template_image",
]

SCHEMA_VERSION = 1

# An instance file and the two files SQLite keeps beside it in WAL mode.
INSTANCE_FILE_SUFFIXES = ("", "-wal", "-shm")

INSTANCE_STATE: tuple[Column, ...] = (
    Column(
        "wake_at",
        LogicalType.TIMESTAMP_US,
        "When a paused instance is due to run again (UTC, microseconds); null if not timed.",
        nullable=True,
    ),
    Column(
        "cancel_requested",
        LogicalType.INT64,
        "1 once cancellation was requested, else 0.",
        default=0,
    ),
    Column("cancel_reason", LogicalType.STRING, "Reason given with the request.", nullable=True),
)
"""Columns of the instance row only the hot tier keeps (the index caches the first two)."""

INSTANCE_COLUMNS: tuple[Column, ...] = (
    # duration_ms is derived when read; the tier is the index's to know.
    *without(WORKFLOWS, "duration_ms", "tier"),
    *INSTANCE_STATE,
)
"""The ``instance`` table's columns (after its ``id``), in table order."""

EVENT_COLUMNS: tuple[Column, ...] = without(
    # The instance row holds these once for every event.
    HISTORY,
    "workflow_id",
    "run_id",
    "workflow_type",
)
"""The ``events`` table's columns, in table order: ``event_id``, then :class:`EventRow`'s fields."""

_EVENT_NAMES = ",".join(names(EVENT_COLUMNS))
_SELECT_EVENTS = f"SELECT {_EVENT_NAMES} FROM events"
_READ_EVENTS_AFTER = f"{_SELECT_EVENTS} WHERE event_id > ? ORDER BY event_id"
_READ_ALL_EVENTS = f"{_SELECT_EVENTS} ORDER BY event_id"
# event_id is the table's rowid: an insert that leaves it NULL gets max(event_id) + 1.
_EVENT_ROW = f"(NULL,{','.join('?' * (len(EVENT_COLUMNS) - 1))})"
_PUT_OP = "INSERT OR REPLACE INTO operations VALUES (?,?,?,?,?,?,?,?)"
# Events per INSERT statement (well under SQLite's limit of bound parameters).
_EVENTS_PER_INSERT = 100


@functools.lru_cache(maxsize=_EVENTS_PER_INSERT)
def _insert_events_sql(n: int) -> str:
    return f"INSERT INTO events VALUES {','.join([_EVENT_ROW] * n)}"


_SCHEMA = f"""
CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT;
CREATE TABLE instance (
    id INTEGER PRIMARY KEY CHECK (id = 1),
{sqlite_columns(INSTANCE_COLUMNS)}
) STRICT;
CREATE TABLE events (
{sqlite_columns(EVENT_COLUMNS, primary_key="event_id")}
) STRICT;
-- WITHOUT ROWID: keyed by seq alone, so a commit that records an operation
-- writes one b-tree page, not a table page and an index page (a quarter of the
-- pages of a step's commit). Files made before this change keep a rowid table;
-- every statement reads and writes both alike.
CREATE TABLE operations (
    seq TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    wake_at INTEGER
) STRICT, WITHOUT ROWID;
CREATE TABLE inbox (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    payload TEXT,
    received_at INTEGER NOT NULL,
    consumed_seq TEXT
) STRICT;
CREATE INDEX inbox_pending ON inbox (name, id) WHERE consumed_seq IS NULL;
"""

# Connection ``synchronous`` level per durability; "off" only while a spare is
# being built, before the batch it belongs to is synced as a whole.
_SYNC = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}

_TEMPLATE_LOCK = threading.Lock()
_TEMPLATE: bytes | None = None


def template_image() -> bytes:
    """Return the bytes of an empty instance database in WAL mode (built once)."""
    global _TEMPLATE
    with _TEMPLATE_LOCK:
        if _TEMPLATE is None:
            conn = sqlite3.connect(":memory:", isolation_level=None)
            try:
                conn.executescript(_SCHEMA)
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                image = conn.serialize()
            finally:
                conn.close()
            # Bytes 18 and 19 of the header are the file-format read/write versions;
            # 2 means WAL, so the file opens in WAL mode without a header rewrite.
            image = image[:18] + b"\x02\x02" + image[20:]
            _TEMPLATE = bytes(image)
        return _TEMPLATE


class IncompleteInstance(StorageError):
    """The file exists but its first commit has not happened yet."""


_TERMINAL_SQL = ",".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES))


class InstanceFile:
    """An open instance database.

    Not thread-safe: one thread at a time uses an ``InstanceFile`` (the
    executor serialises its own writes; other callers open their own).

    Args:
        path: The database file.
        conn: An open connection configured by :meth:`open` or :meth:`create`.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, *, full: bool = True) -> None:
        self.path = path
        self.conn = conn
        self.deferred: tuple[dict[str, Any], list[EventRow]] | None = None
        self.closed = False
        # Durability "full": every commit is on disk before it is acknowledged.
        self.full = full
        # In split-sync mode (see use_split_sync) SQLite writes at NORMAL and the
        # caller makes each commit durable with sync().
        self.split_sync = False
        # True once the WAL's directory entry is known to be durable.
        self.wal_durable = False
        self._wal_fd: int | None = None
        self._fd_lock = threading.Lock()
        self.wal_path = Path(f"{path}-wal")

    # -- opening -------------------------------------------------------------

    @staticmethod
    def connect(path: Path, durability: str) -> sqlite3.Connection:
        """A connection to ``path`` at ``durability`` (``"off"`` only for a spare being built)."""
        # timeout= is SQLite's busy timeout, set without a statement.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        # FULL fsyncs the WAL on every commit; NORMAL only at checkpoints, which
        # survives a process crash but may lose the last commits on power loss.
        conn.execute(f"PRAGMA synchronous={_SYNC[durability]}")
        return conn

    @classmethod
    def open(
        cls, path: Path, *, durability: str = "full", allow_incomplete: bool = False
    ) -> InstanceFile:
        """Open an existing instance file and check that it is readable.

        Args:
            path: The file.
            durability: ``"full"`` or ``"normal"``.
            allow_incomplete: Accept a file whose first commit never happened
                (the caller sets :attr:`deferred` to complete it).

        Raises:
            FileNotFoundError: No such file.
            IncompleteInstance: Created, but its first commit has not happened.
            CorruptInstance: The file is not a readable tierflow instance.
        """
        if not path.exists():
            raise FileNotFoundError(path)
        try:
            conn = cls.connect(path, durability)
        except sqlite3.Error as exc:
            raise CorruptInstance(f"cannot open {path.name}: {exc}", url=str(path)) from exc
        try:
            version = conn.execute("SELECT version FROM schema_version").fetchone()
            if version is None or version[0] != SCHEMA_VERSION:
                raise CorruptInstance(
                    f"{path.name}: unsupported schema version {version}", url=str(path)
                )
            if (
                conn.execute("SELECT 1 FROM instance WHERE id=1").fetchone() is None
                and not allow_incomplete
            ):
                raise IncompleteInstance(f"{path.name}: not yet written", url=str(path))
        except sqlite3.Error as exc:
            conn.close()
            raise CorruptInstance(
                f"instance file {path.name} is unreadable: {exc}", url=str(path)
            ) from exc
        except StorageError:
            conn.close()
            raise
        inst = cls(path, conn, full=durability == "full")
        inst.wal_durable = Path(f"{path}-wal").exists()
        return inst

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL into the file).

        Keeping the WAL instead (``SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE``) was tried:
        it saved the checkpoint's two fsyncs, but every finished instance then
        kept three files (hot bytes per event ~1.6 kB -> ~10.7 kB) and tiering,
        which must read through a WAL, fell from ~2,600 to ~380 workflows/s.
        """
        self.closed = True
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        with self._fd_lock:
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None

    # -- durability ------------------------------------------------------------

    def made_durable(self, durability: str) -> None:
        """A spare's file, WAL and directory entry are on disk: set it up for ``durability``."""
        self.full = durability == "full"
        self.wal_durable = True
        if self.full:
            # Split sync (FULL's guarantee, see use_split_sync) set here, so the
            # executor's switch to it costs no statement on the loop.
            self.use_split_sync()
        else:
            self.conn.execute(f"PRAGMA synchronous={_SYNC[durability]}")

    def use_split_sync(self) -> None:
        """Separate writing a commit from making it durable (for the executor).

        With ``synchronous=FULL`` SQLite fsyncs the WAL inside ``COMMIT``, so
        whichever thread runs the SQL also waits for the disk. The executor
        instead runs a commit's SQL on the event loop at ``NORMAL`` (a few
        statements, ~60 µs, no thread hand-offs: on an I/O thread each
        statement had to win the GIL back from the loop, which made a commit
        take milliseconds under load) and then calls :meth:`sync` on an I/O
        thread before anything depends on the commit. That is exactly what
        ``FULL`` does in WAL mode: write the frames, then fdatasync the WAL.
        Commits made through :meth:`commit` with ``sync=True`` (the default)
        still sync inline, so other writers keep full durability.
        """
        if self.full and not self.split_sync:
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.split_sync = True

    def sync(self) -> None:
        """Make every commit so far durable (fdatasync of the WAL); thread-safe.

        A no-op unless :meth:`use_split_sync` is in effect.

        Raises:
            StorageError: The WAL cannot be opened or synced.
        """
        if not self.split_sync:
            return
        wal = self.wal_path
        try:
            with self._fd_lock:
                if self.closed:
                    return  # closing checkpointed the WAL (synced): nothing is pending
                if self._wal_fd is None:
                    self._wal_fd = os.open(wal, os.O_RDONLY)
                fd = self._wal_fd
                os.fdatasync(fd)
                if not self.wal_durable:
                    # SQLite's FULL syncs the directory after creating a WAL; so do we.
                    dfd = os.open(self.path.parent, os.O_RDONLY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
                    self.wal_durable = True
        except OSError as exc:
            raise StorageError(f"cannot sync {wal.name}: {exc}", url=str(wal)) from exc

    # -- reading -------------------------------------------------------------

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise StorageError(f"{self.path.name}: {exc}", url=str(self.path)) from exc
            raise CorruptInstance(
                f"instance file {self.path.name} is unreadable: {exc}", url=str(self.path)
            ) from exc

    def read_row(self) -> dict[str, Any]:
        """Return the instance row as a dict."""

        def go() -> dict[str, Any]:
            cur = self.conn.execute("SELECT * FROM instance WHERE id=1")
            names = [d[0] for d in cur.description]
            values = cur.fetchone()
            if values is None:
                raise sqlite3.DatabaseError("instance row missing")
            return dict(zip(names, values, strict=True))

        result: dict[str, Any] = self._guard(go)
        return result

    def load(self) -> InstanceState:
        """Read the instance row, every operation record and the last event id."""

        def go() -> InstanceState:
            self.conn.execute("BEGIN")
            try:
                row = self.read_row()
                ops = {
                    r[0]: OpRecord(*r)
                    for r in self.conn.execute(
                        "SELECT seq,kind,name,status,attempt,result,error,wake_at FROM operations"
                    )
                }
                last = self.conn.execute("SELECT max(event_id) FROM events").fetchone()[0]
            finally:
                self.conn.execute("COMMIT")
            return InstanceState(row=row, ops=ops, last_event_id=last or 0)

        state: InstanceState = self._guard(go)
        return state

    def read_events(self, after: int = 0, limit: int | None = None) -> list[tuple[Any, ...]]:
        """Return event rows: values of :data:`EVENT_COLUMNS`, in that order."""
        sql = _READ_EVENTS_AFTER
        params: tuple[Any, ...] = (after,)
        if limit is not None:
            sql += " LIMIT ?"
            params = (after, limit)
        rows: list[tuple[Any, ...]] = self._guard(lambda: self.conn.execute(sql, params).fetchall())
        return rows

    def pending_signals(self, name: str) -> list[tuple[int, str | None, int]]:
        """Return unconsumed signals of ``name`` as ``(id, payload, received_at)``, oldest first."""
        rows: list[tuple[int, str | None, int]] = self._guard(
            lambda: self.conn.execute(
                "SELECT id,payload,received_at FROM inbox WHERE name=? AND consumed_seq IS NULL "
                "ORDER BY id",
                (name,),
            ).fetchall()
        )
        return rows

    # -- writing -------------------------------------------------------------

    def _append_events(self, events: Sequence[EventRow]) -> int:
        """Append events with consecutive ids; return the last id (inside a transaction).

        SQLite numbers them (each NULL ``event_id`` becomes the largest so far plus
        one) and reports the last: no ``SELECT max(event_id)`` first, one statement
        fewer in every commit that writes events.
        """
        if not events:
            return int(
                self.conn.execute("SELECT coalesce(max(event_id), 0) FROM events").fetchone()[0]
            )
        last = 0
        for start in range(0, len(events), _EVENTS_PER_INSERT):
            chunk = events[start : start + _EVENTS_PER_INSERT]
            values = [
                v
                for ev in chunk
                for v in (ev.event_type, ev.event_time, ev.step_name, ev.attempt, ev.payload)
            ]
            cur = self.conn.execute(_insert_events_sql(len(chunk)), values)
            last = int(cur.lastrowid or 0)
        return last

    def commit(
        self,
        *,
        events: Sequence[EventRow] = (),
        ops: Sequence[OpRecord] = (),
        updates: dict[str, Any] | None = None,
        consume_signals: Sequence[tuple[int, str]] = (),
        add_signals: Sequence[tuple[str, str, int]] = (),
        allow_finished: bool = False,
        sync: bool = True,
    ) -> int:
        """Apply one state transition atomically; return the last event id.

        Args:
            events: Events to append, in order.
            ops: Operation records to insert or replace.
            updates: Columns of the instance row to set.
            consume_signals: ``(inbox id, seq)`` pairs to mark consumed.
            add_signals: ``(name, payload JSON, received_at)`` to append to the inbox.
            allow_finished: Permit writing to an instance that already reached
                a terminal status (only for records that do not change it).
            sync: In split-sync mode, make the commit durable before returning;
                with False the caller must call :meth:`sync` before relying on it.

        Raises:
            WorkflowAlreadyFinished: The instance is finished (e.g. terminated
                concurrently); nothing was written.
            CorruptInstance: The file is unreadable.
        """

        def go() -> int:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                to_append = events
                if self.deferred is not None:
                    # The first commit writes the row with this commit's updates
                    # folded in, and the first events with this commit's: two
                    # statements fewer than insert, update, and two appends.
                    row, first = self.deferred
                    row = {**row, **(updates or {})}
                    cols = ",".join(row)
                    conn.execute(
                        f"INSERT INTO instance (id,{cols}) VALUES (1,{','.join('?' * len(row))})",
                        tuple(row.values()),
                    )
                    to_append = [*first, *events]
                else:
                    sets = updates or {}
                    assignments = ",".join(f"{k}=?" for k in sets) or "id=id"
                    where = (
                        "id=1" if allow_finished else f"id=1 AND status NOT IN ({_TERMINAL_SQL})"
                    )
                    cur = conn.execute(
                        f"UPDATE instance SET {assignments} WHERE {where}", tuple(sets.values())
                    )
                    if cur.rowcount != 1:
                        status = conn.execute("SELECT status FROM instance").fetchone()
                        raise WorkflowAlreadyFinished(
                            f"instance has already finished ({status[0] if status else 'unknown'})",
                            status=status[0] if status else None,
                        )
                # One statement per record: executemany's own setup cost more
                # than a loop over the usual one or two records.
                for op in ops:
                    conn.execute(
                        _PUT_OP,
                        (
                            op.seq,
                            op.kind,
                            op.name,
                            op.status,
                            op.attempt,
                            op.result,
                            op.error,
                            op.wake_at,
                        ),
                    )
                if add_signals:
                    conn.executemany(
                        "INSERT INTO inbox (name,payload,received_at) VALUES (?,?,?)",
                        list(add_signals),
                    )
                if consume_signals:
                    conn.executemany(
                        "UPDATE inbox SET consumed_seq=? WHERE id=?",
                        [(seq, inbox_id) for inbox_id, seq in consume_signals],
                    )
                last = self._append_events(to_append)
                conn.execute("COMMIT")
                self.deferred = None
                return last
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        last: int = self._guard(go)
        if sync:
            self.sync()
        return last


def quarantine(path: Path, quarantine_dir: Path) -> Path:
    """Move a broken instance file (and its WAL/SHM) aside; return the new path."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = quarantine_dir / f"{path.name}.{stamp}.{os.getpid()}"
    for suffix in INSTANCE_FILE_SUFFIXES:
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(target) + suffix))
    return target


def read_for_archive(path: Path) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """Read a finished instance's row and every event, for tiering.

    A cleanly closed instance has no WAL, so it is opened ``immutable`` (no
    locks, no shared memory: several times faster). If a WAL is present (the
    process died before closing it), a normal connection reads it so no
    committed event is missed.

    Raises:
        FileNotFoundError: No such file.
        CorruptInstance: The file is unreadable.
    """
    if not path.exists():
        raise FileNotFoundError(path)
    wal = Path(str(path) + "-wal")
    has_wal = wal.exists() and wal.stat().st_size > 0
    uri = f"file:{path}?mode=ro" if has_wal else f"file:{path}?immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise CorruptInstance(f"cannot open {path.name}: {exc}", url=str(path)) from exc
    try:
        cur = conn.execute("SELECT * FROM instance WHERE id=1")
        names = [d[0] for d in cur.description]
        values = cur.fetchone()
        if values is None:
            raise CorruptInstance(f"{path.name}: no instance row", url=str(path))
        events = conn.execute(_READ_ALL_EVENTS).fetchall()
        return dict(zip(names, values, strict=True)), events
    except sqlite3.Error as exc:
        raise CorruptInstance(
            f"instance file {path.name} is unreadable: {exc}", url=str(path)
        ) from exc
    finally:
        conn.close()


def delete_instance_file(path: Path | str) -> None:
    """Remove an instance file and its WAL/SHM (missing files are fine).

    Plain ``os.unlink``: tiering calls this once per archived file.
    """
    base = str(path)
    for suffix in INSTANCE_FILE_SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(base + suffix)
