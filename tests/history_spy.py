"""A tier reader that watches, and can hold back, what the router reads of one workflow.

The streaming tests wrap the real reader of each tier with :class:`Spy` through the
router's public ``register``: every read still goes to the real tier, and the spy
records which tier was asked for what (``calls``), how many events it has handed out
(``read``), and, while ``held``, keeps the router from reading the workflow's next
chunk until :meth:`Spy.release`. The uvicorn server runs its loop on another thread,
hence a ``threading.Event``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from tierflow import Tierflow
from tierflow.hot.index import IndexRow
from tierflow.hot.models import HistoryEvent, WorkflowInfo
from tierflow.hot.router import HISTORY_CHUNK, TierReader


class Spy:
    """Wraps the readers of every tier for reads of ``workflow_id``."""

    def __init__(self, workflow_id: str, *, held: bool) -> None:
        self.workflow_id = workflow_id
        self.calls: list[tuple[str, int]] = []  # (tier, after_seq) of each iter_history
        self.read = 0  # events the tiers have handed out for the workflow
        self._released = threading.Event()
        if not held:
            self._released.set()

    def release(self) -> None:
        """Let the router read the rest."""
        self._released.set()

    async def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while not self._released.is_set():
            if time.monotonic() > deadline:
                raise AssertionError("the spy was never released")
            await asyncio.sleep(0.002)

    def wrap(self, tier: str, inner: TierReader) -> TierReader:
        spy = self

        class Reader:
            async def describe(self, row: IndexRow) -> WorkflowInfo:
                return await inner.describe(row)

            async def iter_history(
                self, row: IndexRow, *, after_seq: int = 0, chunk: int = HISTORY_CHUNK
            ) -> AsyncGenerator[list[HistoryEvent], None]:
                mine = row.workflow_id == spy.workflow_id
                if mine:
                    spy.calls.append((tier, after_seq))
                parts = inner.iter_history(row, after_seq=after_seq, chunk=chunk)
                async with contextlib.aclosing(parts):
                    while True:
                        if mine and spy.read:
                            await spy._wait()  # the first chunk is out; hold the next read
                        part = await anext(parts, None)
                        if part is None:
                            return
                        if mine:
                            spy.read += len(part)
                        yield part

        return Reader()


@contextlib.contextmanager
def spying(tf: Tierflow, workflow_id: str, *, held: bool = False) -> Iterator[Spy]:
    """Put a :class:`Spy` in front of every tier's reader until the block ends."""
    router = tf.engine.router
    row = tf.index.get(workflow_id)
    assert row is not None, workflow_id
    spy = Spy(workflow_id, held=held)
    originals: dict[str, Any] = {
        t: router.reader(dataclasses.replace(row, tier=t)) for t in router.tiers
    }
    for tier, reader in originals.items():
        router.register(tier, spy.wrap(tier, reader))
    try:
        yield spy
    finally:
        spy.release()
        for tier, reader in originals.items():
            router.register(tier, reader)
