"""Writing one warm batch: a few large Parquet files per finish date, plus a manifest.

A batch is what one tiering pass moves: many finished workflows and all their
events. :class:`BatchWriter` sorts them, splits them by ``finished_date`` and
writes one file per dataset per date (more only when ``max_rows_per_file``
forces it), and returns a :class:`BatchManifest` describing every file with its
size and SHA-256. It does not publish the manifest: the tiering job calls
:func:`write_manifest` once the batch is verified and committed in its ledger.

Every object is written through :class:`warm.storage.ObjectStore`, with keys
relative to its root, so the same code writes to local disk and S3, and every
file is durable before :meth:`BatchWriter.write` returns (on ``file://``:
fsync'd, renamed into place, its directories fsync'd)::

    warm/workflows/finished_date=2026-01-31/batch-<batch_id>-0.parquet
    warm/history/finished_date=2026-01-31/batch-<batch_id>-0.parquet
    warm/manifests/batch-<batch_id>.json

Every object name contains its batch id, so a garbage collector can find
everything an abandoned batch left behind (:func:`batch_keys`,
:func:`list_batches`).

Hashing and memory: each file is encoded into an in-memory buffer, hashed
there, and uploaded with one write (one PutObject on S3, which checks the
SHA-256). The extra memory is one compressed file (bounded by
``max_rows_per_file``; compressed Parquet is several times smaller than the
Arrow batch already in memory), nothing is re-read to hash it, and a failure
while encoding (or in ``on_row_group``) leaves no object of that file behind.

Why ~600 lines: the archive's write path is one piece (sort, split by date, write,
checksum, manifest) and its format rules are read together; the reader and the
format's schema are separate modules.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.hot.models import from_micros
from tierflow.warm.schema import (
    DATASETS,
    JSON_COLUMNS,
    SCHEMA_VERSION,
    conform,
    schema_for,
    validate_batch,
)
from tierflow.warm.storage import ObjectStore, WriteBatch

__all__ = [
    "MANIFEST_FORMAT",
    "BatchManifest",
    "BatchWriter",
    "WrittenFile",
    "batch_id_of",
    "batch_keys",
    "batch_prefixes",
    "data_key",
    "full_path",
    "list_batches",
    "manifest_key",
    "new_batch_id",
    "write_manifest",
]

MANIFEST_FORMAT = "tierflow.warm.batch"
"""Value of the ``format`` field of every manifest."""

_PREFIX = "warm"
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# The batch id is greedy up to the last "-": ids may contain "-", file numbers may not.
_DATA_KEY = re.compile(
    r"^warm/(?P<dataset>workflows|history)/finished_date=(?P<date>\d{4}-\d{2}-\d{2})/"
    r"batch-(?P<batch>[A-Za-z0-9][A-Za-z0-9_-]*)-(?P<n>\d+)\.parquet$"
)
_MANIFEST_KEY = re.compile(
    r"^warm/manifests/batch-(?P<batch>[A-Za-z0-9][A-Za-z0-9_-]*)\.json(?:\.tmp-[0-9a-f]+)?$"
)
_CODECS = frozenset({"zstd", "snappy", "gzip", "brotli", "lz4", "none"})
# Statistics for pruning on everything but JSON text: min/max of payloads only bloat footers.
_STATS_COLUMNS = {
    name: [f for f in schema.names if f not in JSON_COLUMNS] for name, schema in DATASETS.items()
}
_SORT_KEYS = {"workflows": ("workflow_id",), "history": ("workflow_id", "event_id")}


def new_batch_id() -> str:
    """Return a fresh batch id that sorts by creation time, e.g. ``20261125T053000Z-1a2b3c4d``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def data_key(dataset: str, finished_date: str, batch_id: str, n: int) -> str:
    """Return the key of data file ``n`` of a batch for one dataset and date.

    Args:
        dataset: "workflows" or "history".
        finished_date: The partition date, ``YYYY-MM-DD``.
        batch_id: The batch id (letters, digits, ``_`` and ``-``).
        n: File number within the dataset and date, from 0.

    Returns:
        ``warm/<dataset>/finished_date=<date>/batch-<batch_id>-<n>.parquet``.

    Raises:
        InvalidArgument: A malformed part.
    """
    schema_for(dataset)
    _check_batch_id(batch_id)
    if not _DATE.match(finished_date) or n < 0:
        raise InvalidArgument(f"bad data file coordinates: {finished_date!r}, {n!r}")
    return f"{_PREFIX}/{dataset}/finished_date={finished_date}/batch-{batch_id}-{n}.parquet"


def manifest_key(batch_id: str) -> str:
    """Return ``warm/manifests/batch-<batch_id>.json``, the key of a batch's manifest."""
    _check_batch_id(batch_id)
    return f"{_PREFIX}/manifests/batch-{batch_id}.json"


def batch_prefixes() -> tuple[str, ...]:
    """Return the key prefixes under which a batch writes objects (relative to the root)."""
    return tuple(f"{_PREFIX}/{d}/" for d in (*DATASETS, "manifests"))


def batch_id_of(key: str) -> str | None:
    """Return the batch id a warm object key belongs to, or None for a foreign key.

    Recognises data files, manifests and the temporary name earlier versions
    gave a manifest while publishing it.
    """
    match = _DATA_KEY.match(key) or _MANIFEST_KEY.match(key)
    return match.group("batch") if match else None


def full_path(root: str, key: str) -> str:
    """Join a root path and a key the way pyarrow filesystems expect (``/`` separated)."""
    return f"{root.rstrip('/')}/{key}" if root else key


def list_batches(store: ObjectStore) -> dict[str, list[str]]:
    """List every warm object in ``store``, grouped by batch id.

    One recursive listing per prefix; a garbage collector compares the ids
    with the committed batches in the ledger. What a crash left mid-write
    (a temporary file never renamed into place) counts under its batch too,
    so deleting a batch's keys leaves nothing of it behind.

    Returns:
        Batch id to its keys (data files, manifests, leftovers), keys sorted.

    Raises:
        StorageError: The listing failed.
    """
    found: dict[str, list[str]] = {}
    for prefix in batch_prefixes():
        for key, _ in store.list(prefix.rstrip("/"), unfinished=True):
            batch = batch_id_of(store.unfinished_target(key) or key)
            if batch is not None:
                found.setdefault(batch, []).append(key)
    return {batch: sorted(keys) for batch, keys in found.items()}


def batch_keys(store: ObjectStore, batch_id: str) -> list[str]:
    """Return every object key of ``batch_id`` in ``store`` (empty if none).

    Raises:
        InvalidArgument: A malformed batch id.
        StorageError: The listing failed.
    """
    _check_batch_id(batch_id)
    return list_batches(store).get(batch_id, [])


@dataclass(frozen=True)
class WrittenFile:
    """One Parquet file of a batch.

    Attributes:
        key: Object key relative to the warm root.
        dataset: "workflows" or "history".
        finished_date: Partition date, ``YYYY-MM-DD``.
        rows: Number of rows in the file.
        bytes: Size of the object in bytes.
        sha256: Hex SHA-256 of the object's bytes.
    """

    key: str
    dataset: str
    finished_date: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class BatchManifest:
    """What a batch holds: its files, counts and time range, as a JSON document.

    Attributes:
        batch_id: The batch id.
        created_at: When the files were written, ISO 8601 UTC.
        files: Every data file of the batch.
        workflow_count: Rows over all workflows files.
        event_count: Rows over all history files.
        min_finished_at: Earliest workflow ``finished_at`` (ISO 8601 UTC), None if empty.
        max_finished_at: Latest workflow ``finished_at`` (ISO 8601 UTC), None if empty.
        schema_version: :data:`warm.schema.SCHEMA_VERSION` of the files.
    """

    batch_id: str
    created_at: str
    files: list[WrittenFile] = field(default_factory=list)
    workflow_count: int = 0
    event_count: int = 0
    min_finished_at: str | None = None
    max_finished_at: str | None = None
    schema_version: int = SCHEMA_VERSION

    def keys(self, dataset: str | None = None) -> list[str]:
        """Return the keys of the batch's files, of one dataset if given."""
        return [f.key for f in self.files if dataset is None or f.dataset == dataset]

    def to_json(self) -> bytes:
        """Return the manifest as UTF-8 JSON (keys sorted, so equal manifests are equal bytes)."""
        doc: dict[str, Any] = {"format": MANIFEST_FORMAT, **asdict(self)}
        return json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> BatchManifest:
        """Parse a manifest written by :meth:`to_json`.

        Raises:
            StorageError: Not a well-formed manifest (it is read from storage,
                so a bad one means a damaged or foreign object).
        """
        try:
            doc = json.loads(data)
            if doc.pop("format") != MANIFEST_FORMAT:
                raise ValueError("not a tierflow warm batch manifest")
            files = [WrittenFile(**_typed(f, _FILE_FIELDS)) for f in doc.pop("files")]
            manifest = cls(files=files, **_typed(doc, _MANIFEST_FIELDS))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StorageError(f"malformed batch manifest: {exc}") from exc
        return manifest


_FILE_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "dataset": (str,),
    "finished_date": (str,),
    "rows": (int,),
    "bytes": (int,),
    "sha256": (str,),
}
_MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "batch_id": (str,),
    "created_at": (str,),
    "workflow_count": (int,),
    "event_count": (int,),
    "min_finished_at": (str, type(None)),
    "max_finished_at": (str, type(None)),
    "schema_version": (int,),
}


def _typed(doc: Any, fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """Check a JSON object has exactly ``fields`` with the right types."""
    if not isinstance(doc, dict) or set(doc) != set(fields):
        raise ValueError(f"expected fields {sorted(fields)}, got {doc!r:.200}")
    for name, types in fields.items():
        value = doc[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"field {name!r} has a bad value {value!r:.100}")
    return doc


def write_manifest(store: ObjectStore, manifest: BatchManifest) -> str:
    """Publish a batch's manifest at :func:`manifest_key`; return the key.

    A reader never sees half a manifest (the store writes ``file://`` objects
    under a temporary name and renames them; S3 PUTs are atomic), and the
    manifest is durable when this returns. Publishing the same manifest again
    is harmless.

    Raises:
        StorageError: The write failed.
    """
    key = manifest_key(manifest.batch_id)
    store.put(key, manifest.to_json())
    return key


class BatchWriter:
    """Writes one batch of finished workflows as Parquet files.

    Files are plain Parquet (zstd by default) with min/max statistics on every
    non-JSON column, a page index, and sorting metadata: workflows files are
    sorted by ``workflow_id``, history files by ``(workflow_id, event_id)``,
    so a point lookup by ``workflow_id`` reads one row group, not the file.

    Row groups: a file of ``n`` rows gets ``max(1, n // row_group_rows)`` row
    groups of equal size, so every row group of a file that has at least
    ``row_group_rows`` rows holds between ``row_group_rows`` and twice that.
    Small trailing row groups are what made scans 5-10x slower, so there
    are none. History files end at a workflow boundary whenever a split is
    needed, so one workflow's events stay in one file unless the workflow
    alone exceeds ``max_rows_per_file``.

    Args:
        store: Where the files go (local, S3, ...); keys are relative to its root.
        batch_id: Id of this batch; it is part of every object name.
        max_rows_per_file: Upper bound on rows in one file.
        row_group_rows: Target rows per row group (see above).
        compression: Parquet codec: zstd, snappy, gzip, brotli, lz4 or none.
        on_row_group: Called with the file key after each row group is
            encoded; an exception it raises abandons the batch with nothing
            of the current file stored (tests use it to simulate a crash).
        on_file_stored: Called with the file key once its object is stored
            (the batch's later files are not yet): the point where a crash
            leaves a half-written batch behind.

    Raises:
        InvalidArgument: A bad batch id, limit or codec.
    """

    def __init__(
        self,
        store: ObjectStore,
        batch_id: str,
        *,
        max_rows_per_file: int = 2_000_000,
        row_group_rows: int = 16 * 1024,
        compression: str = "zstd",
        on_row_group: Callable[[str], None] | None = None,
        on_file_stored: Callable[[str], None] | None = None,
    ) -> None:
        _check_batch_id(batch_id)
        if max_rows_per_file < 1 or row_group_rows < 1:
            raise InvalidArgument("max_rows_per_file and row_group_rows must be positive")
        if compression not in _CODECS:
            raise InvalidArgument(f"unknown compression {compression!r} (one of {sorted(_CODECS)})")
        self.store = store
        self.batch_id = batch_id
        self.max_rows_per_file = max_rows_per_file
        self.row_group_rows = row_group_rows
        self.compression = compression
        self.on_row_group = on_row_group
        self.on_file_stored = on_file_stored

    def write(self, workflows: pa.Table, history: pa.Table) -> BatchManifest:
        """Write the batch's files, durably, and return its manifest (which is not stored).

        Args:
            workflows: Rows of :data:`warm.schema.WORKFLOWS_SCHEMA`, e.g. from
                :func:`warm.schema.workflows_table`; any order.
            history: Rows of :data:`warm.schema.HISTORY_SCHEMA` for exactly
                those workflows; any order.

        Returns:
            The manifest: every file with its size and SHA-256, the counts and
            the range of ``finished_at``.

        Raises:
            InvalidArgument: The tables break the schema or the batch rules
                (unique workflows, terminal statuses, events of workflows in
                the batch, event ids 1..n per workflow).
            StorageError: An object could not be written.
        """
        created_at = datetime.now(UTC).isoformat()
        workflows = conform(workflows, "workflows")
        history = conform(history, "history")
        validate_batch(workflows, history)
        plan = _plan(workflows, history)
        files: list[WrittenFile] = []
        # One batch: on file:// each directory is fsync'd once, when the block ends.
        with self.store.batch() as out:
            for dataset, table, order, dates, wf_starts in (
                ("workflows", workflows, plan.wf_order, plan.wf_dates, None),
                ("history", history, plan.hist_order, plan.hist_dates, plan.hist_wf_starts),
            ):
                for lo, hi, day in dates:
                    chunks = _split(lo, hi, self.max_rows_per_file, wf_starts)
                    for n, (a, b) in enumerate(chunks):
                        key = data_key(dataset, day, self.batch_id, n)
                        files.append(self._write_file(out, key, dataset, day, table, order, a, b))
        bounds = pc.min_max(workflows.column("finished_at").cast(pa.int64()))
        return BatchManifest(
            batch_id=self.batch_id,
            created_at=created_at,
            files=files,
            workflow_count=workflows.num_rows,
            event_count=history.num_rows,
            min_finished_at=_iso(bounds["min"].as_py()),
            max_finished_at=_iso(bounds["max"].as_py()),
            schema_version=SCHEMA_VERSION,
        )

    def write_file(
        self, out: WriteBatch, key: str, dataset: str, finished_date: str, rows: pa.Table
    ) -> WrittenFile:
        """Write rows that are already in file order as one file of this batch.

        For rewriting a file without some of its rows (erasure): the rows of one
        sorted file, minus some, are still sorted. Same encoding, row groups and
        hashing as :meth:`write`.

        Args:
            out: The write batch the object goes into (durable when it closes).
            key: The object key (:func:`data_key` of this batch).
            dataset: "workflows" or "history".
            finished_date: The partition date of every row, ``YYYY-MM-DD``.
            rows: The rows, sorted as the dataset's files are.

        Returns:
            The file's manifest entry.

        Raises:
            InvalidArgument: The rows do not fit the dataset's schema.
            StorageError: The object could not be written.
        """
        table = conform(rows, dataset)
        return self._write_file(out, key, dataset, finished_date, table, None, 0, table.num_rows)

    def _write_file(
        self,
        out: WriteBatch,
        key: str,
        dataset: str,
        day: str,
        table: pa.Table,
        order: pa.Array | None,
        lo: int,
        hi: int,
    ) -> WrittenFile:
        """Encode rows ``order[lo:hi]`` of ``table`` (``table[lo:hi]`` without an order)."""
        schema = schema_for(dataset)
        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(sink, schema, **self._options(dataset)) as writer:
            for a, b in _row_groups(lo, hi, self.row_group_rows):
                # Gather one row group at a time: the sorted copy never exceeds a row group.
                part = table.slice(a, b - a) if order is None else table.take(order.slice(a, b - a))
                writer.write_table(part, row_group_size=b - a)
                if self.on_row_group is not None:
                    self.on_row_group(key)
        data = memoryview(sink.getvalue())
        digest = hashlib.sha256(data).hexdigest()
        out.put(key, data, sha256=digest)
        if self.on_file_stored is not None:
            self.on_file_stored(key)
        return WrittenFile(key, dataset, day, hi - lo, data.nbytes, digest)

    def _options(self, dataset: str) -> dict[str, Any]:
        schema = schema_for(dataset)
        return {
            "compression": self.compression,
            "write_statistics": _STATS_COLUMNS[dataset],
            "write_page_index": True,
            "sorting_columns": [
                pq.SortingColumn(schema.get_field_index(name)) for name in _SORT_KEYS[dataset]
            ],
        }


@dataclass(frozen=True)
class _Plan:
    """Sort orders and partition ranges of one batch.

    ``*_order`` are row indices in write order; ``*_dates`` are
    ``(start, end, YYYY-MM-DD)`` ranges of those orders, one per date.
    """

    wf_order: pa.Array
    wf_dates: list[tuple[int, int, str]]
    hist_order: pa.Array
    hist_dates: list[tuple[int, int, str]]
    hist_wf_starts: list[int]


def _plan(workflows: pa.Table, history: pa.Table) -> _Plan:
    """Sort both tables by (finished_date, workflow_id[, event_id]) and find the date ranges.

    History is not sorted on its string column: each event gets the rank of
    its workflow in the sorted workflows (a hash lookup), and sorting by
    (rank, event_id) integers is about twice as fast as by strings (0.46 s
    against 0.84 s for 2M events here).
    """
    wf_order = pc.sort_indices(
        workflows, sort_keys=[("finished_date", "ascending"), ("workflow_id", "ascending")]
    )
    wf_dates_sorted = pc.take(workflows.column("finished_date"), wf_order)
    ranked_ids = pc.take(workflows.column("workflow_id"), wf_order).combine_chunks()
    rank = pc.index_in(history.column("workflow_id"), value_set=ranked_ids)
    keys = pa.table({"rank": rank, "event_id": history.column("event_id")})
    hist_order = pc.sort_indices(keys, sort_keys=[("rank", "ascending"), ("event_id", "ascending")])
    rank_sorted = pc.take(rank, hist_order).combine_chunks()
    events_sorted = pc.take(history.column("event_id"), hist_order).combine_chunks()
    _check_event_ids(history, hist_order, rank_sorted, events_sorted)
    hist_dates_sorted = pc.take(wf_dates_sorted, rank_sorted)
    return _Plan(
        wf_order=wf_order,
        wf_dates=_date_ranges(wf_dates_sorted),
        hist_order=hist_order,
        hist_dates=_date_ranges(hist_dates_sorted),
        hist_wf_starts=_run_starts(rank_sorted),
    )


def _run_starts(values: pa.Array) -> list[int]:
    """Return the positions where a sorted array changes value (always including 0)."""
    if len(values) == 0:
        return []
    changed = pc.not_equal(values.slice(1), values.slice(0, len(values) - 1))
    tail = pc.add(pc.indices_nonzero(changed), 1).to_pylist()
    return [0, *tail]


def _check_event_ids(
    history: pa.Table, order: pa.Array, rank_sorted: pa.Array, events_sorted: pa.Array
) -> None:
    """Require event ids 1..n without gaps or repeats for every workflow.

    In sorted order an event is correct when it is 1 where its workflow (rank)
    begins and one more than its predecessor elsewhere.
    """
    n = len(events_sorted)
    if n == 0:
        return
    previous_rank = pa.concat_arrays(
        [pa.array([-1], rank_sorted.type), rank_sorted.slice(0, n - 1)]
    )
    previous_event = pa.concat_arrays([pa.array([0], pa.int64()), events_sorted.slice(0, n - 1)])
    begins = pc.not_equal(rank_sorted, previous_rank)
    expected = pc.if_else(begins, 1, pc.add(previous_event, 1))
    ok = pc.equal(events_sorted, expected)
    if pc.all(ok).as_py():
        return
    bad = pc.indices_nonzero(pc.invert(ok))[0].as_py()
    row = history.slice(order[bad].as_py(), 1).to_pylist()[0]
    raise InvalidArgument(
        f"workflow {row['workflow_id']!r}: event ids must be 1..n without gaps, "
        f"found {row['event_id']} where {expected[bad].as_py()} was expected",
        workflow_id=row["workflow_id"],
    )


def _date_ranges(dates_sorted: pa.Array | pa.ChunkedArray) -> list[tuple[int, int, str]]:
    """Return ``(start, end, YYYY-MM-DD)`` for each run of equal dates in sorted order."""
    dates = (
        dates_sorted.combine_chunks() if isinstance(dates_sorted, pa.ChunkedArray) else dates_sorted
    )
    if len(dates) == 0:
        return []
    starts = _run_starts(dates)
    ends = [*starts[1:], len(dates)]
    return [(s, e, dates[s].as_py().isoformat()) for s, e in zip(starts, ends, strict=True)]


def _split(lo: int, hi: int, max_rows: int, wf_starts: list[int] | None) -> list[tuple[int, int]]:
    """Cut ``[lo, hi)`` into balanced chunks of at most ``max_rows`` rows.

    With ``wf_starts`` (sorted positions where a workflow's events begin), a
    cut moves back to the start of the workflow it would split, unless that
    workflow began at the chunk's own start (it is larger than a chunk).
    """
    n = hi - lo
    if n <= max_rows:
        return [(lo, hi)]
    count = -(-n // max_rows)
    target = -(-n // count)
    chunks: list[tuple[int, int]] = []
    start = lo
    while start < hi:
        end = min(start + target, hi)
        if end < hi and wf_starts:
            snapped = wf_starts[bisect.bisect_right(wf_starts, end) - 1]
            if snapped > start:
                end = snapped
        chunks.append((start, end))
        start = end
    return chunks


def _row_groups(lo: int, hi: int, target: int) -> list[tuple[int, int]]:
    """Split ``[lo, hi)`` into ``max(1, n // target)`` row groups of equal size."""
    n = hi - lo
    count = max(1, n // target)
    bounds = [lo + (i * n) // count for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


def _iso(micros: int | None) -> str | None:
    return None if micros is None else from_micros(micros).isoformat()


def _check_batch_id(batch_id: str) -> None:
    if not isinstance(batch_id, str) or not _BATCH_ID.match(batch_id):
        raise InvalidArgument(
            f"bad batch id {batch_id!r}: use 1-128 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
