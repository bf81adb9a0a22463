"""No SQL text spells a status, an event type or a tier: they come from the enums.

A status written into SQL by hand (``WHERE status='paused'``) silently stops
matching when the enum changes; bound as a parameter (``status=?`` with
``Status.PAUSED``) or formatted from the enum at import time, it cannot drift.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from tierflow.hot.models import EventType, Status
from tierflow.hot.router import Tier

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hot", "warm", "cold", "tiering", "api")

# Files that still spell statuses in SQL and are being edited elsewhere right now.
# Remove an entry once its literals are bound or formatted from the enum; the
# last test fails while an entry has nothing left to excuse.
NOT_YET_FIXED: set[str] = set()

_VALUES = sorted({*map(str, Status), *map(str, EventType), *map(str, Tier)}, key=len, reverse=True)
_QUOTED = re.compile("['\"](" + "|".join(map(re.escape, _VALUES)) + ")['\"]")
_SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|VALUES|SET|AND|OR|IN|CASE|WHEN)\b")


def sql_literals(source: str) -> list[tuple[int, str]]:
    """``(line, literal)`` for each status or event type quoted inside SQL text.

    The line is where the string (or f-string part) starts.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        # f-strings are walked too: their literal parts are Constant nodes.
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _SQL.search(node.value)
        ):
            found += [(node.lineno, m.group(0)) for m in _QUOTED.finditer(node.value)]
    return found


def offenders() -> dict[str, list[tuple[int, str]]]:
    """Every package file with SQL literals, by path relative to the repository."""
    result = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if hits := sql_literals(path.read_text()):
                result[str(path.relative_to(ROOT))] = hits
    return result


@pytest.mark.parametrize(
    "source",
    [
        "q = \"SELECT id FROM instances WHERE status='paused'\"",
        "q = (\n    'UPDATE t SET x=1 WHERE '\n    \"status IN ('completed','failed')\"\n)",
        "q = f\"SELECT * FROM events WHERE event_type='step.completed' AND x={x}\"",
        "sql += \" AND status='paused'\"",  # a fragment appended to a query
    ],
)
def test_the_scan_finds_literals(source: str) -> None:
    assert sql_literals(source)


@pytest.mark.parametrize(
    "source",
    [
        "q = 'SELECT id FROM instances WHERE status=?'",
        "q = f\"... status IN ({','.join(repr(str(s)) for s in TERMINAL)})\"",
        "log = 'paused'",  # not SQL
        "msg = f\"child {err.get('status', 'failed')}\"",
    ],
)
def test_the_scan_ignores_bound_or_non_sql_values(source: str) -> None:
    assert not sql_literals(source)


def test_no_sql_text_spells_a_status_or_event_type() -> None:
    found = {path: hits for path, hits in offenders().items() if path not in NOT_YET_FIXED}
    assert not found, f"bind these as parameters or format them from the enum: {found}"


def test_not_yet_fixed_list_is_current() -> None:
    stale = NOT_YET_FIXED - set(offenders())
    assert not stale, f"{sorted(stale)} no longer spell statuses in SQL: remove them from the list"
