"""Exclusive locks on files of the data directory, held by one pass of one process at a time.

A hot → warm or warm → cold pass of one process must not interleave with the same
pass of another process on the same data directory: two hot → warm passes
could write the same instances into two batches (the index would move them
once, but the second batch's files would hold them too), and two warm → cold
passes could claim and write concurrently. ``flock`` locks are released by the
kernel when the process dies, so a killed pass never blocks the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["exclusive_file"]


def _acquire(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.asynccontextmanager
async def exclusive_file(
    path: Path, io: Callable[..., Awaitable[Any]], local: asyncio.Lock
) -> AsyncIterator[None]:
    """Hold ``local`` (this process) and an exclusive ``flock`` on ``path`` (all processes).

    Args:
        path: The lock file (created if missing).
        io: Runs the blocking wait off the event loop (``Engine.io``).
        local: The in-process lock taken first.
    """
    async with local:
        fd: int = await io(_acquire, path)
        try:
            yield
        finally:
            os.close(fd)  # closing the descriptor drops the lock
