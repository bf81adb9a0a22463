"""Replay records rebuilt from history alone, for instances outside the hot tier.

A query (and, later, replay and fork) of an archived instance has only its
``workflows`` row and ``history`` events. :func:`ops_from_history` rebuilds
the operation records the executor replays from, using the ``seq`` every
operation event carries; :func:`state_from_history` wraps them as an
:class:`InstanceState`. Pure functions: no I/O.
"""

from __future__ import annotations

from typing import Any

from tierflow.hot import serde
from tierflow.hot.models import EventType, HistoryEvent, WorkflowInfo
from tierflow.hot.records import InstanceState, OpKind, OpRecord, OpStatus

__all__ = ["ops_from_history", "state_from_history"]


def ops_from_history(events: list[HistoryEvent]) -> dict[str, OpRecord]:
    """Rebuild replay records from history events (pure; no I/O)."""
    ops: dict[str, OpRecord] = {}
    exhausted: set[str] = set()
    for e in events:
        p = e.payload if isinstance(e.payload, dict) else {}
        seq = p.get("seq")
        if not isinstance(seq, str):
            continue
        t = e.event_type
        if t == EventType.STEP_COMPLETED:
            ops[seq] = OpRecord(
                seq,
                OpKind.STEP,
                e.step_name or "",
                OpStatus.COMPLETED,
                e.attempt or 1,
                serde.encode(p.get("result"), what="result"),
            )
        elif t == EventType.RETRY_EXHAUSTED:
            exhausted.add(seq)
        elif t == EventType.STEP_FAILED:
            err: dict[str, Any] = dict(p.get("error") or {})
            err.update(
                attempts=e.attempt,
                exhausted=seq in exhausted,
                timeout=str(err.get("type", "")).endswith("StepTimeout"),
            )
            # A later retry.scheduled / step.started supersedes this record.
            ops[seq] = OpRecord(
                seq,
                OpKind.STEP,
                e.step_name or "",
                OpStatus.FAILED,
                e.attempt or 1,
                None,
                serde.encode(err, what="error"),
            )
        elif t == EventType.RETRY_SCHEDULED:
            ops.pop(seq, None)
        elif t == EventType.TIMER_FIRED:
            ops[seq] = OpRecord(seq, OpKind.TIMER, "sleep", OpStatus.COMPLETED)
        elif t == EventType.VALUE_RECORDED:
            name = e.step_name or ""
            if name.startswith("signal:"):
                ops[seq] = OpRecord(
                    seq,
                    OpKind.SIGNAL,
                    name[len("signal:") :],
                    OpStatus.COMPLETED,
                    result=serde.encode(p.get("value"), what="signal"),
                )
            else:
                ops[seq] = OpRecord(
                    seq,
                    OpKind.VALUE,
                    name,
                    OpStatus.COMPLETED,
                    result=serde.encode(p.get("value"), what="value"),
                )
        elif t == EventType.CHILD_STARTED:
            ops[seq] = OpRecord(
                seq,
                OpKind.CHILD,
                e.step_name or "",
                OpStatus.STARTED,
                result=serde.encode({"workflow_id": p.get("workflow_id")}, what="child"),
            )
        elif t == EventType.CHILD_COMPLETED:
            ops[seq] = OpRecord(
                seq,
                OpKind.CHILD_RESULT,
                str(p.get("workflow_id")),
                OpStatus.COMPLETED,
                result=serde.encode(p.get("result"), what="child result"),
            )
        elif t == EventType.CHILD_FAILED:
            err = {"status": p.get("status"), **(p.get("error") or {})}
            ops[seq] = OpRecord(
                seq,
                OpKind.CHILD_RESULT,
                str(p.get("workflow_id")),
                OpStatus.FAILED,
                error=serde.encode(err, what="child error"),
            )
    # Retry exhaustion is recorded after the last failure: fold it in.
    for seq in exhausted:
        rec = ops.get(seq)
        if rec is not None and rec.status == OpStatus.FAILED and rec.error:
            info = serde.decode(rec.error)
            info["exhausted"] = True
            rec.error = serde.encode(info, what="error")
    return ops


def state_from_history(info: WorkflowInfo, events: list[HistoryEvent]) -> InstanceState:
    """An :class:`InstanceState` good enough to replay an archived instance for a query."""
    row = {
        "workflow_id": info.workflow_id,
        "run_id": info.run_id,
        "workflow_type": info.workflow_type,
        "status": info.status,
        "parent_workflow_id": info.parent_workflow_id,
        "input": serde.encode(info.input, what="input"),
        "attributes": serde.encode(info.attributes, what="attributes"),
        "step_count": info.step_count,
        "cancel_requested": 0,
        "cancel_reason": None,
    }
    return InstanceState(row=row, ops=ops_from_history(events), last_event_id=len(events))
