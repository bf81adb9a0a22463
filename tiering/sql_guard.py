"""Confinement of SQL across tiers: what a statement may do, and the sandboxed connection.

Two fences, because either alone leaks (STACK.md, "DuckDB 2.0"):

1. **Before running**: the text must parse as exactly one statement of type
   ``SELECT`` (``WITH ... SELECT``, ``FROM t``, ``VALUES`` and ``DESCRIBE``
   parse as ``SELECT`` too). ``COPY``, ``ATTACH``, ``INSTALL``/``LOAD``,
   ``PRAGMA``/``SET``, DDL, ``EXPLAIN``, ``CALL``, ``EXPORT`` and several
   statements are refused here, by name.
2. **While running**: after the tierflow data is registered the connection
   has ``enable_external_access=false`` and then ``lock_configuration=true``,
   so a ``SELECT`` that reads a file or URL (``read_csv``, ``'/etc/passwd'``,
   ``glob``, ``read_text``) fails with a permission error, which is reported
   as a refusal too. Python replacement scans are off (a query cannot reach
   the caller's variables), spilling to disk is off (``temp_directory=''``:
   a query leaves nothing on disk), and memory is capped. On ``file://`` the
   cut's Parquet files, and only they, stay readable by name
   (``allowed_paths``); DuckDB does not tell reading from writing there, so for
   those files fence 1 alone stops a ``COPY ... TO`` (the tests check every
   archive file byte for byte after the hostile statements).

Row limits and timeouts are applied by :mod:`tierflow.tiering.sql`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

import duckdb
from tierflow.hot.errors import InvalidArgument

__all__ = ["QueryTimeout", "Sandboxes", "check_statement", "lock", "refusal", "sandbox"]


class QueryTimeout(InvalidArgument, TimeoutError):
    """A query ran past its timeout and was interrupted."""


# What each refused statement type is called in messages.
_NAMES = {
    "COPY": "COPY (file export)",
    "ATTACH": "ATTACH",
    "DETACH": "DETACH",
    "LOAD": "INSTALL/LOAD of an extension",
    "SET": "SET/PRAGMA/USE (configuration)",
    "VARIABLE_SET": "SET VARIABLE",
    "PRAGMA": "PRAGMA",
    "CREATE": "DDL (CREATE)",
    "CREATE_FUNC": "DDL (CREATE FUNCTION)",
    "DROP": "DDL (DROP)",
    "ALTER": "DDL (ALTER)",
    "INSERT": "INSERT",
    "UPDATE": "UPDATE",
    "DELETE": "DELETE",
    "EXPORT": "EXPORT DATABASE",
    "CALL": "CALL (table function call or CHECKPOINT)",
    "EXPLAIN": "EXPLAIN",
    "TRANSACTION": "a transaction statement",
}


def check_statement(query: str) -> None:
    """Refuse anything but one read-only ``SELECT`` (parsed, never run).

    Raises:
        InvalidArgument: Not a string, empty, unparsable, several statements,
            or a statement type other than ``SELECT``; the message names it.
    """
    if not isinstance(query, str) or not query.strip():
        raise InvalidArgument("SQL refused: empty query (expected one SELECT statement)")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise InvalidArgument(f"SQL refused: cannot parse it: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise InvalidArgument(
            f"SQL refused: {len(statements)} statements; send exactly one SELECT statement"
        )
    kind = str(statements[0].type).rsplit(".", 1)[-1]
    if kind != "SELECT":
        what = _NAMES.get(kind, kind)
        raise InvalidArgument(f"SQL refused: {what} is not allowed; only SELECT/WITH queries are")


def sandbox(memory_limit: str) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory connection, not yet locked (register the data, then :func:`lock`).

    Args:
        memory_limit: DuckDB's ``memory_limit``, e.g. ``"1GB"``.
    """
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    con.execute("SET temp_directory=''")
    con.execute(f"SET memory_limit='{_setting(memory_limit)}'")
    return con


_KEEP = 2  # locked sandboxes kept for reuse (distinct file sets: now, and as_of)
_IDLE = 5.0  # seconds the worker thread waits for work before it ends


class Sandboxes:
    """Sandbox connections: one opened ahead of need, used ones kept or closed off-path.

    Opening a DuckDB database costs about 11 ms and closing one a few more;
    creating the views over a cut's files another 10-15 ms (DuckDB binds every
    view, and a view over views binds their Parquet files again). So:

    - a spare fresh sandbox is opened by a worker thread after each query;
    - a sandbox whose query ended cleanly is kept, locked, under the key of
      what it was prepared for (the exact files it may read, its memory limit)
      and serves the next query with the same key: DuckDB runs nothing but
      one ``SELECT`` in it and its configuration is locked, so a query leaves
      nothing behind but the hot data, which the next query re-registers;
    - used sandboxes are closed on the worker thread.

    Args:
        memory_limit: The limit spare connections are opened with (a query
            asking for another one sets it).
    """

    def __init__(self, memory_limit: str) -> None:
        self._limit = _setting(memory_limit)
        self._lock = threading.Lock()
        self._spare: duckdb.DuckDBPyConnection | None = None
        self._ready: dict[Any, duckdb.DuckDBPyConnection] = {}
        self._tasks: queue.SimpleQueue[duckdb.DuckDBPyConnection | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._filling = False
        self._closed = False

    def take(self, memory_limit: str) -> duckdb.DuckDBPyConnection:
        """A fresh unlocked sandbox (as :func:`sandbox`): the spare, or one opened now."""
        limit = _setting(memory_limit)
        with self._lock:
            con, self._spare = self._spare, None
        if con is None:
            return sandbox(limit)
        if limit != self._limit:
            con.execute(f"SET memory_limit='{limit}'")
        return con

    def reuse(self, key: Any) -> duckdb.DuckDBPyConnection | None:
        """A locked sandbox kept by :meth:`keep` under ``key``, or None."""
        with self._lock:
            return self._ready.pop(key, None)

    def keep(self, key: Any, con: duckdb.DuckDBPyConnection) -> None:
        """Keep a locked sandbox whose query ended cleanly, for the next query with ``key``.

        A query cannot change a sandbox (only a ``SELECT`` runs; configuration
        is locked), and the next one re-registers every piece of tier data,
        so reuse skips the views and the open (about 25 ms) and keeps DuckDB's
        cache of the files. The oldest kept sandbox beyond a few is closed.
        """
        with self._lock:
            if self._closed:
                old = [con]
            else:
                old = [c for k, c in self._ready.items() if k == key]
                self._ready.pop(key, None)
                self._ready[key] = con
                while len(self._ready) > _KEEP:
                    old.append(self._ready.pop(next(iter(self._ready))))
        for c in old:
            self._submit(c)

    def release(self, con: duckdb.DuckDBPyConnection) -> None:
        """Close a used connection on the worker thread, then open the next spare there.

        After the query, not when it starts: on two cores opening the spare
        beside a running query slowed the query by as much as it saved.
        """
        self._submit(con)
        with self._lock:
            refill = not self._filling and not self._closed and self._spare is None
            self._filling = self._filling or refill
        if refill:
            self._submit(None)

    def close(self) -> None:
        """Close the spare and the kept sandboxes; later ones are opened on demand."""
        with self._lock:
            self._closed = True
            cons = [*self._ready.values(), self._spare]
            self._ready.clear()
            self._spare = None
        for con in cons:
            if con is not None:
                con.close()

    def _submit(self, task: duckdb.DuckDBPyConnection | None) -> None:
        with self._lock:  # put under the lock: an idle worker exits only on an empty queue
            self._tasks.put(task)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="tierflow-sql-sandboxes", daemon=True
                )
                self._worker.start()

    def _work(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=_IDLE)
            except queue.Empty:
                with self._lock:
                    if self._tasks.empty():
                        self._worker = None
                        return
                continue
            if task is not None:
                task.close()
                continue
            con = None
            try:
                con = sandbox(self._limit)
                con.execute("SELECT 1").fetchall()  # a first query's lazy set-up, done here
            finally:
                with self._lock:
                    self._filling = False
                    if con is not None and self._spare is None and not self._closed:
                        self._spare, con = con, None
            if con is not None:
                con.close()


def lock(con: duckdb.DuckDBPyConnection, readable: Sequence[str] = ()) -> None:
    """Turn off file and network access, then freeze the configuration (in this order).

    Args:
        con: A connection from :func:`sandbox`.
        readable: Files DuckDB may still open (``allowed_paths``): the exact
            Parquet files of the query's cut, never a directory. DuckDB does
            not tell reading from writing here, so only fence 1 (no ``COPY``,
            no ``EXPORT``: nothing that writes parses as a ``SELECT``) keeps
            these files from being written.
    """
    if readable:
        # Settable only while external access is on; a list, so no quoting of paths.
        con.execute("SET allowed_paths = ?", [list(readable)])
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")


def refusal(exc: BaseException) -> InvalidArgument | None:
    """The refusal a DuckDB error stands for, or None when it is not one.

    A permission error means the sandbox stopped a file or network access;
    parser, binder and catalog errors mean a bad query (unknown table or
    column), which the caller can fix.
    """
    text = _first_line(exc)
    if isinstance(exc, duckdb.PermissionException):
        return InvalidArgument(f"SQL refused: file, network or configuration access: {text}")
    if isinstance(exc, duckdb.ParserException | duckdb.BinderException | duckdb.CatalogException):
        return InvalidArgument(f"SQL error: {text}")
    if isinstance(exc, duckdb.ConversionException | duckdb.OutOfRangeException):
        return InvalidArgument(f"SQL error: {text}")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return InvalidArgument(f"SQL refused: the query needs more than the memory limit: {text}")
    return None


def _first_line(exc: Any) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _setting(value: str) -> str:
    if not value.replace(" ", "").isalnum():
        raise InvalidArgument(f"bad memory limit {value!r} (e.g. '1GB')")
    return value
