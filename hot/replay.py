"""Replay: today's workflow code against a recorded history, running nothing.

A replay drives the workflow function from the top, exactly as a resumed run
would, but every durable operation the code asks for must already be in the
history: the recorded result is returned, no step, child or timer runs, and
nothing is written. The first place where code and history disagree raises
:class:`~tierflow.hot.errors.NonDeterminismError` naming that history event,
with both sides shown (Temporal's Replayer, for tierflow histories).

The matching is a small state machine over data (:class:`Matcher`), driven
by the executor through one seam (``Execution.record_for``); the history it
matches comes from whichever tier holds the instance, or from a file the
replay kit (``tierflow.testing``) loads. History alone is enough: the input
is in ``workflow.queued``, recorded values in ``value.recorded``.

What counts as a disagreement, checked in this order:

* the code asks for a different operation than history holds at that
  position (another step name, a step where history has a timer, ...);
* the code asks for an operation past the end of a finished history
  (an extra operation);
* the code finishes while history holds operations it never asked for
  (a missing operation);
* the code ends differently from history (completed vs failed, or another
  result).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tierflow.hot import serde
from tierflow.hot.archive import ops_from_history
from tierflow.hot.authoring import WorkflowDefinition
from tierflow.hot.clock import Clock, SystemClock
from tierflow.hot.context import WorkflowContext
from tierflow.hot.errors import (
    InvalidArgument,
    NonDeterminismError,
    WorkflowCancelled,
    error_info,
)
from tierflow.hot.executor import Execution, QueryStop, Suspend
from tierflow.hot.iothreads import IoThreads
from tierflow.hot.models import EventType, HistoryEvent, Status
from tierflow.hot.records import EventRow, InstanceState, OpKind, OpRecord

__all__ = [
    "Matcher",
    "RecordedOp",
    "ReplayEnv",
    "ReplayResult",
    "describe_op",
    "history_input",
    "history_status",
    "recorded_operations",
    "replay_events",
]

_TERMINAL_EVENTS = {
    EventType.WORKFLOW_COMPLETED.value: Status.COMPLETED.value,
    EventType.WORKFLOW_FAILED.value: Status.FAILED.value,
    EventType.WORKFLOW_CANCELLED.value: Status.CANCELLED.value,
    EventType.WORKFLOW_TERMINATED.value: Status.TERMINATED.value,
}
# Histories whose every operation is recorded: asking for more is an extra operation.
_COMPLETE = {Status.COMPLETED.value, Status.FAILED.value}


@dataclass(frozen=True)
class ReplayResult:
    """What a replay found; it raised instead if code and history disagreed.

    Attributes:
        workflow_id: The instance replayed.
        tier: Where its history came from (``hot``, ``warm``, ``cold``, or
            ``file`` for the replay kit).
        result: What the workflow code returned (None unless ``status`` is
            ``completed``).
        events: The history replayed, in order.
        status: How the replay ended: ``completed``, ``failed``, or, for a
            history that has not finished (running, paused, cancelled,
            terminated), ``incomplete`` once the code reached its end.
        error: ``{"type", "message"}`` when the code raised (``failed``).
    """

    workflow_id: str
    tier: str
    result: Any
    events: list[HistoryEvent]
    status: str = Status.COMPLETED.value
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class RecordedOp:
    """One durable operation as history recorded it.

    Attributes:
        seq: Its position key (``"<branch>:<n>"``).
        event_id: The first history event of the operation.
        record: The replay record rebuilt from its events.
    """

    seq: str
    event_id: int
    record: OpRecord


_OP_WORDS: dict[str, str] = {
    OpKind.STEP: "step",
    OpKind.TIMER: "timer",
    OpKind.VALUE: "recorded value",
    OpKind.SIGNAL: "wait for signal",
    OpKind.CHILD: "child workflow",
    OpKind.CHILD_RESULT: "result of child",
}


def describe_op(kind: str, name: str) -> str:
    """A short human description of an operation (``step 'charge'``)."""
    what = _OP_WORDS.get(kind, kind)
    return what if kind == OpKind.TIMER else f"{what} {name!r}"


def recorded_operations(events: Sequence[HistoryEvent]) -> dict[str, RecordedOp]:
    """Every completed (or finally failed) operation in ``events``, keyed by seq (pure)."""
    first: dict[str, int] = {}
    for e in events:
        seq = e.payload.get("seq") if isinstance(e.payload, dict) else None
        if isinstance(seq, str) and seq not in first:
            first[seq] = e.event_id
    return {
        seq: RecordedOp(seq, first[seq], rec)
        for seq, rec in ops_from_history(list(events)).items()
        if seq in first
    }


def history_status(events: Sequence[HistoryEvent]) -> str:
    """The status history ends in: a terminal status, or ``running`` (pure)."""
    for e in reversed(events):
        status = _TERMINAL_EVENTS.get(e.event_type)
        if status is not None:
            return status
    return Status.RUNNING.value


def history_input(events: Sequence[HistoryEvent]) -> dict[str, Any]:
    """``input``, ``attributes`` and ``parent_workflow_id`` from ``workflow.queued``.

    Raises:
        InvalidArgument: The history does not start with ``workflow.queued``.
    """
    if not events or events[0].event_type != EventType.WORKFLOW_QUEUED:
        raise InvalidArgument("a history must start with its workflow.queued event")
    p = events[0].payload if isinstance(events[0].payload, dict) else {}
    return {
        "input": p.get("input"),
        "attributes": p.get("attributes") or {},
        "parent_workflow_id": p.get("parent_workflow_id"),
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Matcher:
    """Matches the operations code asks for against a history (pure; no I/O).

    Args:
        workflow_id: For messages.
        events: The recorded history, in order.
    """

    workflow_id: str
    events: Sequence[HistoryEvent]
    ops: dict[str, RecordedOp] = field(init=False)
    status: str = field(init=False)
    used: set[str] = field(init=False, default_factory=set)
    error: NonDeterminismError | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.ops = recorded_operations(self.events)
        self.status = history_status(self.events)

    @property
    def complete(self) -> bool:
        """Every operation of the run is in history (it completed or failed)."""
        return self.status in _COMPLETE

    def _end_event(self) -> int:
        return self.events[-1].event_id if self.events else 0

    def _diverge(self, event_id: int, seq: str | None, expected: str, got: str, why: str) -> None:
        if self.error is None:  # the first disagreement is the one reported
            self.error = NonDeterminismError(
                f"workflow {self.workflow_id!r} diverged from its history at event {event_id}"
                f" ({why}): history has {expected}, the code {got}",
                workflow_id=self.workflow_id,
                seq=seq,
                expected=expected,
                actual=got,
                event_id=event_id,
            )

    def match(self, seq: str, kind: OpKind, name: str) -> OpRecord | None:
        """The record at ``seq`` if it is the operation asked for.

        Returns None at the live edge of an unfinished history, and also on a
        disagreement, which is then in :attr:`error`.
        """
        rec = self.ops.get(seq)
        asked = f"asked for {describe_op(kind, name)}"
        if rec is None:
            if self.complete:
                self._diverge(
                    self._end_event(),
                    seq,
                    f"no further operation ({self.events[-1].event_type})",
                    asked,
                    "extra operation",
                )
            return None
        r = rec.record
        if (r.kind, r.name) != (kind, name):
            step = r.kind == kind == OpKind.STEP
            why = "different step name" if step else "different operation"
            if step and any(
                o.record.kind == OpKind.STEP and o.record.name == name and o.seq not in self.used
                for o in self.ops.values()
            ):
                why = "steps in a different order"
            self._diverge(rec.event_id, seq, describe_op(r.kind, r.name), asked, why)
            return None
        self.used.add(seq)
        return r

    def finish(self, status: str, result: Any = None, error: dict[str, Any] | None = None) -> None:
        """Check how the code ended against history; sets :attr:`error` on a mismatch.

        Args:
            status: ``completed``, ``failed``, or ``incomplete`` (stopped at the
                live edge of an unfinished history).
            result: The code's return value when completed.
            error: ``error_info`` of what it raised when failed.
        """
        if self.error is not None or status == "incomplete":
            return
        missing = sorted(
            (o for s, o in self.ops.items() if s not in self.used), key=lambda o: o.event_id
        )
        ended = "returned" if status == Status.COMPLETED else f"raised {(error or {}).get('type')}"
        if missing:
            o = missing[0]
            self._diverge(
                o.event_id,
                o.seq,
                describe_op(o.record.kind, o.record.name),
                f"{ended} without asking for it",
                "missing operation",
            )
            return
        if not self.complete:
            return
        end = self.events[-1]
        for e in reversed(self.events):
            if e.event_type in _TERMINAL_EVENTS:
                end = e
                break
        payload = end.payload if isinstance(end.payload, dict) else {}
        if self.status != status:
            self._diverge(
                end.event_id, None, f"the workflow {self.status}", ended, "different ending"
            )
        elif (
            status == Status.COMPLETED
            and "result" in payload
            and _canonical(payload["result"]) != _canonical(result)
        ):
            self._diverge(
                end.event_id,
                None,
                f"result {_canonical(payload['result'])[:200]}",
                f"returned {_canonical(result)[:200]}",
                "different result",
            )


class ReplayEnv:
    """The engine services a replay may use: none that run or write anything.

    Args:
        clock: Time source (only for records a replay never writes).
        max_payload_bytes: Largest JSON value accepted.
    """

    def __init__(
        self, clock: Clock | None = None, max_payload_bytes: int = serde.DEFAULT_MAX_PAYLOAD_BYTES
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._max = max_payload_bytes

    @property
    def clock(self) -> Clock:
        """The time source."""
        return self._clock

    @property
    def io_pool(self) -> IoThreads:
        """Never used: a replay runs no step and syncs no file."""
        raise RuntimeError("a replay runs no I/O")

    @property
    def max_payload_bytes(self) -> int:
        """Largest JSON value accepted."""
        return self._max

    @property
    def inline_sleep_threshold(self) -> float:
        """Waits are never awaited in a replay."""
        return 0.0

    def workflow_type_name(self, wf: Any) -> str:
        """A child's type name from a definition, a function or a name."""
        if isinstance(wf, WorkflowDefinition):
            return wf.name
        if isinstance(wf, str):
            return wf
        return str(getattr(wf, "__name__", wf))

    async def start_child(self, type_name: str, input: Any, child_id: str, parent_id: str) -> None:
        """Never called: a recorded child is not started again on replay."""
        raise RuntimeError("a replay starts no child")

    async def child_outcome(self, child_id: str) -> tuple[str, Any, Any] | None:
        """Never called: a child's outcome comes from history."""
        raise RuntimeError("a replay reads no child")

    def events_committed(
        self,
        workflow_id: str,
        written: tuple[str, str, list[tuple[int, EventRow]]] | None = None,
    ) -> None:
        """Nothing is committed."""


class _ReplayExecution(Execution):
    """An execution whose records come from a :class:`Matcher`, and that stops at its edge."""

    def __init__(
        self, env: ReplayEnv, state: InstanceState, definition: WorkflowDefinition, m: Matcher
    ) -> None:
        super().__init__(env, None, state, definition, query_mode=True)
        self.matcher = m

    def record_for(self, seq: str, kind: OpKind, name: str) -> OpRecord | None:
        rec = None if self.matcher.error is not None else self.matcher.match(seq, kind, name)
        if rec is None:
            # A BaseException: user code's ``except Exception`` cannot swallow it.
            raise QueryStop()
        self.count_replayed()
        return rec


async def replay_events(
    definition: WorkflowDefinition,
    events: Sequence[HistoryEvent],
    *,
    tier: str = "file",
    env: ReplayEnv | None = None,
) -> ReplayResult:
    """Run ``definition`` against ``events``; nothing runs for real, nothing is written.

    Raises:
        NonDeterminismError: Code and history disagree; ``event_id``,
            ``expected`` and ``got`` say where and how.
        InvalidArgument: ``events`` is not a history of ``definition``'s type.
    """
    events = list(events)
    if not events:
        raise InvalidArgument("cannot replay an empty history")
    first = events[0]
    wid = first.workflow_id
    if first.workflow_type != definition.name:
        raise InvalidArgument(
            f"history of {wid!r} is of workflow type {first.workflow_type!r}, "
            f"not {definition.name!r}"
        )
    start = history_input(events)
    state = InstanceState(
        row={
            "workflow_id": wid,
            "run_id": first.run_id,
            "workflow_type": first.workflow_type,
            "status": history_status(events),
            "parent_workflow_id": start["parent_workflow_id"],
            "input": serde.encode(start["input"], what="input"),
            "attributes": serde.encode(start["attributes"], what="attributes"),
            "step_count": 0,
            "cancel_requested": 0,
            "cancel_reason": None,
        },
        ops={},
        last_event_id=len(events),
    )
    matcher = Matcher(wid, events)
    ex = _ReplayExecution(env or ReplayEnv(), state, definition, matcher)
    ctx = WorkflowContext(ex)

    async def run() -> tuple[str, Any, dict[str, Any] | None]:
        ex.enter_root()
        try:
            value = await definition(ctx, start["input"])
        except (QueryStop, Suspend, WorkflowCancelled):
            return "incomplete", None, None
        except Exception as exc:
            return Status.FAILED.value, None, error_info(exc)
        return Status.COMPLETED.value, serde.decode(serde.encode(value, what="result")), None

    # Its own task: the replay's branch names never leak into the caller's context.
    status, result, error = await asyncio.get_running_loop().create_task(run())
    matcher.finish(status, result, error)
    if matcher.error is not None:
        raise matcher.error
    return ReplayResult(wid, tier, result, events, status, error)
