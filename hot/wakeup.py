"""Wake the event loop when another process announces a change in the index.

A process that appends to the change feed (``hot/notify.py``) rings the
index's bell once the transaction has committed: it writes one byte to
``index.sqlite-bell`` (:meth:`IndexDB.ring_after_commit`). On Linux a thread
blocks on an inotify watch of the index's directory and, when the bell is
written, sets an :class:`asyncio.Event` on the loop; the scheduler then checks
``PRAGMA data_version`` and reads the feed. An idle process therefore spends
no CPU waiting, and a change reaches it in well under a millisecond plus the
loop's own latency.

Measured here (``make bench``, "cross-process"): polling ``data_version``
every 5 ms from the loop cost ~3 % of a core in an idle worker (the loop's
wake-ups, not the PRAGMA), every 50 ms ~0.6 %; the watch costs nothing idle.

The watch used to be on the index's WAL, which every commit writes: under
load each process's own commits (two per workflow) woke its watcher thread
and its loop, about a sixth of a workflow's CPU, and since the WAL is written
before the commit is visible the scheduler had to look again for up to 63 ms.
The bell rings only for announcements, and only after they are visible. The
thread still wakes the loop at most once per :data:`MIN_INTERVAL`. Where
inotify is missing (not Linux) the scheduler polls instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import select
import sys
import threading
import time
from pathlib import Path

__all__ = ["MIN_INTERVAL", "IndexWatcher"]

log = logging.getLogger("tierflow.scheduler")

# At most one wake-up of the loop per this many seconds while the WAL keeps changing.
MIN_INTERVAL = 0.001

_IN_MODIFY = 0x00000002
_IN_CLOEXEC = 0o2000000
_IN_NONBLOCK = 0o4000


class IndexWatcher:
    """Sets :attr:`event` soon after any process rings the index's bell.

    Args:
        bell_path: The index's bell (:attr:`IndexDB.bell_path`).
        loop: The event loop to wake.

    Raises:
        OSError: inotify is not available (the caller falls back to polling).
    """

    def __init__(self, bell_path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.event = asyncio.Event()
        self._loop = loop
        libc = _libc()
        if libc is None or not hasattr(libc, "inotify_init1"):
            raise OSError("inotify is not available on this platform")
        fd = libc.inotify_init1(_IN_CLOEXEC | _IN_NONBLOCK)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        # The file itself, not its directory: the index's WAL beside it is written by
        # every commit, and each of those events would wake this thread for nothing.
        if libc.inotify_add_watch(fd, str(bell_path).encode(), _IN_MODIFY) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {bell_path}: {os.strerror(err)}")
        self._fd = fd
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="tierflow-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            except OSError as exc:
                log.error("index watch failed (%s); falling back to the periodic check", exc)
                return
            if data:  # only the bell is watched: any event is a ring
                with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                    self._loop.call_soon_threadsafe(self.event.set)
                time.sleep(MIN_INTERVAL)

    def close(self) -> None:
        """Stop the thread and release the watch."""
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
