"""Which tier holds an instance, and who reads it there.

The index is the locator: each row names the tier that holds the instance
(``hot``, ``warm``, ``cold``). Every read of one instance (``describe``,
``history``, ``result``, ``query``, replay and fork) goes through
a :class:`TierRouter`, which hands the row to the :class:`TierReader`
registered for its tier. ``hot`` registers its own reader; the readers of
the other tiers are provided by ``tiering`` and registered by the facade, so
``hot`` never imports them.

A reader streams a history (``iter_history``: chunks of events in
``event_id`` order, so a long history is never held whole); ``history`` is
that stream in one chunk. An instance may move to another tier while it is
being read; the router then finds it again and resumes after the last event
it handed out.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from enum import StrEnum
from typing import Protocol, TypeVar

from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.hot.index import IndexRow
from tierflow.hot.models import HistoryEvent, WorkflowInfo

__all__ = ["HISTORY_CHUNK", "Tier", "TierReader", "TierRouter", "check_chunk"]

HISTORY_CHUNK = 1000
"""Events per chunk of ``iter_history`` unless the caller asks otherwise: large enough
that the per-chunk cost (a hot file opened, one hop to an I/O thread) is noise, small
enough that a chunk of large payloads stays a few MB."""

_T = TypeVar("_T")
_MAX_MOVES = 4
# One chunk that holds any history (SQLite's LIMIT and Arrow's batch size take any int64).
_WHOLE = 2**62


class Tier(StrEnum):
    """Where an instance's rows live (the index's ``tier`` column)."""

    HOT = "hot"
    WARM = "warm"
    COLD = "cold"


class TierReader(Protocol):
    """Reads the instances one tier holds."""

    async def describe(self, row: IndexRow) -> WorkflowInfo:
        """Return the full ``workflows`` row (with input, result and error)."""
        ...

    def iter_history(
        self, row: IndexRow, *, after_seq: int = 0, chunk: int = HISTORY_CHUNK
    ) -> AsyncGenerator[list[HistoryEvent], None]:
        """Yield the events with ``event_id > after_seq`` in order, ``chunk`` at a time.

        Each yielded list holds ``chunk`` events, the last one from 1 to
        ``chunk``; the whole history is never held.

        Raises:
            StorageError: The tier's data is missing or unreadable (the router then
                re-locates the instance and resumes where it moved).
        """
        ...


def check_chunk(after_seq: int, chunk: int) -> None:
    """Refuse arguments ``iter_history`` cannot honour.

    Raises:
        InvalidArgument: ``chunk`` below 1 or ``after_seq`` below 0.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise InvalidArgument(f"chunk must be a positive integer, got {chunk!r}")
    if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
        raise InvalidArgument(f"after_seq must be an integer >= 0, got {after_seq!r}")


class TierRouter:
    """Maps a tier name to its reader.

    Args:
        locate: Re-reads an instance's index row. When a read fails because the
            instance moved on meanwhile (another process moved it to cold and
            deleted the files the row pointed at), the router reads the row
            again and, if it moved, reads from where it is now.
    """

    def __init__(self, locate: Callable[[str], IndexRow | None] | None = None) -> None:
        self._readers: dict[str, TierReader] = {}
        self._locate = locate

    def register(self, tier: str, reader: TierReader) -> None:
        """Read instances of ``tier`` with ``reader`` (replacing any earlier one).

        Raises:
            InvalidArgument: An empty tier name.
        """
        if not tier:
            raise InvalidArgument("tier name must be non-empty")
        self._readers[tier] = reader

    @property
    def tiers(self) -> list[str]:
        """The tiers that have a reader."""
        return list(self._readers)

    def reader(self, row: IndexRow) -> TierReader:
        """The reader for the tier that holds ``row``.

        Raises:
            StorageError: No reader is registered for that tier (for example a
                bare ``Engine`` asked for an archived instance).
        """
        reader = self._readers.get(row.tier)
        if reader is None:
            raise StorageError(
                f"workflow {row.workflow_id!r} is in the {row.tier} tier, and no reader "
                f"for that tier is registered (registered: {', '.join(self._readers)}; "
                "use tierflow.Tierflow, which registers every tier)",
                workflow_id=row.workflow_id,
            )
        return reader

    async def _read(self, row: IndexRow, fn: Callable[[TierReader, IndexRow], Awaitable[_T]]) -> _T:
        try:
            return await fn(self.reader(row), row)
        except StorageError:
            fresh = self._moved(row)
            if fresh is None:
                raise
            return await fn(self.reader(fresh), fresh)

    async def describe(self, row: IndexRow) -> WorkflowInfo:
        """``describe`` from whichever tier holds ``row``."""
        return await self._read(row, lambda r, x: r.describe(x))

    async def history(self, row: IndexRow) -> list[HistoryEvent]:
        """Every event of ``row``'s instance, in order, from whichever tier holds it.

        :meth:`iter_history` in a single chunk: one read of the hot file, or of
        the Parquet row groups that hold the instance, as fast as a dedicated
        whole read was (measured), and one code path for both.
        """
        return [e async for part in self.iter_history(row, chunk=_WHOLE) for e in part]

    async def iter_history(
        self, row: IndexRow, *, after_seq: int = 0, chunk: int = HISTORY_CHUNK
    ) -> AsyncGenerator[list[HistoryEvent], None]:
        """``iter_history`` from whichever tier holds ``row``, following it if it moves.

        When a chunk read fails with :class:`StorageError` and the index now
        places the instance elsewhere (tiering moved it and deleted what this
        read was reading), the read resumes in the new tier after the last
        event already yielded: every event comes out once, in order.

        Raises:
            StorageError: The read failed and the instance did not move, or a
                tier returned events out of order (a damaged archive: yielding
                them would duplicate or reorder events).
        """
        check_chunk(after_seq, chunk)
        last = after_seq
        # An instance moves at most hot -> warm -> cold (and a cold rewrite or two):
        # more moves than that during one read means the index keeps changing its mind.
        for _ in range(_MAX_MOVES):
            events = self.reader(row).iter_history(row, after_seq=last, chunk=chunk)
            try:
                while True:
                    # Only the read is guarded: an error raised at our ``yield`` (the
                    # consumer's) is not a storage error of this tier.
                    try:
                        got = await anext(events, None)
                    except StorageError:
                        fresh = self._moved(row)
                        if fresh is None:
                            raise
                        row = fresh
                        break
                    if got is None:
                        return
                    if got:
                        last = _check_order(row, got, last)
                        yield got
            finally:
                await events.aclose()
        raise StorageError(
            f"workflow {row.workflow_id!r} moved tiers {_MAX_MOVES} times while its "
            "history was read",
            workflow_id=row.workflow_id,
        )

    def _moved(self, row: IndexRow) -> IndexRow | None:
        """The instance's row if the index now places it elsewhere than ``row``, else None."""
        fresh = None if self._locate is None else self._locate(row.workflow_id)
        if fresh is None or (fresh.tier, fresh.batch_id) == (row.tier, row.batch_id):
            return None
        return fresh


def _check_order(row: IndexRow, events: list[HistoryEvent], last: int) -> int:
    """The last event id of ``events``, after checking they follow ``last`` in order."""
    for e in events:
        if e.event_id <= last:
            raise StorageError(
                f"the {row.tier} tier returned event {e.event_id} of {row.workflow_id!r} "
                f"after event {last}: its history is out of order or duplicated there",
                workflow_id=row.workflow_id,
            )
        last = e.event_id
    return last
