"""Running instances: load or create an instance file, execute it, mirror the outcome.

:class:`Instances` owns what is in memory for instances this process runs:
the executions in flight, files handed from a signal or cancel to the resume
it triggers (``hot/handoff.py``), and ``result()`` waiters and recently
finished results (``hot/waiters.py``). The
scheduler calls :meth:`Instances.run_queued` and :meth:`Instances.run_due`;
``hot/control.py`` writes to files through :meth:`Instances.write_file`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from tierflow.hot import serde
from tierflow.hot.context import WorkflowContext
from tierflow.hot.creation import create_from_row, file_row, first_events
from tierflow.hot.errors import CorruptInstance, StorageError, WorkflowAlreadyFinished
from tierflow.hot.executor import Execution, ExecutionEnv, Outcome
from tierflow.hot.handoff import Handoffs
from tierflow.hot.index import IndexDB
from tierflow.hot.models import TERMINAL_STATUSES, EventType, Status
from tierflow.hot.notify import Change, ChangeKind
from tierflow.hot.records import EventRow, InstanceState
from tierflow.hot.runtime import Runtime
from tierflow.hot.store import INSTANCE_COLUMNS, IncompleteInstance, InstanceFile, quarantine
from tierflow.hot.waiters import ResultWaiters

__all__ = ["Instances", "Wakeups"]

log = logging.getLogger("tierflow.engine")

# A write from outside waits at most this long for a just-claimed instance's
# runner to write its file's first row (it does within milliseconds; longer
# means the runner died, and recovery writes it).
_STARTING_WAIT = 10.0

# A new instance's row before its first commit fills it in.
_INSTANCE_DEFAULTS = {c.name: c.default for c in INSTANCE_COLUMNS}


class Wakeups(Protocol):
    """How finished runs ask for more work (the scheduler implements it)."""

    def enqueue(self, workflow_id: str, kind: str = "queued") -> None:
        """Run ``workflow_id`` soon (``queued``, ``due`` or ``recovered``)."""
        ...

    def add_timer(self, workflow_id: str, wake_at: int) -> None:
        """Wake ``workflow_id`` at ``wake_at`` (µs since the epoch)."""
        ...


class Instances:
    """The instances this process runs, and the files it holds open for them.

    Args:
        rt: The engine's shared runtime.
        env: What executions need from the engine (child starts, the event stream).
    """

    def __init__(self, rt: Runtime, env: ExecutionEnv) -> None:
        self.rt = rt
        self.env = env
        self.wakeups: Wakeups | None = None
        self.active: dict[str, Execution] = {}
        # Files a signal or cancel opened for an instance it is about to resume:
        # the resume takes the open connection instead of reopening the file.
        self.handoffs = Handoffs(rt)
        self.results = ResultWaiters()
        self._wake_pending: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def is_active(self, workflow_id: str) -> bool:
        """True while this process executes ``workflow_id``."""
        return workflow_id in self.active

    async def close(self) -> None:
        """Stop executions (they resume on the next start) and close held files."""
        for ex in list(self.active.values()):
            if ex.task is not None:
                ex.task.cancel()
        pending = [ex.task for ex in self.active.values() if ex.task is not None]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.handoffs.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- finished instances and wake-ups -----------------------------------------------

    def forget(self, workflow_ids: Iterable[str]) -> None:
        """Drop what this process keeps of these instances (results, held files): erased."""
        for wid in workflow_ids:
            self.results.forget(wid)
            held = self.handoffs.take(wid)
            if held is not None:
                self.rt.io_pool.post(held.close)

    def notify(self, wid: str, parent: str | None) -> None:
        """An instance finished: wake ``result()`` waiters and its parent (if any)."""
        self.results.finished(wid)
        if parent:
            self.wake(parent)

    def runs_here(self, workflow_type: str) -> bool:
        """True if this process schedules work and knows ``workflow_type``."""
        return self.wakeups is not None and self.rt.knows(workflow_type)

    def wake(self, wid: str, workflow_type: str | None = None) -> None:
        """Resume a paused instance soon (a signal or a child result arrived).

        If this process cannot run it (no scheduler here, or an unknown type),
        the wake-up goes to the processes that can, through the change feed.
        """
        if wid in self.active:
            self._wake_pending.add(wid)
            return
        if workflow_type is None:
            row = self.rt.index.get(wid)
            if row is None:
                return
            workflow_type = row.workflow_type
        if self.wakeups is not None and self.rt.knows(workflow_type):
            self.wakeups.enqueue(wid, "due")
        else:
            self.rt.index.write_now(self.rt.announce_fn(wid, workflow_type, ChangeKind.WAKE))

    def apply_change(self, change: Change) -> None:
        """Act on a change another process made (see ``hot/notify.py``)."""
        wid, kind = change.workflow_id, change.kind
        ex = self.active.get(wid)
        if ex is not None:
            if ex.file is not None and ex.file.deferred is not None:
                # Another process needs to write the file (any change implies it).
                with ex.file_lock:
                    if not ex.file.closed and ex.file.deferred is not None:
                        self._publish(wid, ex.file, ex.row["run_id"], ex.row["workflow_type"])
            if kind == ChangeKind.TERMINATE:
                ex.terminate()
            elif kind == ChangeKind.CANCEL:
                ex.request_cancel(change.detail)
            elif kind == ChangeKind.WAKE:
                self._wake_pending.add(wid)
            return
        if kind in (ChangeKind.TERMINATE, ChangeKind.PUBLISH):
            return  # nothing runs it here
        if self.wakeups is None or not self.rt.knows(change.workflow_type):
            return  # a process that knows the type acts on it
        if kind == ChangeKind.TIMER:
            self.wakeups.add_timer(wid, int(change.detail or 0))
        elif kind == ChangeKind.QUEUED:
            self.wakeups.enqueue(wid, "queued")
        else:  # a wake-up, or a cancel of a paused instance: resume it
            self.wakeups.enqueue(wid, "due")

    # -- failures ----------------------------------------------------------------------

    async def mark_failed(self, wid: str, reason: str, kind: str) -> None:
        """Record in the index that ``wid`` failed outside its workflow code."""
        error = serde.encode({"type": kind, "message": reason}, what="error")
        await self.rt.index.write(
            IndexDB.update_fn(
                wid,
                {
                    "status": Status.FAILED.value,
                    "error": error,
                    "finished_at": self.rt.now_us(),
                    "lease_owner": None,
                    "wake_at": None,
                },
            )
        )
        row = self.rt.index.get(wid)
        self.notify(wid, row.parent_workflow_id if row is not None else None)

    async def quarantine(self, wid: str, exc: CorruptInstance) -> None:
        """Move a corrupt instance file aside and fail the instance."""
        path = self.rt.path(wid)
        try:
            moved = await self.rt.io(quarantine, path, self.rt.quarantine_dir)
            where = f"; file moved to {moved}"
        except OSError as err:
            where = f"; could not quarantine: {err}"
        log.error("instance %s is corrupt: %s%s", wid, exc.message, where)
        await self.mark_failed(
            wid, f"instance file is corrupt: {exc.message}{where}", "CorruptInstance"
        )

    # -- claiming work -----------------------------------------------------------------

    async def run_queued(self, wid: str) -> None:
        """Claim a queued instance and run it (the scheduler calls this)."""
        rt = self.rt
        now = rt.now_us()
        before = rt.index.get(wid)
        if before is None or before.status != Status.QUEUED:
            return
        if not rt.knows(before.workflow_type):
            return  # stays queued for a process that knows the type
        # A signal sent while it was queued may already have created its file.
        spare = None if before.file else await rt.take_spare()
        changes: dict[str, Any] = {
            "status": Status.RUNNING.value,
            "started_at": now,
            "lease_owner": rt.owner_id,
        }
        if spare is not None:
            changes["file"] = rt.rel(spare)
        claimed = await rt.index.write(
            IndexDB.update_fn(
                wid,
                changes,
                only_if_status=[Status.QUEUED.value],
                only_if_no_file=spare is not None,
            )
        )
        if not claimed:
            if spare is not None:
                rt.give_back(spare)
                after = rt.index.get(wid)
                if after is not None and after.status == Status.QUEUED and after.file:
                    # A signal gave it a file while we took a spare: run that file.
                    await self.run_queued(wid)
            return
        row = rt.index.get(wid)
        if row is None:
            return
        if spare is None:
            await self.execute(wid)
            return
        await self.execute(wid, create=create_from_row(row, started_at=now), spare=spare)

    async def run_due(self, wid: str, *, recovered: bool = False) -> None:
        """Claim a paused (or orphaned) instance and resume it (the scheduler calls this)."""
        rt = self.rt
        if wid in self.active:
            return
        if recovered:
            row = rt.index.get(wid)
            if row is None:
                return
            # The runner may have died before creating the file: create it then.
            create = None
            if row.input is not None:
                create = create_from_row(row, started_at=row.started_at)
            spare = None
            if row.file is None:  # died between claiming and assigning a file
                spare = await rt.take_spare()
                await rt.index.write(IndexDB.update_fn(wid, {"file": rt.rel(spare)}))
            await self.execute(wid, create=create, spare=spare, recovered=True)
            return
        row = rt.index.get(wid)
        if row is None or row.status != Status.PAUSED or not rt.knows(row.workflow_type):
            return  # not paused, or left for a process that knows the type
        claimed = await rt.index.write(
            IndexDB.update_fn(
                wid,
                {"status": Status.RUNNING.value, "lease_owner": rt.owner_id},
                only_if_status=[Status.PAUSED.value],
            )
        )
        if claimed:
            await self.execute(wid, resumed=True)

    # -- executing ---------------------------------------------------------------------

    async def _open_file(
        self, wid: str, create: dict[str, Any] | None, spare: InstanceFile | None = None
    ) -> tuple[InstanceFile, InstanceState]:
        rt = self.rt
        fresh: InstanceState | None = None
        frow: dict[str, Any] = {}
        events: list[EventRow] = []
        if create is not None:
            started = create.get("started_at") or rt.now_us()
            frow = file_row({**create, "status": Status.RUNNING.value, "started_at": started})
            events = first_events(create, started)
            full_row = {**_INSTANCE_DEFAULTS, **frow}
            fresh = InstanceState(row=full_row, ops={}, last_event_id=len(events))
        if spare is not None:
            assert fresh is not None
            # The row and first events ride along with the first commit.
            spare.deferred = (frow, events)
            return spare, fresh
        path = rt.path(wid)
        handed = self.handoffs.take(wid) if fresh is None else None

        def open_and_load() -> tuple[InstanceFile, InstanceState]:
            f = handed or InstanceFile.open(
                path, durability=rt.durability, allow_incomplete=fresh is not None
            )
            try:
                if (
                    fresh is not None
                    and f.conn.execute("SELECT 1 FROM instance").fetchone() is None
                ):
                    # Assigned to a run that died before its first commit.
                    f.deferred = (frow, events)
                    return f, fresh
                return f, f.load()
            except BaseException:
                f.close()
                raise

        return await rt.io(open_and_load)

    async def execute(
        self,
        wid: str,
        *,
        create: dict[str, Any] | None = None,
        spare: InstanceFile | None = None,
        resumed: bool = False,
        recovered: bool = False,
    ) -> Outcome | None:
        """Load (or create) an instance, run it, and mirror the outcome into the index."""
        if wid in self.active:
            return None
        file: InstanceFile | None = None
        try:
            file, state = await self._open_file(wid, create, spare)
        except (FileNotFoundError, IncompleteInstance):
            await self.mark_failed(wid, "instance file is missing", "MissingInstance")
            return None
        except CorruptInstance as exc:
            await self.quarantine(wid, exc)
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
                state.row["workflow_type"],
            )
            return None
        definition = self.rt.registry.get(state.row["workflow_type"])
        if definition is None:
            file.close()
            # Keep the lease: a process that knows the type recovers it after we stop.
            log.warning(
                "cannot run %s: workflow type %r is not registered in this process",
                wid,
                state.row["workflow_type"],
            )
            return None
        ex = Execution(self.env, file, state, definition)
        if status == Status.QUEUED:  # file made early by a signal; starts now
            now = self.rt.now_us()
            ex.buffer(
                events=[EventRow(EventType.WORKFLOW_STARTED.value, now)],
                updates={"status": Status.RUNNING.value, "started_at": now},
            )
        ctx = WorkflowContext(ex)
        self.active[wid] = ex
        try:
            if file.deferred is not None and self.rt.others_alive:
                self._publish(wid, file, state.row["run_id"], state.row["workflow_type"])
            task = ex.start(
                ctx,
                resumed=resumed or status == Status.PAUSED,
                recovered=recovered and status != Status.QUEUED,
            )
            try:
                outcome = await asyncio.shield(task)
            except asyncio.CancelledError:
                # Our caller was cancelled, not the instance: let it finish in the
                # background rather than leave a half-run execution behind.
                if not task.done():
                    self._spawn(self._finish_detached(wid, ex))
                    file = None
                raise
        except CorruptInstance as exc:
            await self.quarantine(wid, exc)
            return None
        except WorkflowAlreadyFinished:
            outcome = Outcome(status=Status.TERMINATED)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("internal error running %s", wid)
            await self.mark_failed(wid, f"internal error: {exc}", type(exc).__name__)
            return None
        finally:
            if file is not None:
                self.active.pop(wid, None)
                if not ex.closes_file:  # usually its last commit's thread closes it
                    self.rt.io_pool.post(_close_locked, file, ex.file_lock)
        if outcome.status == Status.TERMINATED:
            return outcome  # terminate() already mirrored it
        await self._mirror(
            wid, outcome, state.row.get("parent_workflow_id"), state.row["workflow_type"]
        )
        return outcome

    def _publish(self, wid: str, file: InstanceFile, run_id: str, wtype: str) -> None:
        """Write a new instance's row and first events before its code runs.

        Until its first commit only this process can write the file: a signal,
        cancel or terminate from another process finds it "not yet written"
        and waits (see :meth:`on_file`), which could last as long as a slow
        first step. So when other processes share the data directory, the row
        is written at once: one commit with no fsync (~tens of µs, on the loop
        like every split-sync commit); the next commit's fdatasync makes it
        durable, and if power is lost first the index still holds the input
        and the run starts over. A lone process skips it, and does it when a
        process that arrived later asks (:attr:`ChangeKind.PUBLISH`).
        """
        first = list(file.deferred[1]) if file.deferred is not None else []
        if not first:
            return
        file.commit(sync=False)
        self.env.events_committed(wid, (run_id, wtype, list(enumerate(first, start=1))))

    async def _finish_detached(self, wid: str, ex: Execution) -> None:
        assert ex.task is not None and ex.file is not None
        try:
            outcome = await ex.task
            if outcome.status != Status.TERMINATED:
                await self._mirror(
                    wid, outcome, ex.row.get("parent_workflow_id"), ex.row["workflow_type"]
                )
        except BaseException:  # shutdown; the instance is recovered on the next start
            pass
        finally:
            self.active.pop(wid, None)
            if not ex.closes_file:
                self.rt.io_pool.post(_close_locked, ex.file, ex.file_lock)

    async def _mirror(self, wid: str, outcome: Outcome, parent: str | None, wtype: str) -> None:
        """Copy an execution outcome into the index, wake waiters, arm timers.

        ``parent`` is the instance's parent id (None for none) and ``wtype``
        its type, from its row.
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
        update = IndexDB.update_fn(wid, changes)
        if outcome.status == Status.PAUSED and outcome.wake_at is not None:
            # Any process that knows the type fires the timer if this one is gone.
            announce = self.rt.announce_fn(wid, wtype, ChangeKind.TIMER, str(outcome.wake_at))

            def update_and_announce(conn: sqlite3.Connection) -> bool:
                changed = update(conn)
                announce(conn)
                return changed

            await self.rt.index.write(update_and_announce)
        else:
            await self.rt.index.write(update)
        if outcome.status == Status.PAUSED and self.wakeups is not None:
            if wid in self._wake_pending:
                # A signal or a child finished while this run was unwinding.
                self._wake_pending.discard(wid)
                self.wakeups.enqueue(wid, "due")
            elif outcome.wake_at is not None:
                self.wakeups.add_timer(wid, outcome.wake_at)
        if outcome.status in TERMINAL_STATUSES:
            self._wake_pending.discard(wid)
            if outcome.status == Status.COMPLETED and outcome.result is not None:
                self.results.remember(wid, outcome.result)
            self.notify(wid, parent)

    # -- files from outside an execution -----------------------------------------------

    async def on_file(
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
                resume the instance (``hot/handoff.py``) instead of closing it.
        """
        path = self.rt.path(wid)
        ex = self.active.get(wid)
        durability = self.rt.durability

        def go() -> tuple[Any, InstanceFile | None]:
            if ex is not None and ex.file is not None:
                with ex.file_lock:
                    if not ex.file.closed:
                        return fn(ex.file), None
            f = InstanceFile.open(path, durability=durability)
            try:
                result = fn(f)
            except BaseException:
                f.close()
                raise
            if hand_off:
                return result, f
            f.close()
            return result, None

        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STARTING_WAIT
        asked = False
        while True:
            try:
                result, opened = await self.rt.io(go)
                break
            except IncompleteInstance:
                # Claimed by a runner (in another process) that has not written
                # the file's first row yet: ask it to, and wait.
                if ex is not None or loop.time() > deadline:
                    raise
                if not asked:
                    asked = True
                    row = self.rt.index.get(wid)
                    if row is not None:
                        await self.rt.index.write(
                            self.rt.announce_fn(wid, row.workflow_type, ChangeKind.PUBLISH)
                        )
                await asyncio.sleep(0.002)
        if opened is not None:
            self.handoffs.put(wid, opened)
        return result

    async def write_file(self, wid: str, *, hand_off: bool = False, **kwargs: Any) -> int:
        """Commit to an instance's file from outside its execution; return the last event id.

        ``kwargs`` go to ``InstanceFile.commit``; ``hand_off`` as for :meth:`on_file`.
        """
        try:
            last: int = await self.on_file(wid, lambda f: f.commit(**kwargs), hand_off=hand_off)
            self.env.events_committed(wid)
            return last
        except WorkflowAlreadyFinished as exc:
            raise WorkflowAlreadyFinished(
                f"workflow {wid!r} has already finished ({exc.status})",
                workflow_id=wid,
                status=exc.status,
            ) from None
        except CorruptInstance as exc:
            await self.quarantine(wid, exc)
            raise

    async def read_events_for_stream(
        self, workflow_id: str, after: int, limit: int
    ) -> list[tuple[Any, ...]]:
        """Up to ``limit`` stored event rows after ``after`` (empty if unreadable)."""
        try:
            rows: list[tuple[Any, ...]] = await self.on_file(
                workflow_id, lambda f: [] if f.deferred else f.read_events(after, limit)
            )
        except (FileNotFoundError, IncompleteInstance):
            return []
        except StorageError as exc:
            log.error("event stream cannot read %s: %s", workflow_id, exc)
            return []
        return rows


def _close_locked(file: InstanceFile, lock: threading.Lock) -> None:
    # Never close a connection another thread is using: that crashes SQLite.
    with lock:
        file.close()
