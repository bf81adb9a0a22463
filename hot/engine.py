"""The hot-tier engine: starts instances and composes the parts that run them.

``Engine`` owns the data directory's ``hot/`` part and wires together what
each part owns:

* :class:`~tierflow.hot.runtime.Runtime`: settings, paths, the index, the
  owner lock, spare files, I/O threads;
* :class:`~tierflow.hot.instances.Instances`: running instances and the
  file hand-off;
* :class:`~tierflow.hot.control.Control`: signals, cancel, terminate;
* :class:`~tierflow.hot.reads.Reads`: describe, history, result, query,
  list, through a :class:`~tierflow.hot.router.TierRouter` keyed by tier;
* :class:`~tierflow.hot.scheduler.Scheduler` and the event stream.

``tierflow.Tierflow`` composes an ``Engine`` with the other tiers: it
registers their readers on :attr:`Engine.router`. Everything here is async;
SQLite work on instance files runs on the I/O threads so fsyncs overlap.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from tierflow.hot import serde
from tierflow.hot.authoring import Registry, WorkflowDefinition, WorkflowFn
from tierflow.hot.clock import Clock
from tierflow.hot.control import Control
from tierflow.hot.creation import check_attributes
from tierflow.hot.delegate import forward
from tierflow.hot.errors import InvalidArgument, StorageError, WorkflowAlreadyExists
from tierflow.hot.fork import plan_fork, write_fork
from tierflow.hot.handle import WorkflowHandle
from tierflow.hot.ids import validate_workflow_id
from tierflow.hot.index import IndexDB
from tierflow.hot.instances import Instances
from tierflow.hot.iothreads import IoThreads
from tierflow.hot.models import HistoryEvent, Status, WorkflowInfo
from tierflow.hot.notify import ChangeKind
from tierflow.hot.options import Durability, EngineOptions
from tierflow.hot.reads import HotReader, Page, Reads, WorkflowRef
from tierflow.hot.records import EventRow
from tierflow.hot.replay import ReplayEnv, ReplayResult, replay_events
from tierflow.hot.router import Tier, TierRouter
from tierflow.hot.runtime import Runtime
from tierflow.hot.scheduler import Scheduler
from tierflow.hot.stream import CallbackSubscriber, EventStream, Subscriber

__all__ = ["Engine", "Page"]

OnConflict = Literal["use_existing", "fail"]
_T = TypeVar("_T")


class Engine:
    """Durable execution on per-instance SQLite files.

    Args:
        data_dir: Root of everything tierflow stores; ``hot/`` lives inside.
        workflows: The workflow definitions this process can run.
        options: How the engine runs (durability, concurrency, recovery, waits,
            payload size); see :class:`~tierflow.hot.options.EngineOptions`.
        clock: Time source for timers and timestamps (inject ``ManualClock`` in tests).
        event_sinks: Subscribers of the event stream (``HttpSink``, ...).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = "./tierflow-data",
        workflows: Sequence[WorkflowDefinition | WorkflowFn] = (),
        *,
        options: EngineOptions | None = None,
        clock: Clock | None = None,
        event_sinks: Sequence[Subscriber] = (),
    ) -> None:
        self.registry = Registry(workflows)
        self.runtime = Runtime(data_dir, self.registry, options or EngineOptions(), clock=clock)
        rt = self.runtime
        self.instances = Instances(rt, self)
        self.control = Control(rt, self.instances)
        self.router = TierRouter(locate=lambda wid: rt.index.find(wid))
        self.router.register(Tier.HOT, HotReader(rt, self.instances))
        self.reads = Reads(rt, self.instances, self.router, self)
        self._scheduler: Scheduler | None = None
        self._stream: EventStream | None = None
        self._initial_subscribers = list(event_sinks)

    # -- settings and resources (the runtime's, for callers and ExecutionEnv) -----------

    @property
    def data_dir(self) -> Path:
        """Root of everything tierflow stores."""
        return self.runtime.data_dir

    @property
    def hot_dir(self) -> Path:
        """The hot tier's directory (``<data_dir>/hot``)."""
        return self.runtime.hot_dir

    @property
    def instances_dir(self) -> Path:
        """Where instance files live."""
        return self.runtime.instances_dir

    @property
    def durability(self) -> Durability:
        """``"full"`` or ``"normal"``."""
        return self.runtime.durability

    @property
    def clock(self) -> Clock:
        """The engine's time source."""
        return self.runtime.clock

    @property
    def io_pool(self) -> IoThreads:
        """The I/O threads."""
        return self.runtime.io_pool

    @property
    def options(self) -> EngineOptions:
        """The options this engine runs with."""
        return self.runtime.options

    @property
    def max_payload_bytes(self) -> int:
        """Largest JSON input, result or signal accepted."""
        return self.runtime.options.max_payload_bytes

    @property
    def inline_sleep_threshold(self) -> float:
        """Waits up to this many seconds stay in memory."""
        return self.runtime.options.inline_sleep_threshold

    @property
    def max_concurrency(self) -> int:
        """Instances the scheduler runs at once."""
        return self.runtime.options.max_concurrency

    @property
    def owner_id(self) -> str:
        """This process's owner id (holder of leases)."""
        return self.runtime.owner_id

    @property
    def index(self) -> IndexDB:
        """The instance index (opened on first use); its public API serves other layers."""
        self.open()
        return self.runtime.index

    @property
    def scheduler(self) -> Scheduler | None:
        """The background scheduler, once started."""
        return self._scheduler

    async def io(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run blocking ``fn(*args)`` on the engine's I/O threads and return its result."""
        return await self.runtime.io(fn, *args)

    def now_us(self) -> int:
        """Current engine time in µs since the epoch."""
        return self.runtime.now_us()

    def instance_path(self, workflow_id: str) -> Path:
        """The instance file of a hot instance (for operators and tests; never write it).

        Raises:
            FileNotFoundError: The instance has no file (queued, archived or unknown).
        """
        return self.runtime.path(workflow_id)

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Create directories, open the index and take an owner identity."""
        self.runtime.open()  # idempotent; raises once the engine is closed
        if self._stream is not None:
            return
        self._stream = EventStream(self.runtime.index, self.instances.read_events_for_stream)
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
            self.open()
            self._scheduler = Scheduler(self.runtime, self.instances)
            self.instances.wakeups = self._scheduler
            await self._scheduler.start()
            self.stream.start()

    async def aclose(self) -> None:
        """Stop the scheduler and running executions; they resume on the next start."""
        if self.runtime.closed:
            return
        self.runtime.closed = True
        if self._scheduler is not None:
            await self._scheduler.stop()
        if self._stream is not None:
            await self._stream.stop()
        await self.instances.close()
        self.runtime.close()

    # -- the event stream --------------------------------------------------------------

    @property
    def stream(self) -> EventStream:
        """The event stream (opened with the engine)."""
        self.open()
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

    def forget(self, workflow_ids: Sequence[str]) -> None:
        """Drop what this process holds in memory of these instances (they were erased).

        Recent results, files held open for a resume, and events or cursors
        pending on the event stream; the index and the files are erased by
        whoever calls this (``tierflow.tiering.compliance``).
        """
        self.instances.forget(workflow_ids)
        if self._stream is not None:
            self._stream.forget(workflow_ids)

    # -- starting ----------------------------------------------------------------------

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
        # Both ids from one read of the OS's random source: each os.urandom gives up
        # the GIL, and on a loaded loop winning it back costs more than the read.
        random_bytes = os.urandom(32)
        run_id = uuid.UUID(bytes=random_bytes[:16], version=4).hex
        wid = validate_workflow_id(
            workflow_id
            if workflow_id is not None
            else f"{definition.name[:100]}-{uuid.UUID(bytes=random_bytes[16:], version=4).hex}"
        )
        if not definition.takes_input and input is not None:
            raise InvalidArgument(f"workflow {definition.name!r} takes no input")
        input_text = serde.encode(
            input, what="workflow input", max_bytes=self.max_payload_bytes, workflow_id=wid
        )
        attrs = check_attributes(attributes or {})
        return {
            "workflow_id": wid,
            "run_id": run_id,
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
        insert = IndexDB.insert_fn(row)
        # Other processes (workers that know the type) learn of it from the feed.
        announce = self.runtime.announce_fn(wid, row["workflow_type"], ChangeKind.QUEUED)

        def insert_and_announce(conn: sqlite3.Connection) -> bool:
            if not insert(conn):
                return False
            announce(conn)
            return True

        try:
            inserted = await self.index.write(insert_and_announce, durable=True)
        except StorageError:
            # The row may be committed and visible though its sync failed: run it as any
            # queued row (run_queued claims only a row that exists and is still queued),
            # so a caller's retry with the same id finds it running, not stuck.
            if self._scheduler is not None:
                self._scheduler.enqueue(wid)
            raise
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
        rt = self.runtime
        spare = await rt.take_spare()
        row["file"] = rt.rel(spare)
        # The index arbitrates who creates an id; this commit need not be fsync'd
        # because the instance file written next is the durable record.
        inserted = await self.index.write(IndexDB.insert_fn(row))
        if not inserted:
            rt.give_back(spare)
            return self._existing(wid, on_conflict) or WorkflowHandle(self, wid)
        await self.instances.execute(wid, create=row, spare=spare)
        return WorkflowHandle(self, wid)

    # -- what executions need (ExecutionEnv) -------------------------------------------

    def workflow_type_name(self, wf: Any) -> str:
        """Resolve a workflow reference (definition, function or name) to its type name."""
        return self.registry.resolve(wf).name

    async def start_child(self, type_name: str, input: Any, child_id: str, parent_id: str) -> None:
        """Queue a child instance of ``parent_id`` (idempotent by ``child_id``)."""
        await self.start(type_name, input, workflow_id=child_id, parent_workflow_id=parent_id)

    async def child_outcome(self, child_id: str) -> tuple[str, Any, Any] | None:
        """Return ``(status, result, error)`` once a child has finished, else None."""
        return await self.reads.child_outcome(child_id)

    # -- reads (from any tier) and control (hot instances) -----------------------------

    async def describe(self, workflow_id: str) -> WorkflowInfo:
        """Return the instance's ``workflows`` row, with input, result and error.

        Raises:
            WorkflowNotFound: No such instance.
        """
        return await self.reads.describe(workflow_id)

    async def history(self, workflow_id: str) -> list[HistoryEvent]:
        """Return every event of the instance, in order, from whichever tier holds it.

        Raises:
            WorkflowNotFound: No such instance.
            CorruptInstance: The instance file was unreadable (now quarantined).
        """
        return await self.reads.history(workflow_id)

    iter_history = forward("reads", Reads.iter_history)

    async def status(self, workflow_id: str) -> str:
        """Return the instance's status."""
        return await self.reads.status(workflow_id)

    async def result(self, workflow_id: str, timeout: float | None = None) -> Any:
        """Wait for the instance to finish and return its result (see ``Reads.result``)."""
        return await self.reads.result(workflow_id, timeout)

    async def query(self, workflow_id: str, name: str, *args: Any) -> Any:
        """Answer a query by replaying the instance's history (see ``Reads.query``)."""
        return await self.reads.query(workflow_id, name, *args)

    async def replay(self, workflow_id: str) -> ReplayResult:
        """Re-run today's code against the recorded history; nothing runs or is written.

        The history comes from whichever tier holds the instance (see
        ``tierflow.hot.replay``).

        Raises:
            WorkflowNotFound: No such instance, or its type is not registered here.
            NonDeterminismError: Code and history disagree (``event_id``,
                ``expected``, ``got`` say where and how).
        """
        row = self.runtime.row_or_raise(workflow_id)
        definition = self.registry.resolve(row.workflow_type)
        events = await self.router.history(row)
        env = ReplayEnv(self.clock, self.max_payload_bytes)
        return await replay_events(definition, events, tier=row.tier, env=env)

    async def fork(
        self, source_id: str, at_event: int, workflow_id: str | None = None
    ) -> WorkflowHandle:
        """Start a new hot instance from ``source_id``'s history up to ``at_event``.

        Operations recorded up to ``at_event`` return their recorded results;
        the rest runs live, inline until the fork completes or first pauses
        (like ``run``). The fork carries the attributes ``forked_from`` and
        ``forked_at_event`` (see ``tierflow.hot.fork``).

        Raises:
            WorkflowNotFound: No such instance, or its type is not registered here.
            InvalidArgument: ``at_event`` is not a step boundary of its history.
            WorkflowAlreadyExists: ``workflow_id`` is taken.
        """
        row = self.runtime.row_or_raise(source_id)
        self.registry.resolve(row.workflow_type)
        wid = validate_workflow_id(
            workflow_id if workflow_id is not None else f"{source_id[:200]}-fork-{uuid.uuid4().hex}"
        )
        now = self.now_us()
        plan = plan_fork(source_id, await self.router.history(row), at_event, now)
        await write_fork(self.runtime, row, plan, wid, now)
        await self.instances.execute(wid)
        return WorkflowHandle(self, wid)

    list = forward("reads", Reads.list)

    async def signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Deliver a signal (durable when this returns; see ``Control.signal``)."""
        await self.control.signal(workflow_id, name, payload)

    async def cancel(self, workflow_id: str, reason: str | None = None) -> str:
        """Ask an instance to stop; returns its status after the request (see ``Control``)."""
        return await self.control.cancel(workflow_id, reason)

    async def terminate(self, workflow_id: str, reason: str | None = None) -> None:
        """Stop an instance now; no more of its workflow code runs (see ``Control``)."""
        await self.control.terminate(workflow_id, reason)
