"""Which hot instances a query can touch, read from DuckDB's plan of it.

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

Pure functions over the plan's text; the SQL worker runs them under the
query's time limit (a hostile filter can make the plan large).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["HISTORY_PREFIX", "WORKFLOWS_PREFIX", "Touched", "touched"]

WORKFLOWS_PREFIX = "hw__"
"""Prefix of the private column names of the registered hot workflows."""
HISTORY_PREFIX = "hh__"
"""Prefix of the private column names of the registered hot history."""

_ID = "workflow_id"


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

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (the SQL worker sends it to the engine)."""
        return {
            "history": None if self.history is None else sorted(self.history),
            "results": None if self.results is None else sorted(self.results),
            "workflows": self.workflows,
        }

    @classmethod
    def from_json(cls, data: Any) -> Touched:
        """Read :meth:`to_json`'s form back (ids must be strings)."""
        out = cls()
        out.history = _ids_of(data.get("history"))
        out.results = _ids_of(data.get("results"))
        out.workflows = bool(data.get("workflows"))
        return out


def _ids_of(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("touched: a list of workflow ids expected")
    return frozenset(value)


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
