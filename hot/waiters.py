"""``result()`` waiters of the instances this process runs, and their recent results.

A caller of ``result()`` on an instance that runs here waits on a future set
when it finishes (:meth:`ResultWaiters.finished`). Recent results stay in
memory so ``result()`` right after completion does not reopen the instance
file; they are bounded by count and by size.
"""

from __future__ import annotations

import asyncio

__all__ = ["ResultWaiters"]

# Results kept, and the largest one kept (JSON text).
_KEEP = 4096
_KEEP_BYTES = 64 * 1024


class ResultWaiters:
    """Futures of ``result()`` callers and recently completed results, by workflow id."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._recent: dict[str, str] = {}

    def waiter(self, workflow_id: str) -> asyncio.Future[None]:
        """A future set when ``workflow_id`` finishes in this process."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(workflow_id, []).append(fut)
        return fut

    def recent_result(self, workflow_id: str) -> str | None:
        """The JSON result of an instance that recently completed here, if kept."""
        return self._recent.get(workflow_id)

    def remember(self, workflow_id: str, result_text: str) -> None:
        """Keep a completed instance's JSON result (unless it is large)."""
        if len(result_text) > _KEEP_BYTES:
            return
        self._recent[workflow_id] = result_text
        while len(self._recent) > _KEEP:
            self._recent.pop(next(iter(self._recent)))

    def forget(self, workflow_id: str) -> None:
        """Drop a kept result (the instance was erased)."""
        self._recent.pop(workflow_id, None)

    def finished(self, workflow_id: str) -> None:
        """``workflow_id`` finished: wake its waiters."""
        for fut in self._waiters.pop(workflow_id, []):
            if not fut.done():
                fut.set_result(None)
