"""Changes other processes must act on, as a feed in the instance index.

Several processes share one data directory: a long-lived ``tierflow worker``
(or several), short CLI commands, an HTTP server. A change one of them makes
may need another to act: work queued by ``tierflow start`` must reach a
worker that knows its type; a signal, cancel or terminate must reach the
process running the instance; a child finishing must wake a parent that only
another process can run.

Each such change appends a row to the index's ``changes`` table in the same
transaction as the change itself, so it is never announced before it is
visible, nor lost after. Every process tails the table from the sequence
number it last saw. It checks ``PRAGMA data_version`` first: that reads a
counter in the WAL's shared memory, costs about a microsecond, and changes
only when *another* connection committed, so an idle process polls cheaply
and reads the table only when something happened. Rows older than
:data:`KEEP_SECONDS` are pruned; a process that starts loads what it must run
from the index itself, not from the feed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from tierflow.hot.index import IndexDB

__all__ = ["DDL", "KEEP_SECONDS", "Change", "ChangeFeed", "ChangeKind", "record"]

# Changes are for processes that are running now; a minute is ample.
KEEP_SECONDS = 60

DDL = """
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT,
    origin TEXT NOT NULL,
    at INTEGER NOT NULL
) STRICT;
"""


class ChangeKind(StrEnum):
    """What another process should do about an instance."""

    QUEUED = "queued"
    """Run it (if this process knows its type)."""
    WAKE = "wake"
    """Resume it: a signal or a child's result arrived."""
    CANCEL = "cancel"
    """Its cancellation was requested (``detail``: the reason)."""
    TERMINATE = "terminate"
    """It was terminated: stop running its code now."""
    PUBLISH = "publish"
    """Another process must write its file: its runner writes the file's first row now."""
    TIMER = "timer"
    """It paused until ``detail`` (µs since the epoch): whoever can run it then, does."""


@dataclass(frozen=True)
class Change:
    """One row of the feed."""

    seq: int
    workflow_id: str
    workflow_type: str
    kind: ChangeKind
    detail: str | None


def record(
    conn: sqlite3.Connection,
    workflow_id: str,
    workflow_type: str,
    kind: ChangeKind,
    *,
    origin: str,
    at_us: int,
    detail: str | None = None,
) -> None:
    """Inside an index write transaction: announce a change to other processes.

    Args:
        conn: The index connection, inside a write transaction.
        workflow_id: The instance.
        workflow_type: Its type (processes that cannot run it ignore the change).
        kind: What happened.
        origin: The writing process's owner id (it does not read its own changes).
        at_us: Now, in µs since the epoch (for pruning).
        detail: Kind-specific text (a cancel's reason).
    """
    conn.execute(
        "INSERT INTO changes (workflow_id, workflow_type, kind, detail, origin, at) "
        "VALUES (?,?,?,?,?,?)",
        (workflow_id, workflow_type, kind.value, detail, origin, at_us),
    )


class ChangeFeed:
    """Tails the ``changes`` table of one index for one process.

    Args:
        index: The instance index (its ``changes`` table must exist).
        me: This process's owner id: its own changes are skipped.
    """

    def __init__(self, index: IndexDB, me: str) -> None:
        self.index = index
        self.me = me
        self._version = index.data_version()
        # Whether the last poll saw another connection's commit.
        self.moved = False
        rows = index.execute("SELECT coalesce(max(seq), 0) FROM changes")
        # Everything before now is in the index, which a starting process loads.
        self._last = int(rows[0][0])

    def poll(self) -> list[Change]:
        """New changes since the last poll (cheap when there are none)."""
        version = self.index.data_version()
        self.moved = version != self._version
        if not self.moved:
            return []
        self._version = version
        rows = self.index.execute(
            "SELECT seq, workflow_id, workflow_type, kind, detail, origin FROM changes "
            "WHERE seq > ? ORDER BY seq",
            (self._last,),
        )
        if rows:
            self._last = int(rows[-1][0])
        return [Change(r[0], r[1], r[2], ChangeKind(r[3]), r[4]) for r in rows if r[5] != self.me]

    def prune(self, now_us: int) -> None:
        """Delete changes older than :data:`KEEP_SECONDS`."""
        cutoff = now_us - KEEP_SECONDS * 1_000_000
        self.index.write_now(lambda c: c.execute("DELETE FROM changes WHERE at < ?", (cutoff,)))
