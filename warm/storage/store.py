"""The store: keys under one storage location, on the local disk or an S3-compatible store.

:class:`ObjectStore` maps *keys* (``"warm/history/batch-1.parquet"``, always relative to that
root, ``/``-separated) onto that location, and turns every failure into
:class:`hot.errors.StorageError` naming the store URL, the key and the cause. Credentials never
appear in its ``repr``, its messages or its logs.

Every object tierflow writes goes through the store's write methods (:meth:`ObjectStore.put`,
:meth:`ObjectStore.put_many`, :meth:`ObjectStore.batch`, :meth:`ObjectStore.open_output`):

* ``file://``: written under a temporary name, fsync'd, renamed into place, and the directories
  that gained an entry (including ones made on the way) fsync'd before the call returns
  (:class:`hot.durable_fs.DurableFiles`). The tiering job deletes hot data once the warm copy is
  committed, so the copy must survive a power cut.
* ``s3://``: boto3, with the storage class and a SHA-256 checksum on every upload, and batch
  deletes of up to 1,000 keys per request.

The store picks its backend (:mod:`tierflow.warm.storage.local` or
:mod:`tierflow.warm.storage.s3`, behind :class:`tierflow.warm.storage.backend.Backend`) once, by
URL scheme, in its constructor. Reads stream through pyarrow: other modules use
:attr:`ObjectStore.fs` with :meth:`ObjectStore.path` for datasets and Parquet files.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow 26 ships no type hints
import pyarrow.fs as pafs  # type: ignore[import-untyped]
from tierflow.hot.errors import StorageError
from tierflow.warm.storage.backend import Backend
from tierflow.warm.storage.errors import _Scrubber
from tierflow.warm.storage.local import _LocalBackend
from tierflow.warm.storage.locations import _TMP_MARK, _Location, _parse_url, _validate_key
from tierflow.warm.storage.s3 import _S3Backend
from tierflow.warm.storage.settings import StorageSettings
from tierflow.warm.storage.streams import _GuardedStream

# A listed object: key, size in bytes, modification time (None: the store did not say).
_Listed = tuple[str, int, datetime | None]

# The backend of each URL scheme, picked once when a store is built.
_BACKENDS: dict[str, Callable[[StorageSettings, _Location, _Scrubber], Backend]] = {
    "file": _LocalBackend,
    "s3": _S3Backend,
}


class WriteBatch:
    """Objects written together, durable together: get one from :meth:`ObjectStore.batch`.

    Each :meth:`put` stores its object at once (nothing is held back in memory). On ``file://``
    the files are fsync'd one by one and renamed into place, and the directories that gained
    an entry are fsync'd once for the whole batch when it closes; the objects are durable
    only once :meth:`close` (or the ``with`` block) returns without error. A block left by an
    exception skips that sync: what it wrote is garbage to collect, not data to keep. On
    ``s3://`` every object is durable when its :meth:`put` returns.
    """

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._sink = store._backend.batch()
        self._closed = False

    def put(self, key: str, data: bytes | memoryview, *, sha256: str | None = None) -> None:
        """Store ``data`` as ``key``, replacing any object there.

        Args:
            key: Destination key.
            data: The whole object (``bytes``, or a ``memoryview`` of e.g. a pyarrow buffer).
            sha256: Hex SHA-256 of ``data`` if the caller already has it; S3 verifies the
                upload against it (computed here otherwise).

        Raises:
            StorageError: The write failed, or the batch is closed.
        """
        self._store.path(key)  # the key is validated first
        if self._closed:
            raise StorageError(f"write batch of {self._store.url} is closed", url=self._store.url)
        self._sink.put(key, data, sha256=sha256)

    def close(self) -> None:
        """Make every object put so far durable (``file://``: fsync their directories).

        Raises:
            StorageError: A directory could not be synced.
        """
        self._closed = True
        self._sink.sync()

    def __enter__(self) -> WriteBatch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True


# --------------------------------------------------------------------------------------------
# The store


class ObjectStore:
    """Keys under one storage location, on the local disk or an S3-compatible store.

    Keys are ``/``-separated paths relative to the root, such as
    ``"warm/history/batch-000001.parquet"``; keys with ``..``, ``.`` or empty components, or a
    leading ``/``, are rejected with :class:`hot.errors.InvalidArgument` so nothing can escape
    the root. Every storage failure raises :class:`hot.errors.StorageError` (or its
    :class:`ObjectNotFound`) naming the URL, the key and the cause.

    Writes (:meth:`put`, :meth:`put_many`, :meth:`batch`, :meth:`open_output`) are durable
    when they return. On ``file://`` an object lands under a temporary name, is fsync'd and
    renamed into place, and its directory (and every directory made for it) is fsync'd, so a
    reader never sees half an object and a written object survives power loss. On ``s3://``
    an object appears when its upload completes, with the configured storage class.

    Attributes:
        url: The normalised storage URL; safe to print.
        fs: The pyarrow filesystem, for streaming reads; use it with :meth:`path`.
        root: The root as a path on :attr:`fs`: ``"/abs/path"`` or ``"bucket/prefix"``
            (``path(key)`` is ``root + "/" + key``).
        settings: The settings the store was built from (credentials are hidden from repr).
    """

    url: str
    fs: pafs.FileSystem
    root: str
    settings: StorageSettings

    def __init__(self, settings: StorageSettings) -> None:
        """Build the store for ``settings``; no I/O happens until a method is called.

        Args:
            settings: Where the data lives and how to reach it.
        """
        self.settings = settings
        self._loc = _parse_url(settings.url)
        self.url = self._loc.url
        self.root = self._loc.root
        # The credentials requests are signed with: explicit ones, else those the SDKs would
        # take from the environment first. Kept to scrub them from messages.
        creds: tuple[str | None, ...]
        if settings.access_key is not None:
            creds = (settings.access_key, settings.secret_key, settings.session_token)
        else:
            env = os.environ
            creds = tuple(
                env.get(n)
                for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
            )
        self._backend = _BACKENDS[self._loc.scheme](settings, self._loc, _Scrubber(*creds))
        self._errors = self._backend.errors
        self.fs = settings.arrow_filesystem()

    @classmethod
    def from_url(cls, url: str, **overrides: str | None) -> ObjectStore:
        """Open the store at ``url``, taking other settings from arguments or the environment.

        Args:
            url: ``file:///abs/path`` or ``s3://bucket/prefix``.
            **overrides: Any other :class:`StorageSettings` field (``endpoint``, ``region``,
                ``access_key``, ...); missing ones come from the environment as in
                :meth:`StorageSettings.from_env`.

        Returns:
            The store (no I/O done yet; call :meth:`check` to verify it).
        """
        return cls(StorageSettings.from_env(url, **overrides))

    def __repr__(self) -> str:
        return self._backend.describe()

    def __str__(self) -> str:
        return self.url

    @property
    def client(self) -> Any:
        """The boto3 S3 client the store writes and deletes with (built on first use).

        Register botocore event handlers on ``client.meta.events`` to observe its requests.

        Raises:
            InvalidArgument: The store is ``file://``.
        """
        return self._backend.client

    # ---------------------------------------------------------------- paths and errors

    def path(self, key: str) -> str:
        """Return the filesystem path of ``key`` for use with :attr:`fs`.

        Args:
            key: A key relative to the store root, e.g. ``"warm/history/x.parquet"``.

        Returns:
            ``"/abs/root/warm/history/x.parquet"`` (file://) or
            ``"bucket/prefix/warm/history/x.parquet"`` (s3://).

        Raises:
            InvalidArgument: The key is empty, absolute, or has ``..``/``.``/empty components.
        """
        return self._loc.path(key)

    def _dir_path(self, prefix: str) -> str:
        prefix = prefix.strip("/") if isinstance(prefix, str) else prefix
        if prefix == "":
            return self._loc.root
        return self.path(prefix)

    # ---------------------------------------------------------------- check

    def check(self) -> None:
        """Verify the location is usable before any data is moved to it.

        ``file://``: creates the root directory if missing (durably) and checks a probe file
        can be written, read back and deleted. ``s3://``: checks the endpoint answers, the
        bucket exists, the credentials are accepted, and a probe object under
        ``<root>/_tierflow_probe/`` can be written (with the storage class), read back, listed
        and deleted. Uses short timeouts and at most two attempts per request, so an
        unreachable endpoint fails within a few seconds.

        Raises:
            StorageError: The location is not usable; the message names the URL and the cause
                (``bucket 'x' does not exist``, ``access denied: ...``,
                ``cannot reach endpoint ...``).
        """
        self._backend.check(self)

    # ---------------------------------------------------------------- writes

    def put(self, key: str, data: bytes | memoryview, *, sha256: str | None = None) -> None:
        """Write ``data`` as ``key``, replacing any object there; durable when it returns.

        Args:
            key: Destination key.
            data: The object's bytes (or a ``memoryview`` of them, e.g. of a pyarrow buffer).
            sha256: Hex SHA-256 of ``data`` if the caller already has it (see
                :meth:`WriteBatch.put`).

        Raises:
            StorageError: The write failed.
        """
        with self.batch() as out:
            out.put(key, data, sha256=sha256)

    def put_many(self, items: Iterable[tuple[str, bytes | memoryview]]) -> None:
        """Write several objects; all are durable when it returns.

        On ``file://`` each directory is fsync'd once for the whole set, not once per object.

        Args:
            items: ``(key, data)`` pairs.

        Raises:
            StorageError: A write failed (earlier ones may be stored, not necessarily durable).
        """
        with self.batch() as out:
            for key, data in items:
                out.put(key, data)

    def batch(self) -> WriteBatch:
        """Start a :class:`WriteBatch`: objects stored one by one, made durable together.

        Use it as a context manager: the objects are durable when the ``with`` block ends
        without an exception.
        """
        return WriteBatch(self)

    def open_output(self, key: str) -> pa.NativeFile:
        """Open ``key`` for writing, e.g. as the sink of :class:`pyarrow.parquet.ParquetWriter`.

        The object appears (complete, and durable) when the stream is closed: close it even
        after a failed write, then delete the key if the content is not wanted. Parent
        directories are created on ``file://``. On ``s3://`` the stream buffers one 16 MiB
        part at a time (a multipart upload, aborted if a part fails). Errors while writing or
        closing raise :class:`StorageError`.

        Args:
            key: Destination key.

        Returns:
            A writable pyarrow stream.

        Raises:
            StorageError: The object cannot be created.
        """
        return self._open("write", key, lambda _: self._backend.open_output(key), mode="w")

    def _open(
        self, action: str, key: str, opener: Callable[[str], Any], *, mode: str
    ) -> pa.NativeFile:
        """Open ``key`` with ``opener(path)``; errors then and later raise StorageError."""
        path = self.path(key)
        fail = self._errors.failer(action, key)
        try:
            raw = opener(path)
        except OSError as exc:
            fail(exc)
        return pa.PythonFile(_GuardedStream(raw, fail), mode=mode)

    def read_all(self, path: str) -> bytes:
        """Read the whole file at ``path`` (a :meth:`path`): one GET on S3, no HEAD.

        (``fs.open_input_file`` and ``open_input_stream`` both ask for the size first.) For
        small files read whole anyway, such as Iceberg's metadata and manifests.

        Raises:
            FileNotFoundError: No such file or object.
            OSError: The read failed.
        """
        return self._backend.read_all(path)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` of the file at ``path`` (a :meth:`path`).

        One ranged GET on S3 and no HEAD (``fs.open_input_file`` asks for the size
        first): for readers that already know what they want, such as a Parquet
        footer read before. Fewer bytes come back only at the end of the file.

        Raises:
            FileNotFoundError: No such file or object.
            OSError: The read failed.
        """
        return self._backend.read_range(path, offset, length)

    # ---------------------------------------------------------------- deletes

    def delete(self, key: str) -> None:
        """Delete ``key``; a missing key is not an error.

        Raises:
            StorageError: The delete failed.
        """
        self.delete_many([key])

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete every key in ``keys``; missing keys are not errors.

        All keys are validated before anything is deleted. On S3 one DeleteObjects request
        removes up to 1,000 keys. On ``file://`` the deletions are durable when it returns
        (the directories are fsync'd), so an erased object cannot reappear after a power cut.

        Raises:
            InvalidArgument: A key is malformed (nothing was deleted).
            StorageError: A delete failed (others may have succeeded); the message names
                how many failed and the first of them.
        """
        unique = list(dict.fromkeys(keys))
        for key in unique:
            _validate_key(key)
        self._backend.delete(unique)

    def delete_present(self, keys: Iterable[str]) -> tuple[int, int]:
        """Delete those of ``keys`` that exist, and say how many there were and their bytes.

        For erasure, whose audit record counts what was really removed: one metadata
        lookup for all keys, then :meth:`delete_many` of the ones found.

        Returns:
            ``(objects deleted, bytes they held)``.

        Raises:
            InvalidArgument: A key is malformed (nothing was deleted).
            StorageError: The lookup or a delete failed.
        """
        unique = sorted(set(keys))
        if not unique:
            return 0, 0
        for key in unique:
            _validate_key(key)
        try:
            infos = self.fs.get_file_info([self.path(k) for k in unique])
        except OSError as exc:
            raise StorageError(f"cannot look up objects to delete: {exc}", url=self.url) from exc
        there = [
            (k, int(i.size or 0))
            for k, i in zip(unique, infos, strict=True)
            if i.type == pafs.FileType.File
        ]
        if there:
            self.delete_many([k for k, _ in there])
        return len(there), sum(size for _, size in there)

    # ---------------------------------------------------------------- reads

    def get(self, key: str) -> bytes:
        """Read the whole object ``key``.

        Args:
            key: The key to read.

        Returns:
            The object's bytes.

        Raises:
            ObjectNotFound: No object has this key.
            StorageError: The read failed.
        """
        path = self.path(key)
        try:
            with self.fs.open_input_stream(path) as src:
                return bytes(src.readall())
        except OSError as exc:
            raise self._errors.error("read", key, exc) from exc

    def _info(self, key: str, action: str) -> pafs.FileInfo:
        path = self.path(key)
        try:
            return self.fs.get_file_info(path)
        except NotADirectoryError:
            # file:// only: a parent of the key is a file, so the key cannot exist.
            return pafs.FileInfo(path, pafs.FileType.NotFound)
        except OSError as exc:
            raise self._errors.error(action, key, exc) from exc

    def exists(self, key: str) -> bool:
        """Tell whether an object (not a directory) exists at ``key``.

        Raises:
            StorageError: The store could not be asked.
        """
        return bool(self._info(key, "look up").type == pafs.FileType.File)

    def size(self, key: str) -> int:
        """Return the size in bytes of the object ``key``.

        Raises:
            ObjectNotFound: No object has this key.
            StorageError: The store could not be asked.
        """
        info = self._info(key, "get the size of")
        if info.type != pafs.FileType.File:
            raise self._errors.error(
                "get the size of", key, FileNotFoundError(f"no object at {key}")
            )
        return int(info.size)

    def list(self, prefix: str = "", *, unfinished: bool = False) -> list[tuple[str, int]]:
        """List objects under ``prefix``, recursively, sorted by key.

        Args:
            prefix: A directory-like key prefix (``"warm/history"``); ``""`` lists the whole
                store. Objects are matched by whole path components, not by string prefix.
            unfinished: Also list what interrupted ``file://`` writes left behind (temporary
                files a crash kept from being renamed into place), for garbage collection;
                :meth:`unfinished_target` tells which key each was to become.

        Returns:
            ``(key relative to the store root, size in bytes)`` pairs; ``[]`` when nothing is
            there. ``prefix/`` directory markers are never listed.

        Raises:
            StorageError: The listing failed.
        """
        return [(key, size) for key, size, _ in self._listed(prefix, unfinished)]

    def list_modified(self, prefix: str = "") -> builtins.list[_Listed]:
        """:meth:`list`, with each object's modification time from the same listing.

        The listing carries the times (S3 ``LastModified``, the file's mtime), so a caller
        judging age needs no request per object.

        Returns:
            ``(key, size in bytes, modified)`` triples sorted by key; ``modified`` is an aware
            UTC datetime, or None if the store did not say.

        Raises:
            StorageError: The listing failed.
        """
        return self._listed(prefix, False)

    def _listed(self, prefix: str, unfinished: bool) -> builtins.list[_Listed]:
        base = self._dir_path(prefix)
        root = self._loc.root.rstrip("/")
        try:
            infos = self.fs.get_file_info(
                pafs.FileSelector(base, recursive=True, allow_not_found=True)
            )
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise self._errors.error("list", prefix, exc) from exc
        out: builtins.list[_Listed] = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.startswith(root + "/"):
                continue
            if info.path.endswith("/") or (not unfinished and _TMP_MARK in info.base_name):
                continue
            out.append((info.path[len(root) + 1 :], int(info.size), info.mtime))
        out.sort()
        return out

    @staticmethod
    def unfinished_target(key: str) -> str | None:
        """Return the key an unfinished write (from ``list(unfinished=True)``) was to create.

        Returns:
            The target key, or None if ``key`` is an ordinary object.
        """
        head, _, name = key.rpartition("/")
        if not name.startswith(".") or _TMP_MARK not in name:
            return None
        target = name[1 : name.rindex(_TMP_MARK)]
        return f"{head}/{target}" if head else target

    def open_input(self, key: str) -> pa.NativeFile:
        """Open ``key`` for random-access reading (e.g. :class:`pyarrow.parquet.ParquetFile`).

        Args:
            key: The key to read.

        Returns:
            A seekable pyarrow file. Errors while reading raise :class:`StorageError`.

        Raises:
            ObjectNotFound: No object has this key.
            StorageError: The object cannot be opened.
        """
        return self._open("read", key, self.fs.open_input_file, mode="r")
