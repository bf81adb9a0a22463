"""The request and response bodies of the HTTP API.

``Workflow`` and ``Event`` are built from the one row definition
(:mod:`tierflow.hot.rows`): one field per column, typed from its logical
type and nullability, described by its doc. A column added there appears in
the responses and in the OpenAPI document without a change here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from tierflow.hot.rows import HISTORY, WORKFLOWS, Column, LogicalType

__all__ = [
    "CancelResponse",
    "ErasureRequest",
    "Event",
    "ExportResponse",
    "ForkRequest",
    "History",
    "HoldRequest",
    "QueryRequest",
    "QueryResponse",
    "ReasonRequest",
    "ReleaseRequest",
    "ReplayResponse",
    "RetentionRequest",
    "SignalResponse",
    "SqlRequest",
    "SqlResponse",
    "StartRequest",
    "StartResponse",
    "TieringRunRequest",
    "Workflow",
    "WorkflowPage",
    "model_of",
]

_PYTHON_TYPES: dict[LogicalType, Any] = {
    LogicalType.STRING: str,
    LogicalType.INT64: int,
    LogicalType.FLOAT64: float,
    LogicalType.TIMESTAMP_US: datetime,
    LogicalType.JSON: Any,
}

# Attribute values tierflow accepts (``ctx.set_attributes``): str, number, bool, datetime.
AttributeValue = str | int | float | bool | datetime


def _field_type(col: Column) -> Any:
    if col.type is LogicalType.JSON and col.default == "{}":
        # A JSON column that defaults to an object always holds one (``attributes``).
        base: Any = dict[str, Any]
    else:
        base = _PYTHON_TYPES[col.type]
    if col.nullable or col.null_while_running:
        return base | None
    return base


def model_of(name: str, columns: tuple[Column, ...], doc: str) -> type[BaseModel]:
    """A pydantic model with one field per column (type, nullability and doc from the column)."""
    fields: dict[str, Any] = {c.name: (_field_type(c), Field(description=c.doc)) for c in columns}
    model: type[BaseModel] = create_model(name, __doc__=doc, **fields)
    return model


Workflow = model_of(
    "Workflow",
    WORKFLOWS,
    "One row of the workflows table, from whichever tier holds it "
    "(input, result and error are null in lists).",
)
Event = model_of("Event", HISTORY, "One row of the history table.")


class StartRequest(BaseModel):
    """Start (queue) or run an instance of a registered workflow type."""

    model_config = ConfigDict(extra="forbid")

    workflow_type: str = Field(description="A workflow type this server registers.")
    input: Any = Field(default=None, description="The workflow's input (any JSON).")
    workflow_id: str | None = Field(
        default=None, description="Its id; generated when absent.", max_length=255
    )
    mode: Literal["start", "run"] = Field(
        default="start",
        description='"start" queues it and answers at once (durable); "run" runs it '
        "until it completes or first pauses, then answers.",
    )
    attributes: dict[str, AttributeValue] | None = Field(
        default=None, description="Search attributes."
    )
    on_conflict: Literal["use_existing", "fail"] = Field(
        default="use_existing",
        description='An existing id: "use_existing" answers with it, "fail" answers 409.',
    )


class StartResponse(BaseModel):
    """The instance started (or found, for an id that existed)."""

    workflow_id: str
    status: str
    workflow: Workflow | None = Field(  # type: ignore[valid-type]
        default=None, description='The workflow\'s row, for mode "run".'
    )


class WorkflowPage(BaseModel):
    """One page of a list; pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[Workflow]  # type: ignore[valid-type]
    next_cursor: str | None


class History(BaseModel):
    """Every event of an instance, from whichever tier holds it."""

    workflow_id: str
    tier: str
    events: list[Event]  # type: ignore[valid-type]


class QueryRequest(BaseModel):
    """Arguments of a query handler."""

    model_config = ConfigDict(extra="forbid")

    args: list[Any] = Field(default_factory=list)


class QueryResponse(BaseModel):
    """What the query handler returned."""

    result: Any


class ReasonRequest(BaseModel):
    """An optional reason (cancel, terminate)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=10_000)


class CancelResponse(BaseModel):
    """The instance's status after the request."""

    workflow_id: str
    status: str


class ReplayResponse(BaseModel):
    """What replaying today's code against the recorded history found."""

    workflow_id: str
    tier: str
    status: str
    result: Any
    error: dict[str, Any] | None
    events: int = Field(description="How many events were replayed.")


class ForkRequest(BaseModel):
    """Fork an instance: its history up to ``at_event``, then live."""

    model_config = ConfigDict(extra="forbid")

    at_event: int = Field(ge=1, le=2**62)
    workflow_id: str | None = Field(default=None, max_length=255)


class SqlRequest(BaseModel):
    """One read-only SELECT across every tier."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=100_000)
    params: list[Any] | dict[str, Any] | None = None
    as_of: str | int | None = Field(
        default=None,
        description="Read the cold archive as of an ISO 8601 time or a snapshot id.",
    )


class SqlResponse(BaseModel):
    """The result: column names and rows (cut at the server's row limit: ``truncated``)."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False


class TieringRunRequest(BaseModel):
    """One tiering pass."""

    model_config = ConfigDict(extra="forbid")

    to: Literal["warm", "cold"] | None = Field(
        default=None, description='Only hot → warm ("warm") or warm → cold ("cold"); default both.'
    )


class RetentionRequest(BaseModel):
    """Keep finished workflows of a type for ``keep``, then delete them everywhere."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    keep: str | int = Field(description='"90d", "7y", "12w", or seconds.')
    from_: Literal["start", "finish"] = Field(default="finish", alias="from")
    status: str | None = Field(default=None, description="Only finished ones with this status.")
    reason: str | None = Field(default=None, max_length=10_000)


class HoldRequest(BaseModel):
    """A legal hold by workflow id or by one attribute value."""

    model_config = ConfigDict(extra="forbid")

    workflow_id: str | None = Field(default=None, max_length=255)
    attribute: dict[str, AttributeValue] | None = None
    reason: str = Field(min_length=1, max_length=10_000)


class ReleaseRequest(BaseModel):
    """Why a hold is released."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=10_000)


class ErasureRequest(BaseModel):
    """Erase a workflow (and its descendants), or every workflow with an attribute value."""

    model_config = ConfigDict(extra="forbid")

    workflow_id: str | None = Field(default=None, max_length=255)
    attribute: dict[str, AttributeValue] | None = None
    reason: str = Field(min_length=1, max_length=10_000)
    force: bool = Field(default=False, description="Terminate unfinished ones first.")


class ExportResponse(BaseModel):
    """A verified export: the manifest and the three files' text.

    Write each entry of ``files`` under its name into an empty directory and
    ``tf.compliance.verify_export`` checks it.
    """

    workflow_id: str
    manifest: dict[str, Any]
    files: dict[str, str]


class SignalResponse(BaseModel):
    """The signal was recorded (durable)."""

    workflow_id: str
    signal: str
