"""Point reads of the cold tables: one workflow's row or history, by id and partition.

The index knows every archived workflow's ``finished_at``, hence its
partition, so a lookup needs one partition's files. :class:`ColdReader`
keeps, per table snapshot, the file list of every partition with each file's
``workflow_id`` bounds (read once from the manifests), picks the files whose
bounds hold the id, and reads them with a pushed-down filter: Parquet
statistics skip every row group but about one (files are sorted by id).

Data files never change once written, so the reader keeps the Parquet
footers of recently read files: a repeated lookup in a file costs one ranged
read of the row groups whose ``workflow_id`` statistics hold the id (on S3 one
ranged GET: the file's size is kept with its footer, so no HEAD). The first
lookup in a file reads its footer with a ranged GET as well: the manifests
record each data file's size, which never changes, so it is not asked.

When a snapshot it has cached does not hold the workflow (another process
loaded it into cold since), the reader reloads the table once and tries again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
from pyiceberg.table import Table
from tierflow.cold import tables
from tierflow.cold.catalog import ColdTables
from tierflow.hot.errors import StorageError
from tierflow.warm.lookup import PointReader, as_rows

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
        self._points = PointReader(cold.store.fs, footers=footers, read_range=cold.store.read_range)

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

    def _read(self, dataset: str, workflow_id: str, finished_date: str) -> pa.Table:
        files = self.candidates(dataset, workflow_id, finished_date)
        return self._points.read(
            [fs_path(f.path) for f in files],
            workflow_id,
            tables.arrow_schema(dataset),
            sizes=[f.bytes for f in files],  # from the manifests: a data file never changes
        )

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
                    raise self._unreadable(dataset, workflow_id, exc) from exc
                self.refresh()
                continue
            if found.num_rows or attempt:
                break
            self.refresh()
        if dataset == "history":
            found = found.sort_by([("event_id", "ascending")])
        return found

    def _unreadable(self, dataset: str, workflow_id: str, exc: Exception) -> StorageError:
        return StorageError(
            f"cannot read cold {dataset} of {workflow_id!r}: {exc}",
            workflow_id=workflow_id,
            url=self.cold.where,
        )

    def iter_history(
        self, workflow_id: str, finished_date: str, *, after: int = 0, batch_rows: int
    ) -> Generator[pa.Table, None, None]:
        """The history rows of ``workflow_id`` with ``event_id > after``, ascending, batch by batch.

        Like :meth:`lookup` (same files, same reload when a file is gone or the
        cached snapshot lacks the workflow), but never holding the whole
        history: the candidate files are read a record batch at a time and
        merged by ``event_id`` (one workflow's rows can span several files: a
        data file ends where the writer's target size falls, inside a workflow
        or not). A file removed meanwhile (maintenance replaced it) means a
        reload and a new read that resumes after the last row already yielded.

        Raises:
            StorageError: The catalog, the table or a file cannot be read.
        """
        schema = tables.arrow_schema("history")
        last = after
        for attempt in range(2):
            try:
                files = self.candidates("history", workflow_id, finished_date)
                parts = self._points.iter_sorted(
                    [fs_path(f.path) for f in files],
                    workflow_id,
                    schema,
                    "event_id",
                    batch_rows=batch_rows,
                    sizes=[f.bytes for f in files],
                )
                with contextlib.closing(parts):
                    for part in parts:
                        if last:
                            part = part.filter(pc.greater(part.column("event_id"), last))
                        if part.num_rows:
                            last = part.column("event_id")[-1].as_py()
                            yield part
            except (OSError, pa.ArrowException) as exc:
                if attempt:
                    raise self._unreadable("history", workflow_id, exc) from exc
                self.refresh()
                continue
            if last > after or attempt:
                return
            self.refresh()  # nothing found: another process may have loaded it since

    def rows(self, dataset: str, workflow_id: str, finished_date: str) -> list[dict[str, Any]]:
        """:meth:`lookup` as dicts, timestamps as integer microseconds (UTC)."""
        return as_rows(self.lookup(dataset, workflow_id, finished_date))
