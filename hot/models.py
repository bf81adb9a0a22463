"""Statuses, event types, and the row shapes shared by every tier.

``WorkflowInfo`` is one row of the logical ``workflows`` table and
``HistoryEvent`` one row of ``history`` (the same in every
tier); their fields are the columns :mod:`tierflow.hot.rows` declares, in
that order (a test pins them). Timestamps are UTC datetimes with microsecond
precision; in SQLite they are stored as integer microseconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, overload

from tierflow.hot.rows import HISTORY, WORKFLOWS, LogicalType, names, names_of_type

__all__ = [
    "TERMINAL_STATUSES",
    "EventType",
    "HistoryEvent",
    "Status",
    "WorkflowInfo",
    "from_micros",
    "to_micros",
]


class Status(StrEnum):
    """Lifecycle of an instance."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"


TERMINAL_STATUSES = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TERMINATED}
)


class EventType(StrEnum):
    """Every event type a history can hold."""

    WORKFLOW_QUEUED = "workflow.queued"
    WORKFLOW_STARTED = "workflow.started"
    WORKFLOW_PAUSED = "workflow.paused"
    WORKFLOW_RESUMED = "workflow.resumed"
    WORKFLOW_RECOVERED = "workflow.recovered"
    WORKFLOW_COMPLETED = "workflow.completed"
    WORKFLOW_FAILED = "workflow.failed"
    WORKFLOW_CANCELLED = "workflow.cancelled"
    WORKFLOW_TERMINATED = "workflow.terminated"
    STEP_STARTED = "step.started"
    STEP_COMPLETED = "step.completed"
    STEP_FAILED = "step.failed"
    RETRY_SCHEDULED = "retry.scheduled"
    RETRY_EXHAUSTED = "retry.exhausted"
    TIMER_STARTED = "timer.started"
    TIMER_FIRED = "timer.fired"
    SIGNAL_RECEIVED = "signal.received"
    CHILD_STARTED = "child.started"
    CHILD_COMPLETED = "child.completed"
    CHILD_FAILED = "child.failed"
    # Not in the original list: ctx.now()/uuid()/random() values, so any tier's
    # history alone is enough to replay (Temporal calls these markers).
    VALUE_RECORDED = "value.recorded"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(ts: float) -> int:
    """Seconds since the epoch to integer microseconds."""
    return round(ts * 1_000_000)


@overload
def from_micros(us: int) -> datetime: ...
@overload
def from_micros(us: None) -> None: ...
@overload
def from_micros(us: int | None) -> datetime | None: ...


def from_micros(us: int | None) -> datetime | None:
    """Integer microseconds since the epoch to an aware UTC datetime."""
    if us is None:
        return None
    return _EPOCH + timedelta(microseconds=us)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# The dataclasses' fields are these columns, in this order (tests/test_rows.py pins it).
_WORKFLOW_FIELDS = names(WORKFLOWS)
_HISTORY_FIELDS = names(HISTORY)
_WORKFLOW_TIMESTAMPS = names_of_type(WORKFLOWS, LogicalType.TIMESTAMP_US)
_HISTORY_TIMESTAMPS = names_of_type(HISTORY, LogicalType.TIMESTAMP_US)


@dataclass(frozen=True)
class HistoryEvent:
    """One row of a workflow's history (the columns of ``rows.HISTORY``)."""

    workflow_id: str
    run_id: str
    event_id: int
    event_type: str
    event_time: datetime
    step_name: str | None
    attempt: int | None
    payload: Any
    workflow_type: str

    def to_dict(self) -> dict[str, Any]:
        """Return the event as JSON-ready data (timestamps in ISO 8601).

        The payload is the event's own decoded value, not a copy (a deep copy cost more
        than the rest of the conversion): treat it as read-only.
        """
        d = {name: getattr(self, name) for name in _HISTORY_FIELDS}
        for key in _HISTORY_TIMESTAMPS:
            d[key] = _iso(d[key])
        return d


@dataclass(frozen=True)
class WorkflowInfo:
    """One row of the ``workflows`` table: what ``describe`` and ``list`` return.

    Its fields are the columns of ``rows.WORKFLOWS``, ``tier`` included.
    ``list`` reads only the instance index, so ``input``, ``result`` and
    ``error`` are None there; ``describe`` fills them from the instance.
    """

    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    parent_workflow_id: str | None
    input: Any
    result: Any
    error: Any
    attributes: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    step_count: int
    tier: str = "hot"

    @property
    def finished(self) -> bool:
        """True once the instance reached a terminal status."""
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """Return the row as JSON-ready data (timestamps in ISO 8601).

        ``input``, ``result``, ``error`` and ``attributes`` are the row's own decoded
        values, not copies: treat them as read-only.
        """
        d = {name: getattr(self, name) for name in _WORKFLOW_FIELDS}
        for key in _WORKFLOW_TIMESTAMPS:
            d[key] = _iso(d[key])
        return d
