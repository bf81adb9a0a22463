"""Erasure: every copy of some workflows, in every tier, gone for good; crash-safe.

One erasure, for a set of workflows (a workflow and its descendants, every
workflow with an attribute value, or expired retention families):

1. **intent** — under the tiering locks of the data directory (no hot → warm
   pass, cold move or maintenance runs until the erasure ends), one durable
   index transaction re-checks holds and statuses, records the intent (the
   ids, in ``erasures``) and marks the workflows as being erased: from then on
   reads by id, ``list`` and SQL's hot views treat them as gone, and no pass
   selects them.
2. **settle** — what killed passes left is finished first (a half-written warm
   batch is deleted, a committed cold move is rolled forward), so no copy
   hides in a file no ledger names.
3. Under the exclusive read lease (SQL queries ran before, or run after):
   **warm** — each batch holding them is replaced by one without their rows,
   and warm originals of their cold moves that a reader kept are deleted
   (``erase_from_warm``); **cold** — their rows are deleted from the Iceberg
   tables, the snapshots that referenced their files expired and those files
   removed (``erase_rows``); **hot** — their instance files (with ``-wal`` and
   ``-shm``, and any quarantined copy) are deleted and the directories synced.
   Each step records what it did in the intent, durably.
4. **forget** — one index transaction deletes every index row naming them
   (``tierflow.hot.erasing``), removes their ids from audit records and
   holds, appends the audit records (keyed hashes only) and deletes the
   intent. The index runs with ``secure_delete``; its WAL is then
   checkpointed and truncated, so no deleted byte stays in it.

A crash anywhere leaves the intent; the next ``erase`` call, tiering pass or
process start resumes it from the first step not recorded as done, and every
step is idempotent. Crash points (``TIERFLOW_CRASH_AT``): :data:`POINTS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from tierflow.hot import erasing
from tierflow.hot.durable_fs import fsync_dirs
from tierflow.hot.errors import StorageError
from tierflow.hot.index import IndexDB
from tierflow.hot.models import from_micros
from tierflow.hot.router import Tier
from tierflow.hot.store import INSTANCE_FILE_SUFFIXES
from tierflow.tiering.compliance.host import Host
from tierflow.tiering.compliance.records import ComplianceRecords
from tierflow.tiering.faults import crash_point
from tierflow.tiering.leases import ReadLeases
from tierflow.tiering.locks import exclusive_file

__all__ = ["LEASE_WAIT", "POINTS", "Eraser", "ErasureReport", "Intent"]

log = logging.getLogger("tierflow.compliance")

POINTS = (
    "erase-after-intent",
    "erase-after-warm-rewrite",
    "erase-after-iceberg-delete",
    "erase-before-file-removal",
    "erase-after-file-removal",
    "erase-after-snapshot-expiry",
)
"""Crash points of an erasure, in order (``TIERFLOW_CRASH_AT``); the cold ones are reached
through the steps of ``tierflow.cold.erase.erase_rows``."""

# The cold primitive's steps (its ``on_step``) and the crash point after each.
_COLD_STEPS = {
    "rewritten": "erase-after-iceberg-delete",
    "sealed": "erase-before-file-removal",
    "files-deleted": "erase-after-file-removal",
    "expired": "erase-after-snapshot-expiry",
}

LEASE_WAIT = 300.0
"""Seconds an erasure waits for running SQL queries before it leaves the rest for a resume."""

_TIERS = (Tier.HOT.value, Tier.WARM.value, Tier.COLD.value)

Check = Callable[[sqlite3.Connection, list[str]], list[str]]
"""Run inside the intent transaction: the ids to erase after the last checks (raise to refuse)."""


@dataclass(frozen=True)
class ErasureReport:
    """What one erasure did.

    Attributes:
        erasure_id: Its id (in the audit records' ``detail``).
        workflows_erased: Workflows erased, over all tiers.
        per_tier: Workflows erased from each tier (``hot``, ``warm``, ``cold``).
        files_rewritten: Files written anew without their rows, per tier
            (``warm``: batch files; ``cold``: Iceberg data files).
        files_deleted: Files deleted, per tier (``hot``: instance files with
            their WAL/SHM; ``warm``: objects; ``cold``: data, manifest and
            metadata files).
        snapshots_expired: Cold snapshot ids expired because they referenced
            a file that held an erased workflow (time travel to them is gone).
        snapshots_before: Cold table to its current snapshot before the erasure.
        snapshots_after: Cold table to its current snapshot after it.
        bytes_removed: Bytes of the files deleted, over all tiers.
        audit_seqs: The audit records written (one per erased workflow).
    """

    erasure_id: str
    workflows_erased: int
    per_tier: dict[str, int]
    files_rewritten: dict[str, int] = field(default_factory=dict)
    files_deleted: dict[str, int] = field(default_factory=dict)
    snapshots_expired: tuple[int, ...] = ()
    snapshots_before: dict[str, int | None] = field(default_factory=dict)
    snapshots_after: dict[str, int | None] = field(default_factory=dict)
    bytes_removed: int = 0
    audit_seqs: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["snapshots_expired"] = list(self.snapshots_expired)
        out["audit_seqs"] = list(self.audit_seqs)
        return out


@dataclass
class Intent:
    """One ``erasures`` row: an erasure recorded and not finished.

    Attributes:
        erasure_id: Its id.
        operation: The audit operation its records get (``erase``, ``retention.expire``).
        actor: Who asked.
        reason: Why.
        created_at: When it was recorded (µs).
        workflow_ids: Every workflow it erases.
        requested: What was asked for (the workflows named, or the attribute), for the audit.
        progress: What each finished step did (see the module docstring).
    """

    erasure_id: str
    operation: str
    actor: str
    reason: str | None
    created_at: int
    workflow_ids: list[str]
    requested: dict[str, Any]
    progress: dict[str, Any] = field(default_factory=dict)


def _intent(row: Sequence[Any]) -> Intent:
    eid, op, actor, reason, created, ids, requested, progress = row
    return Intent(
        eid,
        op,
        actor,
        reason,
        created,
        json.loads(ids),
        json.loads(requested),
        json.loads(progress),
    )


def pending(index: IndexDB) -> list[Intent]:
    """Every erasure recorded and not finished, oldest first."""
    rows = index.execute(
        "SELECT erasure_id, operation, actor, reason, created_at, workflow_ids, requested, "
        "progress FROM erasures ORDER BY created_at, erasure_id",
        (),
    )
    return [_intent(r) for r in rows]


def _cold_step(name: str) -> None:
    """After each step of the cold primitive: its crash point."""
    crash_point(_COLD_STEPS.get(name, f"erase-{name}"))


def _unfinished_moves(index: IndexDB, table: str, column: str, states: Sequence[str]) -> bool:
    """Whether a ledger table exists and has a row in one of ``states``."""
    if not index.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)):
        return False
    marks = ",".join("?" * len(states))
    return bool(index.execute(f"SELECT 1 FROM {table} WHERE {column} IN ({marks}) LIMIT 1", states))


def _as_dict(value: Any) -> dict[str, Any]:
    if is_dataclass(value) and not isinstance(value, type):
        out = asdict(value)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
    return dict(value)


def _warm_primitive() -> Any:
    # Imported on use: the warm rewrite lives beside this module, with pyarrow behind it.
    return importlib.import_module("tierflow.tiering.compliance.warm").erase_from_warm


def _cold_primitive() -> Any:
    return importlib.import_module("tierflow.cold.erase").erase_rows


class Eraser:
    """Runs erasures for one data directory.

    Args:
        host: The tiers (the facade).
        records: The compliance tables of the host's index.
    """

    def __init__(self, host: Host, records: ComplianceRecords) -> None:
        self.host = host
        self.records = records
        self._tier_lock = asyncio.Lock()
        self._cold_lock = asyncio.Lock()

    # -- entry points ---------------------------------------------------------------------

    async def erase(
        self,
        workflow_ids: Sequence[str],
        *,
        operation: str,
        actor: str,
        reason: str | None,
        requested: Mapping[str, Any],
        check: Check,
    ) -> ErasureReport | None:
        """Record an erasure and run it to the end (resuming earlier ones first).

        Args:
            workflow_ids: The workflows to erase (descendants already included).
            operation: The audit operation of its records.
            actor: Who asks.
            reason: Why.
            requested: What was asked for (recorded in the audit ``detail``).
            check: Last checks inside the intent transaction; returns the ids
                to erase, or raises to refuse (nothing is then recorded).

        Returns:
            The report; None when the checks left nothing to erase.

        Raises:
            StorageError: A tier failed; the intent stays and is resumed later.
        """
        async with self._locks():
            await self._resume_locked()
            intent = Intent(
                erasure_id=f"erasure-{uuid.uuid4().hex[:16]}",
                operation=operation,
                actor=actor,
                reason=reason,
                created_at=self.host.engine.now_us(),
                workflow_ids=[],
                requested=dict(requested),
            )

            def record(conn: sqlite3.Connection) -> list[str]:
                ids = check(conn, list(workflow_ids))
                if ids:
                    intent.workflow_ids = ids
                    erasing.mark(conn, ids)
                    conn.execute(
                        "INSERT INTO erasures VALUES (?,?,?,?,?,?,?,?)",
                        (
                            intent.erasure_id,
                            intent.operation,
                            intent.actor,
                            intent.reason,
                            intent.created_at,
                            json.dumps(ids),
                            json.dumps(intent.requested, sort_keys=True),
                            "{}",
                        ),
                    )
                return ids

            ids = self.host.index.write_now(record, durable=True)
            if not ids:
                return None
            crash_point("erase-after-intent")
            return await self._run(intent)

    async def resume(self) -> list[ErasureReport]:
        """Finish every erasure a crash interrupted (cheap when there is none)."""
        from tierflow.tiering.compliance.records import has_pending_erasures

        if not has_pending_erasures(self.host.index):
            return []
        async with self._locks():
            return await self._resume_locked()

    async def _resume_locked(self) -> list[ErasureReport]:
        reports = []
        for intent in pending(self.host.index):
            log.info(
                "resuming erasure %s of %d workflows", intent.erasure_id, len(intent.workflow_ids)
            )
            reports.append(await self._run(intent))
        return reports

    @contextlib.asynccontextmanager
    async def _locks(self) -> AsyncIterator[None]:
        # The locks of hot → warm passes and of cold moves and maintenance, in the order
        # Tierflow.tier() takes them (one after the other): no pass of any process moves or
        # rewrites what is being erased. Taken by file, without building the jobs, so that
        # erasing in a hot-only deployment imports neither pyarrow nor pyiceberg.
        data_dir, io = self.host.data_dir, self.host.engine.io
        async with (
            exclusive_file(data_dir / "tier.lock", io, self._tier_lock),
            exclusive_file(data_dir / "cold.lock", io, self._cold_lock),
        ):
            yield

    # -- one erasure, under the locks -----------------------------------------------------

    async def _run(self, intent: Intent) -> ErasureReport:
        await self._settle()
        report = await self.host.engine.io(self._destroy, intent)
        self.host.engine.forget(intent.workflow_ids)
        self.host.forget_cached(intent.workflow_ids)
        return report

    async def _settle(self) -> None:
        """Finish what killed passes left, so that no copy hides in a file no ledger names."""
        index = self.host.index
        if _unfinished_moves(index, "tier_batches", "state", ("writing", "committed")):
            from tierflow.tiering.to_warm import TieringReport

            await self.host.warm_move.recover(TieringReport())
        if _unfinished_moves(index, "cold_commits", "state", ("writing", "committed")):
            from tierflow.tiering.to_cold import ColdMoveReport

            await self.host.cold_move.recover(ColdMoveReport())

    def _destroy(self, intent: Intent) -> ErasureReport:
        """Steps 3 and 4, on an I/O thread, with a connection of its own to the index."""
        index = IndexDB(self.host.index.path, self.host.index.durability)
        try:
            return _Destroy(self.host, self.records, index, intent).run()
        finally:
            index.close()


class _Destroy:
    """The destructive steps of one erasure (synchronous; see :meth:`Eraser._destroy`)."""

    def __init__(
        self, host: Host, records: ComplianceRecords, index: IndexDB, intent: Intent
    ) -> None:
        self.host = host
        self.records = records
        self.index = index
        self.intent = intent
        self.progress = intent.progress
        ids = intent.workflow_ids
        self.rows: dict[str, tuple[str, str | None, str | None]] = {}
        self.finished: dict[str, str] = {}  # the cold partition (finished date) of each
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for wid, tier, file, batch, finished_at in index.execute(
                "SELECT workflow_id, tier, file, batch_id, finished_at FROM instances "
                f"WHERE workflow_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                self.rows[wid] = (tier, file, batch)
                if finished_at is not None:
                    self.finished[wid] = from_micros(finished_at).date().isoformat()

    def save(self) -> None:
        text = json.dumps(self.progress, sort_keys=True)
        self.index.write_now(
            lambda c: c.execute(
                "UPDATE erasures SET progress=? WHERE erasure_id=?", (text, self.intent.erasure_id)
            ),
            durable=True,
        )

    def ids_in(self, tier: str) -> list[str]:
        return sorted(w for w, (t, _, _) in self.rows.items() if t == tier)

    def run(self) -> ErasureReport:
        if "tiers" not in self.progress:
            # The tier each workflow was in when the erasure started (for the report).
            self.progress["tiers"] = {w: t for w, (t, _, _) in self.rows.items()}
            self.save()
        leases = ReadLeases(self.host.data_dir)
        with leases.exclusive(wait=LEASE_WAIT) as unread:
            if not unread:
                raise StorageError(
                    f"erasure {self.intent.erasure_id}: SQL queries still read after "
                    f"{LEASE_WAIT:.0f}s; the workflows stay hidden and the erasure resumes at "
                    "the next erase call, tiering pass or start"
                )
            self.warm()
            self.cold()
            self.hot()
            seqs = self.forget()
        self.checkpoint()
        return self.report(seqs)

    # -- the tiers --------------------------------------------------------------------------

    def warm(self) -> None:
        # Every id a batch carried: warm ones, and cold ones whose cold move's warm
        # originals a reader kept from deletion (they still hold the rows).
        ids = sorted(w for w, (_, _, batch) in self.rows.items() if batch is not None)
        if not ids or "warm" in self.progress:
            return
        result = _warm_primitive()(self.index, self.host.store, ids)
        self.progress["warm"] = _as_dict(result)
        self.save()
        crash_point("erase-after-warm-rewrite")

    def cold(self) -> None:
        ids = self.ids_in(Tier.COLD)
        if not ids or "cold" in self.progress:
            return
        result = _cold_primitive()(
            self.host.cold,
            ids,
            now=self.host.engine.clock.now(),
            finished_dates={w: self.finished[w] for w in ids if w in self.finished},
            on_step=_cold_step,
        )
        self.progress["cold"] = _as_dict(result)
        self.save()

    def hot(self) -> None:
        if "hot" in self.progress:
            return
        base = self.host.engine.instances_dir
        quarantine = self.host.engine.hot_dir / "quarantine"
        deleted = size = 0
        dirs: set[Path] = set()
        for _, file, _ in self.rows.values():
            if file is None:
                continue
            path = base / file
            copies = [Path(str(path) + s) for s in INSTANCE_FILE_SUFFIXES]
            if quarantine.is_dir():
                copies.extend(quarantine.glob(f"{path.name}.*"))
            for p in copies:
                with contextlib.suppress(FileNotFoundError):
                    size += p.stat().st_size
                    os.unlink(p)
                    deleted += 1
                    dirs.add(p.parent)
        # The deletions are durable before the index forgets the files.
        fsync_dirs(d for d in dirs if d.is_dir())
        self.progress["hot"] = {"files_deleted": deleted, "bytes_removed": size}
        self.save()

    # -- the index --------------------------------------------------------------------------

    def forget(self) -> list[int]:
        """One transaction: forget the workflows, redact their ids, audit, end the intent."""
        intent = self.intent
        tiers: dict[str, str] = self.progress["tiers"]
        counts = self.per_tier(tiers)
        before, after = self.snapshots()
        named = set(intent.requested.get("workflows", []))
        hashes = {w: self.records.subject_hash(w) for w in intent.workflow_ids}
        summary = self.summary()
        now = self.host.engine.now_us()
        values = [
            self.records.values(
                intent.operation,
                actor=intent.actor,
                reason=intent.reason,
                at_us=now,
                subject_hash=hashes[w],
                counts=counts,
                snapshots_before=before,
                snapshots_after=after,
                detail={
                    "erasure_id": intent.erasure_id,
                    "tier": tiers.get(w),
                    "requested": w in named,
                    **{k: v for k, v in intent.requested.items() if k != "workflows"},
                    **summary,
                },
            )
            for w in sorted(intent.workflow_ids)
        ]

        def fn(conn: sqlite3.Connection) -> list[int]:
            erasing.forget(conn, intent.workflow_ids)
            ComplianceRecords.redact(conn, intent.workflow_ids)
            seqs = ComplianceRecords.insert(conn, values)
            conn.execute("DELETE FROM erasures WHERE erasure_id=?", (intent.erasure_id,))
            return seqs

        seqs: list[int] = self.index.write_now(fn, durable=True)
        return seqs

    def checkpoint(self) -> None:
        """Copy the WAL into the index file and truncate it: no deleted byte stays in it."""
        for _ in range(100):
            busy = self.index.checkpoint()
            if not busy:
                return
            time.sleep(0.02)
        log.warning(
            "erasure %s: the index WAL could not be truncated (a reader held it); the next "
            "erasure truncates it",
            self.intent.erasure_id,
        )

    # -- the report -------------------------------------------------------------------------

    @staticmethod
    def per_tier(tiers: Mapping[str, str]) -> dict[str, int]:
        out = dict.fromkeys(_TIERS, 0)
        for tier in tiers.values():
            out[tier] = out.get(tier, 0) + 1
        return out

    def snapshots(self) -> tuple[dict[str, int | None], dict[str, int | None]]:
        cold = self.progress.get("cold") or {}
        return dict(cold.get("snapshot_before") or {}), dict(cold.get("snapshot_after") or {})

    def summary(self) -> dict[str, Any]:
        """Files and bytes per tier, and the expired snapshots (the audit ``detail``)."""
        warm = self.progress.get("warm") or {}
        cold = self.progress.get("cold") or {}
        hot = self.progress.get("hot") or {}
        return {
            "files_rewritten": {
                "warm": int(warm.get("files_rewritten", 0)),
                "cold": int(cold.get("files_rewritten", 0)),
            },
            "files_deleted": {
                "hot": int(hot.get("files_deleted", 0)),
                "warm": int(warm.get("objects_deleted", 0)),
                "cold": int(cold.get("files_deleted", 0)),
            },
            "snapshots_expired": list(cold.get("snapshots_expired") or []),
            "bytes_removed": int(hot.get("bytes_removed", 0))
            + int(warm.get("bytes_removed", 0))
            + int(cold.get("bytes_removed", 0)),
        }

    def report(self, seqs: list[int]) -> ErasureReport:
        summary = self.summary()
        before, after = self.snapshots()
        tiers: dict[str, str] = self.progress["tiers"]
        return ErasureReport(
            erasure_id=self.intent.erasure_id,
            workflows_erased=len(self.intent.workflow_ids),
            per_tier=self.per_tier(tiers),
            files_rewritten=summary["files_rewritten"],
            files_deleted=summary["files_deleted"],
            snapshots_expired=tuple(summary["snapshots_expired"]),
            snapshots_before=before,
            snapshots_after=after,
            bytes_removed=summary["bytes_removed"],
            audit_seqs=tuple(seqs),
        )
