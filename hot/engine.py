"""The hot-tier engine: starts, runs, schedules and recovers instances.

``Engine`` owns the data directory's ``hot/`` part: the instance index, the
instance files, the owner lock and the scheduler. ``api.Tierflow`` extends it
with the other tiers. Everything here is async; SQLite work runs on a thread
pool so fsyncs on different instance files overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from tierflow.hot import serde
from tierflow.hot.archive import ArchiveSource, state_from_history
from tierflow.hot.authoring import Registry, WorkflowDefinition, WorkflowFn
from tierflow.hot.clock import Clock, SystemClock
from tierflow.hot.context import WorkflowContext
from tierflow.hot.errors import (
    CorruptInstance,
    InvalidArgument,
    ResultTimeout,
    StorageError,
    TierflowError,
    UnknownQuery,
    WorkflowAlreadyExists,
    WorkflowAlreadyFinished,
    WorkflowCancelled,
    WorkflowCancelledError,
    WorkflowFailed,
    WorkflowNotFound,
    WorkflowTerminatedError,
)
from tierflow.hot.executor import Execution, Outcome, QueryStop, Suspend
from tierflow.hot.handle import WorkflowHandle
from tierflow.hot.ids import validate_workflow_id
from tierflow.hot.index import IndexDB, IndexRow
from tierflow.hot.models import (
    TERMINAL_STATUSES,
    EventType,
    HistoryEvent,
    Status,
    WorkflowInfo,
    from_micros,
    to_micros,
)
from tierflow.hot.recovery import OwnerLock
from tierflow.hot.scheduler import Scheduler
from tierflow.hot.store import (
    EventRow,
    IncompleteInstance,
    InstanceFile,
    InstanceState,
    SparePool,
    delete_instance_file,
    quarantine,
)
from tierflow.hot.stream import CallbackSubscriber, EventStream, Subscriber, to_wire

__all__ = ["Engine", "Page"]

log = logging.getLogger("tierflow.engine")

OnConflict = Literal["use_existing", "fail"]
WorkflowRef = WorkflowDefinition | WorkflowFn | str


# A file opened by a signal or cancel waits this long for the resume to take
# it, and at most this many wait at once (see Engine._hand_off).
_HANDOFF_TTL = 1.0
_HANDOFF_MAX = 64


@dataclass(frozen=True)
class Page:
    """One page of ``list`` results; pass ``next_cursor`` back for the next page."""

    items: list[WorkflowInfo]
    next_cursor: str | None


class Engine:
    """Durable execution on per-instance SQLite files.

    Args:
        data_dir: Root of everything tierflow stores; ``hot/`` lives inside.
        workflows: The workflow definitions this process can run.
        durability: ``"full"`` fsyncs every commit (default); ``"normal"``
            survives process crashes but may lose the last commits on power loss.
        clock: Time source for timers and timestamps (inject ``ManualClock`` in tests).
        max_concurrency: Instances the scheduler runs at once.
        max_recovery_attempts: Recoveries after which an instance whose runner
            keeps dying is failed.
        inline_sleep_threshold: Timers and retry waits up to this many seconds
            are awaited in memory (still recorded durably); longer ones unload
            the instance.
        max_payload_bytes: Largest JSON input, result, or signal accepted.
        event_sinks: Subscribers of the event stream (``HttpSink``, ...).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = "./tierflow-data",
        workflows: Sequence[WorkflowDefinition | WorkflowFn] = (),
        *,
        durability: Literal["full", "normal"] = "full",
        clock: Clock | None = None,
        max_concurrency: int = 100,
        max_recovery_attempts: int = 5,
        inline_sleep_threshold: float = 0.25,
        max_payload_bytes: int = serde.DEFAULT_MAX_PAYLOAD_BYTES,
        event_sinks: Sequence[Subscriber] = (),
    ) -> None:
        if durability not in ("full", "normal"):
            raise InvalidArgument("durability must be 'full' or 'normal'")
        if max_concurrency < 1:
            raise InvalidArgument("max_concurrency must be >= 1")
        self.data_dir = Path(data_dir)
        self.hot_dir = self.data_dir / "hot"
        self.instances_dir = self.hot_dir / "instances"
        self.quarantine_dir = self.hot_dir / "quarantine"
        self.owners_dir = self.hot_dir / "owners"
        self.registry = Registry(workflows)
        self.durability = durability
        self.clock: Clock = clock or SystemClock()
        self.max_concurrency = max_concurrency
        self.max_recovery_attempts = max_recovery_attempts
        self.inline_sleep_threshold = inline_sleep_threshold
        self.max_payload_bytes = max_payload_bytes
        self.io_pool: Executor = ThreadPoolExecutor(
            max_workers=32, thread_name_prefix="tierflow-io"
        )
        self._index: IndexDB | None = None
        self._spares: SparePool | None = None
        self._owner: OwnerLock | None = None
        self._active: dict[str, Execution] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._recent_results: dict[str, str] = {}
        self._wake_pending: set[str] = set()
        # Files a signal or cancel opened for an instance it is about to resume:
        # the resume takes the open connection instead of reopening the file
        # (see _hand_off).
        self._handoff: dict[str, tuple[InstanceFile, float]] = {}
        self._scheduler: Scheduler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._initial_subscribers = list(event_sinks)
        # Reads instances that tiering moved out of hot (set by api.Tierflow).
        self.archive: ArchiveSource | None = None
        self._stream: EventStream | None = None

    # -- lifecycle -----------------------------------------------------------------

    @property
    def owner_id(self) -> str:
        """This process's owner id (holder of leases)."""
        return self._opened().owner_id

    def _opened(self) -> OwnerLock:
        if self._owner is None:
            self.open()
        assert self._owner is not None
        return self._owner

    @property
    def index(self) -> IndexDB:
        """The instance index (opened on first use)."""
        self._opened()
        assert self._index is not None
        return self._index

    def open(self) -> None:
        """Create directories, open the index and take an owner identity."""
        if self._closed:
            raise TierflowError("this engine has been closed")
        if self._owner is not None:
            return
        try:
            self.instances_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create {self.hot_dir}: {exc}", url=str(self.hot_dir)
            ) from exc
        self._index = IndexDB(self.hot_dir / "index.sqlite", self.durability)
        self._owner = OwnerLock.acquire(self.owners_dir)
        self._spares = SparePool(self.instances_dir, self._owner.owner_id, self.durability)
        self._stream = EventStream(self)
        for sub in self._initial_subscribers:
            self._stream.add(sub)

    async def __aenter__(self) -> Engine:
        self.open()
        await self.start_scheduler()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start_scheduler(self) -> None:
        """Recover orphaned instances and start the background scheduler."""
        if self._scheduler is None:
            self._scheduler = Scheduler(self)
            await self._scheduler.start()
            self.stream.start()

    async def aclose(self) -> None:
        """Stop the scheduler and running executions; they resume on the next start."""
        if self._closed:
            return
        self._closed = True
        if self._scheduler is not None:
            await self._scheduler.stop()
        if self._stream is not None:
            await self._stream.stop()
        for ex in list(self._active.values()):
            if ex.task is not None:
                ex.task.cancel()
        pending = [ex.task for ex in self._active.values() if ex.task is not None]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for f, _ in self._handoff.values():
            self.io_pool.submit(f.close)
        self._handoff.clear()
        self.io_pool.shutdown(wait=True)
        if self._index is not None:
            self._index.close()
        if self._spares is not None:
            self._spares.close()
        if self._owner is not None:
            self._owner.release()

    @property
    def stream(self) -> EventStream:
        """The event stream (opened with the engine)."""
        self._opened()
        assert self._stream is not None
        return self._stream

    def subscribe(self, name: str, fn: Any, **options: Any) -> None:
        """Deliver every history event to ``fn(events)`` (sync or async), in batches.

        ``name`` is durable: a process that subscribes again under the same
        name receives what it missed. Options: ``batch_size``, ``batch_ms``,
        ``max_backoff``.
        """
        self.stream.add(CallbackSubscriber(name, fn, **options))

    def add_sink(self, sink: Subscriber) -> None:
        """Register an event sink such as ``HttpSink``."""
        self.stream.add(sink)

    def events_committed(
        self,
        workflow_id: str,
        written: tuple[str, str, list[tuple[int, EventRow]]] | None = None,
    ) -> None:
        """Called after each commit that wrote events; hands them to the stream.

        Args:
            workflow_id: The instance.
            written: ``(run_id, workflow_type, [(event_id, event)])`` when the
                caller knows exactly what it wrote (the executor does); the
                stream then needs no file read for them.
        """
        if self._stream is not None and self._stream.active:
            self._stream.committed(workflow_id, written)

    async def stream_read(
        self, workflow_id: str, after: int, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Read up to ``limit`` events after ``after`` for the stream; and whether more remain."""
        row = self.index.get(workflow_id)
        if row is None or row.file is None:
            return [], False
        try:
            rows: list[tuple[Any, ...]] = await self._on_file(
                workflow_id, lambda f: [] if f.deferred else f.read_events(after, limit + 1)
            )
        except (FileNotFoundError, IncompleteInstance):
            return [], False
        except StorageError as exc:
            log.error("event stream cannot read %s: %s", workflow_id, exc)
            return [], False
        more = len(rows) > limit
        return [to_wire(workflow_id, row.run_id, row.workflow_type, r) for r in rows[:limit]], more

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.io_pool, fn, *args)

    # -- helpers -------------------------------------------------------------------

    def now_us(self) -> int:
        """Current engine time in µs since the epoch."""
        return to_micros(self.clock.now())

    def _path(self, workflow_id: str) -> Path:
        """Return the instance file of ``workflow_id`` as the index records it.

        Raises:
            FileNotFoundError: The instance has no file (queued, or unknown).
        """
        row = self.index.get(workflow_id)
        if row is None or row.file is None:
            raise FileNotFoundError(f"no instance file for {workflow_id!r}")
        return self.instances_dir / row.file

    def _rel(self, inst: InstanceFile) -> str:
        return str(inst.path.relative_to(self.instances_dir))

    async def _take_spare(self) -> InstanceFile:
        assert self._spares is not None
        spares = self._spares
        ready = spares.take_ready()  # usually one is waiting: no thread hop
        if ready is not None:
            return ready
        return await self._io(spares.make)  # type: ignore[no-any-return]

    def _row_or_raise(self, workflow_id: str) -> IndexRow:
        validate_workflow_id(workflow_id)
        row = self.index.get(workflow_id)
        if row is None:
            raise WorkflowNotFound(f"no workflow with id {workflow_id!r}", workflow_id=workflow_id)
        return row

    def _live_row_or_raise(self, workflow_id: str) -> IndexRow:
        row = self._row_or_raise(workflow_id)
        if row.status in TERMINAL_STATUSES:
            raise WorkflowAlreadyFinished(
                f"workflow {workflow_id!r} has already finished ({row.status})",
                workflow_id=workflow_id,
                status=row.status,
            )
        return row

    def get_handle(self, workflow_id: str) -> WorkflowHandle:
        """Return a handle for an existing instance (checked lazily on use)."""
        return WorkflowHandle(self, validate_workflow_id(workflow_id))

    def _prepare(
        self,
        wf: WorkflowRef,
        input: Any,
        workflow_id: str | None,
        attributes: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Validate a new instance's arguments; return its index row (status unset)."""
        definition = self.registry.resolve(wf)
        wid = validate_workflow_id(
            workflow_id
            if workflow_id is not None
            else f"{definition.name[:100]}-{uuid.uuid4().hex}"
        )
        if not definition.takes_input and input is not None:
            raise InvalidArgument(f"workflow {definition.name!r} takes no input")
        input_text = serde.encode(
            input, what="workflow input", max_bytes=self.max_payload_bytes, workflow_id=wid
        )
        attrs = _check_attributes(attributes or {})
        return {
            "workflow_id": wid,
            "run_id": uuid.uuid4().hex,
            "workflow_type": definition.name,
            "parent_workflow_id": None,
            "input": input_text,
            "attributes": serde.encode(attrs, what="attributes"),
            "created_at": self.now_us(),
        }

    def _existing(
        self, wid: str, on_conflict: OnConflict, *, generated: bool = False
    ) -> WorkflowHandle | None:
        if on_conflict not in ("use_existing", "fail"):
            raise InvalidArgument("on_conflict must be 'use_existing' or 'fail'")
        # A generated id holds a fresh uuid4, so it is new: skip the index read
        # (~0.08 ms of start under load). The insert's OR IGNORE still checks.
        if generated or self.index.get(wid) is None:
            return None
        if on_conflict == "fail":
            raise WorkflowAlreadyExists(
                f"a workflow with id {wid!r} already exists", workflow_id=wid
            )
        return WorkflowHandle(self, wid)

    # -- start and run ---------------------------------------------------------------

    async def start(
        self,
        wf: WorkflowRef,
        input: Any = None,
        *,
        workflow_id: str | None = None,
        on_conflict: OnConflict = "use_existing",
        attributes: dict[str, Any] | None = None,
        parent_workflow_id: str | None = None,
    ) -> WorkflowHandle:
        """Queue an instance and return at once; the scheduler runs it.

        The queue entry is durable when this returns. Starting an id that
        exists returns the existing instance (or raises with ``on_conflict="fail"``).

        Raises:
            WorkflowNotFound: Unknown workflow type.
            InvalidArgument: Bad id, input that is not JSON, bad attributes.
            WorkflowAlreadyExists: The id exists and ``on_conflict="fail"``.
        """
        row = self._prepare(wf, input, workflow_id, attributes)
        wid = row["workflow_id"]
        existing = self._existing(wid, on_conflict, generated=workflow_id is None)
        if existing is not None:
            return existing
        row.update(status=Status.QUEUED.value, parent_workflow_id=parent_workflow_id)
        inserted = await self.index.write(IndexDB.insert_fn(row), durable=True)
        if not inserted:
            return self._existing(wid, on_conflict) or WorkflowHandle(self, wid)
        if self._scheduler is not None:
            self._scheduler.enqueue(wid)
        return WorkflowHandle(self, wid)

    async def run(
        self,
        wf: WorkflowRef,
        input: Any = None,
        *,
        workflow_id: str | None = None,
        on_conflict: OnConflict = "use_existing",
        attributes: dict[str, Any] | None = None,
    ) -> WorkflowHandle:
        """Run an instance inline until it completes or first pauses.

        Returns:
            A handle; ``await handle.status()`` tells which of the two happened.
        """
        row = self._prepare(wf, input, workflow_id, attributes)
        wid = row["workflow_id"]
        existing = self._existing(wid, on_conflict, generated=workflow_id is None)
        if existing is not None:
            return existing
        row.update(
            status=Status.RUNNING.value, started_at=row["created_at"], lease_owner=self.owner_id
        )
        spare = await self._take_spare()
        row["file"] = self._rel(spare)
        # The index arbitrates who creates an id; this commit need not be fsync'd
        # because the instance file written next is the durable record.
        inserted = await self.index.write(IndexDB.insert_fn(row))
        if not inserted:
            assert self._spares is not None
            self._spares.give_back(spare)
            return self._existing(wid, on_conflict) or WorkflowHandle(self, wid)
        await self._execute(wid, create=row, spare=spare)
        return WorkflowHandle(self, wid)

    def _file_row(self, row: dict[str, Any]) -> dict[str, Any]:
        keys = (
            "workflow_id",
            "run_id",
            "workflow_type",
            "status",
            "parent_workflow_id",
            "input",
            "attributes",
            "created_at",
            "started_at",
        )
        return {k: row.get(k) for k in keys}

    def _first_events(self, row: dict[str, Any], started: int) -> list[EventRow]:
        payload = serde.encode(
            {
                "input": serde.decode(row["input"]),
                "attributes": serde.decode(row["attributes"]) or {},
                "parent_workflow_id": row.get("parent_workflow_id"),
            },
            what="workflow input",
        )
        return [
            EventRow(EventType.WORKFLOW_QUEUED.value, row["created_at"], None, None, payload),
            EventRow(EventType.WORKFLOW_STARTED.value, started),
        ]

    # -- executing -----------------------------------------------------------------

    async def _open_file(
        self, wid: str, create: dict[str, Any] | None, spare: InstanceFile | None = None
    ) -> tuple[InstanceFile, InstanceState]:
        fresh: InstanceState | None = None
        file_row: dict[str, Any] = {}
        events: list[EventRow] = []
        if create is not None:
            started = create.get("started_at") or self.now_us()
            file_row = self._file_row(
                {**create, "status": Status.RUNNING.value, "started_at": started}
            )
            events = self._first_events(create, started)
            full_row = {
                "result": None,
                "error": None,
                "finished_at": None,
                "step_count": 0,
                "wake_at": None,
                "cancel_requested": 0,
                "cancel_reason": None,
                **file_row,
            }
            fresh = InstanceState(row=full_row, ops={}, last_event_id=len(events))
        if spare is not None:
            assert fresh is not None
            # The row and first events ride along with the first commit.
            spare.deferred = (file_row, events)
            return spare, fresh
        path = self._path(wid)
        handed = self._take_handoff(wid) if fresh is None else None

        def open_and_load() -> tuple[InstanceFile, InstanceState]:
            f = handed or InstanceFile.open(
                path, durability=self.durability, allow_incomplete=fresh is not None
            )
            try:
                if (
                    fresh is not None
                    and f.conn.execute("SELECT 1 FROM instance").fetchone() is None
                ):
                    # Assigned to a run that died before its first commit.
                    f.deferred = (file_row, events)
                    return f, fresh
                return f, f.load()
            except BaseException:
                f.close()
                raise

        return await self._io(open_and_load)  # type: ignore[no-any-return]

    async def _execute(
        self,
        wid: str,
        *,
        create: dict[str, Any] | None = None,
        spare: InstanceFile | None = None,
        resumed: bool = False,
        recovered: bool = False,
    ) -> Outcome | None:
        """Load (or create) an instance, run it, and mirror the outcome into the index."""
        if wid in self._active:
            return None
        file: InstanceFile | None = None
        try:
            file, state = await self._open_file(wid, create, spare)
        except (FileNotFoundError, IncompleteInstance):
            await self._mark_failed(wid, "instance file is missing", "MissingInstance")
            return None
        except CorruptInstance as exc:
            await self._quarantine(wid, exc)
            return None
        status = state.row["status"]
        if status in TERMINAL_STATUSES:
            file.close()
            await self._mirror(
                wid,
                Outcome(
                    status=status,
                    result=state.row["result"],
                    error=state.row["error"],
                    finished_at=state.row["finished_at"],
                    step_count=state.row["step_count"],
                ),
                state.row.get("parent_workflow_id"),
            )
            return None
        definition = self.registry.get(state.row["workflow_type"])
        if definition is None:
            file.close()
            # Keep the lease: a process that knows the type recovers it after we stop.
            log.warning(
                "cannot run %s: workflow type %r is not registered in this process",
                wid,
                state.row["workflow_type"],
            )
            return None
        ex = Execution(self, file, state, definition)
        if status == Status.QUEUED:  # file made early by a signal; starts now
            now = self.now_us()
            ex.buffer(
                events=[EventRow(EventType.WORKFLOW_STARTED.value, now)],
                updates={"status": Status.RUNNING.value, "started_at": now},
            )
        ctx = WorkflowContext(ex)
        self._active[wid] = ex
        try:
            ex.task = asyncio.get_running_loop().create_task(
                ex.run(
                    ctx,
                    resumed=resumed or status == Status.PAUSED,
                    recovered=recovered and status != Status.QUEUED,
                )
            )
            try:
                outcome = await asyncio.shield(ex.task)
            except asyncio.CancelledError:
                # Our caller was cancelled, not the instance: let it finish in the
                # background rather than leave a half-run execution behind.
                if not ex.task.done():
                    self._spawn(self._finish_detached(wid, ex))
                    file = None
                raise
        except CorruptInstance as exc:
            await self._quarantine(wid, exc)
            return None
        except WorkflowAlreadyFinished:
            outcome = Outcome(status=Status.TERMINATED)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("internal error running %s", wid)
            await self._mark_failed(wid, f"internal error: {exc}", type(exc).__name__)
            return None
        finally:
            if file is not None:
                self._active.pop(wid, None)
                self.io_pool.submit(_close_locked, file, ex.file_lock)
        if outcome.status == Status.TERMINATED:
            return outcome  # terminate() already mirrored it
        await self._mirror(wid, outcome, state.row.get("parent_workflow_id"))
        return outcome

    async def _finish_detached(self, wid: str, ex: Execution) -> None:
        assert ex.task is not None and ex.file is not None
        try:
            outcome = await ex.task
            if outcome.status != Status.TERMINATED:
                await self._mirror(wid, outcome, ex.row.get("parent_workflow_id"))
        except BaseException:  # shutdown; the instance is recovered on the next start
            pass
        finally:
            self._active.pop(wid, None)
            self.io_pool.submit(_close_locked, ex.file, ex.file_lock)

    async def _mirror(self, wid: str, outcome: Outcome, parent: str | None) -> None:
        """Copy an execution outcome into the index, wake waiters, arm timers.

        ``parent`` is the instance's parent id (None for none), from its row.
        """
        changes: dict[str, Any] = {
            "status": outcome.status,
            "wake_at": outcome.wake_at,
            "step_count": outcome.step_count,
            "lease_owner": None,
        }
        if outcome.attributes is not None:
            changes["attributes"] = outcome.attributes
        if outcome.last_event_id is not None:
            changes["events_upto"] = outcome.last_event_id
        if outcome.status in TERMINAL_STATUSES:
            changes["finished_at"] = outcome.finished_at
            changes["error"] = outcome.error
            changes["input"] = None  # the file holds it; keep the index small
        await self.index.write(IndexDB.update_fn(wid, changes))
        if outcome.status == Status.PAUSED and self._scheduler:
            if wid in self._wake_pending:
                # A signal or a child finished while this run was unwinding.
                self._wake_pending.discard(wid)
                self._scheduler.enqueue(wid, "due")
            elif outcome.wake_at is not None:
                self._scheduler.add_timer(wid, outcome.wake_at)
        if outcome.status in TERMINAL_STATUSES:
            self._wake_pending.discard(wid)
            if outcome.status == Status.COMPLETED and outcome.result is not None:
                self._remember_result(wid, outcome.result)
            self._notify(wid, parent)

    def _remember_result(self, wid: str, result_text: str) -> None:
        # Recent results stay in memory so result() right after completion does
        # not reopen the instance file; bounded by count and by size.
        if len(result_text) > 64 * 1024:
            return
        self._recent_results[wid] = result_text
        while len(self._recent_results) > 4096:
            self._recent_results.pop(next(iter(self._recent_results)))

    def _notify(self, wid: str, parent: str | None) -> None:
        """An instance finished: wake result() waiters and its parent (if any)."""
        for fut in self._waiters.pop(wid, []):
            if not fut.done():
                fut.set_result(None)
        if parent:
            self._wake(parent)

    def _wake(self, wid: str) -> None:
        """Resume a paused instance soon (a signal or a child result arrived)."""
        if wid in self._active:
            self._wake_pending.add(wid)
        elif self._scheduler is not None:
            self._scheduler.enqueue(wid, "due")

    async def _mark_failed(self, wid: str, reason: str, kind: str) -> None:
        error = serde.encode({"type": kind, "message": reason}, what="error")
        await self.index.write(
            IndexDB.update_fn(
                wid,
                {
                    "status": Status.FAILED.value,
                    "error": error,
                    "finished_at": self.now_us(),
                    "lease_owner": None,
                    "wake_at": None,
                },
            )
        )
        row = self.index.get(wid)
        self._notify(wid, row.parent_workflow_id if row is not None else None)

    async def _quarantine(self, wid: str, exc: CorruptInstance) -> None:
        path = self._path(wid)
        try:
            moved = await self._io(quarantine, path, self.quarantine_dir)
            where = f"; file moved to {moved}"
        except OSError as err:
            where = f"; could not quarantine: {err}"
        log.error("instance %s is corrupt: %s%s", wid, exc.message, where)
        await self._mark_failed(
            wid, f"instance file is corrupt: {exc.message}{where}", "CorruptInstance"
        )

    async def run_queued(self, wid: str) -> None:
        """Claim a queued instance and run it (the scheduler calls this)."""
        now = self.now_us()
        before = self.index.get(wid)
        if before is None or before.status != Status.QUEUED:
            return
        # A signal sent while it was queued may already have created its file.
        spare = None if before.file else await self._take_spare()
        changes: dict[str, Any] = {
            "status": Status.RUNNING.value,
            "started_at": now,
            "lease_owner": self.owner_id,
        }
        if spare is not None:
            changes["file"] = self._rel(spare)
        claimed = await self.index.write(
            IndexDB.update_fn(
                wid,
                changes,
                only_if_status=[Status.QUEUED.value],
                only_if_no_file=spare is not None,
            )
        )
        if not claimed:
            if spare is not None:
                assert self._spares is not None
                self._spares.give_back(spare)
                after = self.index.get(wid)
                if after is not None and after.status == Status.QUEUED and after.file:
                    # A signal gave it a file while we took a spare: run that file.
                    await self.run_queued(wid)
            return
        row = self.index.get(wid)
        if row is None:
            return
        if spare is None:
            await self._execute(wid)
            return
        create = _create_from_row(row, started_at=now)
        await self._execute(wid, create=create, spare=spare)

    async def run_due(self, wid: str, *, recovered: bool = False) -> None:
        """Claim a paused (or orphaned) instance and resume it (the scheduler calls this)."""
        if wid in self._active:
            return
        if recovered:
            row = self.index.get(wid)
            if row is None:
                return
            # The runner may have died before creating the file: create it then.
            create = None
            if row.input is not None:
                create = _create_from_row(row, started_at=row.started_at)
            spare = None
            if row.file is None:  # died between claiming and assigning a file
                spare = await self._take_spare()
                await self.index.write(IndexDB.update_fn(wid, {"file": self._rel(spare)}))
            await self._execute(wid, create=create, spare=spare, recovered=True)
            return
        claimed = await self.index.write(
            IndexDB.update_fn(
                wid,
                {"status": Status.RUNNING.value, "lease_owner": self.owner_id},
                only_if_status=[Status.PAUSED.value],
            )
        )
        if claimed:
            await self._execute(wid, resumed=True)

    # -- reading ---------------------------------------------------------------------

    async def describe(self, workflow_id: str) -> WorkflowInfo:
        """Return the instance's ``workflows`` row, with input, result and error.

        Raises:
            WorkflowNotFound: No such instance.
        """
        row = self._row_or_raise(workflow_id)
        if row.tier != "hot":
            return await self._archive_of(row).describe(row)
        file_row: dict[str, Any] | None = None
        if row.status != Status.QUEUED:
            path = self._path(workflow_id)
            try:
                file_row = await self._io(_read_file_row, path, self.durability)
            except (FileNotFoundError, IncompleteInstance):
                file_row = None
            except CorruptInstance as exc:
                if workflow_id not in self._active:
                    await self._quarantine(workflow_id, exc)
                row = self._row_or_raise(workflow_id)
        return _info(row, file_row)

    async def history(self, workflow_id: str) -> list[HistoryEvent]:
        """Return every event of the instance, in order.

        Raises:
            WorkflowNotFound: No such instance.
            CorruptInstance: The instance file was unreadable (now quarantined).
        """
        row = self._row_or_raise(workflow_id)
        if row.tier != "hot":
            return await self._archive_of(row).history(row)
        path = self._path(workflow_id)
        try:
            rows = await self._io(_read_events, path, self.durability)
        except IncompleteInstance:
            rows = None  # started, first commit not yet done: only the queue entry exists
        except FileNotFoundError as exc:
            if row.status != Status.QUEUED:
                raise StorageError(
                    f"the instance file of {workflow_id!r} is missing "
                    f"(status {row.status}: {row.error})",
                    workflow_id=workflow_id,
                    url=str(path),
                ) from exc
            rows = None
        except CorruptInstance as exc:
            if workflow_id not in self._active:
                await self._quarantine(workflow_id, exc)
            raise
        if rows is None:
            return [
                HistoryEvent(
                    workflow_id,
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
            ]
        return [
            HistoryEvent(
                workflow_id,
                row.run_id,
                r[0],
                r[1],
                from_micros(r[2]),
                r[3],
                r[4],
                serde.decode(r[5]),
                row.workflow_type,
            )
            for r in rows
        ]

    async def status(self, workflow_id: str) -> str:
        """Return the instance's status."""
        return self._row_or_raise(workflow_id).status

    async def result(self, workflow_id: str, timeout: float | None = None) -> Any:
        """Wait for the instance to finish and return its result.

        Raises:
            ResultTimeout: ``timeout`` seconds passed first.
            WorkflowFailed: It failed; ``cause`` holds the recorded error.
            WorkflowCancelledError / WorkflowTerminatedError: It was stopped.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            row = self._row_or_raise(workflow_id)
            if row.status in TERMINAL_STATUSES:
                return await self._terminal_result(row)
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(workflow_id, []).append(fut)
            row = self._row_or_raise(workflow_id)
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, wait)

    async def _terminal_result(self, row: IndexRow) -> Any:
        wid = row.workflow_id
        err = serde.decode(row.error) or {}
        if row.status == Status.COMPLETED:
            cached = self._recent_results.get(wid)
            if cached is not None:
                return serde.decode(cached)
            info = await self.describe(wid)
            return info.result
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

    # -- signals, queries, children ----------------------------------------------------

    async def signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Deliver a signal to an instance's inbox (durable when this returns).

        Raises:
            WorkflowNotFound: No such instance.
            WorkflowAlreadyFinished: It has finished; the signal was not stored.
            PayloadError: The payload is not JSON or is too large.
        """
        row = self._live_row_or_raise(workflow_id)
        if not isinstance(name, str) or not name:
            raise InvalidArgument("signal name must be a non-empty string")
        text = serde.encode(
            payload,
            what=f"payload of signal {name!r}",
            max_bytes=self.max_payload_bytes,
            workflow_id=workflow_id,
        )
        now = self.now_us()
        event = EventRow(EventType.SIGNAL_RECEIVED.value, now, name, None, text)
        if row.file is None:
            if await self._signal_queued(row, event, name, text):
                return
            # Not queued any more, or another caller gave it a file first.
            self._live_row_or_raise(workflow_id)
        await self._write_file(
            workflow_id, hand_off=True, events=[event], add_signals=[(name, text, now)]
        )
        status = self.index.get(workflow_id)
        if workflow_id in self._active or (status and status.status == Status.PAUSED):
            self._wake(workflow_id)

    async def _signal_queued(self, row: IndexRow, event: EventRow, name: str, text: str) -> bool:
        """Give a queued instance its file now, holding the signal.

        Returns False, storing nothing, if it stopped being queued meanwhile
        or another caller gave it a file first.
        """
        create = _create_from_row(row)
        f = await self._take_spare()
        f.deferred = (
            self._file_row({**create, "status": Status.QUEUED.value}),
            self._first_events(create, row.created_at)[:1],
        )
        await self._io(
            lambda: f.commit(events=[event], add_signals=[(name, text, event.event_time)])
        )
        done = await self.index.write(
            IndexDB.update_fn(
                row.workflow_id,
                {"file": self._rel(f)},
                only_if_status=[Status.QUEUED.value],
                only_if_no_file=True,
            )
        )
        self.io_pool.submit(f.close)
        if not done:
            self.io_pool.submit(delete_instance_file, f.path)
        else:
            self.events_committed(row.workflow_id)
        return bool(done)

    async def query(self, workflow_id: str, name: str, *args: Any) -> Any:
        """Answer a query by replaying the instance's history; nothing runs or changes.

        Raises:
            WorkflowNotFound: No such instance, or its type is not registered here.
            UnknownQuery: No handler named ``name``; the error lists the known ones.
        """
        row = self._row_or_raise(workflow_id)
        definition = self.registry.get(row.workflow_type)
        if definition is None:
            known = self.registry.names()
            raise WorkflowNotFound(
                f"cannot query {workflow_id!r}: workflow type {row.workflow_type!r} is not "
                f"registered here; known types: {', '.join(known) or '(none)'}",
                workflow_id=workflow_id,
                known_types=known,
            )
        serde.encode(list(args), what="query arguments", max_bytes=self.max_payload_bytes)
        state = await self._query_state(row)
        ex = Execution(self, None, state, definition, query_mode=True)
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

    def _archive_of(self, row: IndexRow) -> ArchiveSource:
        if self.archive is None:
            raise StorageError(
                f"workflow {row.workflow_id!r} is in the {row.tier} tier, and this engine has "
                "no archive reader (use api.Tierflow)",
                workflow_id=row.workflow_id,
            )
        return self.archive

    async def _query_state(self, row: IndexRow) -> InstanceState:
        if row.tier != "hot":
            source = self._archive_of(row)
            return state_from_history(await source.describe(row), await source.history(row))
        if row.file is not None:
            path = self.instances_dir / row.file

            def load() -> InstanceState:
                f = InstanceFile.open(path, durability=self.durability)
                try:
                    return f.load()
                finally:
                    f.close()

            try:
                return await self._io(load)  # type: ignore[no-any-return]
            except (IncompleteInstance, FileNotFoundError):
                pass
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

    def workflow_type_name(self, wf: Any) -> str:
        """Resolve a workflow reference (definition, function or name) to its type name."""
        return self.registry.resolve(wf).name

    async def start_child(self, type_name: str, input: Any, child_id: str, parent_id: str) -> None:
        """Queue a child instance of ``parent_id`` (idempotent by ``child_id``)."""
        await self.start(type_name, input, workflow_id=child_id, parent_workflow_id=parent_id)

    async def child_outcome(self, child_id: str) -> tuple[str, Any, Any] | None:
        """Return ``(status, result, error)`` once a child has finished, else None."""
        row = self.index.get(child_id)
        if row is None:
            return ("failed", None, {"type": "WorkflowNotFound", "message": "child is missing"})
        if row.status not in TERMINAL_STATUSES:
            return None
        if row.status == Status.COMPLETED:
            cached = self._recent_results.get(child_id)
            result = (
                serde.decode(cached)
                if cached is not None
                else (await self.describe(child_id)).result
            )
            return (row.status, result, None)
        return (row.status, None, serde.decode(row.error) or {})

    # -- cancel and terminate ----------------------------------------------------------

    async def cancel(self, workflow_id: str, reason: str | None = None) -> str:
        """Ask an instance to stop; returns its status after the request.

        A queued or paused instance is cancelled at once (a paused one runs
        its cleanup code first); a running one gets ``WorkflowCancelled`` at
        its next durable operation.

        Raises:
            WorkflowNotFound: No such instance.
            WorkflowAlreadyFinished: It had already finished; nothing changed.
        """
        row = self._live_row_or_raise(workflow_id)
        if (
            row.status == Status.QUEUED
            and row.file is None
            and await self._finish_queued(
                row, Status.CANCELLED, EventType.WORKFLOW_CANCELLED, reason
            )
        ):
            return Status.CANCELLED.value
        await self._write_file(
            workflow_id, hand_off=True, updates={"cancel_requested": 1, "cancel_reason": reason}
        )
        await self.index.write(IndexDB.update_fn(workflow_id, {"cancel_requested": 1}))
        ex = self._active.get(workflow_id)
        if ex is not None:
            ex.cancel_requested, ex.cancel_reason = True, reason
        # Children after the parent's own flag: a child's end wakes the parent,
        # which must then see its cancellation rather than the child's failure.
        await self._cancel_children(workflow_id, reason)
        if ex is not None:
            return Status.RUNNING.value
        # Paused (or queued with a file made by a signal): run it now so the
        # cancellation and the workflow's cleanup code take effect at once.
        claimed = await self.index.write(
            IndexDB.update_fn(
                workflow_id,
                {"status": Status.RUNNING.value, "lease_owner": self.owner_id},
                only_if_status=[Status.PAUSED.value, Status.QUEUED.value],
            )
        )
        if claimed:
            await self._execute(workflow_id, resumed=True)
        return await self.status(workflow_id)

    async def _cancel_children(self, workflow_id: str, reason: str | None) -> None:
        for child in self.index.children_of(workflow_id):
            if child.status not in TERMINAL_STATUSES:
                with contextlib.suppress(WorkflowAlreadyFinished, WorkflowNotFound):
                    await self.cancel(
                        child.workflow_id, reason or f"parent {workflow_id} cancelled"
                    )

    async def terminate(self, workflow_id: str, reason: str | None = None) -> None:
        """Stop an instance now; no more of its workflow code runs.

        A step already executing on a thread cannot be interrupted; its
        result is discarded.

        Raises:
            WorkflowNotFound: No such instance.
            WorkflowAlreadyFinished: It had already finished; nothing changed.
        """
        row = self._live_row_or_raise(workflow_id)
        if (
            row.status == Status.QUEUED
            and row.file is None
            and await self._finish_queued(
                row, Status.TERMINATED, EventType.WORKFLOW_TERMINATED, reason
            )
        ):
            return
        now = self.now_us()
        error = serde.encode(
            {"type": "terminated", "message": reason or "terminated"}, what="error"
        )
        last_event = await self._write_file(
            workflow_id,
            events=[
                EventRow(
                    EventType.WORKFLOW_TERMINATED.value,
                    now,
                    None,
                    None,
                    serde.encode({"reason": reason}, what="reason"),
                )
            ],
            updates={
                "status": Status.TERMINATED.value,
                "finished_at": now,
                "error": error,
                "wake_at": None,
            },
        )
        ex = self._active.get(workflow_id)
        if ex is not None:
            ex.terminated = True
            if ex.task is not None:
                ex.task.cancel()
        await self.index.write(
            IndexDB.update_fn(
                workflow_id,
                {
                    "status": Status.TERMINATED.value,
                    "finished_at": now,
                    "error": error,
                    "wake_at": None,
                    "lease_owner": None,
                    "input": None,
                    "events_upto": last_event,
                },
            )
        )
        self._notify(workflow_id, row.parent_workflow_id)

    async def _finish_queued(
        self, row: IndexRow, status: Status, etype: EventType, reason: str | None
    ) -> bool:
        """End a queued instance before it ever ran.

        Returns False, changing nothing, if it was claimed by a run or given a
        file by a signal meanwhile.
        """
        now = self.now_us()
        error = serde.encode(
            {"type": status.value, "message": reason or status.value}, what="error"
        )
        create = _create_from_row(row)
        file_row = self._file_row({**create, "status": status.value})
        file_row.update(finished_at=now, error=error)
        events = self._first_events(create, now)[:1]
        events.append(
            EventRow(etype.value, now, None, None, serde.encode({"reason": reason}, what="reason"))
        )
        # File first, index second: the index never points at a file that is not there.
        f = await self._take_spare()
        f.deferred = (file_row, events)
        last_event = await self._io(lambda: f.commit(allow_finished=True))
        done = await self.index.write(
            IndexDB.update_fn(
                row.workflow_id,
                {
                    "status": status.value,
                    "finished_at": now,
                    "error": error,
                    "file": self._rel(f),
                    "input": None,
                    "events_upto": last_event,
                },
                only_if_status=[Status.QUEUED.value],
                only_if_no_file=True,
            )
        )
        self.io_pool.submit(f.close)
        if not done:  # it was claimed, or a signal gave it a file, meanwhile; ours is unused
            self.io_pool.submit(delete_instance_file, f.path)
            return False
        self.events_committed(row.workflow_id)
        self._notify(row.workflow_id, row.parent_workflow_id)
        return True

    async def _on_file(
        self, wid: str, fn: Callable[[InstanceFile], Any], *, hand_off: bool = False
    ) -> Any:
        """Run ``fn`` on an instance's file, on an I/O thread; return its result.

        A running execution's connection is shared, under its lock: its file
        may not have had its first commit yet, and this keeps writes ordered.
        If it closed meanwhile (or none runs), the file is opened for the call.

        Args:
            wid: The instance.
            fn: What to do with the file.
            hand_off: Keep a file this call opened for the execution about to
                resume the instance (see :meth:`_hand_off`) instead of closing it.
        """
        path = self._path(wid)
        ex = self._active.get(wid)

        def go() -> tuple[Any, InstanceFile | None]:
            if ex is not None and ex.file is not None:
                with ex.file_lock:
                    if not ex.file.closed:
                        return fn(ex.file), None
            f = InstanceFile.open(path, durability=self.durability)
            try:
                result = fn(f)
            except BaseException:
                f.close()
                raise
            if hand_off:
                return result, f
            f.close()
            return result, None

        result, opened = await self._io(go)
        if opened is not None:
            self._hand_off(wid, opened)
        return result

    def _hand_off(self, wid: str, f: InstanceFile) -> None:
        """Keep a file a signal or cancel opened for the resume it is about to trigger.

        Closing it would checkpoint its WAL (two fsyncs) and the resume would
        then open it again: ~1.3 ms of every signal-to-resume. A file no
        resume takes within a second (the instance runs elsewhere, or was
        claimed or terminated meanwhile) is closed.
        """
        previous = self._handoff.pop(wid, None)
        if previous is not None:
            self.io_pool.submit(previous[0].close)
        if len(self._handoff) >= _HANDOFF_MAX:  # bounded: each holds a file open
            self.io_pool.submit(f.close)
            return
        self._handoff[wid] = (f, time.monotonic())
        asyncio.get_running_loop().call_later(_HANDOFF_TTL, self._expire_handoffs)

    def _expire_handoffs(self) -> None:
        if self._closed:
            return  # aclose closes what is left
        now = time.monotonic()
        for wid, (f, at) in list(self._handoff.items()):
            # Each entry has its own timer, due when it is _HANDOFF_TTL old; half
            # that as the cut means timer jitter cannot leave one behind.
            if now - at >= _HANDOFF_TTL / 2:
                del self._handoff[wid]
                self.io_pool.submit(f.close)

    def _take_handoff(self, wid: str) -> InstanceFile | None:
        entry = self._handoff.pop(wid, None)
        return None if entry is None else entry[0]

    async def _write_file(self, wid: str, *, hand_off: bool = False, **kwargs: Any) -> int:
        """Commit to an instance's file from outside its execution; return the last event id.

        ``hand_off`` as for :meth:`_on_file`.
        """
        try:
            last: int = await self._on_file(wid, lambda f: f.commit(**kwargs), hand_off=hand_off)
            self.events_committed(wid)
            return last
        except WorkflowAlreadyFinished as exc:
            raise WorkflowAlreadyFinished(
                f"workflow {wid!r} has already finished ({exc.status})",
                workflow_id=wid,
                status=exc.status,
            ) from None
        except CorruptInstance as exc:
            await self._quarantine(wid, exc)
            raise

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
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """List instances from the index, newest first, with cursor paging.

        Rows come from the index alone (no instance file is opened), so
        ``input``, ``result`` and ``error`` are None except ``error`` of failed
        instances; use ``describe`` for the full row.
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
                types.append(ref if isinstance(ref, str) else self.registry.resolve(ref).name)
        rows, next_cursor = self.index.list(
            status=statuses or None,
            workflow_type=types or None,
            attributes=attributes,
            parent_workflow_id=parent_workflow_id,
            tier=[tier] if isinstance(tier, str) else (list(tier) if tier else None),
            created_after=None if created_after is None else to_micros(created_after.timestamp()),
            created_before=None
            if created_before is None
            else to_micros(created_before.timestamp()),
            cursor=cursor,
            limit=limit,
        )
        return Page([_info(r, None) for r in rows], next_cursor)


def _create_from_row(row: IndexRow, started_at: int | None = None) -> dict[str, Any]:
    """What ``_execute(create=...)`` needs to create an instance's file from its index row."""
    create = {
        "workflow_id": row.workflow_id,
        "run_id": row.run_id,
        "workflow_type": row.workflow_type,
        "parent_workflow_id": row.parent_workflow_id,
        "input": row.input,
        "attributes": row.attributes,
        "created_at": row.created_at,
    }
    if started_at is not None:
        create["started_at"] = started_at
    return create


def _check_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgument("attribute names must be non-empty strings")
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, str | int | float | bool):
            out[key] = value
        else:
            raise InvalidArgument(
                f"attribute {key!r} has type {type(value).__name__}; "
                "use str, int, float, bool or datetime"
            )
    return out


def _close_locked(file: InstanceFile, lock: threading.Lock) -> None:
    # Never close a connection another thread is using: that crashes SQLite.
    with lock:
        file.close()


def _read_file_row(path: Path, durability: str) -> dict[str, Any]:
    f = InstanceFile.open(path, durability=durability)
    try:
        return f.read_row()
    finally:
        f.close()


def _read_events(path: Path, durability: str) -> list[tuple[Any, ...]]:
    f = InstanceFile.open(path, durability=durability)
    try:
        return f.read_events()
    finally:
        f.close()


def _info(row: IndexRow, file_row: dict[str, Any] | None) -> WorkflowInfo:
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
