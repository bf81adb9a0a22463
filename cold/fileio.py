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
pyarrow FileIO spends requests there that a commit does not need:
:class:`ObjectFileIO`, selected for ``s3://`` warehouses, writes each file
with one PUT instead of a three-request multipart upload, and knows the
length of a file it has just written instead of asking with a HEAD.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs  # type: ignore[import-untyped, unused-ignore]
from pyiceberg.io import S3_RETRY_STRATEGY_IMPL
from pyiceberg.io.pyarrow import BUFFER_SIZE, ONE_MEGABYTE, PyArrowFile, PyArrowFileIO
from tierflow.hot.durable_fs import fsync_dirs
from tierflow.warm.storage import single_put_uploads

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


class _ObjectFile(PyArrowFile):
    written: int | None = None
    """Bytes in the object this file wrote and closed (None: not written through it)."""

    def create(self, overwrite: bool = False) -> Any:
        return _SizedOnClose(super().create(overwrite=overwrite), self)

    def __len__(self) -> int:
        # pyiceberg asks a file's length right after writing it (a data file's size, a
        # manifest's length): a HEAD per file, for a number the writer counted.
        return super().__len__() if self.written is None else self.written


class ObjectFileIO(PyArrowFileIO):
    """pyiceberg's pyarrow FileIO, without the requests a commit to an object store does not need.

    * A file smaller than a part is one PutObject
      (:func:`tierflow.warm.storage.single_put_uploads`): pyarrow's S3 filesystem otherwise
      starts a multipart upload when a file is opened, so even a 2 kB manifest took three
      requests (create, one part, complete).
    * The length of a file just written (pyiceberg records it in the manifest and the
      manifest list) is the byte count written, not a HEAD.

    Reads are pyiceberg's own. Only for ``s3://`` warehouses (the catalog selects it).
    """

    def _initialize_fs(self, scheme: str, netloc: str | None = None) -> pafs.FileSystem:
        # pyiceberg's (private) factory, pinned with pyiceberg 0.12; the request-counting test
        # in tests/cold/test_catalog.py fails if a new version stops calling it.
        fs = super()._initialize_fs(scheme, netloc)
        if self.properties.get(S3_RETRY_STRATEGY_IMPL):
            return fs  # single_put_uploads would drop the retry strategy
        return single_put_uploads(fs)

    def new_output(self, location: str) -> PyArrowFile:
        """An output file that knows its length once written (no HEAD to ask it)."""
        scheme, netloc, path = self.parse_location(location, self.properties)
        return _ObjectFile(
            fs=self.fs_by_scheme(scheme, netloc),
            location=location,
            path=path,
            buffer_size=int(self.properties.get(BUFFER_SIZE, ONE_MEGABYTE)),
        )
