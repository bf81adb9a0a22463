"""pyiceberg FileIOs: local writes durable when the file is closed; object-store writes lean.

pyiceberg writes a commit's files (data files, manifests, the manifest list,
the new metadata JSON) and then swaps the catalog's pointer to that
metadata. Its local FileIO never fsyncs, so after a power cut the catalog
(SQLite, fsync'd) could point at a metadata file, or name data files, that
never reached the disk: an unreadable archive. :class:`DurableFileIO` makes
every local file durable on ``close()`` (fsync of the file, then of its
directory and of the directories above it up to the warehouse), so
everything a commit references is on disk before the pointer moves.

Selected with the ``py-io-impl`` catalog property for ``file://``
warehouses (:class:`tierflow.cold.catalog.CatalogSettings`). Object stores
need nothing for durability (a completed PUT is durable), but pyiceberg's
pyarrow FileIO spends requests there that are not needed:
:class:`ObjectFileIO`, selected for ``s3://`` warehouses, writes each file
with one PUT instead of a three-request multipart upload, knows the length
of a file it has just written instead of asking with a HEAD, and reads
metadata and manifests with one GET instead of a HEAD and a GET, and writes new
table metadata without first asking whether its uuid-named file exists.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.fs as pafs  # type: ignore[import-untyped, unused-ignore]
from pyiceberg.io import S3_RETRY_STRATEGY_IMPL
from pyiceberg.io.pyarrow import BUFFER_SIZE, ONE_MEGABYTE, PyArrowFile, PyArrowFileIO
from tierflow.hot.durable_fs import fsync_dirs
from tierflow.warm.storage import ObjectStore, StorageSettings, single_put_uploads

__all__ = ["DURABLE_FILE_IO", "OBJECT_FILE_IO", "DurableFileIO", "ObjectFileIO"]

DURABLE_FILE_IO = "tierflow.cold.fileio.DurableFileIO"
"""The ``py-io-impl`` value that selects :class:`DurableFileIO`."""

OBJECT_FILE_IO = "tierflow.cold.fileio.ObjectFileIO"
"""The ``py-io-impl`` value that selects :class:`ObjectFileIO`."""

# fsync directories this many levels up: a new file's directory may itself be new
# (a partition's first file), and so may its parent (a table's first data file).
_DIR_LEVELS = 3


class _Wrapped:
    """An output stream that passes everything to the stream it wraps."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, data: Any) -> int:
        written: int = self._stream.write(data)
        return written

    def tell(self) -> int:
        pos: int = self._stream.tell()
        return pos

    def flush(self) -> None:
        self._stream.flush()

    @property
    def closed(self) -> bool:
        closed: bool = self._stream.closed
        return closed

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SyncOnClose(_Wrapped):
    """An output stream that fsyncs its file and directories when closed."""

    def __init__(self, stream: Any, path: str) -> None:
        super().__init__(stream)
        self._path = path

    def close(self) -> None:
        if self._stream.closed:
            return
        self._stream.close()
        fd = os.open(self._path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        parent = Path(self._path).parent
        fsync_dirs([parent, *list(parent.parents)[: _DIR_LEVELS - 1]])


class _DurableFile(PyArrowFile):
    def create(self, overwrite: bool = False) -> Any:
        stream = super().create(overwrite=overwrite)
        path = _local(self.location)
        return stream if path is None else _SyncOnClose(stream, path)


def _local(location: str) -> str | None:
    if location.startswith("file://"):
        return location[len("file://") :]
    return location if location.startswith("/") else None


class DurableFileIO(PyArrowFileIO):
    """pyiceberg's pyarrow FileIO, with local files fsync'd (and their directories) on close."""

    def new_output(self, location: str) -> PyArrowFile:
        """An output file whose stream makes the file durable on ``close()``."""
        scheme, netloc, path = self.parse_location(location, self.properties)
        return _DurableFile(
            fs=self.fs_by_scheme(scheme, netloc),
            location=location,
            path=path,
            buffer_size=int(self.properties.get(BUFFER_SIZE, ONE_MEGABYTE)),
        )


class _SizedOnClose(_Wrapped):
    """An output stream that tells its file how many bytes it holds once closed."""

    def __init__(self, stream: Any, file: _ObjectFile) -> None:
        super().__init__(stream)
        self._file = file

    def close(self) -> None:
        if self._stream.closed:
            return
        size: int = self._stream.tell()
        self._stream.close()  # the upload completes here; a failure raises before the size is kept
        self._file.written = size


# The names pyiceberg gives new table metadata: a version, then a fresh uuid4.
_NEW_METADATA = re.compile(
    r"(?:^|/)\d+-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    r"\.metadata\.json$"
)

# What pyiceberg always reads whole: table metadata, manifest lists and manifests.
_READ_WHOLE = (".metadata.json", ".avro")


class _ObjectFile(PyArrowFile):
    written: int | None = None
    """Bytes in the object this file wrote and closed (None: not written through it)."""

    def __init__(self, *args: Any, read_all: Callable[[str], bytes] | None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._read_all = read_all

    def create(self, overwrite: bool = False) -> Any:
        if not overwrite and _NEW_METADATA.search(self.location):
            # pyiceberg checks that a new metadata file's name is free (a HEAD, and on S3 a
            # one-key listing when it is). The name holds a uuid4 made for this write, so it
            # cannot be taken; and the check was never the guard against a concurrent commit
            # (it races with the write): the catalog's swap of the metadata pointer is.
            overwrite = True
        return _SizedOnClose(super().create(overwrite=overwrite), self)

    def __len__(self) -> int:
        # pyiceberg asks a file's length right after writing it (a data file's size, a
        # manifest's length): a HEAD per file, for a number the writer counted.
        return super().__len__() if self.written is None else self.written

    def open(self, seekable: bool = True) -> Any:
        if self._read_all is None or not self.location.endswith(_READ_WHOLE):
            return super().open(seekable=seekable)
        try:
            return pa.BufferReader(self._read_all(self._path))
        except FileNotFoundError as exc:  # pyiceberg's own wording, which callers match
            raise FileNotFoundError(f"Cannot open file, does not exist: {self.location}") from exc


@functools.lru_cache(maxsize=16)
def _whole_reader(bucket: str, properties: frozenset[tuple[str, str]]) -> Any:
    # One store per bucket and credentials in the process: pyiceberg makes a FileIO for each
    # table it loads, and a store's S3 client costs ~20 ms of CPU to make.
    settings = StorageSettings.from_iceberg_io_properties(f"s3://{bucket}", dict(properties))
    return None if settings is None else ObjectStore(settings).read_all


class ObjectFileIO(PyArrowFileIO):
    """pyiceberg's pyarrow FileIO, without the requests an object store does not need.

    * A file smaller than a part is one PutObject
      (:func:`tierflow.warm.storage.single_put_uploads`): pyarrow's S3 filesystem otherwise
      starts a multipart upload when a file is opened, so even a 2 kB manifest took three
      requests (create, one part, complete).
    * The length of a file just written (pyiceberg records it in the manifest and the
      manifest list) is the byte count written, not a HEAD.
    * Table metadata, manifest lists and manifests, which pyiceberg reads whole, are one GET
      each (:meth:`tierflow.warm.storage.ObjectStore.read_all`), not a HEAD for the size and
      then a GET. When the properties hold an S3 option the store cannot express
      (:meth:`~tierflow.warm.storage.StorageSettings.from_iceberg_io_properties`), they are
      read the pyarrow way. Data files are read the pyarrow way (in ranges).
    * A new table metadata file is written without pyiceberg's check that its name is free
      (a HEAD and a one-key listing): the name holds a uuid4 made for it.

    Only for ``s3://`` warehouses (the catalog selects it).
    """

    def _initialize_fs(self, scheme: str, netloc: str | None = None) -> pafs.FileSystem:
        # pyiceberg's (private) factory, pinned with pyiceberg 0.12; the request-counting test
        # in tests/cold/test_catalog.py fails if a new version stops calling it.
        fs = super()._initialize_fs(scheme, netloc)
        if self.properties.get(S3_RETRY_STRATEGY_IMPL):
            return fs  # single_put_uploads would drop the retry strategy
        return single_put_uploads(fs)

    def _file(self, location: str) -> _ObjectFile:
        scheme, netloc, path = self.parse_location(location, self.properties)
        read_all = None
        if scheme in ("s3", "s3a", "s3n") and netloc:
            read_all = _whole_reader(netloc, frozenset(self.properties.items()))
        return _ObjectFile(
            fs=self.fs_by_scheme(scheme, netloc),
            location=location,
            path=path,
            buffer_size=int(self.properties.get(BUFFER_SIZE, ONE_MEGABYTE)),
            read_all=read_all,
        )

    def new_input(self, location: str) -> PyArrowFile:
        """An input file read with one GET when pyiceberg reads it whole."""
        return self._file(location)

    def new_output(self, location: str) -> PyArrowFile:
        """An output file that knows its length once written (no HEAD to ask it)."""
        return self._file(location)
