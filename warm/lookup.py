"""Point reads of one workflow's rows from Parquet files sorted by ``workflow_id``.

Archive files (warm batches, cold data files) never change once written, so
:class:`PointReader` keeps the footers of recently read files: a repeated
lookup in a file reads only the row groups whose ``workflow_id`` statistics
can hold the id, without re-reading the footer or building a dataset. Given
the store's ``read_range``, it also keeps each file's size and reads those
row groups with one ranged GET (on S3 a file opened through pyarrow costs a
HEAD first, a round trip for a size that never changes). A caller that
knows a file's size (the cold tier's manifests record it) passes it, and the
first lookup in that file reads its footer with a ranged GET too, no HEAD.
:meth:`PointReader.iter_sorted` reads the same row groups a record batch at
a time, for histories too long to hold whole.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.fs as pafs  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

__all__ = ["SPAN_BYTES", "PointReader", "as_rows", "merge_sorted"]


class PointReader:
    """Reads the rows of one ``workflow_id`` from immutable Parquet files.

    Args:
        fs: The filesystem holding the files.
        footers: How many file footers to keep (least recently used go first).
        read_range: ``read_range(path, offset, length)`` (``ObjectStore.read_range``):
            with it, a file whose footer is kept is read without opening it: the
            row groups a lookup needs, at most :data:`SPAN_BYTES` apart, in one read.
    """

    def __init__(
        self,
        fs: pafs.FileSystem,
        *,
        footers: int = 256,
        read_range: Callable[[str, int, int], bytes] | None = None,
    ) -> None:
        self.fs = fs
        self._footers: OrderedDict[str, tuple[pq.FileMetaData, int]] = OrderedDict()
        self._max = footers
        self._lock = threading.Lock()
        self._read_range = read_range

    def forget(self) -> None:
        """Drop every cached footer."""
        with self._lock:
            self._footers.clear()

    def _kept(self, path: str) -> tuple[pq.FileMetaData, int] | None:
        with self._lock:
            kept = self._footers.get(path)
            if kept is not None:
                self._footers.move_to_end(path)
            return kept

    def _footer(self, path: str, source: pa.NativeFile) -> pq.FileMetaData:
        kept = self._kept(path)
        if kept is not None:
            return kept[0]
        meta = pq.read_metadata(source)
        self._keep(path, meta, source.size())
        return meta

    def _keep(self, path: str, meta: pq.FileMetaData, size: int) -> None:
        with self._lock:
            self._footers[path] = (meta, size)
            while len(self._footers) > self._max:
                self._footers.popitem(last=False)

    def _footer_of_sized(self, path: str, size: int) -> tuple[pq.FileMetaData, int] | None:
        """Read and keep the footer of a file of known ``size`` with ranged reads (no HEAD).

        None when the bytes are not a Parquet tail (the file is then opened, which raises
        the reader's usual error).
        """
        assert self._read_range is not None
        n = min(size, _TAIL_BYTES)
        tail = self._read_range(path, size - n, n)
        if len(tail) != n or n < 12 or tail[-4:] != b"PAR1":
            return None
        length = int.from_bytes(tail[-8:-4], "little") + 8
        if length > size - 4:
            return None
        if length > n:  # a footer larger than the tail: read all of it
            tail = self._read_range(path, size - length, length)
            if len(tail) != length:
                return None
        meta = pq.read_metadata(pa.PythonFile(_Span(size, size - len(tail), tail), mode="r"))
        self._keep(path, meta, size)
        return meta, size

    def _open(
        self, path: str, workflow_id: str, size: int | None = None
    ) -> tuple[pa.NativeFile, pq.FileMetaData] | None:
        """The file (or the span of it a lookup reads) and its footer; None: nothing in it."""
        kept = self._kept(path) if self._read_range is not None else None
        if kept is None and size is not None and self._read_range is not None:
            kept = self._footer_of_sized(path, size)
        if kept is not None:
            meta, size = kept
            groups = _groups(meta, workflow_id)
            if not groups:
                return None
            span = _span(meta, groups)
            if span is not None and span[1] - span[0] <= SPAN_BYTES:
                assert self._read_range is not None
                data = self._read_range(path, span[0], span[1] - span[0])
                if len(data) == span[1] - span[0]:
                    return pa.PythonFile(_Span(size, span[0], data), mode="r"), meta
        source = self.fs.open_input_file(path)
        try:
            return source, self._footer(path, source)
        except BaseException:
            source.close()
            raise

    def read_file(
        self, path: str, workflow_id: str, schema: pa.Schema, *, size: int | None = None
    ) -> pa.Table | None:
        """The rows of ``workflow_id`` in one file (cast to ``schema``), or None.

        Args:
            path: The file on :attr:`fs`.
            workflow_id: The workflow whose rows to read.
            schema: The schema the rows are cast to.
            size: The file's size in bytes, if known for certain (only for a file that
                never changes, such as a cold data file whose manifest records it): with
                ``read_range``, its footer is then read without asking the size (no HEAD).

        Raises:
            OSError: The file cannot be opened or read.
            pyarrow.ArrowException: The file is not valid Parquet.
        """
        opened = self._open(path, workflow_id, size)
        if opened is None:
            return None
        source, meta = opened
        with source:
            groups = _groups(meta, workflow_id)
            if not groups:
                return None
            part = pq.ParquetFile(source, metadata=meta).read_row_groups(groups)
        return _only(part, workflow_id, schema)

    def iter_file(
        self,
        path: str,
        workflow_id: str,
        schema: pa.Schema,
        *,
        batch_rows: int,
        size: int | None = None,
    ) -> Generator[pa.Table, None, None]:
        """The rows of ``workflow_id`` in one file, a record batch at a time, in file order.

        Reads the same row groups as :meth:`read_file`, but decodes at most
        ``batch_rows`` rows at once and yields each batch's rows of the
        workflow (batches without any are skipped), so a workflow with
        millions of rows is never held whole. The file stays open until the
        iterator is exhausted or closed. ``size`` is as in :meth:`read_file`.

        Raises:
            OSError: The file cannot be opened or read.
            pyarrow.ArrowException: The file is not valid Parquet.
        """
        opened = self._open(path, workflow_id, size)
        if opened is None:
            return
        source, meta = opened
        with source:
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
        sizes: Sequence[int | None] | None = None,
    ) -> Generator[pa.Table, None, None]:
        """The rows of ``workflow_id`` in any of ``paths``, ascending in ``key``, batch by batch.

        Each file must hold the workflow's rows sorted by ``key`` (archive files
        are sorted by ``workflow_id`` then ``key``); the files' rows are merged
        (see :func:`merge_sorted`), so a workflow split across files comes out
        in one order, holding at most a batch per file. ``sizes``, if given, are the
        files' sizes as in :meth:`read_file`.
        """
        known = [None] * len(paths) if sizes is None else sizes
        streams = [
            self.iter_file(p, workflow_id, schema, batch_rows=batch_rows, size=n)
            for p, n in zip(paths, known, strict=True)
        ]
        try:
            yield from merge_sorted(streams, key)
        finally:
            for stream in streams:
                stream.close()

    def read(
        self,
        paths: Sequence[str],
        workflow_id: str,
        schema: pa.Schema,
        *,
        sizes: Sequence[int | None] | None = None,
    ) -> pa.Table:
        """The rows of ``workflow_id`` in any of ``paths``, in path order (empty if none).

        ``sizes``, if given, are the files' sizes as in :meth:`read_file`.
        """
        known = [None] * len(paths) if sizes is None else sizes
        parts = [
            found
            for p, n in zip(paths, known, strict=True)
            if (found := self.read_file(p, workflow_id, schema, size=n)) is not None
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


# What a footer read of a file of known size asks for: pyarrow reads this much of a
# Parquet file's end at once (its default footer read size), so one GET holds any footer
# up to that size.
_TAIL_BYTES = 64 * 1024

SPAN_BYTES = 16 * 2**20
"""The most a kept file's lookup reads in one request; a longer span opens the file."""


def _span(meta: pq.FileMetaData, groups: list[int]) -> tuple[int, int] | None:
    """The byte range holding every column chunk of ``groups`` (None if a chunk has no offset)."""
    start, end = None, 0
    for g in groups:
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            first = chunk.data_page_offset
            if chunk.has_dictionary_page and chunk.dictionary_page_offset is not None:
                first = min(first, chunk.dictionary_page_offset)
            if first is None or first < 0:
                return None
            start = first if start is None else min(start, first)
            end = max(end, first + chunk.total_compressed_size)
    return None if start is None else (start, end)


class _Span(io.RawIOBase):
    """A read-only file of ``size`` bytes of which only ``data`` at ``offset`` is held.

    What pyarrow reads of a Parquet file whose footer it is given: the column chunks
    of the row groups asked for. A read outside the span is a bug, never zeros.
    """

    def __init__(self, size: int, offset: int, data: bytes) -> None:
        super().__init__()
        self._size, self._offset, self._data, self._at = size, offset, data, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._at, 2: self._size}[whence]
        self._at = base + pos
        return self._at

    def tell(self) -> int:
        return self._at

    def read(self, n: int = -1) -> bytes:
        end = self._size if n is None or n < 0 else min(self._size, self._at + n)
        lo, hi = self._at - self._offset, end - self._offset
        if lo < 0 or hi > len(self._data):
            raise OSError(f"read of bytes {self._at}-{end} outside the span fetched")
        self._at = end
        return self._data[lo:hi]

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


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
