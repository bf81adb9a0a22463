"""A pyiceberg FileIO whose local writes are durable when the file is closed.

pyiceberg writes a commit's files (data files, manifests, the manifest list,
the new metadata JSON) and then swaps the catalog's pointer to that
metadata. Its local FileIO never fsyncs, so after a power cut the catalog
(SQLite, fsync'd) could point at a metadata file, or name data files, that
never reached the disk: an unreadable archive. :class:`DurableFileIO` makes
every local file durable on ``close()`` (fsync of the file, then of its
directory and of the directories above it up to the warehouse), so
everything a commit references is on disk before the pointer moves.

Selected with the ``py-io-impl`` catalog property for ``file://``
warehouses (:class:`tierflow.cold.catalog.CatalogSettings`); object stores
need nothing: a completed PUT is durable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pyiceberg.io.pyarrow import BUFFER_SIZE, ONE_MEGABYTE, PyArrowFile, PyArrowFileIO
from tierflow.hot.durable_fs import fsync_dirs

__all__ = ["DURABLE_FILE_IO", "DurableFileIO"]

DURABLE_FILE_IO = "tierflow.cold.fileio.DurableFileIO"
"""The ``py-io-impl`` value that selects :class:`DurableFileIO`."""

# fsync directories this many levels up: a new file's directory may itself be new
# (a partition's first file), and so may its parent (a table's first data file).
_DIR_LEVELS = 3


class _SyncOnClose:
    """An output stream that fsyncs its file and directories when closed."""

    def __init__(self, stream: Any, path: str) -> None:
        self._stream = stream
        self._path = path

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

    def __enter__(self) -> _SyncOnClose:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
