"""What a new instance starts with: its file row and first events (pure; no I/O).

An instance file is created in three places (a first run, a signal sent to a
queued instance, a cancel or terminate of a queued one); all of them build it
from the index row here, so the first events are the same whichever comes
first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tierflow.hot import serde
from tierflow.hot.errors import InvalidArgument
from tierflow.hot.index import IndexRow
from tierflow.hot.models import EventType
from tierflow.hot.records import EventRow

__all__ = ["FILE_ROW_KEYS", "check_attributes", "create_from_row", "file_row", "first_events"]

# The instance-row columns known when an instance is created.
FILE_ROW_KEYS = (
    "workflow_id",
    "run_id",
    "workflow_type",
    "status",
    "parent_workflow_id",
    "input",
    "attributes",
    "created_at",
    "started_at",
)


def file_row(row: dict[str, Any]) -> dict[str, Any]:
    """The instance file's first ``instance`` row, from a creation row."""
    return {k: row.get(k) for k in FILE_ROW_KEYS}


def first_events(row: dict[str, Any], started: int) -> list[EventRow]:
    """``workflow.queued`` (carrying input, attributes, parent) and ``workflow.started``."""
    # The payload is {"input": ..., "attributes": ..., "parent_workflow_id": ...},
    # spliced from texts serde.encode already wrote (re-encoding what it decodes
    # gives the same text): a large input is neither decoded nor copied twice.
    attrs = row["attributes"]
    payload = (
        f'{{"input":{row["input"] if row["input"] is not None else "null"},'
        f'"attributes":{attrs if attrs and attrs != "null" else "{}"},'
        f'"parent_workflow_id":{serde.encode(row.get("parent_workflow_id"), what="parent id")}}}'
    )
    return [
        EventRow(EventType.WORKFLOW_QUEUED.value, row["created_at"], None, None, payload),
        EventRow(EventType.WORKFLOW_STARTED.value, started),
    ]


def create_from_row(row: IndexRow, started_at: int | None = None) -> dict[str, Any]:
    """What creating an instance's file needs, from its index row."""
    create = {
        "workflow_id": row.workflow_id,
        "run_id": row.run_id,
        "workflow_type": row.workflow_type,
        "parent_workflow_id": row.parent_workflow_id,
        "input": row.input,
        "attributes": row.attributes,
        "created_at": row.created_at,
    }
    if started_at is not None:
        create["started_at"] = started_at
    return create


def check_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    """Validate search attributes; datetimes become ISO text.

    Raises:
        InvalidArgument: A name that is not a non-empty string, or a value
            that is not str, int, float, bool or datetime.
    """
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgument("attribute names must be non-empty strings")
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, str | int | float | bool):
            out[key] = value
        else:
            raise InvalidArgument(
                f"attribute {key!r} has type {type(value).__name__}; "
                "use str, int, float, bool or datetime"
            )
    return out
