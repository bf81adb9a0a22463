"""Erasure from the cold tables: the rows, every snapshot that still holds them, and their files.

Deleting rows from an Iceberg table forgets nothing by itself: the old data
files stay on storage, older snapshots still read them, and the manifests
keep each file's ``workflow_id`` lower and upper bound (a deleted id that was
a file's first or last one is still written there, deflated, where a byte
search cannot see it). :func:`erase_rows` removes all of it, per table
(``history``, then ``workflows``, in each phase):

1. **rewrite**: the live data files that can hold an id (pruned by partition
   and by the manifests' ``workflow_id`` bounds; only those are read) are
   written again without its rows, sorted, and swapped in by one
   ``overwrite`` commit (``tierflow.operation = "erase"``). A file left
   empty is only removed.
2. **seal**: an empty commit (``"erase-seal"``) whose manifests no longer
   carry the ``deleted`` entries the overwrite wrote for the old files
   (pyiceberg keeps the old file's bounds in them).
3. **delete files**: every snapshot that mentions a file that held an id (as
   live, or as deleted, or whose manifests are already gone) is to expire;
   the files only those snapshots mention (data files, then manifests, then
   manifest lists: children before the files that name them) are deleted.
4. **expire** those snapshots. Metadata files that the commits above pushed
   out of the metadata log are deleted too.

Files go *before* the expiry commit on purpose: until it lands, the
snapshots to expire are the record of which files to delete, so a rerun
after a crash finds the same set (a snapshot whose manifest list or manifests
are gone is one an earlier run was expiring). Objects no metadata ever named
(files of a commit in progress elsewhere, leftovers of a killed commit) are
never touched: maintenance's orphan pass owns them, after its grace period.

Earlier metadata files stay listed in the metadata log: they name the
expired snapshots but hold no row values or column bounds. Time travel to an
expired snapshot fails afterwards, and a table's ancestry starts at the seal.

The caller serialises erasure with cold moves and maintenance (the tiering
lock): a commit landing between the planning and the expiry of one call is
not considered. Every failure raises :class:`tierflow.hot.errors.StorageError`
(:class:`~tierflow.hot.errors.InvalidArgument` for bad arguments).
"""

from __future__ import annotations

import bisect
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from tierflow.cold import tables
from tierflow.cold.catalog import ColdTables
from tierflow.cold.lineage import Lineage, ManifestCache, workflow_id_bounds
from tierflow.cold.maintenance import OPERATION_PROPERTY
from tierflow.cold.writer import ColdWriter, store_key
from tierflow.hot.errors import InvalidArgument, StorageError

__all__ = [
    "ERASE_OPERATION",
    "ERASE_ORDER",
    "SEAL_OPERATION",
    "STEPS",
    "ColdErasure",
    "erase_rows",
]

ERASE_OPERATION = "erase"
"""``tierflow.operation`` of the commit that rewrites files without the erased rows."""

SEAL_OPERATION = "erase-seal"
"""``tierflow.operation`` of the empty commit that drops the deleted entries' manifests."""

ERASED_AT_PROPERTY = "tierflow.erased-at"
"""Snapshot summary property: when the erasure ran (ISO 8601, UTC)."""

ERASE_ORDER = ("history", "workflows")
"""The tables, in the order each phase treats them."""

_DELETE_STEPS = ("data-files-deleted", "manifests-deleted", "files-deleted")

STEPS = ("rewritten", "sealed", *_DELETE_STEPS, "expired")
"""What ``on_step`` is called with, in order, once each step is done for both tables.

``files-deleted`` comes in three: data files, then manifests, then manifest lists.
"""

# Files read at once (object-store reads are mostly waiting).
_THREADS = 8


@dataclass(frozen=True)
class ColdErasure:
    """What :func:`erase_rows` did to both cold tables (a value: never changed).

    Attributes:
        files_scanned: Data files whose rows were read: live ones the pruning kept,
            and replaced ones checked for the ids.
        files_rewritten: Live data files replaced (written again without the rows,
            or removed when nothing else was in them).
        files_deleted: Objects deleted: data files, manifests, manifest lists and
            metadata files no remaining snapshot or metadata names.
        snapshots_expired: Snapshot ids expired, both tables.
        snapshot_before: Current snapshot id per table when the erasure began
            (None: empty or missing table).
        snapshot_after: Current snapshot id per table when it ended.
        bytes_removed: Bytes of the deleted objects.
        live_files: Live data files in both tables when the erasure began (what the
            pruning chose ``files_scanned`` from).
    """

    files_scanned: int = 0
    files_rewritten: int = 0
    files_deleted: int = 0
    snapshots_expired: tuple[int, ...] = ()
    snapshot_before: dict[str, int | None] = field(default_factory=dict)
    snapshot_after: dict[str, int | None] = field(default_factory=dict)
    bytes_removed: int = 0
    live_files: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        out = asdict(self)
        out["snapshots_expired"] = list(self.snapshots_expired)
        return out


@dataclass
class _Tally:
    scanned: int = 0
    rewritten: int = 0
    deleted: int = 0
    expired: list[int] = field(default_factory=list)
    bytes_removed: int = 0
    live: int = 0


class _Ids:
    """The ids to erase, with the partition each is in (None: any)."""

    def __init__(
        self, workflow_ids: Sequence[str], finished_dates: Mapping[str, date | str] | None
    ) -> None:
        if isinstance(workflow_ids, str):
            raise InvalidArgument("workflow_ids must be a sequence of ids, not one string")
        self.ids = sorted(set(workflow_ids))
        if not all(isinstance(w, str) and w for w in self.ids):
            raise InvalidArgument("workflow ids must be non-empty strings")
        days = finished_dates or {}
        by_day: dict[str | None, list[str]] = {}
        for wid in self.ids:  # sorted, so every list is too
            day = days.get(wid)
            key = None if day is None else day.isoformat() if isinstance(day, date) else str(day)
            by_day.setdefault(key, []).append(wid)
        self._by_day = by_day

    def of_day(self, day: str) -> list[str]:
        """The ids a file of partition ``day`` can hold."""
        return self._by_day.get(None, []) + self._by_day.get(day, [])

    def may_hold(self, day: str, lower: str | None, upper: str | None) -> bool:
        """Whether a file of partition ``day`` with these ``workflow_id`` bounds can hold an id."""
        for key in (None, day):
            ids = self._by_day.get(key)
            if not ids:
                continue
            i = 0 if lower is None else bisect.bisect_left(ids, lower)
            if i < len(ids) and (upper is None or ids[i] <= upper):
                return True
        return False


def erase_rows(
    tables: ColdTables,
    workflow_ids: Sequence[str],
    *,
    now: float | None = None,
    finished_dates: Mapping[str, date | str] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ColdErasure:
    """Delete the rows of ``workflow_ids`` from both cold tables, with every trace in storage.

    See the module docstring for the phases. Idempotent: a rerun after a crash
    at any point (or after a completed run) finishes the job and does nothing
    more; ids the tables never held cost only the pruning.

    Args:
        tables: The cold tables (missing ones are skipped).
        workflow_ids: The workflows whose rows go.
        now: When the erasure runs (seconds since the epoch; default the wall
            clock), recorded in the commits' summaries.
        finished_dates: ``workflow_id`` to its ``finished_date`` (a date or
            ``YYYY-MM-DD``), from the index: only that partition's files are
            considered for the id. Ids left out are looked for in every partition.
        on_step: Called with each name in :data:`STEPS` once that phase is done
            for both tables (crash tests kill the process there).

    Returns:
        What was read, rewritten, expired and deleted.

    Raises:
        InvalidArgument: ``workflow_ids`` is not a sequence of non-empty strings.
        StorageError: The catalog or the store failed (a rerun resumes), a table
            holds row-level delete files, or a branch or tag other than ``main``
            points at a snapshot that must expire.
    """
    ids = _Ids(workflow_ids, finished_dates)
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).isoformat()
    step = on_step or (lambda name: None)
    tally = _Tally()
    present = {ds: _table(tables, ds) for ds in ERASE_ORDER}
    before = {ds: _current_id(t) for ds, t in present.items()}
    metadata_seen = {ds: _metadata_files(t) for ds, t in present.items() if t is not None}
    live = [ds for ds in ERASE_ORDER if present[ds] is not None]
    if not ids.ids or not live:
        return ColdErasure(snapshot_before=before, snapshot_after=before)
    writer = ColdWriter(tables)
    commit_id = f"erase-{uuid.uuid4()}"
    # Manifests never change once written: each is read once per call, whatever the snapshots.
    cache = {ds: ManifestCache() for ds in live}
    try:
        books = {ds: Lineage(tables.table(ds), cache[ds]) for ds in live}
        held = _rewrite(tables, writer, books, ids, commit_id, stamp, tally)
        step("rewritten")
        # Our own commits update the cached tables in place (the caller keeps other
        # writers out), so no reload from the catalog is needed between the steps.
        books = {ds: Lineage(tables.table(ds), cache[ds]) for ds in live}
        for ds in live:
            held[ds] |= _replaced_holding(tables, books[ds], ids, held[ds], tally)
            if books[ds].current_mentions(held[ds]):
                props = {OPERATION_PROPERTY: SEAL_OPERATION, ERASED_AT_PROPERTY: stamp}
                writer.commit_files(ds, f"{commit_id}-seal", props, add=(), remove=())
                books[ds] = Lineage(tables.table(ds), cache[ds])
        step("sealed")
        doomed = {ds: books[ds].to_expire(held[ds], ds) for ds in live}
        garbage = {ds: books[ds].garbage(doomed[ds]) for ds in live}
        for level, name in enumerate(_DELETE_STEPS):
            _delete(tables, [garbage[ds][level] for ds in live], tally)
            step(name)
        for ds in live:
            _expire(tables, ds, doomed[ds], tally)
            table = tables.table(ds)
            _delete(tables, [metadata_seen[ds] - _metadata_files(table)], tally)
        step("expired")
    except (StorageError, InvalidArgument):
        raise
    except Exception as exc:  # pyiceberg and pyarrow errors alike
        raise StorageError(f"erasing from the cold tables failed: {exc}") from exc
    after = {ds: _current_id(tables.table(ds)) if ds in live else None for ds in ERASE_ORDER}
    return ColdErasure(
        files_scanned=tally.scanned,
        files_rewritten=tally.rewritten,
        files_deleted=tally.deleted,
        snapshots_expired=tuple(tally.expired),
        snapshot_before=before,
        snapshot_after=after,
        bytes_removed=tally.bytes_removed,
        live_files=tally.live,
    )


# --------------------------------------------------------------------------------------------
# Lookups


def _table(cold: ColdTables, dataset: str) -> Table | None:
    """The table with fresh metadata, or None when the catalog does not hold it."""
    try:
        return cold.table(dataset, refresh=True)
    except StorageError as exc:
        if isinstance(exc.__cause__, NoSuchTableError):
            return None
        raise


def _current_id(table: Table | None) -> int | None:
    snap = None if table is None else table.current_snapshot()
    return None if snap is None else snap.snapshot_id


def _metadata_files(table: Table | None) -> set[str]:
    if table is None:
        return set()
    return {table.metadata_location} | {e.metadata_file for e in table.metadata.metadata_log}


def _path(cold: ColdTables, location: str) -> str:
    key = store_key(cold.store.url, location)
    if key is None:
        raise StorageError(f"{location} is outside the store {cold.store.url}: cannot erase it")
    return cold.store.path(key)


def _parallel(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    if len(items) < 2:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


# --------------------------------------------------------------------------------------------
# 1. Rewrite


@dataclass
class _Rewrite:
    """One table's rewrite, written and not yet committed."""

    replaced: list[DataFile] = field(default_factory=list)
    added: list[DataFile] = field(default_factory=list)
    erased: int = 0
    scanned: int = 0
    live: int = 0


def _rewrite_files(
    cold: ColdTables, writer: ColdWriter, dataset: str, books: Lineage, ids: _Ids, commit_id: str
) -> _Rewrite:
    """Write, without the ids' rows, every live file that holds one (nothing is committed).

    Each file is streamed a row group at a time (memory: a row group, not a file).
    """
    out = _Rewrite()
    files = books.live_files(dataset)
    out.live = len(files)
    candidates = [
        f
        for f in files
        if ids.may_hold(tables.partition_date(f.partition), *workflow_id_bounds(f, books.field_id))
    ]
    out.scanned = len(candidates)
    for n, f in enumerate(candidates):
        day = tables.partition_date(f.partition)
        drop = pa.array(ids.of_day(day), pa.string())
        path = _path(cold, f.file_path)
        with cold.store.fs.open_input_file(path) as source:
            parquet = pq.ParquetFile(source)
            meta = parquet.metadata
            if meta.num_rows != f.record_count:
                raise StorageError(
                    f"cold {dataset} file {f.file_path} holds {meta.num_rows} rows, "
                    f"its manifest says {f.record_count}"
                )
            # The id column decides, once per file, which rows go.
            erased = pc.is_in(parquet.read(columns=["workflow_id"]).column("workflow_id"), drop)
            gone = pc.sum(erased).as_py() or 0
            if not gone:
                continue  # the bounds allowed an id, the rows do not hold one
            new = None
            if gone < meta.num_rows:

                def kept(
                    parquet: pq.ParquetFile = parquet, erased: Any = erased
                ) -> Iterator[pa.Table]:
                    start = 0
                    for i in range(parquet.metadata.num_row_groups):
                        rows = parquet.read_row_group(i)
                        mask = erased.slice(start, rows.num_rows)
                        start += rows.num_rows
                        yield rows.filter(pc.invert(mask))

                when = date.fromisoformat(day)
                new = writer.write_streamed(
                    books.table, dataset, commit_id, n, when, parquet.schema_arrow, kept()
                )
        out.replaced.append(f)
        out.erased += gone
        if new is not None:
            out.added.append(new)
    return out


def _rewrite(
    cold: ColdTables,
    writer: ColdWriter,
    books: dict[str, Lineage],
    ids: _Ids,
    commit_id: str,
    stamp: str,
    tally: _Tally,
) -> dict[str, set[str]]:
    """Replace the live files holding an id; return the paths replaced, per table.

    The tables' files are written at once (two threads: it is mostly waiting on
    storage), then committed one table after the other.
    """
    datasets = list(books)
    done = _parallel(
        lambda ds: _rewrite_files(cold, writer, ds, books[ds], ids, commit_id), datasets
    )
    out: dict[str, set[str]] = {}
    for ds, rewrite in zip(datasets, done, strict=True):
        tally.live += rewrite.live
        tally.scanned += rewrite.scanned
        out[ds] = {f.file_path for f in rewrite.replaced}
        if not rewrite.replaced:
            continue
        props = {
            OPERATION_PROPERTY: ERASE_OPERATION,
            ERASED_AT_PROPERTY: stamp,
            "tierflow.erased-rows": str(rewrite.erased),
            "tierflow.rewritten-files": str(len(rewrite.replaced)),
        }
        writer.commit_files(ds, commit_id, props, add=rewrite.added, remove=rewrite.replaced)
        tally.rewritten += len(rewrite.replaced)
    return out


# --------------------------------------------------------------------------------------------
# 2. What else held the ids


def _replaced_holding(
    cold: ColdTables, books: Lineage, ids: _Ids, known: set[str], tally: _Tally
) -> set[str]:
    """Files no longer live that held an id (beyond ``known``, which this run replaced).

    A replaced file the pruning keeps is read (its ``workflow_id`` column, row
    groups pruned by their statistics). One already deleted counts as holding:
    an interrupted erasure deleted it, and the snapshots and manifests that
    still name it (with its bounds) must go too.
    """
    live = books.live()
    suspects = [
        f
        for path, f in sorted(books.data_files().items())
        if path not in live
        and path not in known
        and ids.may_hold(tables.partition_date(f.partition), *workflow_id_bounds(f, books.field_id))
    ]

    def holds(f: DataFile) -> tuple[bool, bool]:
        """``(holds an id, was read)``."""
        try:
            found = pq.read_table(
                _path(cold, f.file_path),
                filesystem=cold.store.fs,
                columns=["workflow_id"],
                filters=[("workflow_id", "in", ids.ids)],
            )
        except FileNotFoundError:
            return True, False
        return bool(found.num_rows), True

    checked = _parallel(holds, suspects)
    tally.scanned += sum(1 for _, read in checked if read)
    return {f.file_path for f, (h, _) in zip(suspects, checked, strict=True) if h}


# --------------------------------------------------------------------------------------------
# Deleting and expiring


def _delete(cold: ColdTables, groups: Sequence[set[str]], tally: _Tally) -> None:
    """Delete each group of locations in turn (only objects that exist are counted)."""
    store = cold.store
    for group in groups:
        keys = [k for k in (store_key(store.url, loc) for loc in group) if k is not None]
        deleted, size = store.delete_present(keys)
        tally.deleted += deleted
        tally.bytes_removed += size


def _expire(cold: ColdTables, dataset: str, doomed: Sequence[int], tally: _Tally) -> None:
    if not doomed:
        return
    table = cold.table(dataset)
    present = [sid for sid in doomed if table.metadata.snapshot_by_id(sid) is not None]
    if present:
        table.maintenance.expire_snapshots().by_ids(present).commit()  # updates ``table``
    tally.expired += present
