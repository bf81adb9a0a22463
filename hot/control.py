"""Changes to an instance from outside its code: signals, cancel, terminate.

Each is written to the instance file first (the file is the record), then
mirrored into the index, then acted on: a paused instance is resumed, a
running one is told. A queued instance that has no file yet gets one here,
made from its index row (``hot/creation.py``), so the change is never lost.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from tierflow.hot import serde
from tierflow.hot.creation import create_from_row, file_row, first_events
from tierflow.hot.errors import InvalidArgument, WorkflowAlreadyFinished, WorkflowNotFound
from tierflow.hot.index import IndexDB, IndexRow
from tierflow.hot.instances import Instances
from tierflow.hot.models import TERMINAL_STATUSES, EventType, Status
from tierflow.hot.notify import ChangeKind
from tierflow.hot.records import EventRow
from tierflow.hot.runtime import Runtime
from tierflow.hot.store import delete_instance_file

__all__ = ["Control"]


class Control:
    """Signals, cancellation and termination of hot instances.

    Args:
        rt: The engine's shared runtime.
        instances: The running instances (to write files and wake them).
    """

    def __init__(self, rt: Runtime, instances: Instances) -> None:
        self.rt = rt
        self.instances = instances

    async def signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Deliver a signal to an instance's inbox (durable when this returns).

        Raises:
            WorkflowNotFound: No such instance.
            WorkflowAlreadyFinished: It has finished; the signal was not stored.
            PayloadError: The payload is not JSON or is too large.
        """
        rt = self.rt
        row = rt.live_row_or_raise(workflow_id)
        if not isinstance(name, str) or not name:
            raise InvalidArgument("signal name must be a non-empty string")
        text = serde.encode(
            payload,
            what=f"payload of signal {name!r}",
            max_bytes=rt.options.max_payload_bytes,
            workflow_id=workflow_id,
        )
        now = rt.now_us()
        event = EventRow(EventType.SIGNAL_RECEIVED.value, now, name, None, text)
        if row.file is None:
            if await self._signal_queued(row, event, name, text):
                return
            # Not queued any more, or another caller gave it a file first.
            rt.live_row_or_raise(workflow_id)
        await self.instances.write_file(
            workflow_id, hand_off=True, events=[event], add_signals=[(name, text, now)]
        )
        if self.instances.is_active(workflow_id):
            self.instances.wake(workflow_id)
            return
        now_row = rt.index.get(workflow_id)
        if now_row is None or now_row.status in TERMINAL_STATUSES:
            return
        if now_row.status == Status.PAUSED:
            # Due now: if this process dies before the resume, whoever starts
            # next loads it as a timer and resumes it (the signal is in its inbox).
            await rt.index.write(
                IndexDB.update_fn(
                    workflow_id, {"wake_at": now}, only_if_status=[Status.PAUSED.value]
                )
            )
        if now_row.status == Status.PAUSED and self.instances.runs_here(row.workflow_type):
            self.instances.wake(workflow_id, row.workflow_type)
        else:
            # Running in (or only runnable by) another process: tell it.
            await rt.index.write(rt.announce_fn(workflow_id, row.workflow_type, ChangeKind.WAKE))

    async def _signal_queued(self, row: IndexRow, event: EventRow, name: str, text: str) -> bool:
        """Give a queued instance its file now, holding the signal.

        Returns False, storing nothing, if it stopped being queued meanwhile
        or another caller gave it a file first.
        """
        rt = self.rt
        create = create_from_row(row)
        f = await rt.take_spare()
        f.deferred = (
            file_row({**create, "status": Status.QUEUED.value}),
            first_events(create, row.created_at)[:1],
        )
        await rt.io(lambda: f.commit(events=[event], add_signals=[(name, text, event.event_time)]))
        done = await rt.index.write(
            IndexDB.update_fn(
                row.workflow_id,
                {"file": rt.rel(f)},
                only_if_status=[Status.QUEUED.value],
                only_if_no_file=True,
            )
        )
        rt.io_pool.post(f.close)
        if not done:
            rt.io_pool.post(delete_instance_file, f.path)
        else:
            self.instances.env.events_committed(row.workflow_id)
        return bool(done)

    async def cancel(self, workflow_id: str, reason: str | None = None) -> str:
        """Ask an instance to stop; returns its status after the request.

        A queued or paused instance is cancelled at once (a paused one runs
        its cleanup code first); a running one gets ``WorkflowCancelled`` at
        its next durable operation.

        Raises:
            WorkflowNotFound: No such instance.
            WorkflowAlreadyFinished: It had already finished; nothing changed.
        """
        rt = self.rt
        row = rt.live_row_or_raise(workflow_id)
        if await self._finish_queued(row, Status.CANCELLED, reason):
            return Status.CANCELLED.value
        ex = self.instances.active.get(workflow_id)
        # Paused (or queued with a file) and of a type this process knows: run its
        # cleanup inline. Otherwise the process running it (or able to) is told.
        runnable_here = ex is None and rt.knows(row.workflow_type) and row.lease_owner is None
        await self.instances.write_file(
            workflow_id,
            hand_off=runnable_here,
            updates={"cancel_requested": 1, "cancel_reason": reason},
        )
        flag = IndexDB.update_fn(workflow_id, {"cancel_requested": 1})
        announce = rt.announce_fn(workflow_id, row.workflow_type, ChangeKind.CANCEL, reason)

        def flag_and_announce(conn: sqlite3.Connection) -> None:
            flag(conn)
            if ex is None and not runnable_here:
                announce(conn)  # the process running it (or able to) acts on it

        await rt.index.write(flag_and_announce)
        ex = self.instances.active.get(workflow_id)
        if ex is not None:
            ex.request_cancel(reason)
        # Children after the parent's own flag: a child's end wakes the parent,
        # which must then see its cancellation rather than the child's failure.
        await self._cancel_children(workflow_id, reason)
        if ex is not None:
            return Status.RUNNING.value
        if not runnable_here:
            return rt.row_or_raise(workflow_id).status
        # Paused (or queued with a file made by a signal): run it now so the
        # cancellation and the workflow's cleanup code take effect at once.
        claimed = await rt.index.write(
            IndexDB.update_fn(
                workflow_id,
                {"status": Status.RUNNING.value, "lease_owner": rt.owner_id},
                only_if_status=[Status.PAUSED.value, Status.QUEUED.value],
            )
        )
        if claimed:
            await self.instances.execute(workflow_id, resumed=True)
        else:  # another process claimed it meanwhile: make sure its runner hears
            await rt.index.write(announce)
        return rt.row_or_raise(workflow_id).status

    async def _cancel_children(self, workflow_id: str, reason: str | None) -> None:
        for child in self.rt.index.children_of(workflow_id):
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
        rt = self.rt
        row = rt.live_row_or_raise(workflow_id)
        if await self._finish_queued(row, Status.TERMINATED, reason):
            return
        now = rt.now_us()
        error = serde.encode(
            {"type": "terminated", "message": reason or "terminated"}, what="error"
        )
        ended = {
            "status": Status.TERMINATED.value,
            "finished_at": now,
            "error": error,
            "wake_at": None,
        }
        last_event = await self.instances.write_file(
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
            updates=ended,
        )
        ex = self.instances.active.get(workflow_id)
        if ex is not None:
            ex.terminate()
        mirror = IndexDB.update_fn(
            workflow_id,
            {**ended, "lease_owner": None, "input": None, "events_upto": last_event},
        )
        elsewhere = ex is None and row.lease_owner not in (None, rt.owner_id)
        announce = rt.announce_fn(workflow_id, row.workflow_type, ChangeKind.TERMINATE)

        def mirror_and_announce(conn: sqlite3.Connection) -> None:
            mirror(conn)
            if elsewhere:
                announce(conn)  # its runner stops executing its code now

        await rt.index.write(mirror_and_announce)
        self.instances.notify(workflow_id, row.parent_workflow_id)

    async def _finish_queued(self, row: IndexRow, status: Status, reason: str | None) -> bool:
        """End a queued instance that never ran (``status``: cancelled or terminated).

        Returns False, changing nothing, if it has a file (it ran, or a signal
        gave it one), or if it was claimed by a run or given a file meanwhile.
        """
        if row.status != Status.QUEUED or row.file is not None:
            return False
        etype = (
            EventType.WORKFLOW_CANCELLED
            if status == Status.CANCELLED
            else EventType.WORKFLOW_TERMINATED
        )
        rt = self.rt
        now = rt.now_us()
        error = serde.encode(
            {"type": status.value, "message": reason or status.value}, what="error"
        )
        create = create_from_row(row)
        frow = file_row({**create, "status": status.value})
        frow.update(finished_at=now, error=error)
        events = first_events(create, now)[:1]
        events.append(
            EventRow(etype.value, now, None, None, serde.encode({"reason": reason}, what="reason"))
        )
        # File first, index second: the index never points at a file that is not there.
        f = await rt.take_spare()
        f.deferred = (frow, events)
        last_event = await rt.io(lambda: f.commit(allow_finished=True))
        done = await rt.index.write(
            IndexDB.update_fn(
                row.workflow_id,
                {
                    "status": status.value,
                    "finished_at": now,
                    "error": error,
                    "file": rt.rel(f),
                    "input": None,
                    "events_upto": last_event,
                },
                only_if_status=[Status.QUEUED.value],
                only_if_no_file=True,
            )
        )
        rt.io_pool.post(f.close)
        if not done:  # it was claimed, or a signal gave it a file, meanwhile; ours is unused
            rt.io_pool.post(delete_instance_file, f.path)
            return False
        self.instances.env.events_committed(row.workflow_id)
        self.instances.notify(row.workflow_id, row.parent_workflow_id)
        return True
