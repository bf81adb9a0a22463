"""Point reads of one workflow's rows from Parquet files sorted by ``workflow_id``.

Archive files (warm batches, cold data files) never change once written, so
:class:`PointReader` keeps the footers of recently read files: a repeated
lookup in a file reads only the row groups whose ``workflow_id`` statistics
can hold the id (on S3: a HEAD and one ranged GET), without re-reading the
footer or building a dataset.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.fs as pafs  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

__all__ = ["PointReader", "as_rows"]


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
            column = meta.schema.names.index("workflow_id")
            groups = []
            for i in range(meta.num_row_groups):
                stats = meta.row_group(i).column(column).statistics
                known = stats is not None and stats.has_min_max
                if known and not stats.min <= workflow_id <= stats.max:
                    continue
                groups.append(i)
            if not groups:
                return None
            part = pq.ParquetFile(source, metadata=meta).read_row_groups(groups)
        part = part.filter(pc.equal(part.column("workflow_id"), workflow_id))
        if not part.num_rows:
            return None
        return part.select(schema.names).cast(schema)

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
