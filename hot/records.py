"""The records an instance file holds, as the executor reads and writes them.

An :class:`EventRow` is a history event to append; an :class:`OpRecord` is the
replay record of one durable operation (a step, timer, recorded value, signal
wait or child), keyed by its position; :class:`InstanceState` is what loading a
file yields. ``hot/store.py`` reads and writes them; the executor, the
context and replay build and match them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["EventRow", "InstanceState", "OpKind", "OpRecord", "OpStatus"]


@dataclass(frozen=True)
class EventRow:
    """An event to append; event ids are assigned inside the transaction."""

    event_type: str
    event_time: int
    step_name: str | None = None
    attempt: int | None = None
    payload: str | None = None


class OpKind(StrEnum):
    """What a durable operation is (``operations.kind``)."""

    STEP = "step"
    TIMER = "timer"
    VALUE = "value"
    SIGNAL = "signal"
    CHILD = "child"
    CHILD_RESULT = "child-result"


class OpStatus(StrEnum):
    """Where a durable operation stands (``operations.status``)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STARTED = "started"  # a child that was started
    WAITING = "waiting"
    RETRYING = "retrying"


@dataclass
class OpRecord:
    """The replay record of one durable operation, keyed by its position ``seq``.

    Attributes:
        seq: Key of the operation: ``"<branch>:<n>"`` (see ``Execution.next_seq``).
        kind: An :class:`OpKind` value. Records read from a file hold the plain
            text, which compares equal to the enum member.
        name: Step name, signal name, value kind, ...; checked on replay.
        status: An :class:`OpStatus` value (plain text when read from a file).
        attempt: Attempts made so far (steps).
        result: JSON text of the result.
        error: JSON text describing the failure.
        wake_at: Microseconds; when a waiting or retrying operation is due.
    """

    seq: str
    kind: str
    name: str
    status: str
    attempt: int = 0
    result: str | None = None
    error: str | None = None
    wake_at: int | None = None


@dataclass
class InstanceState:
    """Everything the executor needs to replay an instance."""

    row: dict[str, Any]
    ops: dict[str, OpRecord]
    last_event_id: int
