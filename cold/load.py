"""The warm -> cold load: the rows of many warm batches become sorted cold files.

One commit per table. :func:`load` reads the warm files a group of committed batches lists in
their manifests, one ``finished_date`` at a time (so memory is one day of the
group, never the whole backlog), adds each row's ``batch_id``, marks
workflows ``tier = "cold"``, sorts, and hands the partitions to
:class:`~tierflow.cold.writer.ColdWriter`, which commits each table once with
the batch ids in the snapshot summary. ``history`` is committed before
``workflows``; the caller flips the index only after both.

This module moves data only. Which batches to take, the ledger, the index flip
and deleting the warm originals belong to :mod:`tierflow.tiering.to_cold`.
("Compaction" in tierflow means only rewriting small cold files: ``cold.maintenance``.)
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from tierflow.cold import tables
from tierflow.cold.writer import ColdWriter, sort_rows
from tierflow.hot.errors import StorageError
from tierflow.warm.storage import ObjectStore
from tierflow.warm.writer import BatchManifest, full_path

__all__ = ["LoadResult", "load", "prefetched", "read_partitions"]

_T = TypeVar("_T")
_DONE = object()

# The order tables are committed in; readers find an instance through the
# index, which flips only after both, so the order only matters for crash repair.
ORDER = ("history", "workflows")


@dataclass(frozen=True)
class LoadResult:
    """What one warm -> cold load commit wrote.

    Attributes:
        snapshots: Snapshot id per table ("workflows", "history").
        workflows: Rows in the workflows table's snapshot (0 when it was already there).
        events: Rows in the history table's snapshot (0 when it was already there).
    """

    snapshots: dict[str, int]
    workflows: int
    events: int


def read_partitions(
    store: ObjectStore,
    manifests: Sequence[BatchManifest],
    dataset: str,
    on_partition: Callable[[str, int], None] | None = None,
) -> Iterator[pa.Table]:
    """Yield one sorted Arrow table per ``finished_date`` of ``dataset`` over all batches.

    Args:
        store: The warm store holding the batches' files.
        manifests: Committed batches (their files are read as listed).
        dataset: "workflows" or "history".
        on_partition: Called as ``on_partition(date, rows)`` after each partition is read.

    Raises:
        StorageError: A file is missing, unreadable or not the warm schema.
    """
    by_day: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for m in manifests:
        for f in m.files:
            if f.dataset == dataset:
                by_day[f.finished_date].append((m.batch_id, f.key))
    schema = tables.arrow_schema(dataset)
    for day in sorted(by_day):
        parts = []
        for batch_id, key in by_day[day]:
            path = full_path(store.root, key)
            try:
                part = pq.read_table(path, filesystem=store.fs)
            except (OSError, pa.ArrowException) as exc:
                raise StorageError(
                    f"cannot read warm file {key} of batch {batch_id}: {exc}", url=store.url
                ) from exc
            parts.append(
                part.append_column(
                    schema.field("batch_id"), pa.repeat(pa.scalar(batch_id), part.num_rows)
                )
            )
        rows = pa.concat_tables(parts)
        if dataset == "workflows":
            i = rows.schema.get_field_index("tier")
            rows = rows.set_column(
                i, rows.schema.field(i), pa.repeat(pa.scalar(tables.TIER), rows.num_rows)
            )
        try:
            rows = rows.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise StorageError(
                f"warm {dataset} files of {day} do not fit the schema: {exc}"
            ) from exc
        expected = date.fromisoformat(day)
        if rows.num_rows and not pc.all(pc.equal(rows.column("finished_date"), expected)).as_py():
            raise StorageError(f"warm {dataset} files of {day} hold rows of another date")
        del parts
        if on_partition is not None:
            on_partition(day, rows.num_rows)
        yield sort_rows(rows, dataset)


def prefetched(items: Iterator[_T]) -> Iterator[_T]:
    """Yield ``items``, producing the next one in a thread while the caller uses this one.

    Reading and sorting a partition (pyarrow, GIL released) then overlaps
    writing the previous one. At most one item is produced ahead, so memory
    grows by one partition, not by the backlog. An exception in the producer
    is raised here; closing this generator stops the producer.
    """
    box: queue.Queue[Any] = queue.Queue(maxsize=1)
    turn = threading.Semaphore(1)  # produce the next item only once the last was taken
    stop = threading.Event()

    def produce() -> None:
        try:
            while True:
                turn.acquire()
                if stop.is_set():
                    return
                item = next(items, _DONE)
                box.put(item)
                if item is _DONE:
                    return
        except BaseException as exc:  # handed to the consumer
            box.put(exc)

    thread = threading.Thread(target=produce, name="tierflow-cold-load-read", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            turn.release()
            yield item
    finally:
        stop.set()
        turn.release()
        thread.join(timeout=60)


def load(
    writer: ColdWriter,
    store: ObjectStore,
    commit_id: str,
    manifests: Sequence[BatchManifest],
    *,
    on_partition: Callable[[str, int], None] | None = None,
    between: Callable[[str], None] | None = None,
) -> LoadResult:
    """Write the rows of ``manifests``' batches to both cold tables, once.

    Idempotent by ``commit_id``: a table that already holds the commit is
    skipped without reading anything.

    Args:
        writer: The cold writer.
        store: The warm store.
        commit_id: Recorded in each table's snapshot summary.
        manifests: The batches to move.
        on_partition: Progress callback ``(date, rows)``.
        between: Called with the table name after each table's commit (crash tests).

    Returns:
        The snapshot ids and row counts.

    Raises:
        StorageError: Reading warm files, writing or committing failed.
    """
    batch_ids = [m.batch_id for m in manifests]
    snapshots: dict[str, int] = {}
    counts = {"workflows": 0, "history": 0}
    for dataset in ORDER:

        def parts(dataset: str = dataset) -> Iterator[pa.Table]:
            for part in prefetched(read_partitions(store, manifests, dataset, on_partition)):
                counts[dataset] += part.num_rows
                yield part

        snap = writer.commit(dataset, commit_id, batch_ids, parts())
        snapshots[dataset] = snap.snapshot_id
        if between is not None:
            between(dataset)
    return LoadResult(snapshots, counts["workflows"], counts["history"])
