"""SQLite settings that Python 3.11's ``sqlite3`` module cannot make, and a filesystem flush.

Two facts about instance files shape the hot tier's cost on a real disk:

* **Checkpoint on close.** When the last connection to a WAL database closes,
  SQLite copies the WAL into the database file, fsyncs both and deletes the
  WAL and shared-memory files: two fsyncs and two unlinks per instance, each
  unlink a journal commit of the filesystem. An instance file is written once
  and then mostly read, so that work buys nothing: the WAL is already durable.
  ``SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`` keeps the WAL instead (it is
  checkpointed by SQLite's auto-checkpoint when it grows, and read like any
  WAL). Python 3.12 exposes it as ``Connection.setconfig``; on 3.11 it is set
  through the C API with ctypes, after checking that the handle found really
  is this connection's database.
* **Durability in batches.** A new file needs its data, its inode and its
  directory entry on disk. One ``fsync`` per file forces one filesystem journal
  commit per file; ``syncfs`` makes a whole batch of new files durable with one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sqlite3
import sys
from pathlib import Path

__all__ = ["keep_wal_on_close", "sync_batch"]

log = logging.getLogger(__name__)

_NO_CKPT_ON_CLOSE = 1006  # SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE in sqlite3.h (since 3.16)


class _CApi:
    """The few SQLite C functions used here, from the library ``_sqlite3`` is linked to."""

    def __init__(self) -> None:
        import _sqlite3

        lib = ctypes.CDLL(_sqlite3.__file__)
        self.db_filename = lib.sqlite3_db_filename
        self.db_filename.restype = ctypes.c_char_p
        self.db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.db_config = lib.sqlite3_db_config  # variadic: (db, op, int, int*)
        self.db_config.restype = ctypes.c_int


_capi: _CApi | None = None
_capi_failed = False


def _c_api() -> _CApi | None:
    global _capi, _capi_failed
    if _capi is None and not _capi_failed:
        try:
            _capi = _CApi()
        except (OSError, AttributeError, ImportError) as exc:
            _capi_failed = True
            log.info("SQLite C API not reachable (%s): instance files checkpoint on close", exc)
    return _capi


def _handle_of(conn: sqlite3.Connection, path: Path, api: _CApi) -> int | None:
    """Return ``conn``'s ``sqlite3*`` if it can be found and proven to be ``path``'s."""
    # CPython 3.11 lays out a connection as PyObject_HEAD (two pointers) followed
    # by ``sqlite3 *db``. Only trusted on that exact implementation and version,
    # and only after SQLite itself confirms the handle names our file.
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return None
    ptr = ctypes.c_void_p.from_address(id(conn) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
    if not ptr:
        return None
    name = api.db_filename(ptr, b"main")
    if name is None or os.fsdecode(name) != os.path.realpath(path):
        return None
    return int(ptr)


def keep_wal_on_close(conn: sqlite3.Connection, path: Path) -> bool:
    """Ask SQLite not to checkpoint (nor delete the WAL) when ``conn`` closes.

    Args:
        conn: An open connection to ``path``.
        path: The database file, to verify the handle on Python 3.11.

    Returns:
        True if set; False if this Python cannot set it (the connection then
        checkpoints on close, which is correct, only slower).
    """
    setconfig = getattr(conn, "setconfig", None)
    if setconfig is not None:  # Python 3.12+
        setconfig(_NO_CKPT_ON_CLOSE, True)
        return True
    api = _c_api()
    if api is None:
        return False
    handle = _handle_of(conn, path, api)
    if handle is None:
        return False
    now = ctypes.c_int(-1)
    rc = api.db_config(
        ctypes.c_void_p(handle), _NO_CKPT_ON_CLOSE, ctypes.c_int(1), ctypes.byref(now)
    )
    return rc == 0 and now.value == 1


def sync_batch(directory: Path, files: list[Path]) -> None:
    """Make ``files`` (new files under ``directory``) and their directory entries durable.

    On Linux one ``syncfs`` covers them all (one filesystem journal commit);
    elsewhere each file and each parent directory is fsync'd.
    """
    if not files:
        return
    syncfs = getattr(_libc(), "syncfs", None) if sys.platform.startswith("linux") else None
    if syncfs is not None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for parent in sorted({f.parent for f in files}):
        for f in files:
            if f.parent == parent:
                _fsync_path(f, os.O_RDONLY)
        _fsync_path(parent, os.O_RDONLY)


def _fsync_path(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_libc_handle: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL | None:
    global _libc_handle
    if _libc_handle is None:
        try:
            _libc_handle = ctypes.CDLL(None, use_errno=True)
        except OSError:
            return None
    return _libc_handle
