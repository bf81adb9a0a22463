"""The rows that cross tiers, declared once: ``workflows`` and ``history``.

Every tier holds the same two logical tables. This module is their single
definition: each column's name, logical type, nullability, whether it may
hold personal data, and its description. Everything else derives from it:

- hot: the SQLite DDL of the instance files and the index
  (:func:`sqlite_columns`), their column lists, and the row dataclasses
  (``WorkflowInfo``, ``HistoryEvent``, ``IndexRow``; tests pin their fields);
- warm: the Arrow schemas of the Parquet archive (``warm/schema.py`` maps each
  :class:`LogicalType` to an Arrow type and keeps :attr:`Column.doc` in the
  field metadata);
- later the Iceberg schema, DuckDB views and HTTP models.

Columns only the hot tier keeps (the index's lease and file, an instance's
wake-up time and cancel flags) are declared as :class:`Column` tuples in the
module that owns them and composed with these, so every column is still
declared once.

Order matters: it is the column order of every archive file and table, so a
column is only ever appended, and a change here is a change of the archive
format (``warm.schema.SCHEMA_VERSION``).

Pure data and string helpers: no I/O and no third-party imports, so every
tier can use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "AUDIT",
    "HISTORY",
    "SQLITE_TYPES",
    "WORKFLOWS",
    "Column",
    "LogicalType",
    "names",
    "names_of_type",
    "personal_columns",
    "pick",
    "sqlite_columns",
    "without",
]


class LogicalType(StrEnum):
    """What a column holds, independent of any storage format."""

    STRING = "string"
    """UTF-8 text."""
    INT64 = "int64"
    """A 64-bit signed integer."""
    FLOAT64 = "float64"
    """A double-precision float."""
    TIMESTAMP_US = "timestamp_us"
    """An instant, as integer microseconds since the epoch (UTC)."""
    JSON = "json"
    """A JSON value, stored as its UTF-8 text."""


SQLITE_TYPES: Mapping[LogicalType, str] = {
    LogicalType.STRING: "TEXT",
    LogicalType.INT64: "INTEGER",
    LogicalType.FLOAT64: "REAL",
    LogicalType.TIMESTAMP_US: "INTEGER",
    LogicalType.JSON: "TEXT",
}
"""The SQLite (STRICT table) type of each logical type."""


@dataclass(frozen=True)
class Column:
    """One column of a row definition.

    Attributes:
        name: Column name, the same in every tier.
        type: Logical type; each tier maps it to its own.
        doc: One-line description (the archive's field ``doc`` metadata).
        nullable: Whether a *finished* row, the one that leaves the hot tier,
            may hold null here.
        personal: Whether the column may hold personal data (workflow input
            and output, errors, attributes, event payloads): what erasure and
            redaction must reach in every tier.
        default: Value a new row gets when none is given (SQL ``DEFAULT``).
        null_while_running: Null until the instance finishes (``finished_at``);
            hot tables, which hold running instances, let it be null even
            though a finished row may not.
    """

    name: str
    type: LogicalType
    doc: str
    nullable: bool = False
    personal: bool = False
    default: str | int | None = None
    null_while_running: bool = False


_S, _I, _F, _TS, _J = (
    LogicalType.STRING,
    LogicalType.INT64,
    LogicalType.FLOAT64,
    LogicalType.TIMESTAMP_US,
    LogicalType.JSON,
)

# The docs are those of the first archives ever written: they are in every
# Parquet file's metadata, so a reworded doc is a different schema.
WORKFLOWS: tuple[Column, ...] = (
    Column("workflow_id", _S, "Workflow instance id, unique within the archive."),
    Column("run_id", _S, "Id of this run of the instance."),
    Column("workflow_type", _S, "Registered workflow name."),
    Column("status", _S, "Terminal status: completed, failed, cancelled, terminated."),
    Column(
        "parent_workflow_id",
        _S,
        "Id of the parent for child workflows; null for top-level instances.",
        nullable=True,
    ),
    Column("input", _J, "Workflow input as JSON text.", nullable=True, personal=True),
    Column(
        "result",
        _J,
        "Return value as JSON text; null unless completed.",
        nullable=True,
        personal=True,
    ),
    Column(
        "error",
        _J,
        'Failure as JSON text ({"type", "message", ...}); null unless failed or ended.',
        nullable=True,
        personal=True,
    ),
    Column(
        "attributes", _J, "Search attributes as a JSON object text.", personal=True, default="{}"
    ),
    Column("created_at", _TS, "When the instance was created (UTC, microseconds)."),
    Column(
        "started_at",
        _TS,
        "When it first ran (UTC, microseconds); null if it never ran.",
        nullable=True,
    ),
    Column(
        "finished_at",
        _TS,
        "When it reached its terminal status (UTC, microseconds).",
        null_while_running=True,
    ),
    Column(
        "duration_ms",
        _F,
        "finished_at - started_at in milliseconds; null if it never ran.",
        nullable=True,
    ),
    Column("step_count", _I, "Number of steps the workflow recorded.", default=0),
    Column("tier", _S, 'Tier that wrote the row: "warm" in warm files.', default="hot"),
)
"""The ``workflows`` row: one per instance."""

HISTORY: tuple[Column, ...] = (
    Column("workflow_id", _S, "Workflow instance id."),
    Column("run_id", _S, "Id of the run the event belongs to."),
    Column("event_id", _I, "Position in the history: 1..n without gaps."),
    Column("event_type", _S, "Event type, e.g. workflow.started, step.completed."),
    Column("event_time", _TS, "When the event was recorded (UTC, microseconds)."),
    Column(
        "step_name",
        _S,
        "Step, timer, signal or child name; null for workflow-level events.",
        nullable=True,
    ),
    Column("attempt", _I, "Attempt number for step events; else null.", nullable=True),
    Column("payload", _J, "Event details as JSON text.", nullable=True, personal=True),
    Column("workflow_type", _S, "Registered workflow name (denormalised)."),
)
"""The ``history`` row: one per event."""

AUDIT: tuple[Column, ...] = (
    Column("seq", _I, "Position in the audit log: 1, 2, ... in the order of the operations."),
    Column("at", _TS, "When the operation was recorded (UTC, microseconds)."),
    Column("operation", _S, "What was done: retention.set, hold, erase, export, ..."),
    Column("actor", _S, "Who did it, as the caller named them."),
    Column("reason", _S, "Why, as the caller gave it.", nullable=True),
    Column(
        "subject_hash",
        _S,
        "HMAC-SHA256 (hex) of the workflow id concerned with the deployment's audit key.",
        nullable=True,
    ),
    Column("counts", _J, "Counts as a JSON object, per tier where it applies.", default="{}"),
    Column(
        "snapshots_before",
        _J,
        "Cold table -> current Iceberg snapshot id before the operation (JSON object).",
        default="{}",
    ),
    Column(
        "snapshots_after",
        _J,
        "Cold table -> current Iceberg snapshot id after the operation (JSON object).",
        default="{}",
    ),
    Column("detail", _J, "Operation-specific details as a JSON object.", default="{}"),
)
"""The ``audit`` row: one per recorded compliance operation (never a clear workflow id)."""


def names(cols: Iterable[Column]) -> tuple[str, ...]:
    """Return the column names, in order."""
    return tuple(c.name for c in cols)


def names_of_type(cols: Iterable[Column], type_: LogicalType) -> tuple[str, ...]:
    """Return the names of the columns of logical type ``type_``, in order."""
    return tuple(c.name for c in cols if c.type is type_)


def personal_columns(cols: Iterable[Column]) -> tuple[str, ...]:
    """Return the names of the columns that may hold personal data, in order."""
    return tuple(c.name for c in cols if c.personal)


def pick(cols: Iterable[Column], *wanted: str) -> tuple[Column, ...]:
    """Return the columns named ``wanted``, in that order.

    For tables that keep a subset of the columns in an order of their own
    (an existing on-disk layout).

    Raises:
        ValueError: A name is not among ``cols``, or appears twice.
    """
    by_name = {c.name: c for c in cols}
    if unknown := [n for n in wanted if n not in by_name]:
        raise ValueError(f"unknown columns {unknown} (have {sorted(by_name)})")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"duplicate columns in {wanted}")
    return tuple(by_name[n] for n in wanted)


def without(cols: Sequence[Column], *dropped: str) -> tuple[Column, ...]:
    """Return ``cols`` minus the columns named ``dropped``, order kept.

    Raises:
        ValueError: A name is not among ``cols``.
    """
    if unknown := sorted(set(dropped) - set(names(cols))):
        raise ValueError(f"unknown columns {unknown}")
    return tuple(c for c in cols if c.name not in dropped)


def _sql_literal(value: str | int) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def sqlite_columns(
    cols: Iterable[Column], *, primary_key: str | None = None, indent: str = "    "
) -> str:
    """Render column definitions for a SQLite ``CREATE TABLE`` (without parentheses).

    Hot tables hold running instances, so a column that is
    :attr:`Column.null_while_running` is nullable there.

    Args:
        cols: The columns, in table order.
        primary_key: Name of the column that is the table's primary key (which
            implies NOT NULL in a STRICT table).
        indent: Prefix of each line.

    Returns:
        One ``name TYPE [PRIMARY KEY | NOT NULL] [DEFAULT v]`` line per
        column, the lines separated by commas.
    """
    lines = []
    for c in cols:
        line = f"{indent}{c.name} {SQLITE_TYPES[c.type]}"
        if c.name == primary_key:
            line += " PRIMARY KEY"
        elif not (c.nullable or c.null_while_running):
            line += " NOT NULL"
        if c.default is not None:
            line += f" DEFAULT {_sql_literal(c.default)}"
        lines.append(line)
    return ",\n".join(lines)
