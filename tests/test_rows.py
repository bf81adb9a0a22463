"""One definition of the ``workflows`` and ``history`` rows, and everything derived from it.

The pins below are copies of the formats as they were before they were
derived: existing instance files, index files and Parquet archives must keep
opening, so a derived schema may never drift from them.
"""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3
import typing
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from tierflow.hot import rows
from tierflow.hot.index import INDEX_COLUMNS, INDEX_ONLY, IndexDB, IndexRow
from tierflow.hot.models import HistoryEvent, WorkflowInfo
from tierflow.hot.records import EventRow
from tierflow.hot.rows import Column, LogicalType
from tierflow.hot.spares import write_template
from tierflow.hot.store import EVENT_COLUMNS, INSTANCE_COLUMNS, INSTANCE_STATE
from tierflow.warm.schema import (
    HISTORY_COLUMNS,
    HISTORY_SCHEMA,
    JSON_COLUMNS,
    WORKFLOW_COLUMNS,
    WORKFLOWS_SCHEMA,
)

ROOT = Path(__file__).resolve().parents[1]

# -- the definition itself -------------------------------------------------------------


def test_rows_are_the_archive_contract() -> None:
    assert rows.names(rows.WORKFLOWS) == (
        "workflow_id",
        "run_id",
        "workflow_type",
        "status",
        "parent_workflow_id",
        "input",
        "result",
        "error",
        "attributes",
        "created_at",
        "started_at",
        "finished_at",
        "duration_ms",
        "step_count",
        "tier",
    )
    assert rows.names(rows.HISTORY) == (
        "workflow_id",
        "run_id",
        "event_id",
        "event_type",
        "event_time",
        "step_name",
        "attempt",
        "payload",
        "workflow_type",
    )


def test_personal_columns() -> None:
    assert rows.personal_columns(rows.WORKFLOWS) == ("input", "result", "error", "attributes")
    assert rows.personal_columns(rows.HISTORY) == ("payload",)
    assert rows.personal_columns(INSTANCE_STATE + INDEX_ONLY) == ()


def test_every_column_is_declared_once() -> None:
    groups = {
        "rows.WORKFLOWS": rows.WORKFLOWS,
        "rows.HISTORY": rows.HISTORY,
        "store.INSTANCE_STATE": INSTANCE_STATE,
        "index.INDEX_ONLY": INDEX_ONLY,
    }
    seen: dict[str, str] = {}
    for group, cols in groups.items():
        for name in rows.names(cols):
            # history repeats the instance's ids, denormalised: the same values.
            if group == "rows.HISTORY" and name in {"workflow_id", "run_id", "workflow_type"}:
                continue
            assert name not in seen, f"{name} declared in {seen.get(name)} and {group}"
            seen[name] = group


def test_table_layouts_compose_the_declarations() -> None:
    assert (
        *rows.without(rows.WORKFLOWS, "duration_ms", "tier"),
        *INSTANCE_STATE,
    ) == INSTANCE_COLUMNS
    declared = {c.name: c for c in (*rows.WORKFLOWS, *INSTANCE_STATE, *INDEX_ONLY)}
    assert set(INDEX_COLUMNS) >= set(rows.names(INDEX_ONLY))
    assert all(name in declared for name in INDEX_COLUMNS)
    assert rows.names(EVENT_COLUMNS) == (
        "event_id",
        "event_type",
        "event_time",
        "step_name",
        "attempt",
        "payload",
    )


def test_helpers() -> None:
    a = Column("a", LogicalType.STRING, "A.", default="it's")
    b = Column("b", LogicalType.TIMESTAMP_US, "B.", nullable=True)
    c = Column("c", LogicalType.INT64, "C.", default=0, null_while_running=True)
    assert rows.pick((a, b, c), "c", "a") == (c, a)
    assert rows.without((a, b, c), "b") == (a, c)
    assert rows.names_of_type((a, b, c), LogicalType.TIMESTAMP_US) == ("b",)
    with pytest.raises(ValueError, match="unknown"):
        rows.pick((a, b), "z")
    with pytest.raises(ValueError, match="duplicate"):
        rows.pick((a, b), "a", "a")
    with pytest.raises(ValueError, match="unknown"):
        rows.without((a, b), "z")
    assert rows.sqlite_columns((a, b, c), primary_key="a", indent="") == (
        "a TEXT PRIMARY KEY DEFAULT 'it''s',\nb INTEGER,\nc INTEGER DEFAULT 0"
    )


# -- row dataclasses -------------------------------------------------------------------


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _optional(annotation: Any) -> bool | None:
    """Whether ``X | None``; None for ``Any`` (decoded JSON, which may be anything)."""
    if annotation is Any:
        return None
    return type(None) in typing.get_args(annotation)


@pytest.mark.parametrize(
    ("cls", "cols"),
    [
        (WorkflowInfo, rows.WORKFLOWS),
        (HistoryEvent, rows.HISTORY),
        (IndexRow, rows.pick((*rows.WORKFLOWS, *INSTANCE_STATE, *INDEX_ONLY), *INDEX_COLUMNS)),
        (EventRow, EVENT_COLUMNS[1:]),  # event ids are assigned when appended
    ],
)
def test_row_dataclasses_have_the_declared_columns(cls: type, cols: tuple[Column, ...]) -> None:
    assert _field_names(cls) == rows.names(cols)
    hints = typing.get_type_hints(cls)
    for col in cols:
        optional = _optional(hints[col.name])
        if optional is not None:
            # Rows in the hot tier may be running: null_while_running columns are optional.
            assert optional == (col.nullable or col.null_while_running), col.name


def test_index_rows_come_back_in_index_column_order(tmp_path: Path) -> None:
    db = IndexDB(tmp_path / "index.sqlite")
    try:
        db.write_now(
            IndexDB.insert_fn(
                {"workflow_id": "w", "run_id": "r", "workflow_type": "t", "status": "queued"}
                | {"created_at": 1}
            )
        )
        row = db.get("w")
        assert row is not None
        assert dataclasses.asdict(row)["attributes"] == "{}"
        assert row.tier == "hot" and row.step_count == 0 and row.cancel_requested == 0
    finally:
        db.close()


# -- SQLite: the derived DDL is the DDL files on disk already have ---------------------

_OLD_INSTANCE_DDL = """
CREATE TABLE instance (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    status TEXT NOT NULL,
    parent_workflow_id TEXT,
    input TEXT,
    result TEXT,
    error TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    step_count INTEGER NOT NULL DEFAULT 0,
    wake_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    cancel_reason TEXT
) STRICT;
CREATE TABLE events (
    event_id INTEGER PRIMARY KEY,
    event_type TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    step_name TEXT,
    attempt INTEGER,
    payload TEXT
) STRICT;
"""

_OLD_INDEX_DDL = """
CREATE TABLE IF NOT EXISTS instances (
    workflow_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    status TEXT NOT NULL,
    parent_workflow_id TEXT,
    input TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    step_count INTEGER NOT NULL DEFAULT 0,
    wake_at INTEGER,
    lease_owner TEXT,
    lease_expires INTEGER,
    recovery_count INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    tier TEXT NOT NULL DEFAULT 'hot',
    file TEXT,
    events_upto INTEGER,
    batch_id TEXT
) STRICT;
"""


def _tables(conn: sqlite3.Connection, *names: str) -> list[tuple[Any, ...]]:
    marks = ",".join("?" * len(names))
    return conn.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type='table' AND name IN ({marks}) "
        "ORDER BY name",
        names,
    ).fetchall()


def _old(ddl: str, *names: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(ddl)
        return _tables(conn, *names)
    finally:
        conn.close()


def test_instance_file_tables_are_unchanged(tmp_path: Path) -> None:
    write_template(tmp_path / "instance.sqlite")
    conn = sqlite3.connect(tmp_path / "instance.sqlite")
    try:
        assert _tables(conn, "instance", "events") == _old(_OLD_INSTANCE_DDL, "instance", "events")
    finally:
        conn.close()


def test_index_table_is_unchanged(tmp_path: Path) -> None:
    IndexDB(tmp_path / "index.sqlite").close()
    conn = sqlite3.connect(tmp_path / "index.sqlite")
    try:
        assert _tables(conn, "instances") == _old(_OLD_INDEX_DDL, "instances")
    finally:
        conn.close()


# -- Arrow: the derived schemas are the archive format ---------------------------------


def _f(name: str, type_: pa.DataType, doc: str, *, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={b"doc": doc.encode()})


_TS = pa.timestamp("us", tz="UTC")
_DATE = _f(
    "finished_date", pa.date32(), "Partition column: the UTC date of the workflow's finished_at."
)
_META = {b"tierflow.schema_version": b"1"}

_OLD_WORKFLOWS = pa.schema(
    [
        _f("workflow_id", pa.string(), "Workflow instance id, unique within the archive."),
        _f("run_id", pa.string(), "Id of this run of the instance."),
        _f("workflow_type", pa.string(), "Registered workflow name."),
        _f("status", pa.string(), "Terminal status: completed, failed, cancelled, terminated."),
        _f(
            "parent_workflow_id",
            pa.string(),
            "Id of the parent for child workflows; null for top-level instances.",
            nullable=True,
        ),
        _f("input", pa.string(), "Workflow input as JSON text.", nullable=True),
        _f(
            "result",
            pa.string(),
            "Return value as JSON text; null unless completed.",
            nullable=True,
        ),
        _f(
            "error",
            pa.string(),
            'Failure as JSON text ({"type", "message", ...}); null unless failed or ended.',
            nullable=True,
        ),
        _f("attributes", pa.string(), "Search attributes as a JSON object text."),
        _f("created_at", _TS, "When the instance was created (UTC, microseconds)."),
        _f(
            "started_at",
            _TS,
            "When it first ran (UTC, microseconds); null if it never ran.",
            nullable=True,
        ),
        _f("finished_at", _TS, "When it reached its terminal status (UTC, microseconds)."),
        _f(
            "duration_ms",
            pa.float64(),
            "finished_at - started_at in milliseconds; null if it never ran.",
            nullable=True,
        ),
        _f("step_count", pa.int64(), "Number of steps the workflow recorded."),
        _f("tier", pa.string(), 'Tier that wrote the row: "warm" in warm files.'),
        _DATE,
    ],
    metadata={b"tierflow.dataset": b"workflows", **_META},
)

_OLD_HISTORY = pa.schema(
    [
        _f("workflow_id", pa.string(), "Workflow instance id."),
        _f("run_id", pa.string(), "Id of the run the event belongs to."),
        _f("event_id", pa.int64(), "Position in the history: 1..n without gaps."),
        _f("event_type", pa.string(), "Event type, e.g. workflow.started, step.completed."),
        _f("event_time", _TS, "When the event was recorded (UTC, microseconds)."),
        _f(
            "step_name",
            pa.string(),
            "Step, timer, signal or child name; null for workflow-level events.",
            nullable=True,
        ),
        _f("attempt", pa.int64(), "Attempt number for step events; else null.", nullable=True),
        _f("payload", pa.string(), "Event details as JSON text.", nullable=True),
        _f("workflow_type", pa.string(), "Registered workflow name (denormalised)."),
        _DATE,
    ],
    metadata={b"tierflow.dataset": b"history", **_META},
)


@pytest.mark.parametrize(
    ("derived", "old"), [(WORKFLOWS_SCHEMA, _OLD_WORKFLOWS), (HISTORY_SCHEMA, _OLD_HISTORY)]
)
def test_arrow_schemas_are_unchanged(derived: pa.Schema, old: pa.Schema) -> None:
    assert derived.equals(old, check_metadata=True), f"{derived}\n!=\n{old}"
    for field in old:
        assert derived.field(field.name).metadata == field.metadata, field.name
    # The serialised form is what lands in every Parquet footer.
    assert derived.serialize().to_pybytes() == old.serialize().to_pybytes()


def test_warm_column_lists() -> None:
    assert rows.names(rows.WORKFLOWS) == WORKFLOW_COLUMNS
    assert rows.names(rows.HISTORY) == HISTORY_COLUMNS
    assert frozenset({"input", "result", "error", "attributes", "payload"}) == JSON_COLUMNS


# -- docs ------------------------------------------------------------------------------


def test_readme_archive_table_lists_the_columns() -> None:
    section = (ROOT / "README.md").read_text().split("### Archive format", 1)[1]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| `workflows` column"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start + 2 :]))
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    workflows = [n for row in cells for n in row[0].split(", ") if n]
    history = [n for row in cells for n in row[3].split(", ") if n]
    assert workflows == [*rows.names(rows.WORKFLOWS), "finished_date"]
    assert history == [*rows.names(rows.HISTORY), "finished_date"]
