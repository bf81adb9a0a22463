"""``python -m tests.bench --only hot``: the hot engine's phases alone, beside their floors.

No DBOS and no other tier: what a change to ``hot/`` needs measured (issue 21's
table), in a few minutes. The full ``make bench`` prints the same table.
"""

from __future__ import annotations

from typing import Any

from tests.bench import hot_engine, hot_targets


def measure(quick: bool, console: Any) -> dict[str, Any]:
    """Run every hot-engine phase (see ``hot_engine.measure``)."""
    return hot_engine.measure(quick)


def report(console: Any, figs: dict[str, Any], judged: bool) -> None:
    """Print issue 21's tables: against the floors, and against the least Python."""
    hot_targets.report_cpu(console, figs, judged)
    hot_targets.report_python_floor(console, figs, judged)
