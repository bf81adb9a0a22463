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
   a query leaves nothing on disk), and memory is capped.

Row limits and timeouts are applied by :mod:`tierflow.tiering.sql`.
"""

from __future__ import annotations

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
    con = _open()
    con.execute(f"SET memory_limit='{_setting(memory_limit)}'")
    return con


def _open() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    con.execute("SET temp_directory=''")
    return con


class Sandboxes:
    """Sandbox connections, one opened ahead of need, and closed off the query's path.

    Opening a DuckDB database costs about 11 ms and closing one a few more
    (measured: a fifth of a small query). Each query still gets a connection
    nobody used before, as :func:`sandbox` makes; it is just made while the
    previous query's caller reads its answer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: duckdb.DuckDBPyConnection | None = None
        self._filling = False
        self._closed = False

    def take(self, memory_limit: str) -> duckdb.DuckDBPyConnection:
        """A fresh unlocked sandbox (as :func:`sandbox`); starts opening the next one."""
        limit = _setting(memory_limit)
        with self._lock:
            con, self._spare = self._spare, None
        if con is None:
            con = _open()
        self._refill()
        con.execute(f"SET memory_limit='{limit}'")
        return con

    def release(self, con: duckdb.DuckDBPyConnection) -> None:
        """Close a used connection in the background."""
        threading.Thread(target=con.close, name="tierflow-sql-close", daemon=True).start()

    def close(self) -> None:
        """Close the spare; later :meth:`take` calls open connections on demand."""
        with self._lock:
            self._closed = True
            con, self._spare = self._spare, None
        if con is not None:
            con.close()

    def _refill(self) -> None:
        with self._lock:
            if self._filling or self._spare is not None or self._closed:
                return
            self._filling = True
        threading.Thread(target=self._fill, name="tierflow-sql-spare", daemon=True).start()

    def _fill(self) -> None:
        con = None
        try:
            con = _open()
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
