"""``WorkflowContext``: the durable operations a workflow function may use.

Everything a workflow does that touches the outside world or time goes through
its context, so that a replay of the same code against the same records takes
the same path: steps run once to success and are then read from history,
timers are durable, and ``now``/``uuid``/``random`` are recorded. Steps
(attempts, retries, timeouts) are run by ``hot/steps.py``; every operation
goes through the instance's ``Execution`` (``hot/executor.py``).
"""

from __future__ import annotations

import asyncio
import uuid as _uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from tierflow.hot import serde
from tierflow.hot.errors import (
    ChildWorkflowFailed,
    InvalidArgument,
    SignalTimeout,
    WorkflowCancelled,
)
from tierflow.hot.executor import Execution
from tierflow.hot.ids import validate_workflow_id
from tierflow.hot.models import EventType, Status, from_micros, to_micros
from tierflow.hot.records import OpKind, OpRecord, OpStatus
from tierflow.hot.retry import RetryPolicy, parse_duration
from tierflow.hot.steps import run_step

__all__ = ["ChildHandle", "WorkflowContext"]

_NO_RETRY = RetryPolicy(max_attempts=1)
_MISSING: Any = object()
_ATTR_TYPES = (str, int, float, bool, datetime)


class WorkflowContext:
    """The handle a workflow function receives as its first argument.

    Attributes:
        workflow_id: This instance's id.
        run_id: This run's id.
        workflow_type: The registered type name.
        parent_workflow_id: The parent's id for a child workflow, else None.
    """

    def __init__(self, execution: Execution) -> None:
        self._ex = execution
        self.workflow_id = execution.workflow_id
        self.run_id = execution.run_id
        self.workflow_type: str = execution.row["workflow_type"]
        self.parent_workflow_id: str | None = execution.row["parent_workflow_id"]

    @property
    def is_replaying(self) -> bool:
        """True while the code is re-running operations that already have records."""
        return self._ex.replayed < len(self._ex.ops) or self._ex.query_mode

    # -- steps -------------------------------------------------------------------

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | None = None,
        timeout: float | str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` at most once to success and record its result.

        Sync functions run on a worker thread, async ones on the event loop. On
        replay the recorded result is returned and ``fn`` is not called. The
        result must be JSON-serialisable; it is returned as decoded JSON (a
        tuple comes back as a list) so a first run and a replay see the same.

        Args:
            name: Identifies the step in history; checked on replay.
            fn: The function to call.
            *args: Positional arguments for ``fn``.
            retry: How failures are retried; default: no retry.
            timeout: Limit for one attempt, seconds or "30s".
            **kwargs: Keyword arguments for ``fn``.

        Raises:
            StepError: The step failed for good (``RetryExhausted`` after the
                policy's attempts, ``StepTimeout`` for a timed-out last attempt).
            WorkflowCancelled: The instance was cancelled.
        """
        if not isinstance(name, str) or not name:
            raise InvalidArgument("step name must be a non-empty string")
        limit = None if timeout is None else parse_duration(timeout)
        return await run_step(self._ex, name, fn, args, kwargs, retry or _NO_RETRY, limit)

    # -- timers ------------------------------------------------------------------

    async def sleep(self, duration: float | str) -> None:
        """Wait durably for ``duration`` (seconds, or "500ms", "5s", "10m", "2h", "1d").

        The wait survives restarts: the instance is unloaded and woken by the
        scheduler when the timer is due.
        """
        seconds = parse_duration(duration)
        await self._timer(self._ex.now_us() + to_micros(seconds), seconds)

    async def sleep_until(self, when: datetime) -> None:
        """Wait durably until ``when`` (an aware datetime)."""
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise InvalidArgument("sleep_until needs a timezone-aware datetime")
        await self._timer(to_micros(when.timestamp()), None)

    async def _timer(self, wake_live: int, seconds: float | None) -> None:
        ex = self._ex
        seq = ex.next_seq()
        rec = ex.record_for(seq, OpKind.TIMER, "sleep")
        pending: asyncio.Task[None] | None = None
        if rec is None:
            ex.check_cancel(seq, OpKind.TIMER, "sleep")
            now = ex.now_us()
            rec = OpRecord(seq, OpKind.TIMER, "sleep", OpStatus.WAITING, wake_at=wake_live)
            started = ex.event(
                EventType.TIMER_STARTED,
                payload={
                    "seq": seq,
                    "duration": seconds if seconds is not None else (wake_live - now) / 1e6,
                    "fire_at": from_micros(wake_live).isoformat(),
                },
                at=now,
            )
            if ex.is_long_wait(wake_live, now):
                # Long wait: the timer is written with workflow.paused, one commit.
                ex.buffer(events=[started], ops=[rec])
                raise ex.suspend(wake_live, "timer")
            # Short wait: make the timer durable while the wait runs. If the process
            # dies before that commit lands, a replay simply starts the timer again.
            pending = asyncio.ensure_future(ex.commit(events=[started], ops=[rec]))
        if rec.status == OpStatus.COMPLETED:
            return
        if rec.status == OpStatus.CANCELLED:
            raise WorkflowCancelled(ex.cancel_reason)
        wake = rec.wake_at or 0
        try:
            if ex.now_us() < wake:
                if pending is None:
                    ex.check_cancel(seq, OpKind.TIMER, "sleep")
                    await ex.wait_until(wake, "timer")
                else:  # a short wait whose timer is being committed
                    await ex.sleep_until(wake)
        finally:
            if pending is not None:
                await pending
        ex.buffer(
            events=[ex.event(EventType.TIMER_FIRED, payload={"seq": seq})],
            ops=[OpRecord(seq, OpKind.TIMER, "sleep", OpStatus.COMPLETED, wake_at=wake)],
        )

    # -- signals -----------------------------------------------------------------

    async def wait_for_signal(
        self, name: str, timeout: float | str | None = None, default: Any = _MISSING
    ) -> Any:
        """Wait durably for the next signal named ``name`` and return its payload.

        Signals are kept in the instance's inbox in arrival order; one sent
        before the wait is delivered at once, and each wait takes one signal.

        Args:
            name: The signal name.
            timeout: Give up after this long (seconds or "24h"); the timeout is
                a durable timer, so it also fires after a restart.
            default: Returned on timeout (None counts). Without it, a timeout
                raises ``SignalTimeout``.

        Raises:
            SignalTimeout: Timed out and no default was given.
        """
        ex = self._ex
        if not isinstance(name, str) or not name:
            raise InvalidArgument("signal name must be a non-empty string")
        seconds = None if timeout is None else parse_duration(timeout)
        seq = ex.next_seq()
        rec = ex.record_for(seq, OpKind.SIGNAL, name)
        if rec is not None and rec.status == OpStatus.COMPLETED:
            return self._signal_result(name, rec, default)
        if rec is not None and rec.status == OpStatus.CANCELLED:
            raise WorkflowCancelled(ex.cancel_reason)
        if rec is None:
            ex.check_cancel(seq, OpKind.SIGNAL, name)
            wake = None if seconds is None else ex.now_us() + to_micros(seconds)
            rec = OpRecord(seq, OpKind.SIGNAL, name, OpStatus.WAITING, wake_at=wake)
            ex.buffer(ops=[rec])  # written with the pause, or with the delivery
        taken = ex.consuming()  # taken by an earlier wait, not yet committed
        waiting = [w for w in await ex.read_signals(name) if w[0] not in taken]
        if waiting:
            inbox_id, payload, _ = waiting[0]
            value = serde.decode(payload)
            self._settle_signal(seq, name, {"payload": value}, [(inbox_id, seq)])
            return value
        if rec.wake_at is not None and ex.now_us() >= rec.wake_at:
            done = self._settle_signal(seq, name, {"timeout": True}, [])
            return self._signal_result(name, done, default)
        ex.check_cancel(seq, OpKind.SIGNAL, name)
        raise ex.suspend(rec.wake_at, "signal")

    def _settle_signal(
        self, seq: str, name: str, outcome: dict[str, Any], consume: list[tuple[int, str]]
    ) -> OpRecord:
        """Record how a wait ended (a delivered payload, or the timeout).

        The record rides with the next commit, like a step's result: before
        the workflow's next side effect, its pause or its end. A crash before
        then leaves the signal unconsumed in the inbox, and the replayed wait
        takes the same one again.
        """
        ex = self._ex
        done = OpRecord(
            seq,
            OpKind.SIGNAL,
            name,
            OpStatus.COMPLETED,
            result=serde.encode(outcome, what="signal"),
        )
        event = ex.event(
            EventType.VALUE_RECORDED, step=f"signal:{name}", payload={"seq": seq, "value": outcome}
        )
        ex.buffer(ops=[done], events=[event], consume=consume, values=True)
        return done

    def _signal_result(self, name: str, rec: OpRecord, default: Any) -> Any:
        outcome = serde.decode(rec.result) or {}
        if "payload" in outcome:
            return outcome["payload"]
        if default is _MISSING:
            raise SignalTimeout(
                f"no signal {name!r} arrived before the timeout",
                workflow_id=self.workflow_id,
                signal=name,
            )
        return default

    # -- child workflows ---------------------------------------------------------

    async def start_child(
        self, wf: Any, input: Any = None, *, workflow_id: str | None = None
    ) -> ChildHandle:
        """Start a child workflow and return a handle whose ``result()`` waits for it.

        The child is its own instance with ``parent_workflow_id`` set. Without
        ``workflow_id`` the child's id is derived from the parent's id and the
        operation's position, so a replay finds the same child.
        """
        ex = self._ex
        type_name = ex.env.workflow_type_name(wf)
        seq = ex.next_seq()
        rec = ex.record_for(seq, OpKind.CHILD, type_name)
        if rec is not None:
            if rec.status == OpStatus.CANCELLED:
                raise WorkflowCancelled(ex.cancel_reason)
            child_id = serde.decode(rec.result)["workflow_id"]
            if not ex.query_mode:
                # Idempotent: the child exists unless we died between the two writes.
                await ex.env.start_child(type_name, input, child_id, self.workflow_id)
            return ChildHandle(self, child_id, type_name)
        ex.check_cancel(seq, OpKind.CHILD, type_name)
        child_id = workflow_id or f"{self.workflow_id[:200]}:child-{seq.replace(':', '-')}"
        validate_workflow_id(child_id)
        # Values the workflow has seen (a signal, now(), uuid()) may be in the
        # child's input: make them durable before the child exists.
        await ex.flush_values()
        # Queue the child first (durable, idempotent), then record that we did.
        await ex.env.start_child(type_name, input, child_id, self.workflow_id)
        op = OpRecord(
            seq,
            OpKind.CHILD,
            type_name,
            OpStatus.STARTED,
            result=serde.encode({"workflow_id": child_id}, what="child"),
        )
        await ex.commit(
            ops=[op],
            events=[
                ex.event(
                    EventType.CHILD_STARTED,
                    step=type_name,
                    payload={"seq": seq, "workflow_id": child_id, "input": input},
                )
            ],
        )
        return ChildHandle(self, child_id, type_name)

    async def child(self, wf: Any, input: Any = None, *, workflow_id: str | None = None) -> Any:
        """Start a child workflow and wait for its result.

        Raises:
            ChildWorkflowFailed: The child failed, was cancelled or terminated.
        """
        handle = await self.start_child(wf, input, workflow_id=workflow_id)
        return await handle.result()

    async def _child_result(self, child_id: str, type_name: str) -> Any:
        ex = self._ex
        seq = ex.next_seq()
        rec = ex.record_for(seq, OpKind.CHILD_RESULT, child_id)
        if rec is None or rec.status == OpStatus.WAITING:
            ex.check_cancel(seq, OpKind.CHILD_RESULT, child_id)
            outcome = await ex.env.child_outcome(child_id)
            if outcome is None:
                if rec is None:
                    ex.buffer(ops=[OpRecord(seq, OpKind.CHILD_RESULT, child_id, OpStatus.WAITING)])
                raise ex.suspend(None, "child")
            status, result, error = outcome
            ok = status == Status.COMPLETED
            rec = OpRecord(
                seq,
                OpKind.CHILD_RESULT,
                child_id,
                OpStatus.COMPLETED if ok else OpStatus.FAILED,
                result=serde.encode(result, what="child result") if ok else None,
                error=None
                if ok
                else serde.encode({"status": status, **(error or {})}, what="child error"),
            )
            etype = EventType.CHILD_COMPLETED if ok else EventType.CHILD_FAILED
            payload: dict[str, Any] = {"seq": seq, "workflow_id": child_id}
            payload.update({"result": result} if ok else {"status": status, "error": error})
            await ex.commit(ops=[rec], events=[ex.event(etype, step=type_name, payload=payload)])
        if rec.status == OpStatus.CANCELLED:
            raise WorkflowCancelled(ex.cancel_reason)
        if rec.status == OpStatus.COMPLETED:
            return serde.decode(rec.result)
        err = serde.decode(rec.error) or {}
        raise ChildWorkflowFailed(
            f"child workflow {child_id!r} {err.get('status', 'failed')}: "
            f"{err.get('type')}: {err.get('message')}",
            workflow_id=child_id,
            error_type=err.get("type"),
            cause=err.get("message"),
        )

    # -- recorded values ---------------------------------------------------------

    def _value(self, name: str, make: Callable[[], Any]) -> Any:
        ex = self._ex
        seq = ex.next_seq()
        rec = ex.record_for(seq, OpKind.VALUE, name)
        if rec is not None:
            return serde.decode(rec.result)
        value = make()
        text = serde.encode(value, what=name)
        ex.buffer(
            ops=[OpRecord(seq, OpKind.VALUE, name, OpStatus.COMPLETED, result=text)],
            events=[
                ex.event(EventType.VALUE_RECORDED, step=name, payload={"seq": seq, "value": value})
            ],
            values=True,
        )
        return value

    def now(self) -> datetime:
        """Return the current time (UTC), recorded so a replay sees the same value."""
        us = self._value("now", self._ex.now_us)
        return from_micros(int(us))

    def uuid(self) -> str:
        """Return a random UUID4 string, recorded so a replay sees the same value."""
        return str(self._value("uuid", lambda: str(_uuid.uuid4())))

    def random(self) -> float:
        """Return a random float in [0, 1), recorded so a replay sees the same value."""
        return float(self._value("random", __import__("random").random))

    # -- attributes and queries ----------------------------------------------------

    def set_attributes(self, **attributes: Any) -> None:
        """Set searchable attributes (str, int, float, bool or datetime values).

        They are stored in the instance and in the index, so
        ``list(attributes={...})`` finds the instance without opening its file.
        """
        self._ex.set_attributes(_checked_attributes(attributes))

    def set_query_handler(self, name: str, fn: Callable[..., Any]) -> None:
        """Answer queries named ``name`` with ``fn(*args)`` (must not block or mutate)."""
        self._ex.set_query_handler(name, fn)


def _checked_attributes(attributes: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, stored value)``; raise at the first value of a type not allowed."""
    for key, value in attributes.items():
        if not isinstance(value, _ATTR_TYPES):
            raise InvalidArgument(
                f"attribute {key!r} has type {type(value).__name__}; "
                "use str, int, float, bool or datetime"
            )
        yield key, value.isoformat() if isinstance(value, datetime) else value


class ChildHandle:
    """A started child workflow, from inside its parent.

    Attributes:
        workflow_id: The child's id.
        workflow_type: The child's type name.
    """

    def __init__(self, ctx: WorkflowContext, workflow_id: str, workflow_type: str) -> None:
        self._ctx = ctx
        self.workflow_id = workflow_id
        self.workflow_type = workflow_type

    async def result(self) -> Any:
        """Wait durably for the child to finish and return its result.

        Raises:
            ChildWorkflowFailed: The child failed, was cancelled or terminated.
        """
        return await self._ctx._child_result(self.workflow_id, self.workflow_type)
