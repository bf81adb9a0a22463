"""Maintenance of the cold tables: rewrite small files, expire snapshots, remove orphan files.

pyiceberg 0.12 offers only snapshot expiry (which removes snapshots from the
metadata and deletes no file); this module adds what it lacks, on its public
API and :class:`~tierflow.cold.writer.ColdWriter`:

- :func:`rewrite_small_files`: per ``finished_date`` partition, the rows of
  small data files are read, sorted and written as few large files, committed
  as one ``overwrite`` snapshot per table (the same rows, in fewer files).
- :func:`expire_snapshots`: drops snapshots older than a time, but never the
  current one, the last ``keep_last`` ones, or any branch or tag head.
- :func:`remove_orphan_files`: deletes every object under a table's location
  that the table's metadata no longer references (old data files, manifests,
  manifest lists and metadata files), once older than a grace period.

:func:`maintain` runs the three in that order: the rewrite leaves the small
files referenced by old snapshots only, expiry drops those snapshots, and the
orphan pass deletes the files. Only then are rows deleted from the tables
really gone from storage.

Tables the catalog does not hold yet are skipped. Every failure raises
:class:`tierflow.hot.errors.StorageError`
(:class:`~tierflow.hot.errors.InvalidArgument` for bad arguments).

Why ~600 lines: the three jobs and :func:`maintain`, which orders them, are read
together: the order is what makes rows deleted from the tables really gone, and a
split would put that rule away from the jobs it orders.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.dataset as pads  # type: ignore[import-untyped, unused-ignore]
from pyiceberg.manifest import DataFile, FileFormat
from pyiceberg.table import Table
from tierflow.cold import tables
from tierflow.cold.catalog import ColdTables
from tierflow.cold.writer import ColdWriter, find_commit, sort_rows, store_key
from tierflow.hot.errors import InvalidArgument, StorageError

__all__ = [
    "DEFAULT_KEEP_LAST",
    "OPERATION_PROPERTY",
    "MaintenanceReport",
    "OrphanResult",
    "RewriteResult",
    "expire_snapshots",
    "maintain",
    "referenced_files",
    "remove_orphan_files",
    "rewrite_small_files",
]

OPERATION_PROPERTY = "tierflow.operation"
"""Snapshot summary property naming the tierflow operation (``"rewrite"`` here)."""

DEFAULT_KEEP_LAST = 5
"""Snapshots :func:`expire_snapshots` keeps per table, however old."""

# Files read at once while planning and reading a bin (a bin's rows are in memory anyway).
_READ_THREADS = 8

_T = TypeVar("_T")

# Written by Hadoop-style catalogs; never an orphan even though no metadata names it.
_VERSION_HINT = "version-hint.text"


def _datasets(dataset: str | None) -> tuple[str, ...]:
    if dataset is None:
        return tuple(sorted(tables.DATASETS))
    tables.identifier(dataset)
    return (dataset,)


def _existing(cold: ColdTables, dataset: str) -> Table | None:
    """The table with fresh metadata, or None when the catalog has no such table yet."""
    try:
        exists = cold.catalog.table_exists(tables.identifier(dataset))
    except StorageError:
        raise
    except Exception as exc:
        raise StorageError(f"cannot look up cold {dataset} in {cold.where}: {exc}") from exc
    return cold.table(dataset, refresh=True) if exists else None


def _aware(when: datetime, name: str) -> datetime:
    if when.tzinfo is None:
        raise InvalidArgument(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")
    return when


# --------------------------------------------------------------------------------------------
# Rewrite of small files


@dataclass(frozen=True)
class RewriteResult:
    """What :func:`rewrite_small_files` did, summed over the tables (a value: never changed).

    Attributes:
        snapshots: Snapshot id of the rewrite, per table that had something to rewrite.
        partitions: Partitions (``finished_date`` values) that were rewritten.
        removed_files: Data files replaced.
        added_files: Data files written in their place.
        rows: Rows moved (the same rows before and after).
    """

    snapshots: dict[str, int] = field(default_factory=dict)
    partitions: int = 0
    removed_files: int = 0
    added_files: int = 0
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return asdict(self)


def _file_path(cold: ColdTables, location: str) -> str | None:
    """The path of a table file on ``cold.store.fs``, or None when it lies outside the store."""
    key = store_key(cold.store.url, location)
    return None if key is None else cold.store.path(key)


def _path_of(cold: ColdTables, f: DataFile) -> str:
    path = _file_path(cold, f.file_path)
    if path is None:  # pragma: no cover - the plan only takes files inside the store
        raise StorageError(f"{f.file_path} is outside the store {cold.store.url}")
    return path


def _parallel(fn: Callable[[DataFile], _T], files: Sequence[DataFile]) -> list[_T]:
    """``[fn(f) for f in files]``, a few at a time: object-store reads are mostly waiting."""
    if len(files) < 2:
        return [fn(f) for f in files]
    with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(files))) as pool:
        return list(pool.map(fn, files))


def _fragment(cold: ColdTables, f: DataFile) -> Any:
    """The Parquet data file ``f`` as a pyarrow fragment that knows the file's size.

    The manifest records the size, and a data file never changes once written: given it,
    pyarrow opens the file without asking its size (on S3, no HEAD before the reads).
    """
    return pads.ParquetFileFormat().make_fragment(
        _path_of(cold, f), filesystem=cold.store.fs, file_size=f.file_size_in_bytes
    )


def _memory_bytes(cold: ColdTables, f: DataFile) -> int:
    """About how many bytes the file takes in memory: its row groups' uncompressed size."""
    meta = _fragment(cold, f).metadata
    return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))


def _bins(sized: Sequence[tuple[DataFile, int]], target: int) -> list[list[DataFile]]:
    """Pack files into bins of at most ``target`` (estimated) bytes; keep bins of 2+ files.

    Largest first, first fit: a file alone in its bin would be rewritten as itself, so
    such bins are dropped, which also makes a second rewrite a no-op.
    """
    bins: list[tuple[int, list[DataFile]]] = []
    for f, size in sorted(sized, key=lambda fs: (-fs[1], fs[0].file_path)):
        for i, (used, files) in enumerate(bins):
            if used + size <= target:
                bins[i] = (used + size, [*files, f])
                break
        else:
            bins.append((size, [f]))
    return [files for _, files in bins if len(files) > 1]


def _plan(cold: ColdTables, table: Table, target: int) -> list[tuple[date, list[DataFile]]]:
    """The bins to rewrite, as ``(finished_date, files)``, in date order."""
    small = cold.layout.small_file_bytes
    by_day: dict[date, list[DataFile]] = defaultdict(list)
    for task in table.scan().plan_files():
        f = task.file
        # Files with row-level deletes cannot be copied as they are; Parquet only.
        if task.delete_files or f.file_format != FileFormat.PARQUET:
            continue
        if f.file_size_in_bytes >= small or _file_path(cold, f.file_path) is None:
            continue
        day = f.partition[0]
        if isinstance(day, int):  # pyiceberg keeps an identity date as days since the epoch
            day = date(1970, 1, 1) + timedelta(days=day)
        by_day[day].append(f)
    plan: list[tuple[date, list[DataFile]]] = []
    for day in sorted(by_day):
        files = by_day[day]
        if len(files) < 2:
            continue
        sizes = _parallel(lambda f: _memory_bytes(cold, f), files)
        sized = list(zip(files, sizes, strict=True))
        plan.extend((day, b) for b in _bins(sized, target))
    return plan


def _read_bin(cold: ColdTables, dataset: str, day: date, files: Sequence[DataFile]) -> pa.Table:
    """The rows of ``files``, in the table's Arrow schema, sorted like every cold file."""
    schema = tables.arrow_schema(dataset)

    def read(f: DataFile) -> pa.Table:
        part = _fragment(cold, f).to_table(columns=schema.names)
        if part.num_rows != f.record_count:
            raise StorageError(
                f"cold {dataset} file {f.file_path} holds {part.num_rows} rows, "
                f"its manifest says {f.record_count}"
            )
        return part.cast(schema)

    rows = pa.concat_tables(_parallel(read, files))
    days = rows.column("finished_date").unique().to_pylist()
    if days != [day]:
        raise StorageError(f"cold {dataset} files of partition {day} hold rows of {days}")
    return sort_rows(rows, dataset)


def _rewrite_table(
    cold: ColdTables, writer: ColdWriter, dataset: str, target: int, commit_id: str
) -> tuple[int, int, int, int, int] | None:
    """Rewrite one table's small files in one snapshot; None when there is nothing to do.

    Returns:
        ``(snapshot id, partitions, removed files, added files, rows)``.
    """
    table = _existing(cold, dataset)
    if table is None or find_commit(table, commit_id) is not None:
        return None  # this rewrite already committed (a retry after a crash)
    plan = _plan(cold, table, target)
    if not plan:
        return None
    removed = [f for _, files in plan for f in files]
    read = 0

    def bins() -> Iterator[pa.Table]:
        # One bin in memory at a time: data_files writes it out before asking for the next.
        nonlocal read
        for day, files in plan:
            rows = _read_bin(cold, dataset, day, files)
            read += rows.num_rows
            yield rows

    added = list(writer.data_files(table, dataset, commit_id, bins()))
    expected = sum(f.record_count for f in removed)
    written = sum(f.record_count for f in added)
    if not read == written == expected:
        raise StorageError(
            f"cold {dataset} rewrite: {expected} rows in the old files, {read} read, "
            f"{written} written; nothing committed"
        )
    props = {
        OPERATION_PROPERTY: "rewrite",
        "tierflow.rewritten-files": str(len(removed)),
        "tierflow.rewritten-partitions": str(len({day for day, _ in plan})),
    }
    snap = writer.commit_files(dataset, commit_id, props, add=added, remove=removed)
    return snap.snapshot_id, len({day for day, _ in plan}), len(removed), len(added), written


def rewrite_small_files(
    cold: ColdTables,
    writer: ColdWriter,
    *,
    commit_id: str,
    dataset: str | None = None,
    target_file_bytes: int | None = None,
) -> RewriteResult:
    """Replace each partition's small data files by a few large, sorted ones.

    In each ``finished_date`` partition, the live data files smaller than
    ``layout.small_file_bytes`` (on storage) are packed into bins of up to
    ``target_file_bytes`` (their uncompressed size, read from the Parquet
    footers); each bin of two or more files is read, sorted by the table's sort
    keys and written again. Memory holds one bin at a time. All bins of a table
    are committed as one ``overwrite`` snapshot that removes the old files and
    adds the new ones, with ``tierflow.operation = "rewrite"`` in its summary;
    readers see either all old or all new files, with the same rows. The old
    files stay on storage, referenced by older snapshots, until expiry and
    orphan removal.

    Idempotent by ``commit_id``: a table whose snapshots already hold the
    commit is skipped. A second rewrite right after a first one finds nothing
    to do.

    Args:
        cold: The cold tables.
        writer: Writes and commits the new files.
        commit_id: Unique id of this rewrite (names the new files, recorded in the summary).
        dataset: "workflows" or "history"; None for both.
        target_file_bytes: Bin size in uncompressed bytes; default ``layout.target_file_bytes``.

    Returns:
        What was rewritten.

    Raises:
        InvalidArgument: Unknown dataset or a non-positive target.
        StorageError: Reading, writing or committing failed (nothing is committed
            then), or another process rewrote the same files first.
    """
    target = cold.layout.target_file_bytes if target_file_bytes is None else target_file_bytes
    if target < 1:
        raise InvalidArgument("target_file_bytes must be positive")
    snapshots: dict[str, int] = {}
    partitions = removed = added = rows = 0
    for ds in _datasets(dataset):
        try:
            done = _rewrite_table(cold, writer, ds, target, commit_id)
        except StorageError:
            raise
        except Exception as exc:  # pyarrow and pyiceberg errors alike
            raise StorageError(f"rewriting cold {ds} files failed: {exc}") from exc
        if done is None:
            continue
        snapshots[ds] = done[0]
        partitions += done[1]
        removed += done[2]
        added += done[3]
        rows += done[4]
    return RewriteResult(snapshots, partitions, removed, added, rows)


# --------------------------------------------------------------------------------------------
# Snapshot expiry


def _to_expire(table: Table, older_than_ms: int, keep_last: int) -> list[int]:
    """Snapshot ids older than the cut-off that are neither recent, current nor referenced."""
    meta = table.metadata
    ordered = sorted(meta.snapshots, key=lambda s: (s.sequence_number or 0, s.timestamp_ms))
    keep = {s.snapshot_id for s in ordered[-keep_last:]}
    keep |= {ref.snapshot_id for ref in meta.refs.values()}  # branches (main) and tags
    if meta.current_snapshot_id is not None:
        keep.add(meta.current_snapshot_id)
    return [
        s.snapshot_id
        for s in ordered
        if s.timestamp_ms < older_than_ms and s.snapshot_id not in keep
    ]


def expire_snapshots(
    cold: ColdTables,
    *,
    older_than: datetime,
    keep_last: int = DEFAULT_KEEP_LAST,
    dataset: str | None = None,
) -> dict[str, list[int]]:
    """Remove old snapshots from the tables' metadata (pyiceberg's expiry, with a floor).

    A snapshot is expired when it was committed before ``older_than`` and is
    none of: the current snapshot, one of the ``keep_last`` most recent
    snapshots, the head of a branch or a tag. Time travel to an expired
    snapshot fails afterwards. No file is deleted here: the files only expired
    snapshots referenced become orphans for :func:`remove_orphan_files`.

    Args:
        cold: The cold tables.
        older_than: Cut-off (timezone-aware).
        keep_last: Most recent snapshots kept per table whatever their age (at least 1).
        dataset: "workflows" or "history"; None for both.

    Returns:
        The expired snapshot ids per table (tables with none are left out).

    Raises:
        InvalidArgument: Naive ``older_than``, ``keep_last`` below 1 or unknown dataset.
        StorageError: The commit failed.
    """
    _aware(older_than, "older_than")
    if keep_last < 1:
        raise InvalidArgument("keep_last must be at least 1 (the current snapshot)")
    cutoff_ms = int(older_than.timestamp() * 1000)
    expired: dict[str, list[int]] = {}
    for ds in _datasets(dataset):
        table = _existing(cold, ds)
        ids = [] if table is None else _to_expire(table, cutoff_ms, keep_last)
        if table is None or not ids:
            continue
        try:
            table.maintenance.expire_snapshots().by_ids(ids).commit()
        except Exception as exc:  # pyiceberg's ValueError, CommitFailedException, I/O
            raise StorageError(f"expiring snapshots of cold {ds} failed: {exc}") from exc
        cold.table(ds, refresh=True)
        expired[ds] = ids
    return expired


# --------------------------------------------------------------------------------------------
# Orphan files


@dataclass(frozen=True)
class OrphanResult:
    """What :func:`remove_orphan_files` found, as store keys.

    Attributes:
        deleted: Unreferenced objects deleted (or, on a dry run, that would be).
        kept_young: Unreferenced objects kept because they are newer than the grace
            period (possibly a commit still in progress).
        missing: Referenced files under a table's location that the listing did not
            show (a damaged table; nothing is deleted for them).
        dry_run: True when nothing was deleted.
    """

    deleted: list[str] = field(default_factory=list)
    kept_young: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return asdict(self)


def referenced_files(table: Table) -> set[str]:
    """Every file location the table's current metadata needs.

    That is: the current metadata file and those in its metadata log, each
    live snapshot's manifest list, every manifest those lists name, and every
    data or delete file those manifests hold as added or existing (a
    ``deleted`` entry names a file its snapshot no longer reads), plus
    statistics files.
    """
    meta = table.metadata
    io = table.io
    found = {table.metadata_location}
    found |= {entry.metadata_file for entry in meta.metadata_log}
    found |= {s.statistics_path for s in meta.statistics}
    found |= {s.statistics_path for s in meta.partition_statistics}
    seen_manifests: set[str] = set()
    for snap in meta.snapshots:
        found.add(snap.manifest_list)
        for manifest in snap.manifests(io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                found.add(entry.data_file.file_path)
    return found | seen_manifests


def _orphans_of_table(
    cold: ColdTables, dataset: str, older_than: datetime, dry_run: bool
) -> tuple[list[str], list[str], list[str]]:
    """``(deleted, kept young, missing)`` keys of one table."""
    store = cold.store
    table = _existing(cold, dataset)
    if table is None:
        return [], [], []
    prefix = store_key(store.url, table.location())
    if prefix is None:
        raise StorageError(
            f"cold {dataset} lives at {table.location()}, outside the store {store.url}"
        )
    # List first, then read the metadata: a commit landing in between has its files
    # referenced; one still writing has files newer than the grace period.
    # The listing's times judge age: a table's files are never rewritten in place (new
    # names each write), so they are the times a HEAD per file would give.
    modified = {k: t for k, _, t in store.list_modified(prefix) if not k.endswith("/")}
    listed = list(modified)
    table = cold.table(dataset, refresh=True)
    keys: set[str] = set()
    for location in referenced_files(table):
        key = store_key(store.url, location)
        if key is not None:
            keys.add(key)
    current = store_key(store.url, table.metadata_location)
    listed_set = set(listed)
    if current is None or current not in listed_set:
        # The references do not map onto the listing (another URL spelling, another
        # store): deleting now would delete the whole table.
        raise StorageError(
            f"cold {dataset}: current metadata {table.metadata_location} is not in the "
            f"listing of {store.url}/{prefix}; refusing to remove orphan files"
        )
    missing = sorted(k for k in keys if k.startswith(prefix + "/") and k not in listed_set)
    candidates = [k for k in listed if k not in keys and k.rsplit("/", 1)[-1] != _VERSION_HINT]
    if not candidates:
        return [], [], missing
    old: list[str] = []
    young: list[str] = []
    for key in candidates:
        mtime = modified[key]
        if mtime is None or mtime >= older_than:
            young.append(key)
        else:
            old.append(key)
    if not dry_run and old:
        store.delete_many(old)
    return old, young, missing


def remove_orphan_files(
    cold: ColdTables,
    *,
    older_than: datetime,
    dry_run: bool = False,
    dataset: str | None = None,
) -> OrphanResult:
    """Delete objects under the tables' locations that no metadata references.

    Lists every object under each table's location, subtracts
    :func:`referenced_files`, and deletes what is left if it was last modified
    before ``older_than``. Newer unreferenced files are kept: a commit in
    progress writes its data files, manifests and metadata before the catalog
    points at them. Run it after :func:`expire_snapshots`; files that only
    expired snapshots referenced are what it removes, along with files of
    commits that never landed.

    Args:
        cold: The cold tables.
        older_than: Grace cut-off (timezone-aware): only files modified before it go.
        dry_run: Report what would be deleted, delete nothing.
        dataset: "workflows" or "history"; None for both.

    Returns:
        The deleted (or deletable) keys, the too-young ones and any missing ones.

    Raises:
        InvalidArgument: Naive ``older_than`` or unknown dataset.
        StorageError: Listing, reading metadata or deleting failed, or the table's
            metadata does not match the listing (nothing is deleted then).
    """
    _aware(older_than, "older_than")
    deleted: list[str] = []
    kept_young: list[str] = []
    missing: list[str] = []
    for ds in _datasets(dataset):
        try:
            old, young, gone = _orphans_of_table(cold, ds, older_than, dry_run)
        except StorageError:
            raise
        except Exception as exc:  # pyiceberg and pyarrow errors alike
            raise StorageError(f"removing orphan files of cold {ds} failed: {exc}") from exc
        deleted += old
        kept_young += young
        missing += gone
    return OrphanResult(deleted, kept_young, missing, dry_run)


# --------------------------------------------------------------------------------------------
# All of it


@dataclass(frozen=True)
class MaintenanceReport:
    """What :func:`maintain` did.

    Attributes:
        rewrite: The small-file rewrite (None when skipped).
        expired: Expired snapshot ids per table.
        orphans: The orphan-file pass.
    """

    rewrite: RewriteResult | None
    expired: dict[str, list[int]]
    orphans: OrphanResult

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return {
            "rewrite": None if self.rewrite is None else self.rewrite.to_dict(),
            "expired": {k: list(v) for k, v in self.expired.items()},
            "orphans": self.orphans.to_dict(),
        }


def maintain(
    cold: ColdTables,
    writer: ColdWriter,
    *,
    now: datetime,
    expire_older_than: datetime,
    keep_last: int = DEFAULT_KEEP_LAST,
    orphan_grace: timedelta = timedelta(days=1),
    rewrite: bool = True,
    commit_id: str | None = None,
) -> MaintenanceReport:
    """Rewrite small files, expire snapshots, then remove orphan files, on both tables.

    Args:
        cold: The cold tables.
        writer: The cold writer (for the rewrite).
        now: The current time (timezone-aware; the grace period counts back from it).
        expire_older_than: Snapshots committed before this may expire.
        keep_last: Most recent snapshots kept per table regardless of age.
        orphan_grace: Unreferenced files newer than ``now - orphan_grace`` are kept.
        rewrite: Run :func:`rewrite_small_files` first.
        commit_id: The rewrite's commit id (default: a fresh one).

    Returns:
        What each step did.

    Raises:
        InvalidArgument: A bad argument (nothing was done).
        StorageError: A step failed; the steps before it stay done.
    """
    _aware(now, "now")
    _aware(expire_older_than, "expire_older_than")
    if orphan_grace < timedelta(0):
        raise InvalidArgument("orphan_grace must not be negative")
    done = None
    if rewrite:
        done = rewrite_small_files(cold, writer, commit_id=commit_id or f"rewrite-{uuid.uuid4()}")
    expired = expire_snapshots(cold, older_than=expire_older_than, keep_last=keep_last)
    orphans = remove_orphan_files(cold, older_than=now - orphan_grace)
    return MaintenanceReport(done, expired, orphans)
