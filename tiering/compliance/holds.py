"""Legal holds: what they cover, and their rows in the index.

A hold is placed on one workflow id, or on one attribute value
(``{"customer": "c-42"}``). It covers:

- by id: that workflow and its descendants (children, their children, ...,
  through ``parent_workflow_id``);
- by attribute: every workflow, present or future, whose attributes hold that
  value, and their descendants.

Coverage is computed when it is needed (retention, erasure, ``holds()``),
from the index, which locates every workflow in every tier; so a workflow
started after the hold is covered without anything being written. A held
workflow is never erased: erasure refuses it (``WorkflowOnHold``) and
retention holds it back. A released hold stays in the table, with who
released it and why.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from tierflow.hot.errors import InvalidArgument
from tierflow.hot.index import attribute_value
from tierflow.hot.models import from_micros

__all__ = [
    "Hold",
    "Run",
    "ancestors",
    "check_attribute",
    "connection_run",
    "coverage",
    "covering",
    "descendants",
    "exists",
    "insert",
    "new_hold_id",
    "read_holds",
    "release",
    "run_chunked",
]

Run = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
"""Runs one read statement and returns its rows (an index's ``execute``, or a connection's)."""

_COLUMNS = (
    "hold_id, workflow_id, attribute_name, attribute_value, reason, actor, created_at, "
    "released_at, released_by, release_reason"
)
_CHUNK = 500


def run_chunked(
    run: Run, sql: str, ids: Sequence[str], extra: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """``sql`` once per chunk of ``ids`` (SQLite caps a statement's parameters).

    ``sql`` holds ``{ids}`` where the chunk's placeholders go; its parameters are the
    chunk, then ``extra``.
    """
    rows: list[tuple[Any, ...]] = []
    for i in range(0, len(ids), _CHUNK):
        chunk = list(ids[i : i + _CHUNK])
        rows += run(sql.format(ids=",".join("?" * len(chunk))), [*chunk, *extra])
    return rows


@dataclass(frozen=True)
class Hold:
    """One legal hold.

    Attributes:
        hold_id: Its id (``release`` takes it).
        workflow_id: The workflow held, for a hold by id (None once that
            workflow is erased after the hold's release).
        attribute: ``{name: value}`` for a hold by attribute, else None.
        reason: Why it was placed.
        actor: Who placed it.
        created_at: When it was placed.
        released_at: When it was released; None while it holds.
        released_by: Who released it.
        release_reason: Why it was released.
    """

    hold_id: str
    workflow_id: str | None
    attribute: dict[str, Any] | None
    reason: str
    actor: str
    created_at: datetime
    released_at: datetime | None = None
    released_by: str | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        """True until the hold is released."""
        return self.released_at is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 text, plus ``active``."""
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        out["released_at"] = None if self.released_at is None else self.released_at.isoformat()
        out["active"] = self.active
        return out


def new_hold_id() -> str:
    """A fresh hold id."""
    return f"hold-{uuid.uuid4().hex[:16]}"


def _hold(row: Sequence[Any]) -> Hold:
    hold_id, wid, name, value, reason, actor, created, released, by, why = row
    return Hold(
        hold_id=hold_id,
        workflow_id=wid,
        attribute=None if name is None else {name: value},
        reason=reason,
        actor=actor,
        created_at=from_micros(created),
        released_at=from_micros(released),
        released_by=by,
        release_reason=why,
    )


def read_holds(run: Run, *, active_only: bool = True, hold_id: str | None = None) -> list[Hold]:
    """Holds, oldest first: the active ones, or all of them, or the one with ``hold_id``."""
    where, params = [], []
    if active_only:
        where.append("released_at IS NULL")
    if hold_id is not None:
        where.append("hold_id = ?")
        params.append(hold_id)
    sql = f"SELECT {_COLUMNS} FROM holds"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [_hold(r) for r in run(sql + " ORDER BY created_at, hold_id", params)]


def check_attribute(attribute: Mapping[str, Any]) -> tuple[str, Any]:
    """The one ``(name, stored value)`` of an attribute filter.

    Raises:
        InvalidArgument: Not exactly one name, or a value that is not a scalar.
    """
    if not isinstance(attribute, Mapping) or len(attribute) != 1:
        raise InvalidArgument('attribute must be one name and one value, e.g. {"customer": "c-42"}')
    ((name, value),) = attribute.items()
    if not isinstance(name, str) or not name:
        raise InvalidArgument("the attribute name must be non-empty text")
    if value is None or not isinstance(value, str | int | float | bool):
        raise InvalidArgument(f"attribute {name!r}: the value must be text, a number or a bool")
    return name, attribute_value(value)


def descendants(run: Run, seeds: Iterable[str]) -> set[str]:
    """``seeds`` that exist in the index and all their descendants (any tier)."""
    rows = run_chunked(
        run,
        "WITH RECURSIVE fam(id) AS ("
        "SELECT workflow_id FROM instances WHERE workflow_id IN ({ids})"
        " UNION SELECT i.workflow_id FROM instances i JOIN fam ON i.parent_workflow_id = fam.id"
        ") SELECT id FROM fam",
        list(seeds),
    )
    return {r[0] for r in rows}


def ancestors(run: Run, workflow_id: str) -> list[str]:
    """``workflow_id`` and its ancestors that are in the index, nearest first."""
    rows = run(
        "WITH RECURSIVE up(id, parent, depth) AS ("
        "SELECT workflow_id, parent_workflow_id, 0 FROM instances WHERE workflow_id = ?"
        " UNION SELECT i.workflow_id, i.parent_workflow_id, up.depth + 1 FROM instances i"
        " JOIN up ON i.workflow_id = up.parent WHERE up.depth < 1000"
        ") SELECT id FROM up ORDER BY depth",
        (workflow_id,),
    )
    return [r[0] for r in rows]


def _seeds(run: Run, hold: Hold) -> list[str]:
    if hold.workflow_id is not None:
        return [hold.workflow_id]
    if hold.attribute is None:
        return []  # a hold by id whose workflow was erased after the release
    ((name, value),) = hold.attribute.items()
    return [
        r[0]
        for r in run("SELECT workflow_id FROM attributes WHERE key=? AND value=?", (name, value))
    ]


def coverage(run: Run, holds: Sequence[Hold]) -> dict[str, set[str]]:
    """Per active hold, every workflow it covers now (ids and descendants)."""
    return {h.hold_id: descendants(run, _seeds(run, h)) for h in holds if h.active}


def covering(run: Run, workflow_id: str) -> list[Hold]:
    """The active holds that cover ``workflow_id`` (through itself or an ancestor)."""
    chain = ancestors(run, workflow_id)
    if not chain:
        return []
    marks = ",".join("?" * len(chain))
    attrs = {
        (r[0], r[1])
        for r in run(f"SELECT key, value FROM attributes WHERE workflow_id IN ({marks})", chain)
    }
    out = []
    for hold in read_holds(run):
        if (hold.workflow_id is not None and hold.workflow_id in chain) or (
            hold.attribute is not None and next(iter(hold.attribute.items())) in attrs
        ):
            out.append(hold)
    return out


def exists(run: Run, workflow_id: str) -> bool:
    """Whether the index has the workflow (any tier) and it is not being erased."""
    return bool(
        run(
            "SELECT 1 FROM instances WHERE workflow_id=? AND workflow_id NOT IN "
            "(SELECT workflow_id FROM erasing)",
            (workflow_id,),
        )
    )


def insert(conn: sqlite3.Connection, hold: Hold, subject_hash: str | None, now_us: int) -> None:
    """Inside a write transaction: record a new hold, placed at ``now_us``."""
    name, value = next(iter(hold.attribute.items())) if hold.attribute else (None, None)
    conn.execute(
        "INSERT INTO holds (hold_id, workflow_id, subject_hash, attribute_name, "
        "attribute_value, reason, actor, created_at) VALUES (?,?,?,?,?,?,?,?)",
        (
            hold.hold_id,
            hold.workflow_id,
            subject_hash,
            name,
            value,
            hold.reason,
            hold.actor,
            now_us,
        ),
    )


def release(
    conn: sqlite3.Connection, hold_id: str, *, actor: str, reason: str, now_us: int
) -> bool:
    """Inside a write transaction: release an active hold; False if none is active by that id."""
    cur = conn.execute(
        "UPDATE holds SET released_at=?, released_by=?, release_reason=? "
        "WHERE hold_id=? AND released_at IS NULL",
        (now_us, actor, reason, hold_id),
    )
    return cur.rowcount == 1


def connection_run(conn: sqlite3.Connection) -> Run:
    """A :data:`Run` over a connection (inside its transaction)."""
    return lambda sql, params: conn.execute(sql, params).fetchall()
