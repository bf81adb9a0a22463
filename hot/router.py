"""Which tier holds an instance, and who reads it there.

The index is the locator: each row names the tier that holds the instance
(``hot``, ``warm``, later ``cold``). Every read of one instance (``describe``,
``history``, ``result``, ``query``, and later replay and fork) goes through
a :class:`TierRouter`, which hands the row to the :class:`TierReader`
registered for its tier. ``hot`` registers its own reader; the readers of
the other tiers are provided by ``tiering`` and registered by the facade, so
``hot`` never imports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Protocol, TypeVar

from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.hot.index import IndexRow
from tierflow.hot.models import HistoryEvent, WorkflowInfo

__all__ = ["Tier", "TierReader", "TierRouter"]

_T = TypeVar("_T")


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

    async def history(self, row: IndexRow) -> list[HistoryEvent]:
        """Return every event of the instance, in order."""
        ...


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
            fresh = None if self._locate is None else self._locate(row.workflow_id)
            if fresh is None or (fresh.tier, fresh.batch_id) == (row.tier, row.batch_id):
                raise
            return await fn(self.reader(fresh), fresh)

    async def describe(self, row: IndexRow) -> WorkflowInfo:
        """``describe`` from whichever tier holds ``row``."""
        return await self._read(row, lambda r, x: r.describe(x))

    async def history(self, row: IndexRow) -> list[HistoryEvent]:
        """``history`` from whichever tier holds ``row``."""
        return await self._read(row, lambda r, x: r.history(x))
