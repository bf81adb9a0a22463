"""Erasure from the warm tier: rewrite each batch holding a workflow without its rows.

Warm batches are immutable and their manifests (in the tiering ledger and
published next to the data) list every file with its size and SHA-256, so a
batch that holds an erased workflow is replaced by a new batch:

1. **intent**: ``warm_erasures`` records the batch and the id of the batch
   that replaces it (fsync'd), before anything is written;
2. **rewrite**: each file of the batch that can hold an id (its partition
   date, from the index, then the ``workflow_id`` statistics in its footer:
   only those files' rows are read) is written again without those rows under
   the new batch id; a file left empty is dropped; other files stay as they
   are (the new manifest lists them under their old keys);
3. **verify** the new files (read back: size, SHA-256, rows, schema);
4. **swap**, one index transaction: the new batch replaces the old one in the
   ledger (same state and times, the new manifest with its new checksums),
   the batch's instances point at it, and the intent lists the old objects
   to delete;
5. **publish** the new manifest, **delete** the old files and manifest, and
   forget the intent.

A new batch id (not the old one with new files) because readers cache a
batch's manifest by its id (the warm reader, SQL's file lists): an id never
changes meaning. A crash before the swap leaves the old batch in force, and
a rerun writes the same keys again (file ``i`` of the old manifest becomes
file ``i`` of the new batch); a crash after it leaves the intent listing
what to delete, and every call finishes such intents first. Readers see the
old batch or the new one, never a mix.

Batches already in cold (state ``cold``) whose warm originals a reader kept
from deletion have them deleted here (the cold copy holds every row). A
batch a cold move has claimed but not finished cannot be rewritten: finish
that move first (the caller holds the tiering lock and rolls pending cold
moves forward before erasing).

The caller also owns the instances' index rows: it deletes them after this
(they point at the new batch until then), and it serialises erasure with the
moves between tiers.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.hot.index import IndexDB
from tierflow.hot.models import from_micros
from tierflow.tiering.cold_ledger import ColdLedger, CommitState
from tierflow.tiering.faults import crash_point
from tierflow.tiering.warm_ledger import Batch, BatchState, WarmLedger
from tierflow.warm import reader
from tierflow.warm.storage import ObjectStore
from tierflow.warm.writer import (
    BatchManifest,
    BatchWriter,
    WrittenFile,
    data_key,
    full_path,
    manifest_key,
    new_batch_id,
    write_manifest,
)

__all__ = ["CRASH_POINTS", "WarmErasure", "erase_from_warm"]

CRASH_POINTS = (
    "warm-erase-after-intent",
    "warm-erase-after-write",
    "warm-erase-after-swap",
    "warm-erase-after-publish",
    "warm-erase-after-delete",
)
"""Where crash tests kill an erasure (``TIERFLOW_CRASH_AT``), in order, once per batch."""

_DDL = """
CREATE TABLE IF NOT EXISTS warm_erasures (
    batch_id TEXT PRIMARY KEY,
    new_batch_id TEXT NOT NULL,
    state TEXT NOT NULL,
    garbage TEXT
) STRICT;
"""
_WRITING = "writing"
_SWAPPED = "swapped"
_LIVE_STATES = (BatchState.COMMITTED.value, BatchState.DONE.value)


@dataclass(frozen=True)
class WarmErasure:
    """What :func:`erase_from_warm` did (a value: never changed).

    Attributes:
        batches_rewritten: Batches replaced by a batch without the erased rows.
        files_rewritten: Files of those batches written again without the rows
            (or dropped, when nothing else was in them).
        objects_deleted: Objects deleted: replaced files and manifests, and warm
            originals of batches already in cold.
        bytes_removed: Bytes of the deleted objects.
        files_read: Files whose rows were read (those the partition and footer
            statistics could not rule out).
        batches: The batches that held the workflows (old id to new id; new id
            None when the batch was in cold and only its warm originals went).
    """

    batches_rewritten: int = 0
    files_rewritten: int = 0
    objects_deleted: int = 0
    bytes_removed: int = 0
    files_read: int = 0
    batches: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return asdict(self)


@dataclass
class _Tally:
    batches: int = 0
    rewritten: int = 0
    deleted: int = 0
    bytes_removed: int = 0
    read: int = 0
    moved: dict[str, str | None] = field(default_factory=dict)


def erase_from_warm(index: IndexDB, store: ObjectStore, workflow_ids: Sequence[str]) -> WarmErasure:
    """Remove every row of ``workflow_ids`` from the warm batches that hold them.

    The index's ``batch_id`` column locates the batches. Idempotent and
    crash-safe: a rerun after a kill at any point finishes the job, and
    other workflows of those batches keep every row (their files verify
    against the new manifest).

    Args:
        index: The instance index (the ledger and the intents live there).
        store: The warm store the batches were written to.
        workflow_ids: The workflows to erase.

    Returns:
        What was read, rewritten and deleted.

    Raises:
        InvalidArgument: ``workflow_ids`` is not a sequence of non-empty strings.
        StorageError: The store or the index failed (a rerun resumes), a batch
            was written to another store, or a cold move has claimed a batch
            and not finished.
    """
    if isinstance(workflow_ids, str):
        raise InvalidArgument("workflow_ids must be a sequence of ids, not one string")
    ids = sorted(set(workflow_ids))
    if not all(isinstance(w, str) and w for w in ids):
        raise InvalidArgument("workflow ids must be non-empty strings")
    ledger = WarmLedger(index)
    colds = ColdLedger(index)
    index.ensure_schema(_DDL)
    tally = _Tally()
    _finish_swapped(index, store, tally)
    located = _locate(index, ids)
    for batch_id in sorted(located):
        batch = ledger.get(batch_id)
        if batch is None:
            continue  # not in the ledger: nothing of it to rewrite
        if batch.store_url and batch.store_url != store.url:
            raise StorageError(
                f"warm batch {batch_id} was written to {batch.store_url}, not {store.url}",
                url=store.url,
            )
        if batch.state == BatchState.COLD.value:
            _drop_cold_originals(store, colds, batch, tally)
        elif batch.state in _LIVE_STATES:
            claim = colds.commit_of_batch(batch_id)
            if claim is not None:
                raise StorageError(
                    f"warm batch {batch_id} is being moved to cold by {claim.commit_id}; "
                    "finish that cold move (a tiering pass) before erasing",
                    url=store.url,
                )
            _rewrite_batch(index, store, batch, located[batch_id], tally)
    _roll_back_stale(index, store)
    return WarmErasure(
        batches_rewritten=tally.batches,
        files_rewritten=tally.rewritten,
        objects_deleted=tally.deleted,
        bytes_removed=tally.bytes_removed,
        files_read=tally.read,
        batches=tally.moved,
    )


# --------------------------------------------------------------------------------------------
# Finding the batches


def _locate(index: IndexDB, ids: Sequence[str]) -> dict[str, dict[str, str | None]]:
    """Batch id to ``{workflow_id: finished_date or None}`` of the ids it holds."""
    out: dict[str, dict[str, str | None]] = defaultdict(dict)
    for i in range(0, len(ids), 500):
        chunk = list(ids[i : i + 500])
        rows = index.execute(
            "SELECT workflow_id, batch_id, finished_at FROM instances WHERE batch_id IS NOT "
            f"NULL AND workflow_id IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        for wid, batch_id, finished_at in rows:
            day = None if finished_at is None else from_micros(finished_at).date().isoformat()
            out[batch_id][wid] = day
    return dict(out)


def _may_hold(
    store: ObjectStore, f: WrittenFile, wanted: dict[str, str | None]
) -> tuple[bool, pq.FileMetaData | None]:
    """Whether a file can hold a wanted id: its date, then its row groups' id statistics."""
    ids = [w for w, day in wanted.items() if day in (None, f.finished_date)]
    if not ids:
        return False, None
    meta = _footer(store, f.key)
    column = meta.schema.names.index("workflow_id")
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(column).statistics
        if stats is None or not stats.has_min_max:
            return True, meta
        if any(stats.min <= w <= stats.max for w in ids):
            return True, meta
    return False, meta


def _read_warm(store: ObjectStore, key: str, **options: Any) -> pa.Table:
    """``pq.read_table`` of one warm file; failures are StorageErrors naming the key."""
    try:
        return pq.read_table(full_path(store.root, key), filesystem=store.fs, **options)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read warm file {key}: {exc}", url=store.url) from exc


def _footer(store: ObjectStore, key: str) -> pq.FileMetaData:
    try:
        return pq.read_metadata(full_path(store.root, key), filesystem=store.fs)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read warm file {key}: {exc}", url=store.url) from exc


# --------------------------------------------------------------------------------------------
# One batch


def _intent(index: IndexDB, batch_id: str) -> tuple[str, str, str | None] | None:
    rows = index.execute(
        "SELECT new_batch_id, state, garbage FROM warm_erasures WHERE batch_id=?", (batch_id,)
    )
    return (rows[0][0], rows[0][1], rows[0][2]) if rows else None


def _holding(
    store: ObjectStore,
    manifest: BatchManifest,
    wanted: dict[str, str | None],
    footers: dict[str, Any],
    tally: _Tally,
) -> set[int]:
    """Positions of the files that hold a wanted id.

    The partition date and the footer's row-group statistics rule most files
    out; the rest have their ``workflow_id`` column read (row groups pruned).
    """
    drop = sorted(wanted)
    out: set[int] = set()
    for n, f in enumerate(manifest.files):
        maybe, meta = _may_hold(store, f, wanted)
        if meta is not None:
            footers[f.key] = meta
        if not maybe:
            continue
        tally.read += 1
        found = _read_warm(
            store, f.key, columns=["workflow_id"], filters=[("workflow_id", "in", drop)]
        )
        if found.num_rows:
            out.add(n)
    return out


def _rewrite_batch(
    index: IndexDB,
    store: ObjectStore,
    batch: Batch,
    wanted: dict[str, str | None],
    tally: _Tally,
) -> None:
    old_id = batch.batch_id
    assert batch.manifest is not None  # committed and done batches have one
    manifest = BatchManifest.from_json(batch.manifest)
    footers: dict[str, Any] = {}
    holding = _holding(store, manifest, wanted, footers, tally)
    found = _intent(index, old_id)
    if not holding:
        # Nothing of the workflows is in this batch (an earlier erasure already ran).
        if found is not None:
            _abandon(index, store, old_id, found[0], manifest)
        return
    new_id = found[0] if found is not None else new_batch_id()
    if found is None:
        index.write_now(
            lambda c: c.execute(
                "INSERT INTO warm_erasures (batch_id, new_batch_id, state) VALUES (?,?,?)",
                (old_id, new_id, _WRITING),
            ),
            durable=True,
        )
    crash_point("warm-erase-after-intent")
    drop = pa.array(sorted(wanted), pa.string())
    files: list[WrittenFile] = []
    written: list[WrittenFile] = []
    replaced: list[WrittenFile] = []
    bw = BatchWriter(store, new_id)
    with store.batch() as out:
        for n, f in enumerate(manifest.files):
            if n not in holding:
                files.append(f)
                continue
            rows = _read_warm(store, f.key)
            kept = rows.filter(pc.invert(pc.is_in(rows.column("workflow_id"), value_set=drop)))
            replaced.append(f)
            if kept.num_rows:
                key = data_key(f.dataset, f.finished_date, new_id, n)
                new = bw.write_file(out, key, f.dataset, f.finished_date, kept)
                files.append(new)
                written.append(new)
                if f.dataset == "workflows":
                    footers[new.key] = _finish_range(kept)
    crash_point("warm-erase-after-write")
    new_manifest = _manifest(store, manifest, new_id, files, footers)
    reader.verify(store.fs, store.root, _partial(new_manifest, written))
    # Keys of the new batch an interrupted earlier attempt may have written and this one
    # did not (it erased other ids, and left other files alone).
    spare = _new_keys(manifest, new_id) - {w.key for w in written}
    garbage = [f.key for f in replaced] + [manifest_key(old_id), *sorted(spare)]
    _swap(index, batch, new_manifest, garbage)
    crash_point("warm-erase-after-swap")
    tally.batches += 1
    tally.rewritten += len(replaced)
    tally.moved[old_id] = new_id
    _finish(index, store, old_id, new_manifest, garbage, tally)


def _new_keys(manifest: BatchManifest, new_id: str) -> set[str]:
    """Every key a rewrite of ``manifest`` into batch ``new_id`` can write."""
    return {data_key(f.dataset, f.finished_date, new_id, n) for n, f in enumerate(manifest.files)}


def _abandon(
    index: IndexDB, store: ObjectStore, old_id: str, new_id: str, manifest: BatchManifest
) -> None:
    """Delete what an unfinished rewrite wrote and forget its intent (the old batch stays)."""
    keys = _new_keys(manifest, new_id)
    _delete(store, [*keys, *_unfinished(store, keys)], _Tally())
    index.write_now(
        lambda c: c.execute("DELETE FROM warm_erasures WHERE batch_id=?", (old_id,)),
        durable=True,
    )


def _finish_range(rows: pa.Table) -> Any:
    """The (min, max) ``finished_at`` of workflows rows, as a stand-in for a footer."""
    bounds = pc.min_max(rows.column("finished_at").cast(pa.int64()))
    return (bounds["min"].as_py(), bounds["max"].as_py())


def _micros(value: Any) -> int:
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(stamp.timestamp() * 1_000_000)
    return int(value)


def _manifest(
    store: ObjectStore,
    old: BatchManifest,
    new_id: str,
    files: list[WrittenFile],
    footers: dict[str, Any],
) -> BatchManifest:
    """The new batch's manifest: its files, counts and range of ``finished_at``."""
    lows: list[int] = []
    highs: list[int] = []
    for f in files:
        if f.dataset != "workflows" or not f.rows:
            continue
        found = footers.get(f.key)
        if found is None:
            found = _footer(store, f.key)
        if isinstance(found, tuple):
            lows.append(found[0])
            highs.append(found[1])
            continue
        column = found.schema.names.index("finished_at")
        for i in range(found.num_row_groups):
            stats = found.row_group(i).column(column).statistics
            if stats is None or not stats.has_min_max:
                raise StorageError(f"warm file {f.key} has no finished_at statistics")
            lows.append(_micros(stats.min))
            highs.append(_micros(stats.max))

    def iso(micros: list[int], pick: Any) -> str | None:
        return from_micros(pick(micros)).isoformat() if micros else None

    return BatchManifest(
        batch_id=new_id,
        created_at=datetime.now(UTC).isoformat(),
        files=files,
        workflow_count=sum(f.rows for f in files if f.dataset == "workflows"),
        event_count=sum(f.rows for f in files if f.dataset == "history"),
        min_finished_at=iso(lows, min),
        max_finished_at=iso(highs, max),
        schema_version=old.schema_version,
    )


def _partial(manifest: BatchManifest, written: list[WrittenFile]) -> BatchManifest:
    """The manifest restricted to the files just written (what the verification reads)."""
    return replace(
        manifest,
        files=written,
        workflow_count=sum(f.rows for f in written if f.dataset == "workflows"),
        event_count=sum(f.rows for f in written if f.dataset == "history"),
    )


def _swap(index: IndexDB, batch: Batch, manifest: BatchManifest, garbage: list[str]) -> None:
    """Replace the batch by the new one in the ledger, and move its instances, atomically.

    Raises:
        StorageError: The batch changed meanwhile (claimed by a cold move, or gone).
    """
    old_id, new_id = batch.batch_id, manifest.batch_id

    def fn(c: sqlite3.Connection) -> None:
        row = c.execute(
            "SELECT state FROM tier_batches WHERE batch_id=? AND NOT EXISTS "
            "(SELECT 1 FROM cold_batches WHERE batch_id=?)",
            (old_id, old_id),
        ).fetchone()
        if row is None or row[0] not in _LIVE_STATES:
            raise StorageError(f"warm batch {old_id} changed while it was being erased")
        c.execute(
            "INSERT INTO tier_batches (batch_id, state, created_at, committed_at, "
            "workflow_count, event_count, manifest, store_url) VALUES (?,?,?,?,?,?,?,?)",
            (
                new_id,
                row[0],
                batch.created_at,
                batch.committed_at,
                manifest.workflow_count,
                manifest.event_count,
                manifest.to_json(),
                batch.store_url,
            ),
        )
        c.execute("DELETE FROM tier_batches WHERE batch_id=?", (old_id,))
        c.execute("UPDATE instances SET batch_id=? WHERE batch_id=?", (new_id, old_id))
        c.execute(
            "UPDATE warm_erasures SET state=?, garbage=? WHERE batch_id=?",
            (_SWAPPED, json.dumps(garbage), old_id),
        )

    index.write_now(fn, durable=True)


def _finish(
    index: IndexDB,
    store: ObjectStore,
    old_id: str,
    manifest: BatchManifest | None,
    garbage: list[str],
    tally: _Tally,
) -> None:
    """Publish the new manifest, delete the old objects, forget the intent (idempotent)."""
    if manifest is not None:
        write_manifest(store, manifest)
    crash_point("warm-erase-after-publish")
    # A write the kill interrupted on file:// leaves a temporary file of the new batch.
    targets = set(garbage)
    if manifest is not None:
        targets |= {*manifest.keys(), manifest_key(manifest.batch_id)}
    _delete(store, garbage, tally)
    _delete(store, _unfinished(store, targets), _Tally())
    crash_point("warm-erase-after-delete")
    index.write_now(
        lambda c: c.execute("DELETE FROM warm_erasures WHERE batch_id=?", (old_id,)),
        durable=True,
    )


def _finish_swapped(index: IndexDB, store: ObjectStore, tally: _Tally) -> None:
    """Finish every swap an interrupted erasure left (publish, delete, forget)."""
    rows = index.execute(
        "SELECT batch_id, new_batch_id, garbage FROM warm_erasures WHERE state=?", (_SWAPPED,)
    )
    for old_id, new_id, garbage in rows:
        new = WarmLedger(index).get(new_id)
        manifest = None
        if new is not None and new.manifest is not None and new.state in _LIVE_STATES:
            manifest = BatchManifest.from_json(new.manifest)
        _finish(index, store, old_id, manifest, json.loads(garbage or "[]"), tally)


def _roll_back_stale(index: IndexDB, store: ObjectStore) -> None:
    """Abandon intents whose batch can no longer be rewritten (it moved to cold meanwhile)."""
    rows = index.execute(
        "SELECT e.batch_id, e.new_batch_id, b.manifest FROM warm_erasures e "
        "JOIN tier_batches b ON b.batch_id = e.batch_id WHERE e.state=? AND b.state NOT IN (?,?)",
        (_WRITING, *_LIVE_STATES),
    )
    for old_id, new_id, blob in rows:
        if blob is not None:
            _abandon(index, store, old_id, new_id, BatchManifest.from_json(blob))


def _drop_cold_originals(
    store: ObjectStore, colds: ColdLedger, batch: Batch, tally: _Tally
) -> None:
    """Delete the warm files of a batch in cold that a reader kept from deletion (cold has them)."""
    commit = colds.commit_of_batch(batch.batch_id)
    if commit is None or commit.state == CommitState.DONE.value or batch.manifest is None:
        return  # its warm originals are gone already
    manifest = BatchManifest.from_json(batch.manifest)
    before = tally.deleted
    _delete(store, [*manifest.keys(), manifest_key(batch.batch_id)], tally)
    if tally.deleted > before:
        tally.moved[batch.batch_id] = None


def _unfinished(store: ObjectStore, keys: Iterable[str]) -> list[str]:
    """Temporary files an interrupted ``file://`` write of one of ``keys`` left behind."""
    wanted = set(keys)
    if store.settings.is_s3 or not wanted:
        return []  # an S3 PUT stores all of an object or nothing
    out: list[str] = []
    for folder in sorted({k.rsplit("/", 1)[0] for k in wanted}):
        for key, _ in store.list(folder, unfinished=True):
            if store.unfinished_target(key) in wanted:
                out.append(key)
    return out


def _delete(store: ObjectStore, keys: Iterable[str], tally: _Tally) -> None:
    """Delete the keys that exist; count them and their bytes."""
    deleted, size = store.delete_present(keys)
    tally.deleted += deleted
    tally.bytes_removed += size
