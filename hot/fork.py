"""Fork: a new hot instance that starts from another instance's history.

``fork(source, at_event=N)`` copies events ``1..N`` of the source (from
whichever tier holds it) into a new instance file, with the replay records
rebuilt from them, and runs it live: operations recorded up to ``N`` return
their recorded results, everything after runs again. The fork's history is
the source's up to ``N``, byte for byte, then one ``workflow.resumed`` event
whose payload names the source (``{"forked_from": id, "forked_at_event": N}``),
then what the fork does live.

Provenance is kept as two search attributes on the fork, ``forked_from`` and
``forked_at_event`` (``list(attributes={"forked_from": id})`` finds every
fork of an instance). ``parent_workflow_id`` is *not* used: it means "child
of", and a finished child wakes its parent.

:func:`plan_fork` is pure: it checks that ``N`` is a boundary between
operations (never inside a step's attempts and retries, nor inside a timer)
and returns what the new file holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tierflow.hot import serde
from tierflow.hot.archive import ops_from_history
from tierflow.hot.creation import file_row
from tierflow.hot.errors import InvalidArgument, WorkflowAlreadyExists
from tierflow.hot.index import IndexDB, IndexRow
from tierflow.hot.models import EventType, HistoryEvent, Status
from tierflow.hot.records import EventRow, OpRecord
from tierflow.hot.replay import history_input
from tierflow.hot.runtime import Runtime

__all__ = [
    "FORKED_AT_EVENT",
    "FORKED_FROM",
    "ForkPlan",
    "fork_boundaries",
    "plan_fork",
    "write_fork",
]

FORKED_FROM = "forked_from"
"""Search attribute of a fork: the id of the instance it was forked from."""
FORKED_AT_EVENT = "forked_at_event"
"""Search attribute of a fork: the last event it took from its source."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Events that belong to one operation from its first to its last: a cut between
# them would leave the operation half recorded.
_SPANNING = {
    EventType.STEP_STARTED.value,
    EventType.STEP_COMPLETED.value,
    EventType.STEP_FAILED.value,
    EventType.RETRY_SCHEDULED.value,
    EventType.RETRY_EXHAUSTED.value,
    EventType.TIMER_STARTED.value,
    EventType.TIMER_FIRED.value,
}
_CLOSING = {
    EventType.STEP_COMPLETED.value,
    EventType.STEP_FAILED.value,
    EventType.RETRY_EXHAUSTED.value,
    EventType.TIMER_FIRED.value,
}
_ENDS = {
    EventType.WORKFLOW_COMPLETED.value,
    EventType.WORKFLOW_FAILED.value,
    EventType.WORKFLOW_CANCELLED.value,
    EventType.WORKFLOW_TERMINATED.value,
}


@dataclass(frozen=True)
class ForkPlan:
    """What a fork's instance file starts with.

    Attributes:
        events: Events ``1..N`` of the source, then the fork's ``workflow.resumed``.
        ops: Replay records rebuilt from events ``1..N``.
        signals: ``(name, payload JSON, received_at)`` received by ``N`` and not
            yet taken by a wait: they go into the fork's inbox.
        input: The workflow input (JSON text).
        attributes: The source's attributes plus the fork's provenance (JSON text).
        step_count: Steps completed by ``N``.
    """

    events: list[EventRow]
    ops: list[OpRecord]
    signals: list[tuple[str, str, int]]
    input: str
    attributes: str
    step_count: int


def _micros(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _spans(events: Sequence[HistoryEvent]) -> list[tuple[int, int | None, str]]:
    """``(first, last or None if still open, label)`` of each step or timer."""
    spans: dict[str, list[Any]] = {}
    for e in events:
        if e.event_type not in _SPANNING or not isinstance(e.payload, dict):
            continue
        seq = e.payload.get("seq")
        if not isinstance(seq, str):
            continue
        label = "timer" if e.event_type.startswith("timer.") else f"step {e.step_name!r}"
        span = spans.setdefault(seq, [e.event_id, None, label])
        span[1] = e.event_id if e.event_type in _CLOSING else None
    return [(s[0], s[1], s[2]) for s in spans.values()]


def fork_boundaries(events: Sequence[HistoryEvent]) -> list[int]:
    """Every event id a fork may start after (pure)."""
    spans = _spans(events)
    out = []
    for e in events:
        if e.event_type in _ENDS:
            break
        n = e.event_id
        if not any(a <= n and (b is None or n < b) for a, b, _ in spans):
            out.append(n)
    return out


def plan_fork(
    source_id: str, events: Sequence[HistoryEvent], at_event: int, now_us: int
) -> ForkPlan:
    """Check ``at_event`` and build the fork's first records (pure).

    Raises:
        InvalidArgument: ``at_event`` is not an event of the history, is its
            end, or falls inside a step (between its first attempt and its
            outcome) or a timer; the message names the nearest boundaries.
    """
    if isinstance(at_event, bool) or not isinstance(at_event, int):
        raise InvalidArgument("at_event must be an event id (an int)")
    if not events or not 1 <= at_event <= len(events):
        raise InvalidArgument(
            f"at_event {at_event} is not an event of {source_id!r} (events 1..{len(events)})"
        )
    prefix = list(events[:at_event])
    cut = prefix[-1]
    if any(e.event_type in _ENDS for e in prefix):
        raise InvalidArgument(
            f"at_event {at_event} of {source_id!r} is its end ({cut.event_type}); "
            "fork at an earlier event"
        )
    for a, b, label in _spans(events):
        if a <= at_event and (b is None or at_event < b):
            bounds = fork_boundaries(events)
            before = max((x for x in bounds if x < at_event), default=None)
            after = min((x for x in bounds if x > at_event), default=None)
            raise InvalidArgument(
                f"at_event {at_event} of {source_id!r} is inside {label} (events {a}.."
                f"{b if b is not None else 'open'}); fork at a step boundary, such as "
                f"{' or '.join(str(x) for x in (before, after) if x is not None) or 'none'}"
            )
    start = history_input(prefix)
    attributes = {**start["attributes"], FORKED_FROM: source_id, FORKED_AT_EVENT: at_event}
    rows = [
        EventRow(
            e.event_type,
            _micros(e.event_time),
            e.step_name,
            e.attempt,
            None if e.payload is None else serde.encode(e.payload, what="event payload"),
        )
        for e in prefix
    ]
    rows.append(
        EventRow(
            EventType.WORKFLOW_RESUMED.value,
            now_us,
            None,
            None,
            serde.encode({FORKED_FROM: source_id, FORKED_AT_EVENT: at_event}, what="fork"),
        )
    )
    return ForkPlan(
        events=rows,
        ops=list(ops_from_history(prefix).values()),
        signals=_unconsumed_signals(prefix),
        input=serde.encode(start["input"], what="input"),
        attributes=serde.encode(attributes, what="attributes"),
        step_count=sum(e.event_type == EventType.STEP_COMPLETED for e in prefix),
    )


def _unconsumed_signals(prefix: Sequence[HistoryEvent]) -> list[tuple[str, str, int]]:
    """Signals received by the cut and not yet taken by a wait, oldest first.

    Waits take signals of one name in arrival order, so the first ``k``
    received are the ``k`` a recorded wait delivered.
    """
    received: dict[str, list[tuple[str, str, int]]] = {}
    taken: dict[str, int] = {}
    for e in prefix:
        if e.event_type == EventType.SIGNAL_RECEIVED and e.step_name:
            text = serde.encode(e.payload, what="signal")
            received.setdefault(e.step_name, []).append((e.step_name, text, _micros(e.event_time)))
        elif e.event_type == EventType.VALUE_RECORDED and (e.step_name or "").startswith("signal:"):
            value = e.payload.get("value") if isinstance(e.payload, dict) else None
            if isinstance(value, dict) and "payload" in value:
                name = (e.step_name or "")[len("signal:") :]
                taken[name] = taken.get(name, 0) + 1
    out = [s for name, got in received.items() for s in got[taken.get(name, 0) :]]
    return sorted(out, key=lambda s: s[2])


async def write_fork(
    rt: Runtime, source: IndexRow, plan: ForkPlan, workflow_id: str, now_us: int
) -> None:
    """Create the fork's index row and instance file (claimed by this process, running).

    The index row goes first, claimed and leased like ``Engine.run``'s: if the
    process dies before the file is written, recovery starts the fork from
    its input (a plain rerun) instead of losing it.

    Raises:
        WorkflowAlreadyExists: ``workflow_id`` is taken.
    """
    spare = await rt.take_spare()
    row = {
        "workflow_id": workflow_id,
        "run_id": uuid.uuid4().hex,
        "workflow_type": source.workflow_type,
        "parent_workflow_id": None,
        "input": plan.input,
        "attributes": plan.attributes,
        "created_at": now_us,
        "status": Status.RUNNING.value,
        "started_at": now_us,
        "lease_owner": rt.owner_id,
        "step_count": plan.step_count,
        "file": rt.rel(spare),
    }
    if not await rt.index.write(IndexDB.insert_fn(row), durable=True):
        rt.give_back(spare)
        raise WorkflowAlreadyExists(
            f"a workflow with id {workflow_id!r} already exists", workflow_id=workflow_id
        )
    spare.deferred = (file_row(row), plan.events)

    def write() -> None:
        try:
            spare.commit(
                ops=plan.ops, add_signals=plan.signals, updates={"step_count": plan.step_count}
            )
        finally:
            spare.close()

    await rt.io(write)
