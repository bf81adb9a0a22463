"""The cold ledger: which warm batches went (or are going) to cold, in which commit.

It lives in the instance index next to the tiering ledger, so that claiming
batches, and later flipping their instances to ``cold``, are single SQLite
transactions.

- ``cold_commits``: one row per cold commit (one warm → cold commit), ``writing`` (recorded,
  durably, before anything is written; a crash leaves it here and the next
  pass rolls it forward), ``committed`` (both Iceberg tables hold it and the
  index says ``cold``; the warm originals may still need deleting), ``done``.
- ``cold_batches``: warm batch → the commit that took it. The primary key
  makes a claim exclusive: two passes can never take the same batch.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from tierflow.hot.index import IndexDB
from tierflow.hot.router import Tier
from tierflow.tiering.warm_ledger import BatchState

__all__ = ["ColdCommit", "ColdLedger", "CommitState"]


class CommitState(StrEnum):
    """Where a cold commit is (``cold_commits.state``)."""

    WRITING = "writing"
    COMMITTED = "committed"
    DONE = "done"


_DDL = """
CREATE TABLE IF NOT EXISTS cold_commits (
    commit_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    committed_at INTEGER,
    workflows_snapshot INTEGER,
    history_snapshot INTEGER,
    workflow_count INTEGER,
    event_count INTEGER,
    batch_ids TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS cold_batches (
    batch_id TEXT PRIMARY KEY,
    commit_id TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS cold_batches_commit ON cold_batches (commit_id);
"""


@dataclass(frozen=True)
class ColdCommit:
    """One ``cold_commits`` row."""

    commit_id: str
    state: str
    created_at: int
    committed_at: int | None
    workflows_snapshot: int | None
    history_snapshot: int | None
    workflow_count: int | None
    event_count: int | None
    batch_ids: list[str]


class ColdLedger:
    """Reads and writes the cold ledger through the index connection."""

    def __init__(self, index: IndexDB) -> None:
        self.index = index
        index.ensure_schema(_DDL)

    def eligible_batches(self) -> list[tuple[str, int]]:
        """Warm batches no commit has claimed: ``(batch_id, event_count)``, oldest first."""
        rows = self.index.execute(
            "SELECT b.batch_id, coalesce(b.event_count, 0) FROM tier_batches b "
            "WHERE b.state=? AND NOT EXISTS "
            "(SELECT 1 FROM cold_batches c WHERE c.batch_id = b.batch_id) "
            "ORDER BY b.created_at",
            (BatchState.DONE.value,),
        )
        return [(r[0], r[1]) for r in rows]

    def claim(self, commit_id: str, batch_ids: Sequence[str], now_us: int) -> list[str]:
        """Record a commit and claim its batches, durably, before anything is written.

        Only batches still ``done`` in warm and unclaimed are taken (another
        process may have claimed some since they were selected).

        Returns:
            The batch ids this commit now owns (empty: nothing recorded).
        """

        def fn(c: sqlite3.Connection) -> list[str]:
            taken: list[str] = []
            for bid in batch_ids:
                cur = c.execute(
                    "INSERT INTO cold_batches (batch_id, commit_id) SELECT ?, ? "
                    "WHERE EXISTS (SELECT 1 FROM tier_batches WHERE batch_id=? AND state=?) "
                    "ON CONFLICT (batch_id) DO NOTHING",
                    (bid, commit_id, bid, BatchState.DONE.value),
                )
                if cur.rowcount:
                    taken.append(bid)
            if taken:
                c.execute(
                    "INSERT INTO cold_commits (commit_id, state, created_at, batch_ids) "
                    "VALUES (?,?,?,?)",
                    (commit_id, CommitState.WRITING.value, now_us, json.dumps(taken)),
                )
            return taken

        taken: list[str] = self.index.write_now(fn, durable=True)
        return taken

    def commit(
        self,
        commit_id: str,
        snapshots: dict[str, int],
        workflow_count: int,
        event_count: int,
        now_us: int,
    ) -> int:
        """Flip the commit's instances to ``cold``, atomically with the ledger.

        Returns:
            How many instances moved.
        """
        batch_ids = self.get_or_fail(commit_id).batch_ids

        def fn(c: sqlite3.Connection) -> int:
            c.execute(
                "UPDATE cold_commits SET state=?, committed_at=?, workflows_snapshot=?, "
                "history_snapshot=?, workflow_count=?, event_count=? "
                "WHERE commit_id=? AND state=?",
                (
                    CommitState.COMMITTED.value,
                    now_us,
                    snapshots.get("workflows"),
                    snapshots.get("history"),
                    workflow_count,
                    event_count,
                    commit_id,
                    CommitState.WRITING.value,
                ),
            )
            marks = ",".join("?" * len(batch_ids))
            c.execute(
                f"UPDATE tier_batches SET state=? WHERE batch_id IN ({marks})",
                (BatchState.COLD.value, *batch_ids),
            )
            return IndexDB.move_batches(c, batch_ids, from_tier=Tier.WARM, to_tier=Tier.COLD)

        moved: int = self.index.write_now(fn, durable=True)
        return moved

    def set_state(self, commit_id: str, state: CommitState) -> None:
        """Move a commit to ``state``."""
        self.index.write_now(
            lambda c: c.execute(
                "UPDATE cold_commits SET state=? WHERE commit_id=?", (state.value, commit_id)
            ),
            durable=True,
        )

    def get(self, commit_id: str) -> ColdCommit | None:
        """One commit, or None."""
        rows = self.index.execute("SELECT * FROM cold_commits WHERE commit_id=?", (commit_id,))
        return _commit(rows[0]) if rows else None

    def get_or_fail(self, commit_id: str) -> ColdCommit:
        """One commit (it must exist)."""
        found = self.get(commit_id)
        if found is None:
            raise LookupError(f"no cold commit {commit_id}")
        return found

    def in_state(self, *states: CommitState) -> list[ColdCommit]:
        """Commits in any of ``states``, oldest first."""
        marks = ",".join("?" * len(states))
        rows = self.index.execute(
            f"SELECT * FROM cold_commits WHERE state IN ({marks}) ORDER BY created_at",
            [s.value for s in states],
        )
        return [_commit(r) for r in rows]

    def commit_of_batch(self, batch_id: str) -> ColdCommit | None:
        """The commit that took ``batch_id`` to cold, if any."""
        rows = self.index.execute(
            "SELECT c.* FROM cold_commits c JOIN cold_batches b ON b.commit_id = c.commit_id "
            "WHERE b.batch_id=?",
            (batch_id,),
        )
        return _commit(rows[0]) if rows else None

    def all(self, limit: int = 100) -> list[ColdCommit]:
        """The most recent commits."""
        rows = self.index.execute(
            "SELECT * FROM cold_commits ORDER BY created_at DESC LIMIT ?", (limit,)
        )
        return [_commit(r) for r in rows]


def _commit(row: tuple[object, ...]) -> ColdCommit:
    values = list(row)
    values[-1] = json.loads(str(values[-1]))
    return ColdCommit(*values)  # type: ignore[arg-type]
