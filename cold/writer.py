"""Writing rows into a cold table: sorted files, one Iceberg commit, idempotent by commit id.

:class:`ColdWriter` takes one partition's rows at a time (already sorted by the
caller, or sorted here), splits them into files of the layout's target size,
writes them with pyiceberg's Parquet writer (field ids, column metrics), and
commits all of them in **one** snapshot whose summary records:

- ``tierflow.commit-id``: the caller's commit id;
- ``tierflow.batches``: the warm batch ids the rows came from.

A commit is idempotent: :func:`find_commit` looks the commit id up in the
table's snapshots first, so a retry after a crash (or a second process that
raced this one) skips ahead instead of appending the rows twice. Data file
names derive from the commit id (``00000-<n>-<uuid5(commit id)>.parquet``):
a rerun overwrites what a killed write left, and :meth:`ColdWriter.leftovers`
finds files of a commit that never landed.

On ``file://`` every file the commit writes (data, manifests, manifest list,
metadata) is fsync'd with its directories as it is closed, by the catalog's
FileIO (:mod:`tierflow.cold.fileio`): before the catalog points at it, and
so before the caller deletes the warm originals.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.io.fileformat import FileFormatFactory
from pyiceberg.io.pyarrow import write_file
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import Table, WriteTask
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.snapshots import Snapshot
from tierflow.cold import tables
from tierflow.cold.catalog import ColdTables
from tierflow.hot.errors import StorageError

__all__ = [
    "BATCHES_PROPERTY",
    "COMMIT_ID_PROPERTY",
    "ColdWriter",
    "batches_of",
    "find_commit",
    "sort_rows",
    "store_key",
    "write_uuid",
]

COMMIT_ID_PROPERTY = "tierflow.commit-id"
"""Snapshot summary property: the id of the tierflow commit that wrote the snapshot."""

BATCHES_PROPERTY = "tierflow.batches"
"""Snapshot summary property: comma-separated warm batch ids whose rows the snapshot added."""

_NAMESPACE = uuid.UUID("6f1f5f3e-2b1c-4c55-9a55-7ad7c0de0001")
# Optimistic concurrency: a commit that lost a race is retried on fresh metadata.
_COMMIT_ATTEMPTS = 5


def write_uuid(commit_id: str, dataset: str) -> uuid.UUID:
    """The uuid in the names of the data files one commit writes to one table."""
    return uuid.uuid5(_NAMESPACE, f"{commit_id}/{dataset}")


def find_commit(table: Table, commit_id: str) -> Snapshot | None:
    """The snapshot of ``table`` that tierflow commit ``commit_id`` made, if any.

    Looks at every snapshot the table's metadata still lists (expiry only
    removes snapshots older than its retention, never one a pending commit
    made: the cold move recovers pending commits before maintenance runs).
    """
    for snap in table.metadata.snapshots:
        summary = snap.summary
        if (
            summary is not None
            and summary.additional_properties.get(COMMIT_ID_PROPERTY) == commit_id
        ):
            return snap
    return None


def batches_of(snapshot: Snapshot) -> list[str]:
    """The warm batch ids a snapshot's summary lists (empty for other snapshots)."""
    if snapshot.summary is None:
        return []
    raw = snapshot.summary.additional_properties.get(BATCHES_PROPERTY, "")
    return [b for b in raw.split(",") if b]


def sort_rows(rows: pa.Table, dataset: str) -> pa.Table:
    """Sort rows the way every cold file of ``dataset`` is sorted."""
    keys = tables.sort_keys(dataset)
    if rows.num_rows < 2:
        return rows
    return rows.take(pc.sort_indices(rows, [(k, "ascending") for k in keys]))


def store_key(store_url: str, location: str) -> str | None:
    """The object-store key of a location under ``store_url``, or None if it is elsewhere."""
    root = store_url.rstrip("/") + "/"
    return location[len(root) :] if location.startswith(root) else None


class ColdWriter:
    """Writes and commits rows to the cold tables.

    Args:
        cold: The cold tables (created on first write).
    """

    def __init__(self, cold: ColdTables) -> None:
        self.cold = cold

    def data_files(
        self, table: Table, dataset: str, commit_id: str, partitions: Iterable[pa.Table]
    ) -> Iterator[DataFile]:
        """Write each partition's rows (sorted; one ``finished_date`` each) as data files.

        Args:
            table: The table to write for.
            dataset: "workflows" or "history".
            commit_id: Names the files (a rerun overwrites them).
            partitions: One Arrow table per ``finished_date``, with
                :func:`tables.arrow_schema` columns, already sorted.

        Yields:
            The written files' ``DataFile`` entries, ready to append.
        """
        schema = table.schema()
        spec = table.spec()
        target = int(self.cold.layout.target_file_bytes)
        row_group = self.cold.layout.row_group_rows
        counter = itertools.count()
        wuuid = write_uuid(commit_id, dataset)
        for part in partitions:
            if part.num_rows == 0:
                continue
            day = part.column("finished_date")[0].as_py()
            if not isinstance(day, date):
                raise StorageError(f"cold {dataset} rows without a finished_date")
            key = PartitionKey(
                field_values=[PartitionFieldValue(field=spec.fields[0], value=day)],
                partition_spec=spec,
                schema=schema,
            )
            per_row = max(1, part.nbytes // max(1, part.num_rows))
            rows_per_file = max(row_group, target // per_row)
            tasks = [
                WriteTask(
                    write_uuid=wuuid,
                    task_id=next(counter),
                    schema=schema,
                    record_batches=part.slice(lo, rows_per_file).to_batches(),
                    partition_key=key,
                )
                for lo in range(0, part.num_rows, rows_per_file)
            ]
            yield from write_file(table.io, table.metadata, iter(tasks))

    def write_streamed(
        self,
        table: Table,
        dataset: str,
        commit_id: str,
        task_id: int,
        finished_date: date,
        file_schema: pa.Schema,
        parts: Iterable[pa.Table],
    ) -> DataFile | None:
        """Write ``parts`` as one data file, one part at a time (memory: one part).

        For rewriting a file without some of its rows: the parts are its row
        groups, filtered, in file order (so still sorted), and the new file
        gets the same Arrow schema (field ids included), encoding and column
        metrics as every file the table's writer makes.

        Args:
            table: The table to write for.
            dataset: "workflows" or "history".
            commit_id: Names the file, with ``task_id`` (unique within the commit).
            task_id: Distinguishes the commit's files.
            finished_date: The partition of every row.
            file_schema: The Arrow schema to write (e.g. the replaced file's).
            parts: The rows, in order; empty parts are skipped.

        Returns:
            The file's entry, ready to commit; None when every part was empty (no
            file is created then).
        """
        schema = table.schema()
        spec = table.spec()
        key = PartitionKey(
            field_values=[PartitionFieldValue(field=spec.fields[0], value=finished_date)],
            partition_spec=spec,
            schema=schema,
        )
        task = WriteTask(
            write_uuid=write_uuid(commit_id, dataset),
            task_id=task_id,
            schema=schema,
            record_batches=[],
            partition_key=key,
        )
        meta = table.metadata
        path = load_location_provider(meta.location, meta.properties).new_data_location(
            data_file_name=task.generate_data_file_filename("parquet"), partition_key=key
        )
        output = table.io.new_output(path)
        writer = FileFormatFactory.get(FileFormat.PARQUET).create_writer(
            output, schema, meta.properties
        )
        rows = 0
        try:
            for part in parts:
                if part.num_rows:
                    writer.write(part.cast(file_schema))
                    rows += part.num_rows
        except BaseException:
            if rows:
                with contextlib.suppress(Exception):
                    writer.close()
            raise
        if not rows:
            return None
        stats = writer.close()
        return DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=path,
            file_format=FileFormat.PARQUET,
            partition=key.partition,
            file_size_in_bytes=len(output),
            sort_order_id=None,
            spec_id=meta.default_spec_id,
            equality_ids=None,
            key_metadata=None,
            **stats.to_serialized_dict(),
        )

    def commit(
        self,
        dataset: str,
        commit_id: str,
        batch_ids: Sequence[str],
        partitions: Iterable[pa.Table],
        *,
        extra_properties: dict[str, str] | None = None,
    ) -> Snapshot:
        """Append ``partitions`` to one table in one snapshot, unless ``commit_id`` already did.

        Args:
            dataset: "workflows" or "history".
            commit_id: Unique id of this tierflow commit (recorded in the summary).
            batch_ids: Warm batches the rows came from (recorded in the summary).
            partitions: Sorted rows, one Arrow table per ``finished_date``; only
                consumed when the commit is not in the table yet.
            extra_properties: More snapshot summary properties.

        Returns:
            The snapshot holding the rows (the earlier one when already committed).

        Raises:
            StorageError: Writing or committing failed (nothing is visible then).
        """
        table = self.cold.table(dataset, create=True, refresh=True)
        done = find_commit(table, commit_id)
        if done is not None:
            return done
        props = {COMMIT_ID_PROPERTY: commit_id, BATCHES_PROPERTY: ",".join(batch_ids)}
        props.update(extra_properties or {})
        try:
            files = list(self.data_files(table, dataset, commit_id, partitions))
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"writing cold {dataset} files failed: {exc}") from exc
        return self.commit_files(dataset, commit_id, props, add=files, remove=())

    def commit_files(
        self,
        dataset: str,
        commit_id: str,
        properties: dict[str, str],
        *,
        add: Sequence[DataFile],
        remove: Sequence[DataFile],
    ) -> Snapshot:
        """Commit prepared data files: add ``add`` and remove ``remove`` in one snapshot.

        Retried on fresh metadata when another writer committed in between; a
        retry that finds ``commit_id`` already committed returns that snapshot.
        Files in ``remove`` must still be live in the current snapshot, else the
        commit is refused (someone else rewrote them).

        Raises:
            StorageError: The commit failed, or ``remove`` names files no longer live.
        """
        props = {COMMIT_ID_PROPERTY: commit_id, **properties}
        table = self.cold.table(dataset, create=True)
        for attempt in range(_COMMIT_ATTEMPTS):
            if attempt:
                table = self.cold.table(dataset, refresh=True)
                done = find_commit(table, commit_id)
                if done is not None:
                    return done
            if remove:
                live = {t.file.file_path for t in table.scan().plan_files()}
                gone = [f.file_path for f in remove if f.file_path not in live]
                if gone:
                    raise StorageError(
                        f"cold {dataset}: {len(gone)} files to replace are no longer live "
                        f"(e.g. {gone[0]}); another process rewrote them"
                    )
            try:
                with table.transaction() as tx:
                    update = tx.update_snapshot(snapshot_properties=props)
                    producer: Any = update.overwrite() if remove else update.fast_append()
                    with producer as op:
                        for f in remove:
                            op.delete_data_file(f)
                        for f in add:
                            op.append_data_file(f)
            except CommitFailedException:
                continue
            except Exception as exc:
                raise StorageError(f"committing to cold {dataset} failed: {exc}") from exc
            snap = find_commit(table, commit_id)
            if snap is None:  # pragma: no cover - pyiceberg updates the table in place
                snap = find_commit(self.cold.table(dataset, refresh=True), commit_id)
            if snap is None:
                raise StorageError(f"cold {dataset}: commit {commit_id} is not in the table")
            return snap
        raise StorageError(
            f"cold {dataset}: commit {commit_id} lost the race {_COMMIT_ATTEMPTS} times"
        )

    def leftovers(self, dataset: str, commit_id: str) -> list[str]:
        """Keys of data files a never-committed ``commit_id`` left in the table's directory.

        Raises:
            StorageError: The listing failed.
        """
        table = self.cold.table(dataset, create=True)
        marker = str(write_uuid(commit_id, dataset))
        key = store_key(self.cold.store.url, table.location())
        if key is None:
            return []
        return [k for k, _ in self.cold.store.list(f"{key}/data") if marker in k]
