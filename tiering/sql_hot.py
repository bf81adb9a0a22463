"""The hot tier as Arrow tables for SQL: workflows from the index, history from instance files.

Hot ``workflows`` rows come from the index cut (:mod:`tierflow.tiering.sql_snapshot`);
only ``result`` is not in the index, so it is read from the instance files of
completed hot instances, and only when the query reads that column.

Hot ``history`` is in one SQLite file per instance, so a query should open
only the files it can touch. Which ones is decided by DuckDB's optimiser, not
by parsing the query here: the hot data is registered under private column
names (``hh__workflow_id``, ...) behind the ``hot_history`` view, the query
is ``EXPLAIN``-ed, and the plan shows which filter reached the hot scan.
A scan whose filter pins ``workflow_id`` to constants (``=``, ``IN``, or an
``OR`` of them, alone or ANDed with anything) opens only those files; a scan
without one opens every hot instance's file. A pushed-down filter holds for
every row the scan produces, so narrowing the data to it cannot change the
answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from tierflow.hot import serde
from tierflow.hot.models import TERMINAL_STATUSES, EventType, Status
from tierflow.hot.router import Tier
from tierflow.hot.rows import HISTORY, WORKFLOWS, names
from tierflow.hot.store import EVENT_COLUMNS, IncompleteInstance, InstanceFile, read_for_archive
from tierflow.tiering.sql_snapshot import HOT_INDEX_COLUMNS
from tierflow.warm.schema import ARROW_TYPES

__all__ = [
    "HISTORY_PREFIX",
    "WORKFLOWS_PREFIX",
    "Touched",
    "finished",
    "history_schema",
    "hot_history",
    "hot_workflows",
    "read_instances",
    "touched",
    "workflows_schema",
]

WORKFLOWS_PREFIX = "hw__"
"""Prefix of the private column names of the registered hot workflows."""
HISTORY_PREFIX = "hh__"
"""Prefix of the private column names of the registered hot history."""

_ID = "workflow_id"
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


class Touched:
    """Which hot instances a query can reach, per hot table.

    Attributes:
        history: None: the query does not read hot history; ``ALL``: every
            instance; else the workflow ids its filter allows.
        results: The same for the ``result`` column of hot workflows.
    """

    ALL: frozenset[str] = frozenset({"*"})

    def __init__(self) -> None:
        self.history: frozenset[str] | None = None
        self.results: frozenset[str] | None = None
        self.workflows = False

    def ids_for(
        self, rows: Sequence[tuple[Any, ...]], wanted: frozenset[str] | None
    ) -> list[tuple[Any, ...]]:
        """The index rows among ``wanted`` (queued instances without a file included)."""
        if wanted is None:
            return []
        return [r for r in rows if wanted == self.ALL or r[0] in wanted]

    @staticmethod
    def completed(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The rows of completed instances (the only ones with a ``result``)."""
        return [r for r in rows if r[_STATUS] == Status.COMPLETED]


def touched(plan_json: str) -> Touched:
    """Read an ``EXPLAIN (FORMAT json)`` plan: which hot rows the query can touch."""
    out = Touched()
    for node in json.loads(plan_json):
        _walk(node, None, out)
    return out


def _merge(old: frozenset[str] | None, new: frozenset[str]) -> frozenset[str]:
    if old is None:
        return new
    if Touched.ALL in (old, new):
        return Touched.ALL
    return old | new


def _walk(node: dict[str, Any], parent: dict[str, Any] | None, out: Touched) -> None:
    info = node.get("extra_info") or {}
    if "SCAN" in str(node.get("name", "")) and "ARROW" in str(node.get("name", "")):
        text = json.dumps(info)
        conjuncts = _as_list(info.get("Filters"))
        if parent is not None and parent.get("name") == "FILTER":
            conjuncts += _as_list((parent.get("extra_info") or {}).get("Expression"))
        hist, wf = HISTORY_PREFIX in text, WORKFLOWS_PREFIX in text
        if not hist and not wf and not info.get("Projections"):
            hist = wf = True  # cannot tell which table: assume both, unfiltered
            conjuncts = []
        if hist:
            out.history = _merge(out.history, _narrowed(conjuncts, HISTORY_PREFIX))
        out.workflows = out.workflows or wf
        if wf and (f"{WORKFLOWS_PREFIX}result" in text or not info.get("Projections")):
            out.results = _merge(out.results, _narrowed(conjuncts, WORKFLOWS_PREFIX))
    for child in node.get("children") or []:
        _walk(child, node, out)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v for v in str(value).splitlines() if v.strip()]


def _narrowed(conjuncts: list[str], prefix: str) -> frozenset[str]:
    best: frozenset[str] | None = None
    for c in conjuncts:
        ids = _ids(c, prefix)
        if ids is not None and (best is None or len(ids) < len(best)):
            best = ids
    return Touched.ALL if best is None else best


_ATOM_EQ = r'^"?{col}"?\s*=\s*\'([A-Za-z0-9._:@-]+)\'$'
_ATOM_IN = r'^"?{col}"?\s+IN\s*\(((?:\'[A-Za-z0-9._:@-]+\'\s*,\s*)*\'[A-Za-z0-9._:@-]+\')\)$'


def _ids(expr: str, prefix: str) -> frozenset[str] | None:
    """The workflow ids ``expr`` restricts the column to, or None if it does not."""
    expr = _strip(expr.strip())
    col = re.escape(prefix + _ID)
    for op, combine in ((" AND ", "and"), (" OR ", "or")):
        parts = _split(expr, op)
        if len(parts) > 1:
            found = [_ids(p, prefix) for p in parts]
            if combine == "and":
                known = [f for f in found if f is not None]
                return min(known, key=len) if known else None
            if any(f is None for f in found):
                return None
            return frozenset().union(*(f for f in found if f is not None))
    if m := re.match(_ATOM_EQ.format(col=col), expr):
        return frozenset({m.group(1)})
    if m := re.match(_ATOM_IN.format(col=col), expr):
        return frozenset(re.findall(r"'([^']*)'", m.group(1)))
    return None


def _strip(expr: str) -> str:
    """Remove parentheses that wrap the whole expression."""
    while expr.startswith("(") and expr.endswith(")") and _closes_at_end(expr):
        expr = expr[1:-1].strip()
    return expr


def _levels(expr: str) -> list[int | None]:
    """Parenthesis depth after each character of ``expr``; None inside a quoted string."""
    out: list[int | None] = []
    depth, quoted = 0, False
    for ch in expr:
        if ch == "'":
            quoted = not quoted
        elif not quoted:
            depth += (ch == "(") - (ch == ")")
        out.append(None if quoted or ch == "'" else depth)
    return out


def _closes_at_end(expr: str) -> bool:
    """Whether the parenthesis opening ``expr`` closes at its last character."""
    return 0 not in _levels(expr)[:-1]


def _split(expr: str, op: str) -> list[str]:
    """Split at ``op`` outside parentheses and quotes."""
    levels = _levels(expr)
    parts, start, i = [], 0, 0
    while i < len(expr):
        if levels[i] == 0 and expr.startswith(op, i):
            parts.append(expr[start:i])
            i += len(op)
            start = i
            continue
        i += 1
    parts.append(expr[start:])
    return parts
