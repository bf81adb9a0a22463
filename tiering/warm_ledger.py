"""The tiering ledger: which warm batches exist and how far each got.

It lives in the instance index so that committing a batch and moving its
instances to the warm tier is one SQLite transaction.

States: ``writing`` (recorded, durably, before any object is written; a
batch left here by a crash is garbage-collected), ``committed`` (its
instances are in warm; the manifest may still need publishing and the hot
files deleting), ``done``, ``aborted``, and ``cold`` (its rows are in the
cold tables; see ``cold_ledger``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from tierflow.hot.index import IndexDB
from tierflow.hot.router import Tier

__all__ = ["Batch", "BatchState", "BatchSummary", "TieringStatus", "WarmLedger"]


class BatchState(StrEnum):
    """Where a batch is in its move (the ledger's ``state`` column)."""

    WRITING = "writing"
    COMMITTED = "committed"
    DONE = "done"
    ABORTED = "aborted"
    COLD = "cold"


# Ledgers written before tierflow called the warm → cold move a "cold move" (0.1.0) name a
# batch whose rows are in the cold tables "compacted"; the word now means only Iceberg's
# rewrite of small files. Opening a ledger renames such rows once.
_LEGACY_STATES = {"compacted": BatchState.COLD}

_DDL = """
CREATE TABLE IF NOT EXISTS tier_batches (
    batch_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    committed_at INTEGER,
    workflow_count INTEGER,
    event_count INTEGER,
    manifest BLOB,
    store_url TEXT
) STRICT;
"""


@dataclass(frozen=True)
class Batch:
    """One ledger row."""

    batch_id: str
    state: str
    created_at: int
    committed_at: int | None
    workflow_count: int | None
    event_count: int | None
    manifest: bytes | None
    store_url: str | None


@dataclass(frozen=True)
class BatchSummary:
    """One batch as ``tiering_status`` reports it.

    Attributes:
        batch_id: The batch.
        state: How far its move got.
        workflows: Instances it holds (None until committed).
        events: History events it holds (None until committed).
    """

    batch_id: str
    state: BatchState
    workflows: int | None
    events: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``state`` as its text."""
        return {**asdict(self), "state": self.state.value}


@dataclass(frozen=True)
class TieringStatus:
    """The ledger now: how many instances each tier holds, and the recent batches.

    Attributes:
        storage_url: The warm store batches go to.
        instances: Instance count per tier (``hot``, ``warm``, ``cold``; a tier
            holding none is absent).
        batches: The most recent batches, newest first.
    """

    storage_url: str
    instances: dict[str, int]
    batches: tuple[BatchSummary, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"storage_url", "instances", "batches": [...]}``."""
        return {
            "storage_url": self.storage_url,
            "instances": dict(self.instances),
            "batches": [b.to_dict() for b in self.batches],
        }


class WarmLedger:
    """Reads and writes ``tier_batches`` through the index connection."""

    def __init__(self, index: IndexDB) -> None:
        self.index = index
        index.ensure_schema(_DDL)
        self._rename_legacy_states()

    def _rename_legacy_states(self) -> None:
        """Give batches a ledger of an earlier version wrote their state's current name."""
        legacy = tuple(_LEGACY_STATES)
        marks = ",".join("?" * len(legacy))
        if not self.index.execute(
            f"SELECT 1 FROM tier_batches WHERE state IN ({marks}) LIMIT 1", legacy
        ):
            return
        self.index.write_now(
            lambda c: c.executemany(
                "UPDATE tier_batches SET state=? WHERE state=?",
                [(new.value, old) for old, new in _LEGACY_STATES.items()],
            ),
            durable=True,
        )

    def begin(self, batch_id: str, now_us: int, store_url: str) -> None:
        """Record a batch, and the store it goes to, before anything is written (fsync'd)."""
        self.index.write_now(
            lambda c: c.execute(
                "INSERT INTO tier_batches (batch_id, state, created_at, store_url) "
                "VALUES (?,?,?,?)",
                (batch_id, BatchState.WRITING.value, now_us, store_url),
            ),
            durable=True,
        )

    def commit(
        self,
        batch_id: str,
        manifest: bytes,
        workflow_ids: Sequence[str],
        workflow_count: int,
        event_count: int,
        now_us: int,
    ) -> int:
        """Mark the batch committed and move its instances to warm, atomically.

        Returns:
            How many instances moved (only hot, finished ones do).
        """

        def fn(c: sqlite3.Connection) -> int:
            c.execute(
                "UPDATE tier_batches SET state=?, committed_at=?, manifest=?, "
                "workflow_count=?, event_count=? WHERE batch_id=? AND state=?",
                (
                    BatchState.COMMITTED.value,
                    now_us,
                    manifest,
                    workflow_count,
                    event_count,
                    batch_id,
                    BatchState.WRITING.value,
                ),
            )
            return IndexDB.move_to_tier(
                c, workflow_ids, from_tier=Tier.HOT, to_tier=Tier.WARM, batch_id=batch_id
            )

        moved: int = self.index.write_now(fn, durable=True)
        return moved

    def set_state(self, batch_id: str, state: str) -> None:
        """Move a batch to ``done`` or ``aborted``."""
        self.index.write_now(
            lambda c: c.execute(
                "UPDATE tier_batches SET state=? WHERE batch_id=?", (state, batch_id)
            ),
            durable=True,
        )

    def get(self, batch_id: str) -> Batch | None:
        """Return one batch."""
        rows = self.index.execute("SELECT * FROM tier_batches WHERE batch_id=?", (batch_id,))
        return Batch(*rows[0]) if rows else None

    def in_state(self, *states: str) -> list[Batch]:
        """Return batches in any of ``states``, oldest first."""
        marks = ",".join("?" * len(states))
        rows = self.index.execute(
            f"SELECT * FROM tier_batches WHERE state IN ({marks}) ORDER BY created_at", states
        )
        return [Batch(*r) for r in rows]

    def all(self, limit: int = 100) -> list[Batch]:
        """Return the most recent batches."""
        rows = self.index.execute(
            "SELECT * FROM tier_batches ORDER BY created_at DESC LIMIT ?", (limit,)
        )
        return [Batch(*r) for r in rows]

    def status(self, storage_url: str, limit: int = 20) -> TieringStatus:
        """Instances per tier and the ``limit`` most recent batches."""
        return TieringStatus(
            storage_url=storage_url,
            instances=self.index.count_by_tier(),
            batches=tuple(
                BatchSummary(b.batch_id, BatchState(b.state), b.workflow_count, b.event_count)
                for b in self.all(limit)
            ),
        )

    def moved_totals(self) -> tuple[int, int, int]:
        """``(batches, workflows, events)`` moved to warm by every committed batch so far."""
        ((batches, workflows, events),) = self.index.execute(
            "SELECT count(*), coalesce(sum(workflow_count), 0), coalesce(sum(event_count), 0) "
            "FROM tier_batches WHERE committed_at IS NOT NULL"
        )
        return int(batches), int(workflows), int(events)

    def hot_files_of(self, batch_id: str) -> list[tuple[str, str]]:
        """``(workflow_id, file)`` of moved instances whose hot file is not yet deleted."""
        return self.index.files_of_batch(batch_id)

    def batches_with_hot_files(self) -> list[tuple[str, int | None]]:
        """``(batch_id, committed_at)`` of done batches whose moved instances still have a hot file.

        Their deletion waited for SQL queries that held a read lease.
        """
        # Through the index's partial index on files (moved instances with a file are few),
        # not a look at every batch ever made.
        rows = self.index.execute(
            "SELECT b.batch_id, b.committed_at FROM tier_batches b WHERE b.state IN (?, ?) "
            "AND b.batch_id IN (SELECT batch_id FROM instances WHERE file IS NOT NULL "
            "AND batch_id IS NOT NULL)",
            (BatchState.DONE.value, BatchState.COLD.value),
        )
        return [(r[0], r[1]) for r in rows]

    def forget_hot_files(self, workflow_ids: Sequence[str]) -> None:
        """Record that these instances' hot files are gone."""
        self.index.forget_files(workflow_ids)
