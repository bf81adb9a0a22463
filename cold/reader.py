"""Point reads of the cold tables: one workflow's row or history, by id and partition.

The index knows every archived workflow's ``finished_at``, hence its
partition, so a lookup needs one partition's files. :class:`ColdReader`
keeps, per table snapshot, the file list of every partition with each file's
``workflow_id`` bounds (read once from the manifests), picks the files whose
bounds hold the id, and reads them with a pushed-down filter: Parquet
statistics skip every row group but about one (files are sorted by id).

Data files never change once written, so the reader keeps the Parquet
footers of recently read files: a repeated lookup in a file costs one ranged
read of the row groups whose ``workflow_id`` statistics hold the id (on S3 a
HEAD and one GET).

When a snapshot it has cached does not hold the workflow (another process
compacted since), the reader reloads the table once and tries again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from pyiceberg.table import Table
from tierflow.cold import tables
from tierflow.cold.catalog import ColdTables
from tierflow.hot.errors import StorageError

__all__ = ["ColdFile", "ColdReader", "fs_path"]


@dataclass(frozen=True)
class ColdFile:
    """One live data file of a cold table.

    Attributes:
        path: Its location (``file://...`` or ``s3://...``).
        finished_date: Its partition, ``YYYY-MM-DD``.
        rows: Row count.
        bytes: Size on storage.
        lower: Lower bound of ``workflow_id`` in the file (None: unknown).
        upper: Upper bound of ``workflow_id`` in the file (None: unknown).
    """

    path: str
    finished_date: str
    rows: int
    bytes: int
    lower: str | None
    upper: str | None

    def may_hold(self, workflow_id: str) -> bool:
        """False only when the bounds prove the file holds no row of ``workflow_id``."""
        if self.lower is not None and workflow_id < self.lower:
            return False
        return not (self.upper is not None and workflow_id > self.upper)


def fs_path(location: str) -> str:
    """A table location as a path on the store's pyarrow filesystem."""
    for scheme in ("file://", "s3://", "s3a://"):
        if location.startswith(scheme):
            return location[len(scheme) :]
    return location


def _bound(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:  # a truncated multi-byte bound: do not prune on it
        return None


class _Files:
    """The live files of one snapshot of one table, by partition."""

    def __init__(self, table: Table) -> None:
        snap = table.current_snapshot()
        self.snapshot_id = None if snap is None else snap.snapshot_id
        self.by_day: dict[str, list[ColdFile]] = {}
        if snap is None:
            return
        wid = table.schema().find_field("workflow_id").field_id
        for task in table.scan().plan_files():
            f = task.file
            day = tables.partition_date(f.partition)
            self.by_day.setdefault(day, []).append(
                ColdFile(
                    path=f.file_path,
                    finished_date=day,
                    rows=f.record_count,
                    bytes=f.file_size_in_bytes,
                    lower=_bound((f.lower_bounds or {}).get(wid)),
                    upper=_bound((f.upper_bounds or {}).get(wid)),
                )
            )


class ColdReader:
    """Reads single workflows from the cold tables.

    Args:
        cold: The cold tables.
    """

    def __init__(self, cold: ColdTables, *, footers: int = 256) -> None:
        self.cold = cold
        self._files: dict[str, _Files] = {}
        self._lock = threading.Lock()
        self._footers: OrderedDict[str, pq.FileMetaData] = OrderedDict()
        self._max_footers = footers

    def refresh(self) -> None:
        """Reload both tables from the catalog (the next read re-lists their files)."""
        with self._lock:
            for dataset in tables.DATASETS:
                self.cold.table(dataset, refresh=True)
            self._files.clear()

    def files(self, dataset: str, finished_date: str | None = None) -> list[ColdFile]:
        """Live files of one table (of one partition if given), as of the cached snapshot."""
        with self._lock:
            cached = self._files.get(dataset)
            if cached is None:
                cached = _Files(self.cold.table(dataset))
                self._files[dataset] = cached
        if finished_date is not None:
            return list(cached.by_day.get(finished_date, []))
        return [f for day in sorted(cached.by_day) for f in cached.by_day[day]]

    def candidates(self, dataset: str, workflow_id: str, finished_date: str) -> list[ColdFile]:
        """The files a point read of ``workflow_id`` has to open (the pruning, made visible)."""
        return [f for f in self.files(dataset, finished_date) if f.may_hold(workflow_id)]

    def _footer(self, f: ColdFile) -> tuple[Any, pq.FileMetaData]:
        """An open file and its Parquet footer (cached: files are immutable)."""
        fs = self.cold.store.fs
        source = fs.open_input_file(fs_path(f.path))
        with self._lock:
            meta = self._footers.get(f.path)
            if meta is not None:
                self._footers.move_to_end(f.path)
        if meta is None:
            meta = pq.read_metadata(source)
            with self._lock:
                self._footers[f.path] = meta
                while len(self._footers) > self._max_footers:
                    self._footers.popitem(last=False)
        return source, meta

    def _read_file(self, f: ColdFile, workflow_id: str, schema: pa.Schema) -> pa.Table | None:
        source, meta = self._footer(f)
        with source:
            column = meta.schema.names.index("workflow_id")
            groups = []
            for i in range(meta.num_row_groups):
                stats = meta.row_group(i).column(column).statistics
                pruned = stats is not None and stats.has_min_max
                if pruned and not stats.min <= workflow_id <= stats.max:
                    continue
                groups.append(i)
            if not groups:
                return None
            part = pq.ParquetFile(source, metadata=meta).read_row_groups(groups)
        part = part.filter(pc.equal(part.column("workflow_id"), workflow_id))
        return part.cast(schema) if part.num_rows else None

    def _read(self, dataset: str, workflow_id: str, finished_date: str) -> pa.Table:
        schema = tables.arrow_schema(dataset)
        parts = [
            found
            for f in self.candidates(dataset, workflow_id, finished_date)
            if (found := self._read_file(f, workflow_id, schema)) is not None
        ]
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def lookup(self, dataset: str, workflow_id: str, finished_date: str) -> pa.Table:
        """Every row of ``workflow_id`` in one table (history sorted by ``event_id``).

        Args:
            dataset: "workflows" or "history".
            workflow_id: The workflow.
            finished_date: Its partition (from the index's ``finished_at``).

        Returns:
            The rows, with :func:`tables.arrow_schema` columns; empty when the
            table does not hold the workflow even after a reload.

        Raises:
            StorageError: The catalog, the table or a file cannot be read.
        """
        for attempt in range(2):
            try:
                found = self._read(dataset, workflow_id, finished_date)
            except (OSError, pa.ArrowException) as exc:
                # A file a newer snapshot replaced and maintenance removed: reload and retry.
                if attempt:
                    raise StorageError(
                        f"cannot read cold {dataset} of {workflow_id!r}: {exc}",
                        workflow_id=workflow_id,
                        url=self.cold.where,
                    ) from exc
                self.refresh()
                continue
            if found.num_rows or attempt:
                break
            self.refresh()
        if dataset == "history":
            found = found.sort_by([("event_id", "ascending")])
        return found

    def rows(self, dataset: str, workflow_id: str, finished_date: str) -> list[dict[str, Any]]:
        """:meth:`lookup` as dicts, timestamps as integer microseconds (UTC)."""
        table = self.lookup(dataset, workflow_id, finished_date)
        for i, field in enumerate(table.schema):
            if pa.types.is_timestamp(field.type):
                table = table.set_column(
                    i, field.with_type(pa.int64()), table.column(i).cast(pa.int64())
                )
        out: list[dict[str, Any]] = table.to_pylist()
        return out
