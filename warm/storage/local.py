"""The local backend: ``file:///abs/path`` locations, written durably.

Every object lands under a temporary name, is fsync'd, renamed into place, and the directories
that gained an entry (including ones made on the way) are fsync'd before the write returns
(:class:`hot.durable_fs.DurableFiles`). The tiering job deletes hot data once the warm copy is
committed, so the copy must survive a power cut. Deletes are durable too (the directories
fsync'd), so an erased object cannot come back.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierflow.hot.durable_fs import DurableFiles, fsync_dirs, make_dirs
from tierflow.hot.errors import StorageError
from tierflow.warm.storage.backend import _PROBE_DIR, _check_probe
from tierflow.warm.storage.errors import _Errors, _Scrubber
from tierflow.warm.storage.locations import _TMP_MARK, _Location
from tierflow.warm.storage.settings import StorageSettings
from tierflow.warm.storage.streams import _LocalOutput

if TYPE_CHECKING:
    from tierflow.warm.storage.store import ObjectStore


class _LocalBackend:
    """A local directory: files written under a temporary name, fsync'd and renamed."""

    def __init__(self, settings: StorageSettings, loc: _Location, scrub: _Scrubber) -> None:
        self._settings = settings
        self._loc = loc
        self.errors = _Errors(loc.url, loc.bucket, "local disk", scrub)

    @property
    def client(self) -> Any:
        # Raises InvalidArgument: the location is not s3://.
        return self._settings.s3_client()

    def describe(self) -> str:
        return f"ObjectStore({self._loc.url!r})"

    def read_all(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def check(self, store: ObjectStore) -> None:
        url = self._loc.url
        root = Path(self._loc.root)
        if root.exists() and not root.is_dir():
            raise StorageError(
                f"storage check failed for {url}: {root} is not a directory", url=url
            )
        try:
            made = make_dirs(root)
            fsync_dirs(d.parent for d in made)
        except OSError as exc:
            raise self.errors.check_error(exc, "creating the root directory") from exc
        key = f"{_PROBE_DIR}/{uuid.uuid4().hex}"
        payload = secrets.token_bytes(64)
        step = "writing a probe object"
        try:
            store.put(key, payload)
            step = "reading the probe object back"
            back = store.get(key)
            step = "listing the probe object"
            listed = store.list(_PROBE_DIR)
            step = "deleting the probe object"
            store.delete(key)
        except StorageError as exc:
            raise self.errors.check_error(exc, step) from exc
        _check_probe(url, back, payload, listed, key)
        with contextlib.suppress(OSError):
            os.rmdir(root / _PROBE_DIR)

    def batch(self) -> _LocalSink:
        return _LocalSink(self._loc, self.errors)

    def open_output(self, key: str) -> _LocalOutput:
        files = DurableFiles(_TMP_MARK)
        out = files.create(Path(self._loc.path(key)))
        return _LocalOutput(files, out)

    def delete(self, keys: list[str]) -> None:
        # The directories are synced too: an unlink lost to a power cut would bring back a
        # file an erasure deleted, with nothing left that says to delete it again.
        emptied: set[Path] = set()
        for key in keys:
            path = Path(self._loc.path(key))
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise self.errors.error("delete", key, exc) from exc
            emptied.add(path.parent)
        for directory in sorted(emptied, key=lambda d: len(d.parts), reverse=True):
            try:
                _sync_dir_or_parent(directory)
            except OSError as exc:
                raise self.errors.error("delete", keys[0], exc) from exc


def _sync_dir_or_parent(directory: Path) -> None:
    # Another process may have emptied and removed the directory meanwhile (two storage
    # checks share the probe directory): then its removal is what must last, so the nearest
    # directory still there is synced instead.
    while True:
        try:
            fsync_dirs([directory])
            return
        except FileNotFoundError:
            if directory.parent == directory:
                raise
            directory = directory.parent


class _LocalSink:
    """One batch's files: each fsync'd and renamed on put, their directories fsync'd on sync."""

    def __init__(self, loc: _Location, errors: _Errors) -> None:
        self._loc = loc
        self._errors = errors
        self._files = DurableFiles(_TMP_MARK)

    def put(self, key: str, data: bytes | memoryview, *, sha256: str | None = None) -> None:
        try:
            self._files.put(Path(self._loc.path(key)), data)
        except OSError as exc:
            raise self._errors.error("write", key, exc) from exc

    def sync(self) -> None:
        try:
            self._files.sync()
        except OSError as exc:
            raise self._errors.error("sync", None, exc) from exc
