"""``WorkflowHandle``: a reference to one instance, by id."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

from tierflow.hot.models import HistoryEvent, WorkflowInfo
from tierflow.hot.router import HISTORY_CHUNK

__all__ = ["HandleTarget", "WorkflowHandle"]


class HandleTarget(Protocol):
    """What a handle calls: ``Engine`` and ``tierflow.Tierflow`` both qualify."""

    async def result(self, workflow_id: str, timeout: float | None = None) -> Any:
        """Wait for the result."""
        ...

    async def status(self, workflow_id: str) -> str:
        """The status."""
        ...

    async def describe(self, workflow_id: str) -> WorkflowInfo:
        """The ``workflows`` row."""
        ...

    async def history(self, workflow_id: str) -> list[HistoryEvent]:
        """Every event."""
        ...

    def iter_history(
        self, workflow_id: str, *, after_seq: int = 0, chunk: int = HISTORY_CHUNK
    ) -> AsyncGenerator[list[HistoryEvent], None]:
        """Every event, streamed in chunks."""
        ...

    async def signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Send a signal."""
        ...

    async def query(self, workflow_id: str, name: str, *args: Any) -> Any:
        """Ask a query."""
        ...

    async def cancel(self, workflow_id: str, reason: str | None = None) -> str:
        """Request cancellation."""
        ...

    async def terminate(self, workflow_id: str, reason: str | None = None) -> None:
        """Stop now."""
        ...


class WorkflowHandle:
    """Refers to an instance by id; every call goes to the engine that made it.

    Attributes:
        workflow_id: The instance's id.
    """

    def __init__(self, engine: HandleTarget, workflow_id: str) -> None:
        self._engine = engine
        self.workflow_id = workflow_id

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the instance to finish and return its result (see ``Engine.result``)."""
        return await self._engine.result(self.workflow_id, timeout=timeout)

    async def status(self) -> str:
        """Return the current status."""
        return await self._engine.status(self.workflow_id)

    async def describe(self) -> WorkflowInfo:
        """Return the full ``workflows`` row."""
        return await self._engine.describe(self.workflow_id)

    async def history(self) -> list[HistoryEvent]:
        """Return every event, in order."""
        return await self._engine.history(self.workflow_id)

    def iter_history(
        self, *, after_seq: int = 0, chunk: int = HISTORY_CHUNK
    ) -> AsyncGenerator[list[HistoryEvent], None]:
        """Stream the events in order, ``chunk`` at a time (see ``Engine.iter_history``)."""
        return self._engine.iter_history(self.workflow_id, after_seq=after_seq, chunk=chunk)

    async def signal(self, name: str, payload: Any = None) -> None:
        """Send a signal (see ``Engine.signal``)."""
        await self._engine.signal(self.workflow_id, name, payload)

    async def query(self, name: str, *args: Any) -> Any:
        """Ask a query (see ``Engine.query``)."""
        return await self._engine.query(self.workflow_id, name, *args)

    async def cancel(self, reason: str | None = None) -> str:
        """Request cooperative cancellation; returns the status after the request."""
        return await self._engine.cancel(self.workflow_id, reason)

    async def terminate(self, reason: str | None = None) -> None:
        """Stop the instance immediately."""
        await self._engine.terminate(self.workflow_id, reason)
