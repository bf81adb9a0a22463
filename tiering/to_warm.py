"""The tiering job: move finished instances from hot SQLite files to warm Parquet.

One pass, per batch:

1. **select** finished instances old enough (the policy), from the index;
2. **record** the batch in the ledger (fsync'd) before writing anything;
3. **read** their instance files (in parallel, read-only);
4. **write** a few large Parquet files (``warm.writer``), durable before the
   commit (on ``file://`` fsync'd with their directories);
5. **verify**: read every file back; sizes, sha256 and row counts must match;
6. **commit**: one index transaction marks the batch committed and moves the
   instances to ``tier='warm'`` — from here on every read goes to warm;
7. **publish** the batch manifest next to the data (external readers use it);
8. **delete** the hot files — at once when no SQL query holds a read lease,
   else in a later pass (:mod:`tierflow.tiering.leases`; the index keeps
   them listed until then).

A crash anywhere is repaired by the next pass before it selects anything: a
batch still ``writing`` is garbage-collected (its objects deleted, state
``aborted``; its instances never left hot), a ``committed`` one is published
and its hot files deleted. At no instant does an instance's data count in
two tiers, because only the ledger commit flips the tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tierflow.hot import serde
from tierflow.hot.errors import CorruptInstance
from tierflow.hot.models import to_micros
from tierflow.hot.router import Tier
from tierflow.hot.rows import names
from tierflow.hot.store import EVENT_COLUMNS, delete_instance_file, read_for_archive
from tierflow.tiering.faults import crash_point
from tierflow.tiering.leases import ReadLeases, past_grace
from tierflow.tiering.locks import exclusive_file
from tierflow.tiering.policy import TieringPolicy
from tierflow.tiering.warm_ledger import BatchState, WarmLedger
from tierflow.warm import reader, schema, writer
from tierflow.warm.storage import ObjectStore

if TYPE_CHECKING:
    from tierflow.hot.engine import Engine

__all__ = ["Progress", "TieringReport", "WarmMove", "encode_report"]

log = logging.getLogger("tierflow.tiering")

Progress = Callable[[str, int, int], None]

# Reading is mostly GIL-bound work on small files: one worker beats several.
_READ_WORKERS = 1

# What the instance row gives the warm table directly; duration_ms and tier
# are derived by ``warm.schema.workflows_table``.
_WF_FROM_ROW = tuple(c for c in schema.WORKFLOW_COLUMNS if c not in ("duration_ms", "tier"))
# The order of the values in each stored event row (``read_for_archive``).
_EVENT_NAMES = names(EVENT_COLUMNS)


@dataclass
class TieringReport:
    """What one pass did (hot → warm; the warm → cold pass in ``cold``)."""

    batches: list[str] = field(default_factory=list)
    workflows_moved: int = 0
    events_moved: int = 0
    files_written: int = 0
    bytes_written: int = 0
    objects_put: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    recovered_batches: list[str] = field(default_factory=list)
    garbage_collected: int = 0
    hot_bytes: int = 0
    seconds: float = 0.0
    cold: Any = None
    """The warm → cold pass (``ColdMoveReport``) when ``Tierflow.tier`` ran one."""
    retention: Any = None
    """What retention deleted (``RetentionReport``) when ``Tierflow.tier`` applied it."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``cold`` and ``retention`` as their own dicts, or None)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["cold"] = None if self.cold is None else self.cold.to_dict()
        out["retention"] = None if self.retention is None else self.retention.to_dict()
        return out


class WarmMove:
    """Runs tiering passes for one engine and one object store.

    Args:
        engine: The hot engine (its index is the ledger's home).
        store: Where warm data goes.
        policy: What moves and when.
        progress: Called as ``progress(stage, done, total)``.
    """

    def __init__(
        self,
        engine: Engine,
        store: ObjectStore,
        policy: TieringPolicy,
        progress: Progress | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.policy = policy
        self.progress = progress or (lambda stage, done, total: None)
        self.ledger = WarmLedger(engine.index)
        self._lock = asyncio.Lock()

    @property
    def root(self) -> str:
        """The store root as a path on ``store.fs``."""
        return self.store.root

    async def run(self, now: float | None = None) -> TieringReport:
        """Run one pass: repair what a crash left, then move every eligible batch.

        Args:
            now: Treat this (seconds since the epoch) as the current time when
                judging age; default: the engine clock.

        Raises:
            StorageError: The warm store is unusable; nothing in hot was touched.
        """
        # One pass per data directory at a time, across processes: two concurrent passes
        # would write the same instances into two batches.
        async with exclusive_file(self.engine.data_dir / "tier.lock", self.engine.io, self._lock):
            t0 = time.perf_counter()
            report = TieringReport()
            await self.engine.io(self.store.check)
            await self.recover(report)
            cutoff_now = self.engine.clock.now() if now is None else now
            while True:
                skipped = {w for w, _ in report.skipped}
                candidates = self._select(cutoff_now, skipped)
                if not candidates:
                    break
                moved = await self._move(candidates, report)
                if moved == 0:
                    break  # everything left is unreadable; reported in skipped
            report.seconds = time.perf_counter() - t0
            return report

    # -- selection -------------------------------------------------------------------

    def _select(self, now: float, exclude: set[str]) -> list[tuple[str, str, str, int]]:
        """Eligible ``(workflow_id, file, workflow_type, events)``, oldest first, one batch."""
        policy = self.policy
        ages = [policy.min_age_seconds()] + [policy.min_age_seconds(t) for t in policy.per_type]
        loosest_cutoff = to_micros(now - min(ages))
        disabled = policy.disabled_types()
        # Never move events a registered subscriber has not acknowledged yet.
        rows = self.engine.index.finished_in_tier(
            Tier.HOT,
            statuses=policy.statuses,
            finished_before=loosest_cutoff,
            exclude_types=disabled,
            condition=self.engine.stream.acknowledged_condition(),
            limit=policy.max_workflows_per_batch * 2 + len(exclude),
        )
        out: list[tuple[str, str, str, int]] = []
        events = 0
        for wid, file, wtype, finished_at, n_events in rows:
            if wid in exclude or finished_at > to_micros(now - policy.min_age_seconds(wtype)):
                continue
            if out and events + n_events > policy.max_events_per_batch:
                break
            out.append((wid, file, wtype, n_events))
            events += n_events
            if len(out) >= policy.max_workflows_per_batch:
                break
        return out

    # -- one batch -------------------------------------------------------------------

    async def _read_all(
        self, candidates: list[tuple[str, str, str, int]], report: TieringReport
    ) -> tuple[list[tuple[dict[str, Any], list[tuple[Any, ...]]]], list[str]]:
        # Two workers reading chunks sequentially beat one thread per file: opening a
        # small SQLite file is ~0.1 ms of mostly-GIL work, so more threads only contend.
        base = self.engine.instances_dir
        total = len(candidates)
        done = 0
        results: list[tuple[dict[str, Any], list[tuple[Any, ...]]]] = []
        files: list[str] = []
        step = 512
        chunks = [candidates[i : i + step] for i in range(0, total, step)]
        for pair_start in range(0, len(chunks), _READ_WORKERS):
            pair = chunks[pair_start : pair_start + _READ_WORKERS]
            outs = await asyncio.gather(*(self.engine.io(_read_chunk, base, c) for c in pair))
            for chunk, out in zip(pair, outs, strict=True):
                for cand, item in zip(chunk, out, strict=True):
                    if isinstance(item, BaseException):
                        reason = (
                            f"corrupt: {item}"
                            if isinstance(item, CorruptInstance)
                            else f"unreadable: {item}"
                        )
                        report.skipped.append((cand[0], reason))
                        log.error("tiering skips %s: %s", cand[0], reason)
                        continue
                    results.append(item)
                    files.append(cand[1])
                done += len(chunk)
            self.progress("read", done, total)
        return results, files

    @staticmethod
    def _columns(
        items: list[tuple[dict[str, Any], list[tuple[Any, ...]]]],
    ) -> tuple[dict[str, list[Any]], dict[str, list[Any]], dict[str, int]]:
        wf: dict[str, list[Any]] = {c: [] for c in _WF_FROM_ROW}
        ev: dict[str, list[Any]] = {c: [] for c in schema.HISTORY_COLUMNS}
        finished: dict[str, int] = {}
        for row, events in items:
            wid, run_id, wtype = row["workflow_id"], row["run_id"], row["workflow_type"]
            for c in _WF_FROM_ROW:
                wf[c].append(row[c])
            finished[wid] = row["finished_at"]
            n = len(events)
            ev["workflow_id"].extend([wid] * n)
            ev["run_id"].extend([run_id] * n)
            ev["workflow_type"].extend([wtype] * n)
            for i, name in enumerate(_EVENT_NAMES):
                ev[name].extend([e[i] for e in events])
        return wf, ev, finished

    async def _move(
        self, candidates: list[tuple[str, str, str, int]], report: TieringReport
    ) -> int:
        engine = self.engine
        batch_id = writer.new_batch_id()
        self.ledger.begin(batch_id, engine.now_us(), self.store.url)
        items, files = await self._read_all(candidates, report)
        crash_point("after-read")
        if not items:
            self.ledger.set_state(batch_id, BatchState.ABORTED)
            return 0
        wf_cols, ev_cols, finished = self._columns(items)
        n_events = len(ev_cols["event_id"])

        def write_and_verify() -> writer.BatchManifest:
            wf_table = schema.workflows_table(wf_cols)
            ev_table = schema.history_table(ev_cols, finished)
            bw = writer.BatchWriter(
                self.store,
                batch_id,
                max_rows_per_file=self.policy.max_rows_per_file,
                on_file_stored=lambda key: crash_point("mid-write"),
            )
            manifest = bw.write(wf_table, ev_table)
            crash_point("after-write")
            reader.verify(self.store.fs, self.root, manifest)
            return manifest

        self.progress("write", 0, 1)
        manifest = await engine.io(write_and_verify)
        self.progress("write", 1, 1)
        crash_point("after-verify")
        ids = [row["workflow_id"] for row, _ in items]
        moved = self.ledger.commit(
            batch_id, manifest.to_json(), ids, len(ids), n_events, engine.now_us()
        )
        crash_point("after-commit")
        report.batches.append(batch_id)
        report.workflows_moved += moved
        report.events_moved += n_events
        report.files_written += len(manifest.files)
        report.bytes_written += sum(f.bytes for f in manifest.files)
        report.objects_put += len(manifest.files) + 1  # data files + the manifest
        report.hot_bytes += await engine.io(_sizes, [engine.instances_dir / f for f in files])
        await self._finish(batch_id, manifest)
        return moved

    async def _finish(self, batch_id: str, manifest: writer.BatchManifest) -> None:
        """Publish the manifest and delete the hot files of a committed batch (idempotent)."""
        engine = self.engine
        await engine.io(writer.write_manifest, self.store, manifest)
        self.ledger.set_state(batch_id, BatchState.DONE)
        await self._delete_moved(self.ledger.hot_files_of(batch_id), old=False)

    async def _delete_moved(self, pending: list[tuple[str, str]], old: bool) -> int:
        """Delete hot files of moved instances unless a SQL query may still read them.

        Args:
            pending: ``(workflow_id, file)`` of moved instances with a hot file.
            old: They moved longer than the grace period ago: delete anyway.

        Returns:
            How many were deleted (0 when a query holds a read lease).
        """
        engine = self.engine
        base = engine.instances_dir
        leases = ReadLeases(engine.data_dir)
        done: list[str] = []
        for start in range(0, len(pending), 512):
            chunk = pending[start : start + 512]

            def delete(chunk: list[tuple[str, str]] = chunk) -> bool:
                for _, f in chunk:
                    delete_instance_file(base / f)
                return True

            if not await engine.io(leases.delete_unread, delete, old):
                break
            done.extend(w for w, _ in chunk)
            self.progress("delete", len(done), len(pending))
        self.ledger.forget_hot_files(done)
        return len(done)

    # -- crash repair ----------------------------------------------------------------

    async def recover(self, report: TieringReport) -> None:
        """Finish committed batches and garbage-collect ones a crash left half-written."""
        for batch in self.ledger.in_state(BatchState.COMMITTED):
            assert batch.manifest is not None
            manifest = writer.BatchManifest.from_json(batch.manifest)
            await self._finish(batch.batch_id, manifest)
            report.recovered_batches.append(batch.batch_id)
        # Hot files a running query kept (or a crash left) after their batch was done.
        for batch_id, committed_at in self.ledger.batches_with_hot_files():
            old = past_grace(committed_at, self.engine.now_us())
            await self._delete_moved(self.ledger.hot_files_of(batch_id), old)
        writing = self.ledger.in_state(BatchState.WRITING)
        if writing:
            # One listing for all of them: objects are found by the batch id in their keys.
            found = await self.engine.io(writer.list_batches, self.store)
            for batch in writing:
                keys = found.get(batch.batch_id, [])
                if keys:
                    await self.engine.io(self.store.delete_many, keys)
                    log.info(
                        "garbage-collected %d objects of uncommitted batch %s",
                        len(keys),
                        batch.batch_id,
                    )
                report.garbage_collected += len(keys)
                self.ledger.set_state(batch.batch_id, BatchState.ABORTED)
                report.recovered_batches.append(batch.batch_id)


def _read_chunk(
    base: Any, chunk: list[tuple[str, str, str, int]]
) -> list[tuple[dict[str, Any], list[tuple[Any, ...]]] | BaseException]:
    out: list[tuple[dict[str, Any], list[tuple[Any, ...]]] | BaseException] = []
    for cand in chunk:
        try:
            out.append(read_for_archive(base / cand[1]))
        except (CorruptInstance, OSError) as exc:
            out.append(exc)
    return out


def _sizes(paths: list[Any]) -> int:
    total = 0
    for p in paths:
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return total


def encode_report(report: TieringReport) -> str:
    """The report as JSON text."""
    return serde.encode(report.to_dict(), what="tiering report")
