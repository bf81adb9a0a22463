"""Forgetting instances in the hot index: marks of an erasure, deletion of their rows.

Erasure (``tierflow.tiering.compliance``) first *marks* the instances it
erases, in the same durable transaction as its intent: from then on reads by
id and ``list`` answer as if they were gone (:meth:`IndexDB.find`), and no
tiering pass selects them. When every copy in every tier is gone, one
transaction *forgets* them here: the index rows of every table of the hot
tier that can hold a workflow id (instances, attributes, event-stream cursors,
the change feed) and the marks. The index runs with ``secure_delete``, so the
deleted cells are overwritten, not left in free pages.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

__all__ = ["ID_TABLES", "forget", "is_marked", "mark", "marked"]

ID_TABLES: tuple[str, ...] = ("instances", "attributes", "stream_cursors", "changes", "erasing")
"""Every table of the hot index that holds workflow ids (column ``workflow_id``)."""

_CHUNK = 500


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield list(ids[i : i + _CHUNK])


def mark(conn: sqlite3.Connection, workflow_ids: Sequence[str]) -> None:
    """Inside a write transaction: mark instances as being erased (idempotent)."""
    conn.executemany(
        "INSERT OR IGNORE INTO erasing (workflow_id) VALUES (?)", [(w,) for w in workflow_ids]
    )


def is_marked(conn: sqlite3.Connection, workflow_id: str) -> bool:
    """Whether an instance is being erased."""
    return (
        conn.execute("SELECT 1 FROM erasing WHERE workflow_id=?", (workflow_id,)).fetchone()
        is not None
    )


def marked(conn: sqlite3.Connection) -> list[str]:
    """Every instance being erased."""
    return [r[0] for r in conn.execute("SELECT workflow_id FROM erasing ORDER BY workflow_id")]


def forget(conn: sqlite3.Connection, workflow_ids: Sequence[str]) -> int:
    """Inside a write transaction: delete every index row naming these instances.

    Covers :data:`ID_TABLES` (a table not created yet in this index, such as
    the change feed of an index no engine has opened, is skipped).

    Returns:
        How many ``instances`` rows were deleted.
    """
    present = {
        r[0]
        for r in conn.execute(
            f"SELECT name FROM sqlite_master WHERE type='table' AND name IN "
            f"({','.join('?' * len(ID_TABLES))})",
            ID_TABLES,
        )
    }
    deleted = 0
    for chunk in _chunks(workflow_ids):
        marks = ",".join("?" * len(chunk))
        for table in ID_TABLES:
            if table in present:
                cur = conn.execute(f"DELETE FROM {table} WHERE workflow_id IN ({marks})", chunk)
                if table == "instances":
                    deleted += cur.rowcount
    return deleted
