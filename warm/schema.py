"""The warm-tier columns: explicit Arrow schemas and fast table builders.

Two datasets hold finished workflows, with the columns every tier shares
(README, "Archive format"), as :mod:`tierflow.hot.rows` declares them (names, order, types,
nullability and docs all derive from there):

- ``workflows``: one row per instance (:data:`WORKFLOWS_SCHEMA`).
- ``history``: one row per event (:data:`HISTORY_SCHEMA`).

Both also carry ``finished_date`` (date32, the UTC date of the workflow's
``finished_at``) inside the files, not only in the object path: Iceberg's
``add_files`` infers partition values from Parquet statistics, and hive-style
writers drop partition columns from the files.

The format is meant to be read without tierflow: JSON values are plain UTF-8
text, timestamps are microseconds adjusted to UTC, and every field carries its
description in the Arrow field metadata under ``doc``.

The builders take column lists (what the tiering job reads out of the instance
files) and build each Arrow array in one call, so 2M events take seconds, not
minutes. Timestamps come in as integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
from tierflow.hot.errors import InvalidArgument
from tierflow.hot.models import TERMINAL_STATUSES
from tierflow.hot.rows import HISTORY, WORKFLOWS, Column, LogicalType, names, names_of_type

__all__ = [
    "ARROW_TYPES",
    "DATASETS",
    "HISTORY_COLUMNS",
    "HISTORY_SCHEMA",
    "JSON_COLUMNS",
    "SCHEMA_VERSION",
    "WORKFLOWS_SCHEMA",
    "WORKFLOW_COLUMNS",
    "conform",
    "history_table",
    "schema_for",
    "validate_batch",
    "workflows_table",
]

SCHEMA_VERSION = 1
"""Version of the warm file layout; bumped on any incompatible column change."""

TIER = "warm"
"""Value of the ``tier`` column in warm files."""

_TS = pa.timestamp("us", tz="UTC")


def _field(name: str, type_: pa.DataType, doc: str, *, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={b"doc": doc.encode()})


def _schema(dataset: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(
        fields,
        metadata={
            b"tierflow.dataset": dataset.encode(),
            b"tierflow.schema_version": str(SCHEMA_VERSION).encode(),
        },
    )


_FINISHED_DATE = _field(
    "finished_date",
    pa.date32(),
    "Partition column: the UTC date of the workflow's finished_at.",
)

ARROW_TYPES: Mapping[LogicalType, pa.DataType] = {
    LogicalType.STRING: pa.string(),
    LogicalType.INT64: pa.int64(),
    LogicalType.FLOAT64: pa.float64(),
    LogicalType.TIMESTAMP_US: _TS,
    # Plain UTF-8 text, so any Parquet reader can use it without tierflow.
    LogicalType.JSON: pa.string(),
}
"""The Arrow type of each logical type of the row definition (``tierflow.hot.rows``)."""


def _fields(cols: Sequence[Column]) -> list[pa.Field]:
    return [_field(c.name, ARROW_TYPES[c.type], c.doc, nullable=c.nullable) for c in cols]


WORKFLOWS_SCHEMA = _schema("workflows", [*_fields(WORKFLOWS), _FINISHED_DATE])
"""One row per finished workflow instance: ``rows.WORKFLOWS``, then ``finished_date``."""

HISTORY_SCHEMA = _schema("history", [*_fields(HISTORY), _FINISHED_DATE])
"""One row per history event of a finished workflow: ``rows.HISTORY``, then ``finished_date``."""

DATASETS: dict[str, pa.Schema] = {"workflows": WORKFLOWS_SCHEMA, "history": HISTORY_SCHEMA}
"""Dataset name to schema."""

WORKFLOW_COLUMNS: tuple[str, ...] = names(WORKFLOWS)
"""Columns :func:`workflows_table` takes (all but the derived ``finished_date``)."""

HISTORY_COLUMNS: tuple[str, ...] = names(HISTORY)
"""Columns :func:`history_table` takes (all but the derived ``finished_date``)."""

JSON_COLUMNS = frozenset(
    names_of_type(WORKFLOWS, LogicalType.JSON) + names_of_type(HISTORY, LogicalType.JSON)
)
"""Columns holding JSON text (no min/max statistics are written for them)."""

# Columns the workflows builder fills in when the caller leaves them out.
_DERIVED_WORKFLOW_COLUMNS = frozenset({"duration_ms", "tier"})


def schema_for(dataset: str) -> pa.Schema:
    """Return the schema of ``dataset`` ("workflows" or "history").

    Raises:
        InvalidArgument: Unknown dataset name.
    """
    try:
        return DATASETS[dataset]
    except KeyError:
        raise InvalidArgument(
            f"unknown warm dataset {dataset!r} (expected one of {sorted(DATASETS)})"
        ) from None


def workflows_table(columns: Mapping[str, Sequence[Any]]) -> pa.Table:
    """Build a ``workflows`` table from column lists.

    Args:
        columns: Column name to values, for every name in
            :data:`WORKFLOW_COLUMNS`. Timestamps are integer microseconds since
            the epoch (UTC); JSON columns are already-encoded JSON text, stored
            as given. ``duration_ms`` may be left out (derived from
            ``finished_at - started_at``), and so may ``tier`` (``"warm"``).

    Returns:
        A table with :data:`WORKFLOWS_SCHEMA`, ``finished_date`` derived from
        ``finished_at``, in input order.

    Raises:
        InvalidArgument: A column is missing, unknown, of the wrong type or
            length, or null where the schema forbids it.
    """
    required = set(WORKFLOW_COLUMNS) - _DERIVED_WORKFLOW_COLUMNS
    rows = _check_columns(columns, required, set(WORKFLOW_COLUMNS))
    arrays = {name: _array(name, columns[name], WORKFLOWS_SCHEMA) for name in columns}
    if "duration_ms" not in arrays:
        elapsed = pc.subtract(
            arrays["finished_at"].cast(pa.int64()), arrays["started_at"].cast(pa.int64())
        )
        arrays["duration_ms"] = pc.divide(elapsed.cast(pa.float64()), 1000.0)
    if "tier" not in arrays:
        arrays["tier"] = pa.array([TIER] * rows, pa.string())
    arrays["finished_date"] = arrays["finished_at"].cast(pa.date32())
    return _assemble(arrays, WORKFLOWS_SCHEMA)


def history_table(
    columns: Mapping[str, Sequence[Any]], finished_at_by_workflow: Mapping[str, int]
) -> pa.Table:
    """Build a ``history`` table from column lists.

    Args:
        columns: Column name to values, for every name in
            :data:`HISTORY_COLUMNS`; ``event_time`` in integer microseconds
            since the epoch (UTC), ``payload`` as JSON text.
        finished_at_by_workflow: ``finished_at`` (microseconds) of every
            workflow the events belong to; each row's ``finished_date`` is
            derived from its workflow's.

    Returns:
        A table with :data:`HISTORY_SCHEMA`, in input order.

    Raises:
        InvalidArgument: A column is missing, unknown, of the wrong type or
            length, or null where the schema forbids it; or an event belongs to
            a workflow missing from ``finished_at_by_workflow``.
    """
    _check_columns(columns, set(HISTORY_COLUMNS), set(HISTORY_COLUMNS))
    arrays = {name: _array(name, columns[name], HISTORY_SCHEMA) for name in columns}
    ids = pa.array(list(finished_at_by_workflow), pa.string())
    finished = _array("finished_at", list(finished_at_by_workflow.values()), WORKFLOWS_SCHEMA)
    # A hash lookup per row in C++, instead of a dict lookup per row in Python.
    position = pc.index_in(arrays["workflow_id"], value_set=ids)
    if position.null_count:
        missing = pc.filter(arrays["workflow_id"], pc.is_null(position))[0].as_py()
        raise InvalidArgument(
            f"history has events of workflow {missing!r}, which has no finished_at",
            workflow_id=missing,
        )
    arrays["finished_date"] = pc.take(finished.cast(pa.date32()), position)
    return _assemble(arrays, HISTORY_SCHEMA)


def conform(table: pa.Table, dataset: str) -> pa.Table:
    """Return ``table`` with exactly the schema of ``dataset``, or raise.

    Column names and order must match; types are cast where Arrow can do so
    losslessly, and the schema's metadata and nullability are applied.

    Raises:
        InvalidArgument: Different columns, an impossible cast, or nulls in a
            non-nullable column.
    """
    schema = schema_for(dataset)
    if table.schema.names != schema.names:
        raise InvalidArgument(
            f"{dataset} table has columns {table.schema.names}, expected {schema.names}"
        )
    if not table.schema.equals(schema, check_metadata=True):
        try:
            table = table.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise InvalidArgument(f"{dataset} table does not fit its schema: {exc}") from exc
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise InvalidArgument(f"{dataset} column {field.name!r} holds nulls")
    return table


def validate_batch(workflows: pa.Table, history: pa.Table) -> None:
    """Check the rules a warm batch must follow that one table cannot check alone.

    Every workflow id appears once, with a terminal status, ``tier`` = "warm"
    and the ``finished_date`` of its ``finished_at``; every event belongs to a
    workflow of the batch and carries that workflow's ``run_id``,
    ``workflow_type`` and ``finished_date``. (Event ids 1..n are checked by
    the writer, which sorts the events anyway.)

    Args:
        workflows: A table conforming to :data:`WORKFLOWS_SCHEMA`.
        history: A table conforming to :data:`HISTORY_SCHEMA`.

    Raises:
        InvalidArgument: A rule is broken; the message names an offending row.
    """
    ids = workflows.column("workflow_id")
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        dup = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))[0]
        raise InvalidArgument(f"workflow {dup.as_py()!r} appears more than once in the batch")
    terminal = pa.array(sorted(str(s) for s in TERMINAL_STATUSES), pa.string())
    _require(workflows, pc.is_in(workflows.column("status"), value_set=terminal), "status")
    _require(workflows, pc.equal(workflows.column("tier"), TIER), "tier")
    day = workflows.column("finished_at").cast(pa.date32())
    _require(workflows, pc.equal(workflows.column("finished_date"), day), "finished_date")
    if history.num_rows == 0:
        return
    position = pc.index_in(history.column("workflow_id"), value_set=ids.combine_chunks())
    if position.null_count:
        missing = pc.filter(history.column("workflow_id"), pc.is_null(position))[0].as_py()
        raise InvalidArgument(
            f"history has events of workflow {missing!r}, which is not in the batch",
            workflow_id=missing,
        )
    for column in ("run_id", "workflow_type", "finished_date"):
        expected = pc.take(workflows.column(column).combine_chunks(), position)
        _require(history, pc.equal(history.column(column), expected), column)


def _require(table: pa.Table, ok: Any, column: str) -> None:
    """Raise InvalidArgument naming the first row where ``ok`` is false."""
    if pc.all(ok, min_count=0).as_py():  # min_count=0: an empty table is valid
        return
    bad = pc.filter(table, pc.invert(ok)).slice(0, 1).to_pylist()[0]
    raise InvalidArgument(
        f"invalid {column} {bad[column]!r} for workflow {bad['workflow_id']!r}",
        workflow_id=bad["workflow_id"],
    )


def _check_columns(
    columns: Mapping[str, Sequence[Any]], required: set[str], allowed: set[str]
) -> int:
    """Check names and lengths of builder input; return the row count."""
    names = set(columns)
    if missing := sorted(required - names):
        raise InvalidArgument(f"missing columns: {missing}")
    if unknown := sorted(names - allowed):
        raise InvalidArgument(f"unknown columns: {unknown}")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise InvalidArgument(f"columns differ in length: {lengths}")
    return next(iter(lengths.values()))


def _array(name: str, values: Sequence[Any], schema: pa.Schema) -> pa.Array | pa.ChunkedArray:
    """Convert one column list in a single C++ call.

    Timestamps are converted as int64 first, so a datetime (whose timezone
    would be guessed) is rejected instead of silently reinterpreted.
    """
    field = schema.field(name)
    is_ts = pa.types.is_timestamp(field.type)
    try:
        # Strings beyond 2 GiB come back chunked, which the table accepts as is.
        array = pa.array(values, type=pa.int64() if is_ts else field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise InvalidArgument(f"column {name!r}: {exc}") from exc
    if not field.nullable and array.null_count:
        raise InvalidArgument(f"column {name!r} holds nulls, which it never may")
    return array.cast(field.type) if is_ts else array


def _assemble(arrays: dict[str, Any], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([arrays[name] for name in schema.names], schema=schema)
