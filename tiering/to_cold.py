"""The cold move: move committed warm batches into the cold Iceberg tables.

One pass, per group of batches (many batches per Iceberg commit, so
snapshots stay few; a group is bounded by ``max_events_per_cold_commit``,
which bounds memory, and a pass makes groups until no eligible batch is left):

1. **claim** the batches in the cold ledger (fsync'd) before writing;
2. **write** their rows, sorted, to ``history`` then ``workflows``: one
   Iceberg commit per table whose snapshot summary names the commit and the
   batch ids (``cold.load``); on ``file://`` everything is synced;
3. **flip**: one index transaction marks the commit committed, the batches
   ``cold`` and their instances ``cold`` — from here on reads go to cold;
4. **delete** the warm data files and manifests of those batches — at once
   when no SQL query holds a read lease, else in a later pass (see
   :mod:`tierflow.tiering.leases`; the commit stays ``committed`` until then).

A crash anywhere is repaired by the next pass before it selects anything:
a commit still ``writing`` is rolled forward (a table that already holds the
commit id is skipped, files a killed write left are deleted first), a
``committed`` one gets its warm files deleted. Passes hold an exclusive lock
on ``<data_dir>/cold.lock``, so two processes never move (or maintain)
the same data at once; Iceberg's optimistic commit and the commit id in the
snapshot summary guard the tables themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierflow.cold import load, maintenance
from tierflow.cold.catalog import ColdTables
from tierflow.cold.writer import ColdWriter, find_commit
from tierflow.hot.errors import StorageError
from tierflow.hot.models import to_micros
from tierflow.hot.retry import parse_duration
from tierflow.hot.router import Tier
from tierflow.tiering.cold_ledger import ColdCommit, ColdLedger, CommitState
from tierflow.tiering.faults import crash_point
from tierflow.tiering.leases import ReadLeases, past_grace
from tierflow.tiering.locks import exclusive_file
from tierflow.tiering.policy import TieringPolicy
from tierflow.tiering.to_warm import Progress
from tierflow.tiering.warm_ledger import WarmLedger
from tierflow.warm.storage import ObjectStore
from tierflow.warm.writer import BatchManifest, manifest_key, new_batch_id

if TYPE_CHECKING:
    from tierflow.hot.engine import Engine

__all__ = ["ColdMove", "ColdMoveReport"]

log = logging.getLogger("tierflow.tiering")


@dataclass
class ColdMoveReport:
    """What one cold move pass did (warm → cold)."""

    commits: list[str] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)
    workflows_moved: int = 0
    events_moved: int = 0
    warm_objects_deleted: int = 0
    deletions_deferred: list[str] = field(default_factory=list)
    """Commits whose warm originals a running SQL query may still read (deleted later)."""
    recovered_commits: list[str] = field(default_factory=list)
    leftovers_deleted: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class ColdMove:
    """Runs warm → cold passes for one engine, its warm store and the cold tables.

    Args:
        engine: The hot engine (its index holds both ledgers).
        store: The warm store.
        cold: The cold tables.
        policy: ``cold_after`` (per type too) and the commit size.
        progress: Called as ``progress(stage, done, total)``.
    """

    def __init__(
        self,
        engine: Engine,
        store: ObjectStore,
        cold: ColdTables,
        policy: TieringPolicy,
        progress: Progress | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.cold = cold
        self.policy = policy
        self.progress = progress or (lambda stage, done, total: None)
        self.warm = WarmLedger(engine.index)
        self.ledger = ColdLedger(engine.index)
        self.writer = ColdWriter(cold)
        self._lock = asyncio.Lock()

    @property
    def lock_path(self) -> Path:
        """The file whose exclusive lock serialises cold moves and maintenance."""
        return self.engine.data_dir / "cold.lock"

    @contextlib.asynccontextmanager
    async def exclusive(self) -> Any:
        """Hold the cold lock of the data directory (waits for another process)."""
        async with exclusive_file(self.lock_path, self.engine.io, self._lock):
            yield

    async def run(self, now: float | None = None) -> ColdMoveReport:
        """Run one pass: repair what a crash left, then move every eligible batch to cold.

        Args:
            now: Judge ages as if it were this time (seconds since the epoch).

        Raises:
            StorageError: The warm store or the catalog is unusable; nothing moved.
        """
        async with self.exclusive():
            t0 = time.perf_counter()
            report = ColdMoveReport()
            cutoff_now = self.engine.clock.now() if now is None else now
            pending = self.ledger.in_state(CommitState.WRITING, CommitState.COMMITTED)
            eligible = self.eligible(cutoff_now)
            if not pending and not eligible:
                # Nothing to do: leave the catalog and the store alone (a hot-only or
                # warm-only deployment never opens them).
                report.seconds = time.perf_counter() - t0
                return report
            await self.engine.io(self.check)
            await self.recover(report)
            for group in self._groups(eligible):
                await self._move(group, report)
            report.seconds = time.perf_counter() - t0
            return report

    async def maintain(
        self,
        now: float | None = None,
        *,
        rewrite: bool = True,
        snapshot_retention: float | str | None = None,
        keep_snapshots: int | None = None,
        orphan_grace: float | str | None = None,
    ) -> maintenance.MaintenanceReport:
        """Maintain the cold tables: rewrite small files, expire snapshots, remove orphans.

        Runs under the cold lock, after rolling forward any interrupted
        cold move (so expiry never drops the snapshot a pending commit is
        recognised by). Defaults come from the policy.

        Args:
            now: The current time (seconds since the epoch); default the wall clock
                (snapshot and file times are wall-clock times).
            rewrite: Rewrite small files first.
            snapshot_retention: Keep snapshots younger than this.
            keep_snapshots: Keep at least this many newest snapshots per table.
            orphan_grace: Never delete unreferenced files younger than this.

        Raises:
            StorageError: The catalog or the store failed (steps before stay done).
        """
        policy = self.policy
        when = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        retention = parse_duration(
            policy.snapshot_retention if snapshot_retention is None else snapshot_retention
        )
        grace = parse_duration(policy.orphan_grace if orphan_grace is None else orphan_grace)
        async with self.exclusive():
            await self.engine.io(self.check)
            await self.recover(ColdMoveReport())
            return await self.engine.io(
                lambda: maintenance.maintain(
                    self.cold,
                    self.writer,
                    now=when,
                    expire_older_than=when - timedelta(seconds=retention),
                    keep_last=keep_snapshots or policy.keep_snapshots,
                    orphan_grace=timedelta(seconds=grace),
                    rewrite=rewrite,
                )
            )

    def check(self) -> None:
        """Verify the store and the catalog, and that the catalog is the archive's own.

        A catalog without the tables while the index already has cold
        commits is the wrong catalog (a changed ``TIERFLOW_CATALOG_URL``, a
        lost ``catalog.sqlite``): creating new tables there would split the
        archive, so nothing moves.

        Raises:
            StorageError: The store or the catalog is unusable, or is not the archive's.
        """
        self.cold.check()
        written = self.ledger.in_state(CommitState.COMMITTED, CommitState.DONE)
        if written and not self.cold.exists():
            raise StorageError(
                f"the Iceberg catalog {self.cold.where} has no tierflow tables, but "
                f"{len(written)} cold commits already wrote to them; set "
                "TIERFLOW_CATALOG_URL to the catalog the archive was written with",
                url=self.cold.where,
            )

    # -- selection -------------------------------------------------------------------

    def eligible(self, now: float) -> list[tuple[str, int]]:
        """Unclaimed warm batches old enough for cold: ``(batch_id, events)``, oldest first.

        A batch is old enough when, for every workflow type in it, its latest
        ``finished_at`` is at least that type's ``cold_after`` ago.
        """
        batches = self.ledger.eligible_batches()
        if not batches:
            return []
        ok = {bid for bid, _ in batches}
        for bid, wtype, finished, _ in self.engine.index.batch_finish_times(
            [b for b, _ in batches], Tier.WARM
        ):
            age = self.policy.cold_after_seconds(wtype)
            if age is None or finished > to_micros(now - age):
                ok.discard(bid)
        return [(bid, n) for bid, n in batches if bid in ok]

    def _groups(self, eligible: list[tuple[str, int]]) -> Iterator[list[str]]:
        limit = self.policy.max_events_per_cold_commit
        group: list[str] = []
        events = 0
        for bid, n in eligible:
            if group and events + n > limit:
                yield group
                group, events = [], 0
            group.append(bid)
            events += n
        if group:
            yield group

    # -- one commit ------------------------------------------------------------------

    def _manifests(self, batch_ids: list[str]) -> list[BatchManifest]:
        out = []
        for bid in batch_ids:
            batch = self.warm.get(bid)
            if batch is None or batch.manifest is None:
                raise StorageError(f"warm batch {bid} has no manifest in the ledger")
            out.append(BatchManifest.from_json(batch.manifest))
        return out

    async def _move(self, batch_ids: list[str], report: ColdMoveReport) -> None:
        commit_id = f"cold-{new_batch_id()}"
        taken = self.ledger.claim(commit_id, batch_ids, self.engine.now_us())
        if not taken:
            return
        crash_point("cold-after-claim")
        commit = self.ledger.get_or_fail(commit_id)
        await self._write_and_flip(commit, report)

    async def _write_and_flip(self, commit: ColdCommit, report: ColdMoveReport) -> None:
        manifests = self._manifests(commit.batch_ids)
        total = sum(m.event_count + m.workflow_count for m in manifests)
        done = 0

        def on_partition(day: str, rows: int) -> None:
            nonlocal done
            done += rows
            self.progress("warm → cold", done, total)

        def between(dataset: str) -> None:
            crash_point(f"cold-after-{dataset}")

        result = await self.engine.io(
            lambda: load.load(
                self.writer,
                self.store,
                commit.commit_id,
                manifests,
                on_partition=on_partition,
                between=between,
            )
        )
        workflows = sum(m.workflow_count for m in manifests)
        events = sum(m.event_count for m in manifests)
        moved = self.ledger.commit(
            commit.commit_id, result.snapshots, workflows, events, self.engine.now_us()
        )
        crash_point("cold-after-index-commit")
        report.commits.append(commit.commit_id)
        report.batches.extend(commit.batch_ids)
        report.workflows_moved += moved
        report.events_moved += events
        await self._retire(commit.commit_id, manifests, None, report)

    async def _retire(
        self,
        commit_id: str,
        manifests: list[BatchManifest],
        committed_at: int | None,
        report: ColdMoveReport,
    ) -> bool:
        """Delete a committed move's warm originals unless a SQL query may still read them.

        They go at once when no query holds a read lease
        (:mod:`tierflow.tiering.leases`), or when the commit is older than the
        grace period; else the commit stays ``committed`` and a later pass
        deletes them.
        """
        old = past_grace(committed_at, self.engine.now_us())
        keys = [k for m in manifests for k in (*m.keys(), manifest_key(m.batch_id))]

        def delete() -> int:
            self.store.delete_many(keys)
            return len(keys)

        leases = ReadLeases(self.engine.data_dir)
        deleted = await self.engine.io(leases.delete_unread, delete, old)
        if deleted is None:
            report.deletions_deferred.append(commit_id)
            return False
        report.warm_objects_deleted += deleted
        self.progress("delete warm originals", deleted, deleted)
        self.ledger.set_state(commit_id, CommitState.DONE)
        return True

    # -- crash repair ----------------------------------------------------------------

    async def recover(self, report: ColdMoveReport) -> None:
        """Finish what a crash interrupted: delete warm originals, roll pending commits forward."""
        for commit in self.ledger.in_state(CommitState.COMMITTED):
            manifests = self._manifests(commit.batch_ids)
            if await self._retire(commit.commit_id, manifests, commit.committed_at, report):
                report.recovered_commits.append(commit.commit_id)
        for commit in self.ledger.in_state(CommitState.WRITING):
            report.leftovers_deleted += await self.engine.io(self._clean_leftovers, commit)
            log.info("rolling cold commit %s forward", commit.commit_id)
            await self._write_and_flip(commit, report)
            report.recovered_commits.append(commit.commit_id)

    def _clean_leftovers(self, commit: ColdCommit) -> int:
        """Delete data files a killed write of ``commit`` left, in tables it never reached."""
        deleted = 0
        for dataset in load.ORDER:
            table = self.cold.table(dataset, create=True, refresh=True)
            if find_commit(table, commit.commit_id) is not None:
                continue  # its files are live: never touch them
            keys = self.writer.leftovers(dataset, commit.commit_id)
            if keys:
                self.store.delete_many(keys)
                deleted += len(keys)
        return deleted
