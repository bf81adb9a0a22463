"""Reads of instances: describe, history, result, query, list.

:class:`HotReader` reads instances the hot tier holds, from their files.
:class:`Reads` answers every read for any tier: it looks the instance up in
the index (the locator) and asks the :class:`~tierflow.hot.router.TierRouter`
for the reader of the tier that holds it. Nothing here writes, except that an
instance file found corrupt is quarantined.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tierflow.hot import serde
from tierflow.hot.archive import state_from_history
from tierflow.hot.authoring import WorkflowDefinition, WorkflowFn
from tierflow.hot.context import WorkflowContext
from tierflow.hot.errors import (
    CorruptInstance,
    InvalidArgument,
    ResultTimeout,
    StorageError,
    UnknownQuery,
    WorkflowCancelled,
    WorkflowCancelledError,
    WorkflowFailed,
    WorkflowNotFound,
    WorkflowTerminatedError,
)
from tierflow.hot.executor import Execution, ExecutionEnv, QueryStop, Suspend
from tierflow.hot.index import IndexRow
from tierflow.hot.instances import Instances
from tierflow.hot.models import (
    TERMINAL_STATUSES,
    EventType,
    HistoryEvent,
    Status,
    WorkflowInfo,
    from_micros,
    to_micros,
)
from tierflow.hot.records import InstanceState
from tierflow.hot.router import HISTORY_CHUNK, TierRouter, check_chunk
from tierflow.hot.runtime import Runtime
from tierflow.hot.store import IncompleteInstance, InstanceFile

__all__ = ["HotReader", "Page", "Reads", "WorkflowRef"]

WorkflowRef = WorkflowDefinition | WorkflowFn | str


@dataclass(frozen=True)
class Page:
    """One page of ``list`` results; pass ``next_cursor`` back for the next page."""

    items: list[WorkflowInfo]
    next_cursor: str | None


class HotReader:
    """Reads instances of the hot tier from their instance files.

    Args:
        rt: The engine's shared runtime.
        instances: The running instances (a corrupt file is quarantined
            unless an execution holds it).
    """

    def __init__(self, rt: Runtime, instances: Instances) -> None:
        self.rt = rt
        self.instances = instances

    async def describe(self, row: IndexRow) -> WorkflowInfo:
        """The ``workflows`` row of a hot instance, from its file where it has one."""
        wid = row.workflow_id
        frow: dict[str, Any] | None = None
        if row.status != Status.QUEUED:
            path = self.rt.path(wid)
            try:
                frow = await self.rt.io(_read_file_row, path, self.rt.durability)
            except (FileNotFoundError, IncompleteInstance):
                frow = None
            except CorruptInstance as exc:
                if not self.instances.is_active(wid):
                    await self.instances.quarantine(wid, exc)
                row = self.rt.row_or_raise(wid)
        return info_from(row, frow)

    async def iter_history(
        self, row: IndexRow, *, after_seq: int = 0, chunk: int = HISTORY_CHUNK
    ) -> AsyncGenerator[list[HistoryEvent], None]:
        """The events of a hot instance after ``after_seq``, ``chunk`` at a time.

        Before its first run an instance has one event, ``workflow.queued``,
        made from its index row.

        Each chunk opens the file, reads ``event_id > last LIMIT chunk`` on an I/O
        thread and closes it again. Nothing is held open between chunks: a slow
        consumer keeps no read transaction that would stall the running
        instance's checkpoints, and an instance that moved to warm (or was
        erased) meanwhile is noticed at the next chunk as a missing file, a
        :class:`StorageError` the router answers by reading from where it went.

        Raises:
            StorageError: The file of a started instance is missing.
            CorruptInstance: The file was unreadable (now quarantined).
        """
        wid = row.workflow_id
        last = after_seq
        first = True
        while True:
            path: Path | None = None
            rows: list[tuple[Any, ...]] | None
            try:
                if first and row.file is None:
                    raise FileNotFoundError(wid)
                path = self.rt.path(wid)  # the index's current file, every chunk
                rows = await self.rt.io(_read_events, path, self.rt.durability, last, chunk)
            except IncompleteInstance:
                if not first:
                    raise
                rows = None  # started, first commit not yet done: only the queue entry exists
            except FileNotFoundError as exc:
                if not first or row.status != Status.QUEUED:
                    raise StorageError(
                        f"the instance file of {wid!r} is missing (status {row.status}: "
                        f"{row.error})",
                        workflow_id=wid,
                        url=str(path),
                    ) from exc
                rows = None
            except CorruptInstance as exc:
                if not self.instances.is_active(wid):
                    await self.instances.quarantine(wid, exc)
                raise
            if rows is None:
                if last < 1:
                    yield [_queued_event(row)]
                return
            if rows:
                yield _events_of(row, rows)
                last = rows[-1][0]
            if len(rows) < chunk:
                return
            first = False

    async def state(self, row: IndexRow) -> InstanceState:
        """The replay state of a hot instance, from its file (queued: from its row)."""
        if row.file is not None:
            path = self.rt.instances_dir / row.file
            durability = self.rt.durability

            def load() -> InstanceState:
                f = InstanceFile.open(path, durability=durability)
                try:
                    return f.load()
                finally:
                    f.close()

            with contextlib.suppress(IncompleteInstance, FileNotFoundError):
                return await self.rt.io(load)
        return InstanceState(
            row={
                "workflow_id": row.workflow_id,
                "run_id": row.run_id,
                "workflow_type": row.workflow_type,
                "status": row.status,
                "parent_workflow_id": row.parent_workflow_id,
                "input": row.input,
                "attributes": row.attributes,
                "step_count": 0,
                "cancel_requested": 0,
                "cancel_reason": None,
            },
            ops={},
            last_event_id=0,
        )


class Reads:
    """Every read of an instance, from whichever tier holds it.

    Args:
        rt: The engine's shared runtime.
        instances: The running instances (recent results, waiters).
        router: Tier name to reader; ``hot`` must be registered.
        env: What a query replay needs from the engine.
    """

    def __init__(
        self, rt: Runtime, instances: Instances, router: TierRouter, env: ExecutionEnv
    ) -> None:
        self.rt = rt
        self.instances = instances
        self.router = router
        self.env = env

    async def describe(self, workflow_id: str) -> WorkflowInfo:
        """Return the instance's ``workflows`` row, with input, result and error.

        Raises:
            WorkflowNotFound: No such instance.
        """
        return await self.router.describe(self.rt.row_or_raise(workflow_id))

    async def history(self, workflow_id: str) -> list[HistoryEvent]:
        """Return every event of the instance, in order.

        Raises:
            WorkflowNotFound: No such instance.
            CorruptInstance: The instance file was unreadable (now quarantined).
        """
        return await self.router.history(self.rt.row_or_raise(workflow_id))

    def iter_history(
        self, workflow_id: str, *, after_seq: int = 0, chunk: int = HISTORY_CHUNK
    ) -> AsyncGenerator[list[HistoryEvent], None]:
        """Stream the instance's events in order, a chunk at a time, from whichever tier holds it.

        The history is never held whole: each tier reads ``chunk`` events at a
        time (a hot file by ``event_id`` range, warm and cold Parquet by record
        batch). If the instance moves to another tier meanwhile, the read
        continues there after the last event yielded, so every event comes out
        exactly once. ``[e async for c in iter_history(id) for e in c]`` equals
        ``history(id)``.

        Args:
            workflow_id: The instance.
            after_seq: Start after this ``event_id`` (0: from the first event).
            chunk: Events per yielded list (the last one may hold fewer, never none).

        Returns:
            An async iterator of lists of events. The instance is looked up, and the
            arguments checked, when this is called, not at the first ``anext``.

        Raises:
            WorkflowNotFound: No such instance.
            InvalidWorkflowId: Malformed id.
            InvalidArgument: ``chunk`` below 1 or ``after_seq`` below 0.
            StorageError: While iterating: a tier's data is missing or unreadable.
            CorruptInstance: While iterating: the instance file was unreadable
                (now quarantined).
        """
        check_chunk(after_seq, chunk)
        row = self.rt.row_or_raise(workflow_id)
        return self.router.iter_history(row, after_seq=after_seq, chunk=chunk)

    async def status(self, workflow_id: str) -> str:
        """Return the instance's status."""
        return self.rt.row_or_raise(workflow_id).status

    async def result(self, workflow_id: str, timeout: float | None = None) -> Any:
        """Wait for the instance to finish and return its result.

        Raises:
            ResultTimeout: ``timeout`` seconds passed first.
            WorkflowFailed: It failed; ``cause`` holds the recorded error.
            WorkflowCancelledError / WorkflowTerminatedError: It was stopped.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        fut: asyncio.Future[None] | None = None
        while True:
            row = self.rt.row_or_raise(workflow_id)
            if row.status in TERMINAL_STATUSES:
                return await self._terminal_result(row)
            if fut is None or fut.done():  # one waiter per wait, not one per poll
                fut = self.instances.results.waiter(workflow_id)
            row = self.rt.row_or_raise(workflow_id)
            if row.status in TERMINAL_STATUSES:
                return await self._terminal_result(row)
            # Poll the index now and then too: another process may finish it.
            wait = 0.5 if deadline is None else min(0.5, deadline - loop.time())
            if wait <= 0:
                raise ResultTimeout(
                    f"workflow {workflow_id!r} did not finish within {timeout}s "
                    f"(status {row.status})",
                    workflow_id=workflow_id,
                )
            # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow the
            # caller's cancellation when the future completes at the same moment.
            await asyncio.wait({fut}, timeout=wait)

    async def _completed_result(self, row: IndexRow) -> Any:
        cached = self.instances.results.recent_result(row.workflow_id)
        if cached is not None:
            return serde.decode(cached)
        return (await self.router.describe(row)).result

    async def _terminal_result(self, row: IndexRow) -> Any:
        wid = row.workflow_id
        err = serde.decode(row.error) or {}
        if row.status == Status.COMPLETED:
            return await self._completed_result(row)
        if row.status == Status.FAILED:
            raise WorkflowFailed(
                f"workflow {wid!r} failed: {err.get('type')}: {err.get('message')}",
                workflow_id=wid,
                error_type=err.get("type"),
                cause=err.get("message"),
            )
        if row.status == Status.CANCELLED:
            raise WorkflowCancelledError(f"workflow {wid!r} was cancelled", workflow_id=wid)
        raise WorkflowTerminatedError(
            f"workflow {wid!r} was terminated: {err.get('message')}",
            workflow_id=wid,
            reason=err.get("message"),
        )

    async def child_outcome(self, child_id: str) -> tuple[str, Any, Any] | None:
        """Return ``(status, result, error)`` once a child has finished, else None."""
        row = self.rt.index.get(child_id)
        if row is None:
            return (
                Status.FAILED.value,
                None,
                {"type": "WorkflowNotFound", "message": "child is missing"},
            )
        if row.status not in TERMINAL_STATUSES:
            return None
        if row.status == Status.COMPLETED:
            return (row.status, await self._completed_result(row), None)
        return (row.status, None, serde.decode(row.error) or {})

    async def query(self, workflow_id: str, name: str, *args: Any) -> Any:
        """Answer a query by replaying the instance's history; nothing runs or changes.

        Raises:
            WorkflowNotFound: No such instance, or its type is not registered here.
            UnknownQuery: No handler named ``name``; the error lists the known ones.
        """
        rt = self.rt
        row = rt.row_or_raise(workflow_id)
        definition = rt.registry.get(row.workflow_type)
        if definition is None:
            known = rt.registry.names()
            raise WorkflowNotFound(
                f"cannot query {workflow_id!r}: workflow type {row.workflow_type!r} is not "
                f"registered here; known types: {', '.join(known) or '(none)'}",
                workflow_id=workflow_id,
                known_types=known,
            )
        serde.encode(list(args), what="query arguments", max_bytes=rt.options.max_payload_bytes)
        state = await self.replay_state(row)
        ex = Execution(self.env, None, state, definition, query_mode=True)
        ctx = WorkflowContext(ex)

        async def replay() -> None:
            ex.enter_root()
            with contextlib.suppress(Exception, QueryStop, Suspend, WorkflowCancelled):
                # The replay stops at the first operation with no record (QueryStop),
                # or ends the way the run ended; either way the handlers are set.
                await definition(ctx, serde.decode(state.row["input"]))

        # Its own task: the replay's context (branch names) never leaks into the caller's.
        await asyncio.get_running_loop().create_task(replay())
        handler = ex.query_handlers.get(name)
        if handler is None:
            known = sorted(ex.query_handlers)
            raise UnknownQuery(
                f"workflow {workflow_id!r} has no query {name!r}; "
                f"known queries: {', '.join(known) or '(none)'}",
                workflow_id=workflow_id,
                known=known,
            )
        value = handler(*args)
        if inspect.isawaitable(value):
            value = await value
        return serde.decode(serde.encode(value, what=f"answer to query {name!r}"))

    async def replay_state(self, row: IndexRow) -> InstanceState:
        """What a replay of ``row`` starts from, read from whichever tier holds it."""
        reader = self.router.reader(row)
        if isinstance(reader, HotReader):
            return await reader.state(row)  # the file has the records: no history rebuild
        return state_from_history(await reader.describe(row), await self.router.history(row))

    async def list(
        self,
        *,
        status: str | Sequence[str] | None = None,
        workflow_type: WorkflowRef | Sequence[str] | None = None,
        attributes: dict[str, Any] | None = None,
        parent_workflow_id: str | None = None,
        tier: str | Sequence[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """List instances from the index, newest first, with cursor paging.

        Rows come from the index alone (no instance file is opened), so
        ``input``, ``result`` and ``error`` are None except ``error`` of failed
        instances; use ``describe`` for the full row.

        Args:
            status: One status or several (any of them).
            workflow_type: A workflow (function, definition or name) or several names.
            attributes: Attribute values that must all match (``set_attributes``).
            parent_workflow_id: Only the children of this instance.
            tier: ``"hot"``, ``"warm"``, ``"cold"``, or several.
            created_after: Created at or after this time (aware datetimes; naive is UTC).
            created_before: Created before this time.
            started_after: Started at or after this time (never-started instances excluded).
            started_before: Started before this time.
            finished_after: Finished at or after this time (unfinished instances excluded).
            finished_before: Finished before this time.
            cursor: ``next_cursor`` of the previous page.
            limit: Rows per page, 1 to 10,000.

        Raises:
            InvalidArgument: An unknown status, a malformed cursor or limit.
        """
        statuses = [status] if isinstance(status, str) else list(status or [])
        for s in statuses:
            if s not in Status.__members__.values():
                raise InvalidArgument(
                    f"unknown status {s!r}; statuses: {', '.join(m.value for m in Status)}"
                )
        types: list[str] = []
        if workflow_type is not None:
            refs: Sequence[WorkflowRef] = (
                workflow_type if isinstance(workflow_type, list | tuple) else [workflow_type]  # type: ignore[list-item]
            )
            for ref in refs:
                types.append(ref if isinstance(ref, str) else self.rt.registry.resolve(ref).name)
        rows, next_cursor = self.rt.index.list(
            status=statuses or None,
            workflow_type=types or None,
            attributes=attributes,
            parent_workflow_id=parent_workflow_id,
            tier=[tier] if isinstance(tier, str) else (list(tier) if tier else None),
            ranges={
                "created_at": (_micros(created_after), _micros(created_before)),
                "started_at": (_micros(started_after), _micros(started_before)),
                "finished_at": (_micros(finished_after), _micros(finished_before)),
            },
            cursor=cursor,
            limit=limit,
        )
        return Page([info_from(r, None) for r in rows], next_cursor)


def _micros(moment: datetime | None) -> int | None:
    """Epoch microseconds of ``moment`` (a naive datetime is taken as UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_micros(moment.timestamp())


def _read_file_row(path: Path, durability: str) -> dict[str, Any]:
    f = InstanceFile.open(path, durability=durability)
    try:
        return f.read_row()
    finally:
        f.close()


def _read_events(path: Path, durability: str, after: int, limit: int) -> list[tuple[Any, ...]]:
    f = InstanceFile.open(path, durability=durability)
    try:
        return f.read_events(after, limit)
    finally:
        f.close()


def _events_of(row: IndexRow, rows: list[tuple[Any, ...]]) -> list[HistoryEvent]:
    """Event rows of an instance file (``EVENT_COLUMNS``) as :class:`HistoryEvent` objects."""
    wid, run_id, wtype = row.workflow_id, row.run_id, row.workflow_type
    return [
        HistoryEvent(
            wid, run_id, r[0], r[1], from_micros(r[2]), r[3], r[4], serde.decode(r[5]), wtype
        )
        for r in rows
    ]


def _queued_event(row: IndexRow) -> HistoryEvent:
    """The one event of an instance that has not run yet, from its index row."""
    return HistoryEvent(
        row.workflow_id,
        row.run_id,
        1,
        EventType.WORKFLOW_QUEUED.value,
        from_micros(row.created_at),
        None,
        None,
        {
            "input": serde.decode(row.input),
            "attributes": serde.decode(row.attributes),
            "parent_workflow_id": row.parent_workflow_id,
        },
        row.workflow_type,
    )


def info_from(row: IndexRow, file_row: dict[str, Any] | None) -> WorkflowInfo:
    """A ``WorkflowInfo`` from an index row and, when read, the instance file's row."""
    src: dict[str, Any] = dict(file_row) if file_row else {}
    status = src.get("status") or row.status
    # The index may hold a newer status than a file that was quarantined.
    if row.status in TERMINAL_STATUSES and status not in TERMINAL_STATUSES:
        status = row.status
    started = src.get("started_at", row.started_at)
    finished = src.get("finished_at", row.finished_at) or row.finished_at
    duration = None if started is None or finished is None else (finished - started) / 1000
    return WorkflowInfo(
        workflow_id=row.workflow_id,
        run_id=row.run_id,
        workflow_type=row.workflow_type,
        status=status,
        parent_workflow_id=row.parent_workflow_id,
        input=serde.decode(src["input"]) if file_row else serde.decode(row.input),
        result=serde.decode(src.get("result")) if file_row else None,
        error=serde.decode(src.get("error") or row.error),
        attributes=serde.decode(src.get("attributes") or row.attributes) or {},
        created_at=from_micros(row.created_at),
        started_at=from_micros(started),
        finished_at=from_micros(finished),
        duration_ms=duration,
        step_count=src.get("step_count", row.step_count),
        tier=row.tier,
    )
