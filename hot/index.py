"""The instance index: one SQLite database listing every hot instance.

The scheduler and ``list`` read only this database, never instance files. It
holds two kinds of facts:

* **Queued instances** (``start`` has returned but no instance file exists
  yet): the index is their only record, so these inserts are on disk before
  ``start`` returns (committed, then the WAL fdatasync'd, as ``FULL`` would).
* **Everything else** (status, timestamps, wake-up time, lease) is a cache of
  the instance files. Those commits use ``synchronous=NORMAL``: they survive a
  process crash, and if power loss drops the last few, start-up reconciliation
  (``hot/scheduler.py``) rebuilds them from the files.

All access happens on the event-loop thread, on one connection. A NORMAL
commit of one row costs tens of microseconds, less than handing the work to a
thread and waking the loop again when it is done; only a durable ``start``
pays an fsync (~0.3 ms) on the loop.

Why one module of this size: every statement that reads or writes the index's
``instances`` and ``attributes`` tables is here, next to the schema and the SQLite
indexes those statements rely on, so a new query is written where it can be checked
against them. The tables other packages keep in this database (ledgers, compliance)
live with their owners and reach it through :meth:`IndexDB.write_now` and
:meth:`IndexDB.ensure_schema`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType
from typing import Any

from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.hot.models import TERMINAL_STATUSES, Status
from tierflow.hot.rows import WORKFLOWS, Column, LogicalType, names, pick, sqlite_columns
from tierflow.hot.store import INSTANCE_STATE
from tierflow.hot.where import Where

log = logging.getLogger("tierflow.index")

__all__ = ["INDEX_COLUMNS", "INDEX_ONLY", "IndexDB", "IndexRow", "attribute_value"]

INDEX_ONLY: tuple[Column, ...] = (
    Column(
        "lease_owner",
        LogicalType.STRING,
        "Owner id of the engine running the instance; null when none is.",
        nullable=True,
    ),
    Column(
        "lease_expires",
        LogicalType.TIMESTAMP_US,
        "When the lease runs out (UTC, microseconds); not written yet.",
        nullable=True,
    ),
    Column(
        "recovery_count",
        LogicalType.INT64,
        "Times an engine took the instance over from one that died.",
        default=0,
    ),
    Column(
        "file",
        LogicalType.STRING,
        "Instance file, relative to the instances directory; null while queued.",
        nullable=True,
    ),
    Column(
        "events_upto",
        LogicalType.INT64,
        "Last event id the instance file holds, as of its last commit seen here.",
        nullable=True,
    ),
    Column(
        "batch_id",
        LogicalType.STRING,
        "Tiering batch that moved the instance out of the hot tier.",
        nullable=True,
    ),
)
"""Columns only the index keeps."""

# The index caches most of the instance row (not ``result``: the file has it),
# and the layout of index files already on disk fixes the order.
_INSTANCES: tuple[Column, ...] = pick(
    (*WORKFLOWS, *INSTANCE_STATE, *INDEX_ONLY),
    "workflow_id",
    "run_id",
    "workflow_type",
    "status",
    "parent_workflow_id",
    "input",
    "attributes",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "step_count",
    "wake_at",
    "lease_owner",
    "lease_expires",
    "recovery_count",
    "cancel_requested",
    "tier",
    "file",
    "events_upto",
    "batch_id",
)

INDEX_COLUMNS: tuple[str, ...] = names(_INSTANCES)
"""Columns of the ``instances`` table, in table order (and :class:`IndexRow`'s)."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS instances (
{sqlite_columns(_INSTANCES, primary_key="workflow_id")}
) STRICT;
CREATE INDEX IF NOT EXISTS instances_tier ON instances (tier, status, finished_at);
CREATE INDEX IF NOT EXISTS instances_file ON instances (file) WHERE file IS NOT NULL;
CREATE INDEX IF NOT EXISTS instances_batch ON instances (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS instances_status_wake ON instances (status, wake_at);
CREATE INDEX IF NOT EXISTS instances_created ON instances (created_at, workflow_id);
CREATE INDEX IF NOT EXISTS instances_type ON instances (workflow_type, created_at);
CREATE INDEX IF NOT EXISTS instances_parent ON instances (parent_workflow_id)
    WHERE parent_workflow_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS attributes (
    workflow_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value ANY,
    PRIMARY KEY (workflow_id, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attributes_kv ON attributes (key, value);
-- Event-stream delivery: per subscriber and instance, the last acknowledged event.
CREATE TABLE IF NOT EXISTS stream_cursors (
    subscriber TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    upto INTEGER NOT NULL,
    PRIMARY KEY (subscriber, workflow_id)
) STRICT, WITHOUT ROWID;
-- Instances being erased (hot/erasing.py): reads by id and list treat them as gone,
-- and no tiering pass selects them, while their erasure runs.
CREATE TABLE IF NOT EXISTS erasing (workflow_id TEXT PRIMARY KEY) STRICT, WITHOUT ROWID;
"""

_NOT_ERASING = "workflow_id NOT IN (SELECT workflow_id FROM erasing)"


@dataclass(frozen=True)
class IndexRow:
    """One instance as the index knows it (timestamps in µs since the epoch)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    parent_workflow_id: str | None
    input: str | None
    attributes: str
    error: str | None
    created_at: int
    started_at: int | None
    finished_at: int | None
    step_count: int
    wake_at: int | None
    lease_owner: str | None
    lease_expires: int | None
    recovery_count: int
    cancel_requested: int
    tier: str
    file: str | None
    events_upto: int | None
    batch_id: str | None


_SELECT = f"SELECT {','.join(INDEX_COLUMNS)} FROM instances"


class IndexDB:
    """The index database. Use from the event-loop thread only.

    Args:
        path: The index file.
        durability: ``"full"`` or ``"normal"``; applies to the durable writes.
    """

    def __init__(self, path: Path, durability: str = "full") -> None:
        self.path = path
        self.durability = durability
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=10000")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # Erasure must leave no byte of a deleted row behind: SQLite otherwise keeps
            # deleted cells in free pages and freeblocks (the WAL is truncated after it).
            self._conn.execute("PRAGMA secure_delete=ON")
            self._conn.executescript(_SCHEMA)
            if self._conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
                self._conn.execute("INSERT INTO schema_version VALUES (1)")
        except sqlite3.Error as exc:
            raise StorageError(
                f"cannot open the instance index {path}: {exc}", url=str(path)
            ) from exc
        # The bell (see ring_after_commit): written, never read; one byte at offset 0.
        self.bell_path = Path(f"{path}-bell")
        self._bell_fd = os.open(self.bell_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._ring = False
        self.wal_path = Path(f"{path}-wal")
        self._wal_fd: int | None = None  # opened by the first durable write

    def ring_after_commit(self) -> None:
        """Inside a write: ring the bell (:attr:`bell_path`) once this transaction commits.

        Other processes watch the bell, not the index's WAL (``hot/wakeup.py``):
        a ring means "a change for you is committed and visible", so this
        process's own commits, which no other process needs to hear of, wake
        nobody (each woke every process's watcher and its event loop: about a
        sixth of the CPU of a workflow under load).
        """
        self._ring = True

    def _ring_bell(self) -> None:
        self._ring = False
        try:
            os.pwrite(self._bell_fd, b"\0", 0)  # the write is the signal (inotify IN_MODIFY)
        except OSError as exc:
            # The commit stands; other processes still find the change at their
            # periodic check (a fraction of a second), so this is not an error.
            log.warning("cannot ring %s: %s", self.bell_path, exc)

    def write_now(self, fn: Callable[[sqlite3.Connection], Any], *, durable: bool = False) -> Any:
        """Run ``fn`` in one transaction and commit it (on disk before returning if ``durable``).

        A durable write commits at ``synchronous=NORMAL`` and then fdatasyncs the WAL
        (:meth:`_sync_wal`): what ``FULL`` does in WAL mode, without the two ``PRAGMA``
        statements that switching to ``FULL`` and back cost on the event loop (each
        statement gives up the GIL and must win it back from the I/O threads: ``start``
        p50 under load fell by a fifth without them). The bell rings after
        the sync, so other processes hear of a queued instance once it is on disk.
        Unlike ``FULL``, the commit is visible to other connections a moment before it
        is synced; a process that acts on it in that moment writes an instance file,
        and start-up reconciliation brings that file back into the index if a power
        cut loses the row.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                self._ring = False
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"instance index write failed: {exc}", url=str(self.path)) from exc
        try:
            if durable and self.durability == "full":
                self._sync_wal()
        finally:
            # The commit is visible either way: other processes may act on it.
            if self._ring:
                self._ring_bell()
        return result

    def _sync_wal(self) -> None:
        """Make every commit so far durable: fdatasync the index's WAL.

        The descriptor is opened once and kept: SQLite removes a WAL only when its last
        connection closes (or the journal mode changes, which tierflow never does), and
        this connection stays open as long as the descriptor. The first time, the
        directory is synced too, as ``FULL`` does after creating a WAL.

        Raises:
            StorageError: The WAL cannot be opened or synced (the commit is visible but
                may not survive a power cut).
        """
        try:
            if self._wal_fd is None:
                fd = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    dfd = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
                except BaseException:
                    os.close(fd)
                    raise
                self._wal_fd = fd
            os.fdatasync(self._wal_fd)
        except OSError as exc:
            raise StorageError(
                f"cannot sync the instance index's WAL: {exc}", url=str(self.wal_path)
            ) from exc

    async def write(self, fn: Callable[[sqlite3.Connection], Any], *, durable: bool = False) -> Any:
        """Async spelling of :meth:`write_now` (the write itself is synchronous)."""
        return self.write_now(fn, durable=durable)

    def close(self) -> None:
        """Close the connection, the bell and the WAL's descriptor."""
        self._conn.close()
        os.close(self._bell_fd)
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None

    # -- the public query/transaction API for the layers above ----------------------
    # In the spirit of Datasette's ``Database.execute`` / ``execute_write_fn``:
    # other layers keep their own tables here (the tiering ledger, so that moving
    # a batch and committing it is one transaction) and read through these.

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only statement and return all its rows.

        Raises:
            StorageError: SQLite failed (the message names the index file).
        """
        return self._read(sql, params)

    def read_consistent(
        self, queries: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[tuple[Any, ...]]]:
        """Run several read-only statements in one read transaction and return their rows.

        Every statement sees the same committed state of the index (one WAL
        snapshot), however other processes commit meanwhile: what SQL across
        tiers needs to learn the tier map, the warm batches and the cold
        commits as of one instant.

        Raises:
            StorageError: SQLite failed (the message names the index file).
        """
        conn = self._conn
        try:
            conn.execute("BEGIN")
            try:
                return [conn.execute(sql, params).fetchall() for sql, params in queries]
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StorageError(f"instance index read failed: {exc}", url=str(self.path)) from exc

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes when another connection commits.

        Reads a counter in the WAL's shared memory (~1 µs): the cheap check a
        process polls to learn that another process changed the index.
        """
        try:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise StorageError(f"instance index read failed: {exc}", url=str(self.path)) from exc

    def checkpoint(self) -> bool:
        """Copy the WAL into the database file and truncate the WAL to zero bytes.

        Returns:
            True when a reader or writer of another connection kept it from
            completing (the WAL then stays as it was; try again later).

        Raises:
            StorageError: SQLite failed.
        """
        try:
            busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(
                f"instance index checkpoint failed: {exc}", url=str(self.path)
            ) from exc
        return bool(busy)

    def ensure_schema(self, ddl: str) -> None:
        """Create tables and indexes another layer keeps here (idempotent DDL).

        Each caller runs it when it starts, so a schema change lost to a power
        cut is simply made again.

        Raises:
            StorageError: SQLite failed.
        """
        try:
            self._conn.executescript(ddl)  # its own transaction(s)
        except sqlite3.Error as exc:
            raise StorageError(f"instance index schema failed: {exc}", url=str(self.path)) from exc

    @staticmethod
    def move_to_tier(
        conn: sqlite3.Connection,
        workflow_ids: Sequence[str],
        *,
        from_tier: str,
        to_tier: str,
        batch_id: str | None,
    ) -> int:
        """Inside a write transaction: move finished instances between tiers.

        Only instances that are finished and in ``from_tier`` move; the rest
        are left alone. Returns how many moved.
        """
        finished = sorted(TERMINAL_STATUSES)
        moved = 0
        for i in range(0, len(workflow_ids), 500):
            chunk = list(workflow_ids[i : i + 500])
            # The unary plus keeps tier and status out of the plan: SQLite would
            # otherwise search instances_tier for (tier, status) and check every
            # finished instance of the tier against the chunk, once per chunk.
            cur = conn.execute(
                "UPDATE instances SET tier=?, batch_id=? WHERE +tier=? AND "
                f"+status IN ({','.join('?' * len(finished))}) AND "
                f"workflow_id IN ({','.join('?' * len(chunk))})",
                [to_tier, batch_id, from_tier, *finished, *chunk],
            )
            moved += cur.rowcount
        return moved

    @staticmethod
    def move_batches(
        conn: sqlite3.Connection, batch_ids: Sequence[str], *, from_tier: str, to_tier: str
    ) -> int:
        """Inside a write transaction: move every instance of these batches between tiers.

        Only instances in ``from_tier`` move (their ``batch_id`` stays the
        locator). Returns how many moved.
        """
        moved = 0
        for i in range(0, len(batch_ids), 500):
            chunk = list(batch_ids[i : i + 500])
            # +tier: look the batches up in instances_batch, not every row of the tier.
            cur = conn.execute(
                "UPDATE instances SET tier=? WHERE +tier=? AND "
                f"batch_id IN ({','.join('?' * len(chunk))})",
                [to_tier, from_tier, *chunk],
            )
            moved += cur.rowcount
        return moved

    def batch_finish_times(
        self, batch_ids: Sequence[str], tier: str
    ) -> list[tuple[str, str, int, int]]:
        """Per batch and workflow type: the latest ``finished_at`` and the instance count.

        Args:
            batch_ids: The batches to look at.
            tier: Only instances in this tier count.

        Returns:
            ``(batch_id, workflow_type, max_finished_at, count)`` rows.
        """
        out: list[tuple[str, str, int, int]] = []
        for i in range(0, len(batch_ids), 500):
            chunk = list(batch_ids[i : i + 500])
            rows = self._read(
                "SELECT batch_id, workflow_type, max(finished_at), count(*) FROM instances "
                f"WHERE tier=? AND batch_id IN ({','.join('?' * len(chunk))}) GROUP BY 1, 2",
                [tier, *chunk],
            )
            out.extend((r[0], r[1], r[2], r[3]) for r in rows)
        return out

    def files_of_batch(self, batch_id: str) -> list[tuple[str, str]]:
        """``(workflow_id, file)`` of instances of ``batch_id`` that still have a hot file."""
        rows = self._read(
            "SELECT workflow_id, file FROM instances WHERE batch_id=? AND file IS NOT NULL",
            (batch_id,),
        )
        return [(r[0], r[1]) for r in rows]

    def forget_files(self, workflow_ids: Sequence[str]) -> None:
        """Record that these instances' hot files are gone."""
        self.write_now(
            lambda c: c.executemany(
                "UPDATE instances SET file=NULL WHERE workflow_id=?", [(w,) for w in workflow_ids]
            )
        )

    def count_by_tier(self) -> dict[str, int]:
        """How many instances each tier holds."""
        return {r[0]: r[1] for r in self._read("SELECT tier, count(*) FROM instances GROUP BY 1")}

    def count_by_type_and_status(self) -> dict[tuple[str, str], int]:
        """How many instances of each ``(workflow_type, status)`` the index holds (all tiers)."""
        rows = self._read("SELECT workflow_type, status, count(*) FROM instances GROUP BY 1, 2")
        return {(r[0], r[1]): r[2] for r in rows}

    def oldest_finish(self, tier: str) -> int | None:
        """The earliest ``finished_at`` (µs) of a finished instance still in ``tier``, if any.

        One probe of the ``(tier, status, finished_at)`` index per terminal status.
        """
        found = [
            r[0]
            for status in sorted(TERMINAL_STATUSES)
            for r in self._read(
                "SELECT min(finished_at) FROM instances WHERE tier=? AND status=?",
                (tier, status),
            )
            if r[0] is not None
        ]
        return min(found) if found else None

    def finished_in_tier(
        self,
        tier: str,
        *,
        statuses: Sequence[str],
        finished_before: int,
        exclude_types: Sequence[str] = (),
        condition: tuple[str, Sequence[Any]] = ("1", ()),
        limit: int = 1000,
    ) -> list[tuple[str, str, str, int, int]]:
        """Finished instances of ``tier`` that have a file, oldest finish first.

        Args:
            tier: The tier they are in.
            statuses: Terminal statuses to include.
            finished_before: Only instances finished at or before this (µs).
            exclude_types: Workflow types to leave out.
            condition: Extra ``(sql, params)`` ANDed in (e.g. the event stream's
                acknowledged condition).
            limit: At most this many rows.

        Returns:
            ``(workflow_id, file, workflow_type, finished_at, events_upto)`` rows.
        """
        statuses = [s for s in statuses if s in TERMINAL_STATUSES]
        if not statuses:
            return []
        sql = (
            "SELECT workflow_id, file, workflow_type, finished_at, coalesce(events_upto, 0) "
            "FROM instances WHERE tier=? AND file IS NOT NULL AND "
            f"status IN ({','.join('?' * len(statuses))}) AND finished_at <= ? "
            f"AND {_NOT_ERASING}"
        )
        params: list[Any] = [tier, *statuses, finished_before]
        if exclude_types:
            sql += f" AND workflow_type NOT IN ({','.join('?' * len(exclude_types))})"
            params.extend(exclude_types)
        sql += f" AND ({condition[0]}) ORDER BY finished_at LIMIT ?"
        params.extend([*condition[1], limit])
        return [tuple(r) for r in self._read(sql, params)]

    # -- write helpers -------------------------------------------------------

    @staticmethod
    def _put_attributes(conn: sqlite3.Connection, workflow_id: str, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            conn.execute(
                "INSERT OR REPLACE INTO attributes VALUES (?,?,?)",
                (workflow_id, key, _attr_value(value)),
            )

    @staticmethod
    def insert_fn(row: dict[str, Any]) -> Callable[[sqlite3.Connection], bool]:
        """Return a job inserting ``row``; it returns False if the id exists."""

        def fn(conn: sqlite3.Connection) -> bool:
            cols = ",".join(row)
            cur = conn.execute(
                f"INSERT OR IGNORE INTO instances ({cols}) VALUES ({','.join('?' * len(row))})",
                tuple(row.values()),
            )
            if cur.rowcount and row.get("attributes") not in (None, "", "{}"):
                IndexDB._put_attributes(conn, row["workflow_id"], json.loads(row["attributes"]))
            return cur.rowcount == 1

        return fn

    @staticmethod
    def update_fn(
        workflow_id: str,
        changes: dict[str, Any],
        only_if_status: Sequence[str] | None = None,
        *,
        only_if_no_file: bool = False,
        only_if_lease: str | EllipsisType | None = ...,
    ) -> Callable[[sqlite3.Connection], bool]:
        """Return a job setting ``changes`` on one row; it returns whether a row changed.

        Args:
            workflow_id: The row to change.
            changes: Column values to set.
            only_if_status: Change the row only while its status is one of these.
            only_if_no_file: Change the row only while it has no instance file.
                Whoever assigns a file to a queued instance (its first run, or a
                signal sent while it waits) must not replace one another's file:
                the file replaced would take its history with it.
            only_if_lease: Change the row only while this owner (None: no
                owner) holds its lease; ``...`` (default) does not check. Two
                processes recovering the same orphan must not both take it.
        """

        def fn(conn: sqlite3.Connection) -> bool:
            sets = ",".join(f"{k}=?" for k in changes)
            sql = f"UPDATE instances SET {sets} WHERE workflow_id=?"
            params: list[Any] = [*changes.values(), workflow_id]
            if only_if_status:
                sql += f" AND status IN ({','.join('?' * len(only_if_status))})"
                params.extend(only_if_status)
            if only_if_no_file:
                sql += " AND file IS NULL"
            if only_if_lease is not ...:
                sql += " AND lease_owner IS ?"
                params.append(only_if_lease)
            cur = conn.execute(sql, params)
            if cur.rowcount and "attributes" in changes:
                IndexDB._put_attributes(conn, workflow_id, json.loads(changes["attributes"]))
            return cur.rowcount == 1

        return fn

    # -- reads ---------------------------------------------------------------

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"instance index read failed: {exc}", url=str(self.path)) from exc

    def get(self, workflow_id: str) -> IndexRow | None:
        """Return the row for ``workflow_id``, or None."""
        rows = self._read(f"{_SELECT} WHERE workflow_id=?", (workflow_id,))
        return IndexRow(*rows[0]) if rows else None

    def find(self, workflow_id: str) -> IndexRow | None:
        """The row for ``workflow_id`` as reads see it: None also while it is being erased."""
        rows = self._read(f"{_SELECT} WHERE workflow_id=? AND {_NOT_ERASING}", (workflow_id,))
        return IndexRow(*rows[0]) if rows else None

    def by_status(self, statuses: Sequence[str]) -> list[IndexRow]:
        """Return every row whose status is in ``statuses``."""
        marks = ",".join("?" * len(statuses))
        return [
            IndexRow(*r)
            for r in self._read(f"{_SELECT} WHERE status IN ({marks})", tuple(statuses))
        ]

    def wakeups(self) -> list[tuple[str, int]]:
        """Return ``(workflow_id, wake_at)`` for every paused instance with a due time."""
        rows = self._read(
            "SELECT workflow_id, wake_at FROM instances WHERE status=? AND wake_at IS NOT NULL",
            (Status.PAUSED,),
        )
        return [(r[0], r[1]) for r in rows]

    def children_of(self, parent_id: str) -> list[IndexRow]:
        """Return the instances whose parent is ``parent_id``."""
        return [
            IndexRow(*r) for r in self._read(f"{_SELECT} WHERE parent_workflow_id=?", (parent_id,))
        ]

    def all_files(self) -> set[str]:
        """Return every instance file name (relative to the instances directory)."""
        return {r[0] for r in self._read("SELECT file FROM instances WHERE file IS NOT NULL")}

    def all_ids(self) -> set[str]:
        """Return every workflow id in the index."""
        return {r[0] for r in self._read("SELECT workflow_id FROM instances")}

    def list(
        self,
        *,
        status: Sequence[str] | None = None,
        workflow_type: Sequence[str] | None = None,
        parent_workflow_id: str | None = None,
        tier: Sequence[str] | None = None,
        attributes: dict[str, Any] | None = None,
        ranges: Mapping[str, tuple[int | None, int | None]] | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> tuple[list[IndexRow], str | None]:
        """Return one page of rows, newest first, and the cursor of the next page.

        ``ranges`` maps ``created_at``, ``started_at`` or ``finished_at`` to
        ``(from, before)`` in epoch microseconds, either bound open (None).

        Raises:
            InvalidArgument: A malformed cursor or limit.
        """
        if not 1 <= limit <= 10_000:
            raise InvalidArgument("limit must be between 1 and 10000")
        where = Where(_NOT_ERASING)
        where.one_of("status", status)
        where.one_of("workflow_type", workflow_type)
        where.equals("parent_workflow_id", parent_workflow_id)
        where.one_of("tier", tier)
        for column, (low, high) in (ranges or {}).items():
            if column not in _RANGE_COLUMNS:
                raise InvalidArgument(f"cannot filter on {column!r}; use {sorted(_RANGE_COLUMNS)}")
            where.between(column, low, high)
        for key, value in (attributes or {}).items():
            where.add(
                "workflow_id IN (SELECT workflow_id FROM attributes WHERE key=? AND value=?)",
                key,
                _attr_value(value),
            )
        if cursor is not None:
            created, last_id = _decode_cursor(cursor)
            where.add(
                "(created_at < ? OR (created_at = ? AND workflow_id < ?))",
                created,
                created,
                last_id,
            )
        sql = _SELECT + where.sql
        params = where.params
        sql += " ORDER BY created_at DESC, workflow_id DESC LIMIT ?"
        params.append(limit + 1)
        rows = [IndexRow(*r) for r in self._read(sql, params)]
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = _encode_cursor(last.created_at, last.workflow_id)
        return rows, next_cursor


_RANGE_COLUMNS = frozenset({"created_at", "started_at", "finished_at"})


def attribute_value(value: Any) -> Any:
    """An attribute value as the ``attributes`` table stores and compares it."""
    return _attr_value(value)


def _attr_value(value: Any) -> Any:
    """Normalise an attribute value for storage and comparison."""
    if isinstance(value, bool):
        return int(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _encode_cursor(created_at: int, workflow_id: str) -> str:
    raw = json.dumps([created_at, workflow_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, workflow_id = json.loads(raw)
        if not isinstance(created_at, int) or not isinstance(workflow_id, str):
            raise ValueError
        return created_at, workflow_id
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"malformed list cursor {cursor[:40]!r}") from exc
