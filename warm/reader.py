"""Reading the warm archive: manifests, verification, point lookups and datasets.

Every function takes the object keys to read (from committed manifests), never
lists storage: which batches are committed is the tiering ledger's business,
and reading only listed keys keeps half-written batches invisible.

Rows come back as dicts with the columns every tier shares (``finished_date``, a
storage detail, is left out), and timestamps as integer microseconds since
the epoch (UTC) — exactly what :mod:`warm.schema`'s builders take, so a round
trip is the identity; ``hot.models.from_micros`` turns them into aware
datetimes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.dataset as ds  # type: ignore[import-untyped, unused-ignore]
import pyarrow.fs as pafs  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.warm.lookup import as_rows
from tierflow.warm.schema import SCHEMA_VERSION, schema_for
from tierflow.warm.writer import BatchManifest, WrittenFile, full_path, manifest_key

__all__ = [
    "LOW_CARDINALITY",
    "analytic_dataset",
    "dataset",
    "read_history",
    "read_manifest",
    "read_workflow",
    "verify",
]

_CHUNK = 8 * 1024 * 1024  # hashing reads; large enough that S3 round trips do not dominate


def read_manifest(fs: pafs.FileSystem, root: str, batch_id: str) -> BatchManifest:
    """Read the published manifest of ``batch_id``.

    Raises:
        StorageError: No manifest, a read failure, or a malformed manifest.
    """
    key = manifest_key(batch_id)
    path = full_path(root, key)
    try:
        with fs.open_input_stream(path) as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise StorageError(f"no manifest for batch {batch_id!r} at {key}", url=path) from exc
    except OSError as exc:
        raise StorageError(f"cannot read {key}: {exc}", url=path) from exc
    manifest = BatchManifest.from_json(data)
    if manifest.batch_id != batch_id:
        raise StorageError(f"{key} describes batch {manifest.batch_id!r}", url=path)
    return manifest


def verify(fs: pafs.FileSystem, root: str, manifest: BatchManifest) -> None:
    """Check that every file of a batch is stored exactly as the manifest says.

    Each object is read in full (streamed, not held in memory): its size and
    SHA-256 must match, and its Parquet footer must give the listed row count
    and the dataset's schema. The manifest's totals must add up.

    Raises:
        StorageError: The first difference found; the message names the key
            and what differs.
    """
    if manifest.schema_version != SCHEMA_VERSION:
        raise StorageError(
            f"batch {manifest.batch_id!r} has schema version {manifest.schema_version}, "
            f"this tierflow reads {SCHEMA_VERSION}"
        )
    totals = {"workflows": 0, "history": 0}
    for file in manifest.files:
        _verify_file(fs, root, file)
        totals[file.dataset] += file.rows
    expected = {"workflows": manifest.workflow_count, "history": manifest.event_count}
    if totals != expected:
        raise StorageError(
            f"batch {manifest.batch_id!r}: files hold {totals} rows, manifest says {expected}"
        )


def _verify_file(fs: pafs.FileSystem, root: str, file: WrittenFile) -> None:
    path = full_path(root, file.key)

    def fail(what: str) -> StorageError:
        return StorageError(f"{file.key}: {what}", url=path)

    try:
        schema = schema_for(file.dataset)
    except InvalidArgument as exc:
        raise fail(f"unknown dataset {file.dataset!r}") from exc
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise fail("missing")
        if info.size != file.bytes:
            raise fail(f"size is {info.size} bytes, manifest says {file.bytes}")
        digest = hashlib.sha256()
        size = 0
        with fs.open_input_stream(path) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        if size != file.bytes:  # changed between the listing and the read
            raise fail(f"read {size} bytes, manifest says {file.bytes}")
        if digest.hexdigest() != file.sha256:
            raise fail(f"sha256 is {digest.hexdigest()}, manifest says {file.sha256}")
        with fs.open_input_file(path) as f:
            meta = pq.read_metadata(f)
    except StorageError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise fail(f"unreadable: {exc}") from exc
    if meta.num_rows != file.rows:
        raise fail(f"Parquet footer says {meta.num_rows} rows, manifest says {file.rows}")
    if not meta.schema.to_arrow_schema().equals(schema):
        raise fail(f"schema differs from the {file.dataset} schema")


def dataset(fs: pafs.FileSystem, root: str, keys: list[str], which: str) -> ds.Dataset:
    """Return a pyarrow dataset over the given files of one warm dataset.

    The schema is the documented one, so no file is opened to infer it and an
    empty key list gives an empty dataset. Filters on ``workflow_id``,
    ``finished_date``, timestamps etc. are pushed down to row-group
    statistics (DuckDB can query the result directly).

    Args:
        fs: Filesystem holding the archive.
        root: Root path of the archive on ``fs``.
        keys: Object keys of ``which`` files (from committed manifests).
        which: "workflows" or "history".

    Raises:
        InvalidArgument: Unknown dataset, or a key of another dataset.
        StorageError: A file could not be opened.
    """
    schema = schema_for(which)
    prefix = f"warm/{which}/"
    if foreign := [k for k in keys if not k.startswith(prefix)]:
        raise InvalidArgument(f"not {which} files: {foreign[:3]}")
    paths = [full_path(root, k) for k in keys]
    try:
        return ds.dataset(paths, schema=schema, format="parquet", filesystem=fs)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot open warm {which} files: {exc}") from exc


LOW_CARDINALITY = frozenset({"event_type", "workflow_type", "status", "step_name", "tier"})
"""Columns an analytic scan reads as Arrow dictionaries: few distinct values per file."""


def analytic_dataset(fs: pafs.FileSystem, paths: list[str], schema: pa.Schema) -> ds.Dataset:
    """A dataset over archive files for scans: low-cardinality strings stay dictionaries.

    Parquet stores those columns dictionary-encoded; reading them as Arrow
    dictionaries skips decoding every value to a string, which made a
    GROUP BY over ``event_type`` in DuckDB 3x faster (10M events: 252 ms as
    strings, 83 ms as dictionaries). Queries see plain strings either way.

    Args:
        fs: Filesystem holding the files.
        paths: Files on ``fs`` (from committed manifests or one snapshot).
        schema: Their schema (``string`` columns in :data:`LOW_CARDINALITY` are
            read as ``dictionary<int32, string>``).

    Raises:
        StorageError: A file could not be opened.
    """
    dictionary = [f.name for f in schema if f.name in LOW_CARDINALITY and f.type == pa.string()]
    fields = [
        f.with_type(pa.dictionary(pa.int32(), pa.string())) if f.name in dictionary else f
        for f in schema
    ]
    fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=dictionary))
    try:
        return ds.dataset(
            paths, schema=pa.schema(fields, metadata=schema.metadata), format=fmt, filesystem=fs
        )
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot open archive files: {exc}") from exc


def read_history(
    fs: pafs.FileSystem, root: str, keys: list[str], workflow_id: str
) -> list[dict[str, Any]]:
    """Return the events of one workflow, ordered by ``event_id``.

    Only the row groups whose ``workflow_id`` statistics can hold the id are
    read (files are sorted by it), so a lookup reads each file's footer and
    about one row group, not whole files.

    Args:
        fs: Filesystem holding the archive.
        root: Root path of the archive on ``fs``.
        keys: History file keys to search.
        workflow_id: The workflow.

    Returns:
        One dict per event with the history columns; ``event_time`` in
        integer microseconds since the epoch (UTC). Empty if no file holds
        the workflow.

    Raises:
        StorageError: A file could not be read.
    """
    table = _lookup(fs, root, keys, "history", workflow_id)
    table = table.sort_by([("event_id", "ascending")])
    return _rows(table)


def read_workflow(
    fs: pafs.FileSystem, root: str, keys: list[str], workflow_id: str
) -> dict[str, Any] | None:
    """Return the ``workflows`` row of one workflow, or None.

    Args:
        fs: Filesystem holding the archive.
        root: Root path of the archive on ``fs``.
        keys: Workflows file keys to search.
        workflow_id: The workflow.

    Returns:
        The row with the workflows columns (``tier`` is "warm"); ``created_at``,
        ``started_at`` and ``finished_at`` in integer microseconds since the
        epoch (UTC). None if no file holds the workflow.

    Raises:
        StorageError: A file could not be read, or the workflow appears more
            than once among ``keys`` (the tiering contract puts each workflow
            in one batch; the caller passed overlapping batches).
    """
    rows = _rows(_lookup(fs, root, keys, "workflows", workflow_id))
    if len(rows) > 1:
        raise StorageError(
            f"workflow {workflow_id!r} appears {len(rows)} times in the warm files given",
            workflow_id=workflow_id,
        )
    return rows[0] if rows else None


def _lookup(
    fs: pafs.FileSystem, root: str, keys: list[str], which: str, workflow_id: str
) -> pa.Table:
    data = dataset(fs, root, keys, which)
    columns = [name for name in data.schema.names if name != "finished_date"]
    try:
        return data.to_table(columns=columns, filter=ds.field("workflow_id") == workflow_id)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(
            f"cannot read warm {which} files: {exc}", workflow_id=workflow_id
        ) from exc


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return as_rows(table)
