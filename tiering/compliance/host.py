"""What compliance needs from the object that composes the tiers (the ``Tierflow`` facade).

``tiering`` sits below the facade, so it names what it uses as a protocol
instead of importing it: the engine and its index, the warm store, the cold
tables, the two tiering jobs (whose locks an erasure takes), a way to drop
this process's cached copies of erased workflows, and the reads an export
makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tierflow.hot.engine import Engine
from tierflow.hot.index import IndexDB
from tierflow.hot.models import HistoryEvent, WorkflowInfo

if TYPE_CHECKING:
    from tierflow.cold.catalog import ColdTables
    from tierflow.tiering.to_cold import ColdMove
    from tierflow.tiering.to_warm import WarmMove
    from tierflow.warm.storage import ObjectStore

__all__ = ["Host"]


class Host(Protocol):
    """The tiers of one data directory, as the facade composes them."""

    @property
    def engine(self) -> Engine:
        """The hot engine."""
        ...

    @property
    def index(self) -> IndexDB:
        """The instance index."""
        ...

    @property
    def data_dir(self) -> Path:
        """The data directory."""
        ...

    @property
    def store(self) -> ObjectStore:
        """The warm (and cold) object store."""
        ...

    @property
    def cold(self) -> ColdTables:
        """The cold Iceberg tables."""
        ...

    @property
    def warm_move(self) -> WarmMove:
        """The hot → warm job (its lock serialises every hot → warm pass)."""
        ...

    @property
    def cold_move(self) -> ColdMove:
        """The warm → cold job (its lock serialises cold moves and maintenance)."""
        ...

    def forget_cached(self, workflow_ids: Sequence[str]) -> None:
        """Drop this process's in-memory copies of these workflows (they were erased)."""
        ...

    async def describe(self, workflow_id: str) -> WorkflowInfo:
        """A workflow's row, from whichever tier holds it (what an export writes)."""
        ...

    async def history(self, workflow_id: str) -> list[HistoryEvent]:
        """A workflow's events, from whichever tier holds it (what an export writes)."""
        ...
