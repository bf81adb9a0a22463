"""Read leases: the files a SQL query's cut lists stay until the query is done with them.

A query reads the index once (its cut) and then the files that cut lists:
warm batches, cold data files, hot instance files. A move that commits
meanwhile makes some of those files redundant, and deleting them at once
would fail the query. So a query holds a shared lease (a ``flock`` on
``<data_dir>/read.lease``) from before it reads the index until its last row,
and a move deletes what it replaced only when it can take the lease
exclusively, i.e. no query of any process on this data directory is reading
a cut taken before the move. Otherwise the files stay, recorded as pending,
and a later pass deletes them: once no query holds a lease, or once they are
older than the grace period (a query that outlives it may then lose a file;
it is retried on a fresh cut). This is Iceberg's rule of keeping replaced
files until snapshot expiry, applied per query.

The exclusive hold lasts only while the deleter deletes; a query that asks
for its lease meanwhile waits for it (and then reads a cut without the
deleted files). ``flock`` locks are dropped by the kernel when a process
dies, so a killed query never blocks deletion.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

__all__ = ["GRACE_SECONDS", "Lease", "ReadLeases", "past_grace"]

GRACE_SECONDS = 300.0
"""How long replaced files may wait for readers before they are deleted anyway."""

_POLL = 0.01
T = TypeVar("T")


def past_grace(committed_at_us: int | None, now_us: int) -> bool:
    """Whether files replaced by a move committed at ``committed_at_us`` may go despite leases."""
    return committed_at_us is not None and now_us - committed_at_us > GRACE_SECONDS * 1_000_000


class Lease:
    """A held shared lease; :meth:`release` drops it (idempotent)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        """Drop the lease."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock


class ReadLeases:
    """The read leases of one data directory.

    Args:
        data_dir: The data directory (the lease file is created there).
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "read.lease"

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def hold(self, deadline: float | None = None) -> Lease | None:
        """Take a shared lease (blocking; waits out a deleter's short exclusive hold).

        Args:
            deadline: ``time.monotonic()`` by which to give up (None: wait).

        Returns:
            The lease, or None if the deadline passed first.
        """
        fd = self._open()
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    return Lease(fd)
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        os.close(fd)
                        return None
                    time.sleep(_POLL)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise

    @contextlib.contextmanager
    def exclusive(self, wait: float = 0.0) -> Iterator[bool]:
        """Whether no query holds a lease; if so, none can take one until the block ends.

        Args:
            wait: Seconds to wait for running queries to finish (0: ask once).

        Yields:
            True when the caller holds the lease exclusively (delete now);
            False when a query still reads (leave the files for later).
        """
        fd = self._open()
        try:
            end = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held = True
                    break
                except BlockingIOError:
                    if time.monotonic() >= end:
                        held = False
                        break
                    time.sleep(_POLL)
            yield held
        finally:
            os.close(fd)

    def delete_unread(self, delete: Callable[[], T], old: bool) -> T | None:
        """Run ``delete`` unless a query holds a lease; None when it must wait for a later pass.

        Args:
            delete: Deletes files a move replaced; runs under the exclusive lease,
                so no query can take a cut meanwhile.
            old: The move is past the grace period (:func:`past_grace`): delete
                even while a query holds a lease.
        """
        with self.exclusive() as unread:
            return delete() if unread or old else None
