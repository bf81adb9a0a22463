"""Files a signal or cancel opened, held for the resume it is about to trigger.

Closing such a file would checkpoint its WAL (two fsyncs) and the resume
would then open it again: ~1.3 ms of every signal-to-resume. So the file
stays open for the resume to take (:meth:`Handoffs.take`). A file no resume
takes within :data:`HANDOFF_TTL` (the instance runs elsewhere, or was claimed
or terminated meanwhile) is closed; at most :data:`HANDOFF_MAX` wait at once.
"""

from __future__ import annotations

import asyncio
import time

from tierflow.hot.runtime import Runtime
from tierflow.hot.store import InstanceFile

__all__ = ["HANDOFF_MAX", "HANDOFF_TTL", "Handoffs"]

HANDOFF_TTL = 1.0
"""Seconds a held file waits for its resume."""
HANDOFF_MAX = 64
"""Files held at once (each holds a file open)."""


class Handoffs:
    """The open files waiting for their instance's resume, by workflow id.

    Args:
        rt: The engine's runtime (its I/O threads close the files).

    Attributes:
        held: ``workflow_id -> (file, when it was put)``.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.held: dict[str, tuple[InstanceFile, float]] = {}

    def put(self, wid: str, f: InstanceFile) -> None:
        """Hold ``f`` for ``wid``'s resume (closing a file held before for it)."""
        previous = self.held.pop(wid, None)
        if previous is not None:
            self.rt.io_pool.post(previous[0].close)
        if len(self.held) >= HANDOFF_MAX:
            self.rt.io_pool.post(f.close)
            return
        self.held[wid] = (f, time.monotonic())
        asyncio.get_running_loop().call_later(HANDOFF_TTL, self._expire)

    def take(self, wid: str) -> InstanceFile | None:
        """Take the file held for ``wid``'s resume, if any (now the caller's)."""
        entry = self.held.pop(wid, None)
        return None if entry is None else entry[0]

    def close(self) -> None:
        """Close every held file."""
        for f, _ in self.held.values():
            self.rt.io_pool.post(f.close)
        self.held.clear()

    def _expire(self) -> None:
        if self.rt.closed:
            return  # close() closes what is left
        now = time.monotonic()
        for wid, (f, at) in list(self.held.items()):
            # Each entry has its own timer, due when it is HANDOFF_TTL old; half
            # that as the cut means timer jitter cannot leave one behind.
            if now - at >= HANDOFF_TTL / 2:
                del self.held[wid]
                self.rt.io_pool.post(f.close)
