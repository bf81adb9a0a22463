"""The hot tier as Arrow tables for SQL: workflows from the index, history from instance files.

Hot ``workflows`` rows come from the index cut (:mod:`tierflow.tiering.sql.cut`);
only ``result`` is not in the index, so it is read from the instance files of
completed hot instances, and only when the query reads that column. Which
instances' files a query can touch comes from its plan
(:mod:`tierflow.tiering.sql.plan`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from tierflow.hot import serde
from tierflow.hot.models import TERMINAL_STATUSES, EventType, Status
from tierflow.hot.router import Tier
from tierflow.hot.rows import HISTORY, WORKFLOWS, names
from tierflow.hot.store import EVENT_COLUMNS, IncompleteInstance, InstanceFile, read_for_archive
from tierflow.tiering.sql.cut import HOT_INDEX_COLUMNS
from tierflow.tiering.sql.plan import HISTORY_PREFIX, WORKFLOWS_PREFIX
from tierflow.warm.schema import ARROW_TYPES

__all__ = [
    "HISTORY_PREFIX",
    "WORKFLOWS_PREFIX",
    "completed",
    "finished",
    "history_schema",
    "hot_history",
    "hot_workflows",
    "read_instances",
    "workflows_schema",
]

_FILE = HOT_INDEX_COLUMNS.index("file")
_STATUS = HOT_INDEX_COLUMNS.index("status")
_EVENT_NAMES = names(EVENT_COLUMNS)


def _schema(cols: Sequence[Any], prefix: str) -> pa.Schema:
    fields = [pa.field(prefix + c.name, ARROW_TYPES[c.type]) for c in cols]
    return pa.schema(fields)


def workflows_schema(prefix: str = WORKFLOWS_PREFIX) -> pa.Schema:
    """The hot workflows columns (``rows.WORKFLOWS``, all nullable), names prefixed."""
    return _schema(WORKFLOWS, prefix)


def history_schema(prefix: str = HISTORY_PREFIX) -> pa.Schema:
    """The hot history columns (``rows.HISTORY``), names prefixed."""
    return _schema(HISTORY, prefix)


def _table(columns: Mapping[str, Sequence[Any]], schema: pa.Schema, prefix: str) -> pa.Table:
    arrays = []
    for f in schema:
        values = columns[f.name[len(prefix) :]]
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(values, pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def hot_workflows(rows: Sequence[tuple[Any, ...]], results: dict[str, str | None]) -> pa.Table:
    """The hot ``workflows`` rows as an Arrow table with prefixed column names.

    Args:
        rows: Index rows, values of :data:`HOT_INDEX_COLUMNS`.
        results: ``result`` JSON text of the instances whose files were read.
    """
    by_name = dict(zip(HOT_INDEX_COLUMNS, zip(*rows, strict=True), strict=True)) if rows else {}
    cols: dict[str, Sequence[Any]] = {n: by_name.get(n, ()) for n in names(WORKFLOWS)}
    cols["duration_ms"] = [
        None if s is None or f is None else (f - s) / 1000.0
        for s, f in zip(cols["started_at"], cols["finished_at"], strict=True)
    ]
    cols["result"] = [results.get(i) for i in cols["workflow_id"]]
    cols["tier"] = [Tier.HOT.value] * len(rows)
    return _table(cols, workflows_schema(), WORKFLOWS_PREFIX)


def finished(rows: Sequence[tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """The index rows of finished instances with a file, by workflow id.

    Their files no longer change, so what was read from them can be reused
    while the index row stays the same (:mod:`tierflow.tiering.sql_hot_cache`).
    """
    return {r[0]: r for r in rows if r[_STATUS] in TERMINAL_STATUSES and r[_FILE] is not None}


def spans(
    items: Sequence[tuple[dict[str, Any], list[tuple[Any, ...]]]],
) -> dict[str, tuple[int, int]]:
    """Where each instance's events are in :func:`hot_history` of ``items``: (offset, length)."""
    out, offset = {}, 0
    for row, events in items:
        out[row["workflow_id"]] = (offset, len(events))
        offset += len(events)
    return out


def hot_history(items: Iterable[tuple[dict[str, Any], list[tuple[Any, ...]]]]) -> pa.Table:
    """The events of instances read from their files, as an Arrow table with prefixed names.

    Each instance's events are contiguous and in the order of ``items``.
    """
    ev: dict[str, list[Any]] = {n: [] for n in names(HISTORY)}
    for row, events in items:
        n = len(events)
        ev["workflow_id"].extend([row["workflow_id"]] * n)
        ev["run_id"].extend([row["run_id"]] * n)
        ev["workflow_type"].extend([row["workflow_type"]] * n)
        for i, name in enumerate(_EVENT_NAMES):
            ev[name].extend([e[i] for e in events])
    return _table(ev, history_schema(), HISTORY_PREFIX)


def read_instances(
    base: Path,
    rows: Sequence[tuple[Any, ...]],
    durability: str,
    gone: list[str] | None = None,
) -> list[tuple[dict[str, Any], list[tuple[Any, ...]]]]:
    """Read the row and events of each instance (``rows``: index rows with a file).

    A finished instance's file no longer changes and is read the fast way
    (``read_for_archive``); a live one through a normal connection, which
    sees a consistent state while its engine writes.

    Args:
        base: The instance files' directory.
        rows: Index rows (:data:`HOT_INDEX_COLUMNS`).
        durability: The engine's durability (to open live files).
        gone: If given, the ids of finished instances whose file is gone (tiering
            moved them since the index was read) are appended here and the
            others still read; else a gone file raises.

    Raises:
        FileNotFoundError: A file is gone and ``gone`` is None.
        CorruptInstance: A file is unreadable.
    """
    out: list[tuple[dict[str, Any], list[tuple[Any, ...]]]] = []
    for row in rows:
        if row[_FILE] is None:
            out.append(_queued(row))  # queued: the index is its only record
            continue
        path = base / row[_FILE]
        if row[_STATUS] in TERMINAL_STATUSES:
            try:
                out.append(read_for_archive(path))
            except FileNotFoundError:
                if gone is None:
                    raise
                gone.append(row[0])
            continue
        try:
            inst = InstanceFile.open(path, durability=durability)
        except IncompleteInstance:
            out.append(_queued(row))  # created, first commit not yet made
            continue
        try:
            out.append((inst.read_row(), inst.read_events()))
        finally:
            inst.close()
    return out


def _queued(row: tuple[Any, ...]) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """The one event an instance without a committed file has: ``workflow.queued``.

    The same event ``history()`` reports for it (``hot/reads.py``).
    """
    values = dict(zip(HOT_INDEX_COLUMNS, row, strict=True))
    payload = serde.encode(
        {
            "input": serde.decode(values["input"]),
            "attributes": serde.decode(values["attributes"]),
            "parent_workflow_id": values["parent_workflow_id"],
        },
        what="queued event",
    )
    event = (1, EventType.WORKFLOW_QUEUED.value, values["created_at"], None, None, payload)
    return values, [event]


def completed(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The index rows of completed instances (the only ones with a ``result``)."""
    return [r for r in rows if r[_STATUS] == Status.COMPLETED]
