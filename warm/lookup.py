"""Point reads of one workflow's rows from Parquet files sorted by ``workflow_id``.

Archive files (warm batches, cold data files) never change once written, so
:class:`PointReader` keeps the footers of recently read files: a repeated
lookup in a file reads only the row groups whose ``workflow_id`` statistics
can hold the id (on S3: a HEAD and one ranged GET), without re-reading the
footer or building a dataset. :meth:`PointReader.iter_sorted` reads the same
row groups a record batch at a time, for histories too long to hold whole.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.fs as pafs  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

__all__ = ["PointReader", "as_rows", "merge_sorted"]


class PointReader:
    """Reads the rows of one ``workflow_id`` from immutable Parquet files.

    Args:
        fs: The filesystem holding the files.
        footers: How many file footers to keep (least recently used go first).
    """

    def __init__(self, fs: pafs.FileSystem, *, footers: int = 256) -> None:
        self.fs = fs
        self._footers: OrderedDict[str, pq.FileMetaData] = OrderedDict()
        self._max = footers
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop every cached footer."""
        with self._lock:
            self._footers.clear()

    def _footer(self, path: str, source: pa.NativeFile) -> pq.FileMetaData:
        with self._lock:
            meta = self._footers.get(path)
            if meta is not None:
                self._footers.move_to_end(path)
                return meta
        meta = pq.read_metadata(source)
        with self._lock:
            self._footers[path] = meta
            while len(self._footers) > self._max:
                self._footers.popitem(last=False)
        return meta

    def read_file(self, path: str, workflow_id: str, schema: pa.Schema) -> pa.Table | None:
        """The rows of ``workflow_id`` in one file (cast to ``schema``), or None.

        Raises:
            OSError: The file cannot be opened or read.
            pyarrow.ArrowException: The file is not valid Parquet.
        """
        with self.fs.open_input_file(path) as source:
            meta = self._footer(path, source)
            groups = _groups(meta, workflow_id)
            if not groups:
                return None
            part = pq.ParquetFile(source, metadata=meta).read_row_groups(groups)
        return _only(part, workflow_id, schema)

    def iter_file(
        self, path: str, workflow_id: str, schema: pa.Schema, *, batch_rows: int
    ) -> Generator[pa.Table, None, None]:
        """The rows of ``workflow_id`` in one file, a record batch at a time, in file order.

        Reads the same row groups as :meth:`read_file`, but decodes at most
        ``batch_rows`` rows at once and yields each batch's rows of the
        workflow (batches without any are skipped), so a workflow with
        millions of rows is never held whole. The file stays open until the
        iterator is exhausted or closed.

        Raises:
            OSError: The file cannot be opened or read.
            pyarrow.ArrowException: The file is not valid Parquet.
        """
        with self.fs.open_input_file(path) as source:
            meta = self._footer(path, source)
            groups = _groups(meta, workflow_id)
            if not groups:
                return
            batches = pq.ParquetFile(source, metadata=meta).iter_batches(
                batch_size=batch_rows, row_groups=groups
            )
            for batch in batches:
                part = _only(pa.Table.from_batches([batch]), workflow_id, schema)
                if part is not None:
                    yield part

    def iter_sorted(
        self,
        paths: Sequence[str],
        workflow_id: str,
        schema: pa.Schema,
        key: str,
        *,
        batch_rows: int,
    ) -> Generator[pa.Table, None, None]:
        """The rows of ``workflow_id`` in any of ``paths``, ascending in ``key``, batch by batch.

        Each file must hold the workflow's rows sorted by ``key`` (archive files
        are sorted by ``workflow_id`` then ``key``); the files' rows are merged
        (see :func:`merge_sorted`), so a workflow split across files comes out
        in one order, holding at most a batch per file.
        """
        streams = [self.iter_file(p, workflow_id, schema, batch_rows=batch_rows) for p in paths]
        try:
            yield from merge_sorted(streams, key)
        finally:
            for stream in streams:
                stream.close()

    def read(self, paths: Sequence[str], workflow_id: str, schema: pa.Schema) -> pa.Table:
        """The rows of ``workflow_id`` in any of ``paths``, in path order (empty if none)."""
        parts = [
            found for p in paths if (found := self.read_file(p, workflow_id, schema)) is not None
        ]
        return pa.concat_tables(parts) if parts else schema.empty_table()


def as_rows(table: pa.Table) -> list[dict[str, object]]:
    """Rows as dicts, timestamps as integer microseconds (UTC): cheaper than datetimes, lossless."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            table = table.set_column(
                i, field.with_type(pa.int64()), table.column(i).cast(pa.int64())
            )
    rows: list[dict[str, object]] = table.to_pylist()
    return rows


def _groups(meta: pq.FileMetaData, workflow_id: str) -> list[int]:
    """The row groups whose ``workflow_id`` statistics can hold ``workflow_id``."""
    column = meta.schema.names.index("workflow_id")
    groups = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(column).statistics
        known = stats is not None and stats.has_min_max
        if known and not stats.min <= workflow_id <= stats.max:
            continue
        groups.append(i)
    return groups


def _only(part: pa.Table, workflow_id: str, schema: pa.Schema) -> pa.Table | None:
    """The rows of ``workflow_id`` in ``part``, cast to ``schema``; None if there are none."""
    part = part.filter(pc.equal(part.column("workflow_id"), workflow_id))
    if not part.num_rows:
        return None
    return part.select(schema.names).cast(schema)


def merge_sorted(streams: Sequence[Iterator[pa.Table]], key: str) -> Iterator[pa.Table]:
    """Merge streams of tables, each ascending in ``key``, into one ascending stream.

    Holds one table per stream. Each round emits every held row whose ``key`` is
    at most the smallest of the held tables' last keys (no stream can still
    produce a smaller one), sorted, and refills the tables it used up; the
    table that set that bound is always used up, so each round makes progress.
    With one live stream its tables pass through as they are. A stream that is
    not ascending yields rows out of order here, which the caller can detect
    (the router checks every event id).
    """
    held: list[pa.Table | None] = [next(s, None) for s in streams]
    while True:
        live = [i for i, t in enumerate(held) if t is not None]
        if not live:
            return
        if len(live) == 1:
            i = live[0]
            table = held[i]
            assert table is not None
            yield table
            held[i] = next(streams[i], None)
            continue
        bound = min(_last(held[i], key) for i in live)
        parts = []
        for i in live:
            table = held[i]
            assert table is not None
            take = pc.less_equal(table.column(key), bound)
            parts.append(table.filter(take))
            rest = table.filter(pc.invert(take))
            held[i] = rest if rest.num_rows else next(streams[i], None)
        yield pa.concat_tables(parts).sort_by(key)


def _last(table: pa.Table | None, key: str) -> Any:
    assert table is not None
    return table.column(key)[-1].as_py()
