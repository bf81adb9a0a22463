"""Issue 21's tables: the hot engine's figures beside their floors and the least Python.

The figures come from ``hot_engine.measure`` (one run); every ratio here is taken
between figures of that same run. ``make bench`` and ``--only hot`` print both tables.
"""

from __future__ import annotations

from typing import Any


# Issue 21's targets, each judged against a floor measured in the same run:
# (name, ours, floor, how ours must compare with the floor, unit, what the floor is).
def cpu_targets(figs: dict[str, dict[str, float]]) -> list[tuple[str, float, float, str, str, str]]:
    """The hot engine's figures beside their floors, as judged by issue 21."""
    v = {k: f["value"] for k, f in figs.items()}
    seq_floor = 1000 / (v["commits_per_wf"] * v["commit_ms"])
    return [
        (
            "sequential",
            v["seq_wps"],
            seq_floor,
            ">= 50%",
            "wf/s",
            f"{v['commits_per_wf']:.1f} fsync'd commits/wf x {v['commit_ms']:.3f} ms",
        ),
        (
            "8 callers",
            v["conc8_wps"],
            v["conc8_floor_wps"],
            ">= 60%",
            "wf/s",
            "the instance files alone, 8 threads, no engine",
        ),
        (
            "CPU per wf, 8 callers",
            v["conc8_cpu_ms"],
            v["conc8_floor_cpu_ms"],
            "<= 1.5x",
            "ms",
            "CPU of the instance files alone",
        ),
        (
            "sequential, files floor",
            v["seq_wps"],
            v["files1_floor_wps"],
            "",
            "wf/s",
            "the instance files alone, 1 thread: 3 commits and the close's checkpoint",
        ),
        (
            "CPU per wf, sequential",
            v["seq_cpu_ms"],
            v["files1_floor_cpu_ms"],
            "",
            "ms",
            "CPU of the instance files alone (1 thread)",
        ),
        (
            "start p50",
            v["start_p50_ms"],
            v["start_floor_p50_ms"],
            "<= 1.5x",
            "ms",
            "one fsync'd one-row commit under the same load",
        ),
        (
            f"RSS, {v['paused_instances']:.0f} paused",
            v["paused_rss_mb"],
            250.0,
            "<= 1x" if v["paused_instances"] >= 10_000 else "",
            "MB",
            "the budget for 10,000 paused instances (whole process)",
        ),
    ]


def met(ours: float, floor: float, rule: str) -> bool | None:
    """Whether ``ours`` meets ``rule`` against ``floor`` (None: nothing to judge)."""
    if not rule:
        return None
    op, text = rule.split()
    bound = float(text.rstrip("x%")) / (100 if text.endswith("%") else 1)
    return ours >= bound * floor if op == ">=" else ours <= bound * floor


def _table(title: str, judged: bool, *columns: str) -> Any:
    from rich.table import Table

    return Table(*columns, title=title + ("" if judged else "; QUICK: figures mean nothing"))


def _verdict(ok: bool | None, no: str) -> str:
    return {True: "yes", False: f"[red]{no}[/red]", None: "-"}[ok]


def report_cpu(console: Any, figs: dict[str, dict[str, float]], judged: bool) -> None:
    """Print issue 21's table: each figure beside its floor from the same run."""
    t = _table(
        "issue 21: hot engine against its floors (same run; a shared machine is noisy)",
        judged,
        *("metric", "tierflow", "floor", "ours / floor", "target", "met", "floor is"),
    )
    for name, ours, floor, rule, unit, what in cpu_targets(figs):
        ok = met(ours, floor, rule) if judged else None
        t.add_row(
            name,
            f"{ours:.2f} {unit}",
            f"{floor:.2f} {unit}",
            _share(ours / floor, unit),
            rule,
            _verdict(ok, "NO"),
            what,
        )
    console.print(t)
    probes = [
        (label, figs[key]["value"])
        for label, key in (
            ("tierflow's 8 callers", "conc8_create_us"),
            ("the files floor", "conc8_floor_create_us"),
            ("the least Python", "py_floor_create_us"),
        )
        if key in figs
    ]
    if probes:
        console.print(
            "one file creation at the start of "
            + ", ".join(f"{label} {us:.0f} µs" for label, us in probes)
            + " (3 files per workflow; on ext4 without a journal this is tens of µs when"
            " settled, 500+ µs for ~30 s after many files were deleted)"
        )


# The least Python's figure for each target row of cpu_targets that it can be held to.
_LEAST_PYTHON = {
    "sequential": "seq_py_floor_wps",
    "8 callers": "conc8_py_floor_wps",
    "CPU per wf, 8 callers": "conc8_py_floor_cpu_ms",
    "start p50": "conc8_py_floor_start_ms",
}


def python_targets(
    figs: dict[str, dict[str, float]],
) -> list[tuple[str, float, float, float, str, str]]:
    """Issue 21's targets met by the least Python (python_floor.py), not only by the engine.

    Rows of (name, tierflow, least Python, the issue's floor, rule, unit), taken from
    :func:`cpu_targets`: if the least Python that does the same durable work misses a
    target, no asyncio engine on one SQLite file per instance meets it on this machine,
    whatever its own logic costs.
    """
    return [
        (name, ours, figs[_LEAST_PYTHON[name]]["value"], floor, rule, unit)
        for name, ours, floor, rule, unit, _ in cpu_targets(figs)
        if name in _LEAST_PYTHON
    ]


def _share(value: float, unit: str) -> str:
    return f"{value:.0%}" if unit == "wf/s" else f"{value:.2f}x"


def report_python_floor(console: Any, figs: dict[str, dict[str, float]], judged: bool) -> None:
    """Print whether issue 21's targets are within reach of Python itself (same run)."""
    t = _table(
        "issue 21: the same durable work in the least asyncio Python (tests/bench/python_floor.py)",
        judged,
        *("metric", "tierflow", "least Python", "issue's floor", "least Python / floor"),
        *("target", "reachable in Python", "tierflow / least Python"),
    )
    for name, ours, least, floor, rule, unit in python_targets(figs):
        ok = met(least, floor, rule) if judged else None
        t.add_row(
            name,
            f"{ours:.2f} {unit}",
            f"{least:.2f} {unit}",
            f"{floor:.2f} {unit}",
            _share(least / floor, unit),
            rule,
            _verdict(ok, "no"),
            _share(ours / least, unit),
        )
    console.print(t)
