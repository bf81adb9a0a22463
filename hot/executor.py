"""Runs one workflow instance: replays its records, executes what is new.

An :class:`Execution` drives the user's ``async def`` from the top every time
the instance is (re)loaded. Durable operations are numbered by position
(``seq``); an operation with a record returns the recorded outcome without
running anything, and the first operation without one runs for real and is
recorded. This is the replay model of Temporal and DBOS: code may be re-run,
side effects inside steps are not.

A long wait (timer, retry backoff, signal) *suspends* the instance: a private
``BaseException`` unwinds the workflow, the wait is committed with
``workflow.paused``, and the coroutine is dropped, so a paused instance costs
a row in the index and nothing in memory. Short timers (under
``inline_sleep_threshold``) are recorded durably but awaited in memory.

Writes go through :meth:`Execution.commit`, which writes the SQLite
transaction on the event loop and makes it durable with an fdatasync on the
engine's I/O thread pool (see ``InstanceFile.use_split_sync``). Records that
carry no externally visible effect (``timer.fired``, ``workflow.resumed``, a
step's result, a signal taken from the inbox) are buffered and ride along with
the next commit; recorded values (``ctx.now()``, ``ctx.uuid()``, a signal's
payload) are made durable before the next step or child start, so a side
effect never sees a value that a replay could change.

Why this module is longer than the others (~700 lines): :class:`Execution`
is the one owner of a running instance's state (its counters, cancel and
terminate flags, buffered records, task), and ``tests/hot/test_state_owner.py``
fails on an assignment to those fields anywhere but here. The write buffer
(``_Pending``, ``_Batch``) takes, commits and restores that state, so it
lives beside it; splitting it off would spread the state over two modules.
What could go elsewhere has: the durable operations are in
``hot/context.py`` and ``hot/steps.py``, operation keys in ``hot/branches.py``.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tierflow.hot import serde
from tierflow.hot.authoring import WorkflowDefinition
from tierflow.hot.branches import Branches
from tierflow.hot.clock import Clock
from tierflow.hot.errors import (
    NonDeterminismError,
    PayloadError,
    WorkflowCancelled,
    error_info,
)
from tierflow.hot.iothreads import IoThreads
from tierflow.hot.models import EventType, Status, to_micros
from tierflow.hot.records import EventRow, InstanceState, OpKind, OpRecord, OpStatus
from tierflow.hot.store import InstanceFile

__all__ = ["Execution", "ExecutionEnv", "Outcome", "Suspend", "Terminated"]


# Statuses of a record a query replay may return (a settled outcome, or a started child).
_SETTLED = (OpStatus.COMPLETED, OpStatus.FAILED, OpStatus.CANCELLED, OpStatus.STARTED)


class Suspend(BaseException):
    """Unwinds a workflow that must wait durably; carries what to record."""

    def __init__(self, wake_at: int | None, reason: str) -> None:
        super().__init__(reason)
        self.wake_at = wake_at
        self.reason = reason


class Terminated(BaseException):
    """Raised at any durable operation of an instance that was terminated."""


class QueryStop(BaseException):
    """Stops a query replay at the first operation with no record."""


class ExecutionEnv(Protocol):
    """What an execution needs from its engine."""

    @property
    def clock(self) -> Clock:
        """The time source."""
        ...

    @property
    def io_pool(self) -> IoThreads:
        """Threads for blocking work (fsyncs, sync steps)."""
        ...

    @property
    def max_payload_bytes(self) -> int:
        """Largest JSON value accepted."""
        ...

    @property
    def inline_sleep_threshold(self) -> float:
        """Waits up to this many seconds stay in memory."""
        ...

    def workflow_type_name(self, wf: Any) -> str:
        """Resolve a workflow reference to its registered type name."""
        ...

    async def start_child(self, type_name: str, input: Any, child_id: str, parent_id: str) -> None:
        """Queue a child instance (idempotent)."""
        ...

    async def child_outcome(self, child_id: str) -> tuple[str, Any, Any] | None:
        """Return ``(status, result, error)`` of a finished child, or None."""
        ...

    def events_committed(
        self,
        workflow_id: str,
        written: tuple[str, str, list[tuple[int, EventRow]]] | None = None,
    ) -> None:
        """New history events were committed (``(run_id, type, [(id, event)])`` if known)."""
        ...


@dataclass
class Outcome:
    """How an execution ended, for the engine to mirror into the index."""

    status: str
    wake_at: int | None = None
    result: str | None = None
    error: str | None = None
    finished_at: int | None = None
    step_count: int = 0
    attributes: str | None = None
    pause_reason: str | None = None
    last_event_id: int | None = None


@dataclass
class _Pending:
    events: list[EventRow] = field(default_factory=list)
    ops: list[OpRecord] = field(default_factory=list)
    updates: dict[str, Any] = field(default_factory=dict)
    values: bool = False  # holds recorded values that must be durable before a side effect
    consume: list[tuple[int, str]] = field(default_factory=list)  # (inbox id, seq)


class _Batch:
    """Records taken from an execution's buffer, to be written in one transaction."""

    def __init__(
        self,
        ex: Execution,
        taken: _Pending,
        events: list[EventRow],
        ops: list[OpRecord],
        updates: dict[str, Any],
        consume: Sequence[tuple[int, str]] = (),
    ) -> None:
        self.ex = ex
        self.taken = taken
        self.events = events
        self.ops = ops
        self.updates = updates
        self.consume = consume
        self.written: list[tuple[int, EventRow]] = []
        self.committed = False

    def write(self) -> None:
        """Write the batch in one transaction; durable only after ``ex.file.sync()``.

        Runs on the event-loop thread (see ``InstanceFile.use_split_sync``).
        """
        ex = self.ex
        assert ex.file is not None
        with ex.file_lock:
            if ex.terminated:
                raise Terminated()
            first = ex.file.deferred[1] if ex.file.deferred is not None else []
            last = ex.file.commit(
                events=self.events,
                ops=self.ops,
                updates=self.updates,
                consume_signals=self.consume,
                sync=False,
            )
            self.committed = True
            ex.last_event_id = last
            written = [*first, *self.events]
            self.written = list(enumerate(written, start=last - len(written) + 1))

    def restore(self) -> None:
        """Put the taken records back in front of the buffer (nothing was written)."""
        ex, p = self.ex, self.taken
        p.events.extend(ex.pending.events)
        p.ops.extend(ex.pending.ops)
        p.updates.update(ex.pending.updates)
        p.values = p.values or ex.pending.values
        p.consume.extend(ex.pending.consume)
        ex.pending = p
        if "attributes" in self.updates:
            ex.attributes_dirty = True


class Execution:
    """One run of a workflow function against one instance file.

    Args:
        env: The engine services (clock, thread pool, limits).
        file: The open instance file; None for a read-only query replay.
        state: The loaded instance row and operation records.
        definition: The workflow to run.
        query_mode: Replay only: stop at the first operation with no record.
    """

    def __init__(
        self,
        env: ExecutionEnv,
        file: InstanceFile | None,
        state: InstanceState,
        definition: WorkflowDefinition,
        *,
        query_mode: bool = False,
    ) -> None:
        self.env = env
        self.file = file
        self.row = state.row
        self.ops = state.ops
        self.definition = definition
        self.query_mode = query_mode
        self.workflow_id: str = state.row["workflow_id"]
        self.run_id: str = state.row["run_id"]
        self.seq = 0  # operations allocated so far, all branches
        self.replayed = 0  # of those, how many had a record
        self.branches = Branches()
        self.step_count: int = state.row["step_count"]
        self.pending = _Pending()
        self.cancel_requested = bool(state.row["cancel_requested"])
        self.cancel_reason: str | None = state.row["cancel_reason"]
        self.cancel_delivered = any(op.status == OpStatus.CANCELLED for op in self.ops.values())
        self.terminated = False
        self.suspending: Suspend | None = None
        attrs = state.row["attributes"]
        self.attributes: dict[str, Any] = {} if attrs == "{}" else serde.decode(attrs) or {}
        self.attributes_dirty = False
        # Whether the index's copy of the attributes may differ from this run's: an
        # instance created by this run starts with the same text in both.
        self.attributes_changed = file is None or file.deferred is None
        self.inflight: set[asyncio.Future[Any]] = set()
        self.query_handlers: dict[str, Callable[..., Any]] = {}
        self.last_event_id: int = state.last_event_id
        self.task: asyncio.Task[Outcome] | None = None
        # Set by the last commit, whose I/O thread closes the file after syncing it.
        self.closes_file = False
        # Serialises this instance's transactions (the executor's, on the event
        # loop, and outside writers', on I/O threads).
        self.file_lock = threading.Lock()
        if file is not None:
            file.use_split_sync()
        self._rng: random.Random | None = None

    @property
    def rng(self) -> random.Random:
        """Deterministic per-instance RNG for retry jitter.

        Replay never reads it, but a stable seed keeps a rerun's schedule
        explainable. Made on first use: seeding from a string hashes it, and
        most executions never retry.
        """
        if self._rng is None:
            self._rng = random.Random(self.run_id)
        return self._rng

    # -- time and ids ----------------------------------------------------------

    def now_us(self) -> int:
        """Current time in µs from the engine clock."""
        return to_micros(self.env.clock.now())

    def suspend(self, wake_at: int | None, reason: str) -> Suspend:
        """The exception that unwinds the workflow for a durable wait; raise it.

        Marked as suspending *before* it unwinds: a ``finally`` block (or a
        sibling branch) that tries a durable operation on the way out is
        stopped by :meth:`check_alive` instead of running and being recorded,
        which would make the resumed replay diverge.
        """
        s = Suspend(wake_at, reason)
        self.suspending = s
        return s

    def check_alive(self) -> None:
        """Raise if the instance was terminated or is being suspended."""
        if self.terminated:
            raise Terminated()
        if self.suspending is not None:
            raise self.suspending

    def next_seq(self) -> str:
        """Allocate the key of the next durable operation: ``"<branch>:<n>"``.

        Keys are numbered per asyncio task so that concurrent branches get the
        same keys live and on replay (``hot/branches.py``).
        """
        self.check_alive()
        self.seq += 1
        return self.branches.next_key()

    def enter_root(self) -> None:
        """Name the current task the workflow's root branch ``0``."""
        self.branches.enter_root()

    def record_for(self, seq: str, kind: OpKind, name: str) -> OpRecord | None:
        """Return the record at ``seq`` after checking it matches, or None if live.

        Raises:
            NonDeterminismError: History holds a different operation at ``seq``.
            QueryStop: Query replay reached the live edge.
        """
        rec = self.ops.get(seq)
        if rec is None:
            if self.query_mode:
                raise QueryStop()
            return None
        if self.query_mode and rec.status not in _SETTLED:
            raise QueryStop()
        self.count_replayed()
        if rec.kind != kind or rec.name != name:
            raise NonDeterminismError(
                f"workflow {self.workflow_id!r} diverged from its history at operation {seq}: "
                f"history has {rec.kind} {rec.name!r}, the code asked for {kind} {name!r}",
                workflow_id=self.workflow_id,
                seq=seq,
                expected=f"{rec.kind}:{rec.name}",
                actual=f"{kind}:{name}",
            )
        return rec

    def count_replayed(self) -> None:
        """Count an operation answered from its record (see ``WorkflowContext.is_replaying``)."""
        self.replayed += 1

    # -- event helpers ---------------------------------------------------------

    def event(
        self,
        etype: EventType,
        *,
        step: str | None = None,
        attempt: int | None = None,
        payload: Any = None,
        at: int | None = None,
        payload_text: str | None = None,
    ) -> EventRow:
        """Build an event row: ``payload`` encoded as JSON, or ``payload_text`` (JSON already)."""
        text = payload_text
        if payload is not None:
            text = serde.encode(payload, what=f"{etype} payload")
        return EventRow(str(etype), at if at is not None else self.now_us(), step, attempt, text)

    def encode(self, value: Any, what: str) -> str:
        """Encode a value with this engine's payload limit."""
        return serde.encode(
            value, what=what, max_bytes=self.env.max_payload_bytes, workflow_id=self.workflow_id
        )

    # -- durable writes --------------------------------------------------------

    def buffer(
        self,
        *,
        events: Sequence[EventRow] = (),
        ops: Sequence[OpRecord] = (),
        updates: dict[str, Any] | None = None,
        values: bool = False,
        consume: Sequence[tuple[int, str]] = (),
    ) -> None:
        """Add records to ride along with the next commit.

        Args:
            events: Events to append.
            ops: Operation records to write.
            updates: Instance-row columns to set.
            values: The records hold values the workflow has seen, so they must
                be durable before its next side effect (see ``flush_values``).
            consume: ``(inbox id, seq)`` of signals this execution took.
        """
        self.pending.events.extend(events)
        self.pending.ops.extend(ops)
        self.pending.updates.update(updates or {})
        self.pending.values = self.pending.values or values
        self.pending.consume.extend(consume)
        for op in ops:
            self.ops[op.seq] = op

    def _take_pending(
        self, events: Sequence[EventRow], ops: Sequence[OpRecord], updates: dict[str, Any] | None
    ) -> _Batch:
        """Move buffered records plus these into a batch (event-loop thread only)."""
        p, self.pending = self.pending, _Pending()
        all_updates = {**p.updates, **(updates or {})}
        all_updates["step_count"] = self.step_count
        if self.attributes_dirty:
            all_updates["attributes"] = serde.encode(self.attributes, what="attributes")
            self.attributes_dirty = False
        return _Batch(self, p, [*p.events, *events], [*p.ops, *ops], all_updates, p.consume)

    def consuming(self) -> set[int]:
        """Inbox ids taken by this execution but not yet committed as consumed."""
        return {inbox_id for inbox_id, _ in self.pending.consume}

    async def commit(
        self,
        *,
        events: Sequence[EventRow] = (),
        ops: Sequence[OpRecord] = (),
        updates: dict[str, Any] | None = None,
        last: bool = False,
    ) -> None:
        """Commit buffered records plus these in one transaction; return once durable.

        The transaction is written here, on the event loop; the fdatasync that
        makes it durable runs on an I/O thread (see ``InstanceFile.use_split_sync``).
        ``last``: the execution writes nothing more (it finished or pauses): the
        I/O thread that syncs the commit also closes the file once the loop has
        been told, so closing costs no thread hop of its own.
        """
        file = self.file
        if self.query_mode or file is None:
            return
        if self.terminated:
            raise Terminated()
        batch = self._take_pending(events, ops, updates)
        try:
            batch.write()
        except BaseException:
            if not batch.committed:
                batch.restore()
            raise
        if file.split_sync:
            if last:
                # The loop goes on as soon as the commit is durable; the close
                # (SQLite's checkpoint into the file, two more syncs) follows on
                # the same thread, with no round trip of its own.
                self.closes_file = True
                waited = self.env.io_pool.call(file.sync, then=self._close_file)
            else:
                waited = self.env.io_pool.call(file.sync)
            # Tracked, so a suspension in a sibling branch waits for this write to land.
            await self.track(waited)
        else:
            await asyncio.sleep(0)  # nothing to sync; still a yield point, as before
        for op in ops:
            self.ops[op.seq] = op
        self.env.events_committed(self.workflow_id, self._stream_info(batch))

    def _close_file(self) -> None:
        """On an I/O thread, after the last commit is durable: close the file."""
        assert self.file is not None
        with self.file_lock:  # never close a connection another thread is using
            self.file.close()

    async def read_signals(self, name: str) -> list[tuple[int, str | None, int]]:
        """Return unconsumed inbox signals named ``name``, oldest first."""
        file = self.file
        if file is None or file.deferred is not None:
            return []  # nothing committed yet, so nothing can have arrived
        lock = self.file_lock

        def go() -> list[tuple[int, str | None, int]]:
            with lock:
                return file.pending_signals(name)

        return await self.env.io_pool.call(go)

    def has_pending(self) -> bool:
        """True if buffered records wait for the next commit."""
        return bool(self.pending.events or self.pending.ops)

    async def run_step_deferred(
        self,
        fn: Callable[[], Any],
        records: Callable[[Any], tuple[list[EventRow], OpRecord, Any]],
    ) -> tuple[bool, Any]:
        """Run a sync step body on the I/O pool; its records ride with the next commit.

        Whatever is still buffered (typically the previous step's result) is
        written first, on the event loop, and made durable in the same thread
        hop *before* ``fn`` runs, so every recorded result is durable before the
        next side effect, as with a commit per step. The new step's records
        are buffered and written by whatever commits next: the next step, a
        timer, the pause or the finish, so a workflow's last step and its
        completion share one fsync.
        Between the two, only the workflow's own deterministic code runs.

        ``records`` runs on the I/O thread too, on ``fn``'s result: it returns
        the step's events, its operation record, and the value the workflow
        gets back.

        Returns:
            ``(True, value)`` with the step's records buffered, or
            ``(False, exception)`` if ``fn`` or ``records`` raised.
        """
        if self.terminated:
            raise Terminated()
        file = self.file
        batch = self._take_pending((), (), None)
        flush = bool(batch.events or batch.ops or batch.consume) and file is not None
        if flush:
            try:
                batch.write()
            except BaseException:
                batch.restore()
                raise

        def work() -> tuple[bool, Any]:
            if flush:
                assert file is not None
                file.sync()
            try:
                return True, records(fn())
            except Exception as exc:
                return False, exc

        tracked = self.env.io_pool.call(work)
        self.inflight.add(tracked)
        try:
            ok, value = await tracked
        except BaseException:
            if not batch.committed:
                batch.restore()
            raise
        finally:
            self.inflight.discard(tracked)
        if flush:
            self.env.events_committed(self.workflow_id, self._stream_info(batch))
        else:
            batch.restore()  # nothing was written: keep the buffered updates
        if not ok:
            return False, value
        events, op, seen = value
        self.buffer(events=events, ops=[op])
        return True, seen

    def _stream_info(self, batch: _Batch) -> tuple[str, str, list[tuple[int, EventRow]]]:
        return self.run_id, self.row["workflow_type"], batch.written

    async def flush_values(self) -> None:
        """Make recorded values durable before a side effect can observe them."""
        if self.pending.values:
            await self.commit()

    # -- cancellation ----------------------------------------------------------

    def check_cancel(self, seq: str, kind: OpKind, name: str) -> None:
        """Deliver a pending cancellation at this live operation, recording where."""
        if self.cancel_requested and not self.cancel_delivered:
            self.cancel_delivered = True
            self.buffer(ops=[OpRecord(seq, kind, name, OpStatus.CANCELLED)])
            raise WorkflowCancelled(self.cancel_reason)

    def request_cancel(self, reason: str | None) -> None:
        """Mark the instance cancelled; the next live durable operation raises.

        The request itself is made durable by whoever asks (the instance row's
        ``cancel_requested``); this only tells the running code.
        """
        self.cancel_requested = True
        self.cancel_reason = reason

    def terminate(self) -> None:
        """Stop the running code now: no further durable operation or commit happens.

        The terminated status is written by whoever terminates; a step running
        on a thread cannot be interrupted and its result is discarded.
        """
        self.terminated = True
        if self.task is not None:
            self.task.cancel()

    # -- steps and waits -------------------------------------------------------

    def count_step(self) -> None:
        """Count a step as completed (written with the next commit's row update)."""
        self.step_count += 1

    def uncount_step(self) -> None:
        """Take back :meth:`count_step` for a step whose body failed."""
        self.step_count -= 1

    def is_long_wait(self, wake_at: int, now: int | None = None) -> bool:
        """True if waiting until ``wake_at`` (µs) should suspend the instance.

        Waits up to the engine's ``inline_sleep_threshold`` stay in memory.
        """
        start = self.now_us() if now is None else now
        return (wake_at - start) / 1e6 > self.env.inline_sleep_threshold

    async def sleep_until(self, wake_at: int) -> None:
        """Sleep in memory until ``wake_at`` (µs), then check the instance is alive."""
        await self.env.clock.sleep_until(wake_at / 1_000_000)
        self.check_alive()

    async def wait_until(self, wake_at: int, reason: str) -> None:
        """Wait for ``wake_at`` (µs): suspend the instance if the wait is long, else sleep.

        Raises:
            Suspend: The wait is long; the instance unloads and resumes at ``wake_at``.
        """
        if self.is_long_wait(wake_at):
            raise self.suspend(wake_at, reason)
        await self.sleep_until(wake_at)

    # -- attributes and queries ------------------------------------------------

    def set_attributes(self, values: Iterable[tuple[str, Any]]) -> None:
        """Set searchable attributes ``(name, value)``; written with the next commit.

        Values are stored as they come; if ``values`` raises part way, the
        ones before stay set but nothing is marked for writing.
        """
        for key, value in values:
            self.attributes[key] = value
        self.attributes_dirty = True
        self.attributes_changed = True

    def set_query_handler(self, name: str, fn: Callable[..., Any]) -> None:
        """Answer queries named ``name`` with ``fn``."""
        self.query_handlers[name] = fn

    # -- running ---------------------------------------------------------------

    async def track(self, aw: Awaitable[Any]) -> Any:
        """Await a step body, remembering it so a suspension waits for it to land."""
        fut = asyncio.ensure_future(aw)
        self.inflight.add(fut)
        try:
            return await fut
        finally:
            self.inflight.discard(fut)

    def start(self, ctx: Any, *, resumed: bool, recovered: bool) -> asyncio.Task[Outcome]:
        """Run :meth:`run` as this execution's task (which :meth:`terminate` cancels)."""
        self.task = asyncio.get_running_loop().create_task(
            self.run(ctx, resumed=resumed, recovered=recovered)
        )
        return self.task

    async def run(self, ctx: Any, *, resumed: bool, recovered: bool) -> Outcome:
        """Run the workflow function to completion or suspension; commit the outcome.

        Args:
            ctx: The ``WorkflowContext`` passed to the workflow function (built
                on this execution by the caller; typed loosely so this module
                never imports the context that drives it).
            resumed: The instance was paused and is resuming.
            recovered: The previous runner died.
        """
        now = self.now_us()
        if recovered:
            self.buffer(events=[self.event(EventType.WORKFLOW_RECOVERED, at=now)])
        if resumed:
            self.buffer(events=[self.event(EventType.WORKFLOW_RESUMED, at=now)])
        if resumed or recovered:
            self.buffer(updates={"status": Status.RUNNING, "wake_at": None})
        wf_input = serde.decode(self.row["input"])
        self.enter_root()
        try:
            value = await self.definition(ctx, wf_input)
        except Suspend as s:
            return await self._suspend(s)
        except WorkflowCancelled as c:
            return await self._finish(
                Status.CANCELLED,
                EventType.WORKFLOW_CANCELLED,
                error={"type": "cancelled", "message": c.reason or "cancelled"},
                payload={"reason": c.reason},
            )
        except Terminated:
            return Outcome(status=Status.TERMINATED)
        except asyncio.CancelledError:
            if self.terminated:
                return Outcome(status=Status.TERMINATED)
            raise
        except Exception as exc:
            info = error_info(exc)
            step_error = getattr(exc, "step", None)
            if step_error:
                info["step"] = step_error
            return await self._finish(
                Status.FAILED, EventType.WORKFLOW_FAILED, error=info, payload={"error": info}
            )
        try:
            result_text = self.encode(value, "workflow result")
        except PayloadError as exc:
            info = error_info(exc)
            return await self._finish(
                Status.FAILED, EventType.WORKFLOW_FAILED, error=info, payload={"error": info}
            )
        return await self._finish(
            Status.COMPLETED,
            EventType.WORKFLOW_COMPLETED,
            result_text=result_text,
            payload={"result": value},
        )

    async def _drain_inflight(self) -> None:
        # A suspension raised in one branch of a gather must not drop steps still
        # running in other branches: let them finish and record their results.
        while self.inflight:
            await asyncio.gather(*list(self.inflight), return_exceptions=True)

    async def _suspend(self, s: Suspend) -> Outcome:
        self.suspending = s
        await self._drain_inflight()
        now = self.now_us()
        payload = {"reason": s.reason, "wake_at": s.wake_at}
        await self.commit(
            events=[self.event(EventType.WORKFLOW_PAUSED, payload=payload, at=now)],
            updates={"status": Status.PAUSED, "wake_at": s.wake_at},
            last=True,
        )
        return Outcome(
            last_event_id=self.last_event_id,
            status=Status.PAUSED,
            wake_at=s.wake_at,
            step_count=self.step_count,
            attributes=self._attrs_text(),
            pause_reason=s.reason,
        )

    def _attrs_text(self) -> str | None:
        """The attributes for the index to mirror; None if it already has them."""
        if not self.attributes_changed:
            return None
        return serde.encode(self.attributes, what="attributes")

    async def _finish(
        self,
        status: Status,
        etype: EventType,
        *,
        error: Any = None,
        result_text: str | None = None,
        payload: Any = None,
    ) -> Outcome:
        await self._drain_inflight()
        now = self.now_us()
        error_text = None if error is None else serde.encode(error, what="error")
        try:
            ev = self.event(etype, payload=payload, at=now)
        except PayloadError:  # the result alone fits; with its envelope it may not
            ev = self.event(etype, at=now)
        await self.commit(
            events=[ev],
            updates={
                "status": status,
                "result": result_text,
                "error": error_text,
                "finished_at": now,
                "wake_at": None,
            },
            last=True,
        )
        return Outcome(
            last_event_id=self.last_event_id,
            status=status,
            result=result_text,
            error=error_text,
            finished_at=now,
            step_count=self.step_count,
            attributes=self._attrs_text(),
        )
