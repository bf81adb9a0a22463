"""``make bench``: tierflow's figures beside DBOS's, measured in the same run.

python -m tests.bench [--quick] [--skip-peer] [--out DIR] [--only PHASE]

DBOS runs twice, on its default SQLite journal (rollback journal, synchronous=FULL) and on WAL
(synchronous=FULL, so still one fsync'd commit per transaction, as tierflow's default); each of
our ratios is taken against whichever DBOS configuration was faster on that metric, and the
table says which one it was. Both sides run the same workload and sizes (workload.py) and the
run fails, exit status 1, unless every benchmarked workflow completed on both sides. Every
figure goes to ``bench-results/bench-<UTC time>.json`` and ``bench-results/latest.json``
(``quick-latest.json`` for ``--quick``), with the DBOS configurations, the versions, the git
commit and the machine's cores.

``--quick`` (``make bench-quick``) is a smoke run with tiny sizes: every phase on both sides and
every completion check, no figure worth reading and no target judged.

``--only PHASE`` runs one phase that stands alone (``erasure``, ``export``, ``hot``,
``http``) and writes its figures to ``bench-results/<phase>-latest.json``
(``<phase>-quick-latest.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tests.bench import (
    authoring,
    cold_bench,
    cross_process,
    erasure_bench,
    export_bench,
    hot_alone,
    hot_engine,
    hot_targets,
    http_bench,
    replay_bench,
    sql_bench,
    tiering_bench,
)
from tests.bench.workload import CHECKS, IncompleteRun, sizes_dict

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# DBOS's SQLite configurations: (label, peer_dbos.py arguments, expected (synchronous, WAL)).
# Both fsync every commit (synchronous=FULL), as tierflow's default durability does.
PEER_CONFIGS: list[tuple[str, list[str], tuple[float, float]]] = [
    ("rollback", ["--journal-mode", "default", "--synchronous", "default"], (2.0, 0.0)),
    ("WAL", ["--journal-mode", "wal", "--synchronous", "full"], (2.0, 1.0)),
]
PEER_DESCRIPTION = {
    "rollback": "DBOS default: rollback journal (delete), synchronous=FULL",
    "WAL": "journal_mode=WAL, synchronous=FULL (set on the file before DBOS opens it)",
}

# Issue 2's metrics: key, unit, higher is better, target (a ratio to the faster DBOS, or an
# absolute bound on ours).
ROWS: list[tuple[str, str, bool, float | None, tuple[str, float] | None]] = [
    ("seq_wps", "wf/s", True, 3.0, None),
    ("conc8_wps", "wf/s", True, 10.0, None),
    ("start_p50_ms", "ms", False, None, ("<=", 0.5)),
    ("start_p99_ms", "ms", False, None, ("<=", 2.0)),
    ("sleep10_ms", "ms", False, None, ("<=", 12.0)),
    ("recovery_s", "s", False, None, ("<=", 0.5)),
]


def run_peer(quick: bool, label: str, extra: list[str], expect: tuple[float, float]) -> Any:
    """Run peer_dbos.py in a subprocess in one SQLite configuration; return its JSON output.

    Raises:
        RuntimeError: The peer failed (an incomplete workflow included) or ran in another
            SQLite configuration than asked.
    """
    with tempfile.TemporaryDirectory(prefix="dbos-bench-") as work:
        cmd = [sys.executable, "-m", "tests.bench.peer_dbos", "--workdir", work, "--json", *extra]
        if quick:
            cmd.append("--quick")
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"DBOS ({label}) failed, exit {out.returncode}:\n{out.stderr[-6000:]}")
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    got = (figures["sqlite_synchronous"], figures["sqlite_wal"])
    if got != expect:
        raise RuntimeError(f"DBOS ({label}) ran with (synchronous, WAL) = {got}, not {expect}")
    return figures


def git_commit() -> dict[str, Any]:
    """The commit the benchmark ran from, and whether the tree had uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "branch": None, "dirty": None}


def compare(
    ours: dict[str, dict[str, float]], peers: dict[str, dict[str, Any]], judged: bool
) -> list[dict[str, Any]]:
    """One row per issue 2 metric: ours, each DBOS configuration, the faster one, the ratio."""
    rows = []
    for key, unit, higher, ratio_target, bound in ROWS:
        v = ours[key]["value"]
        dbos = {label: p[key] for label, p in peers.items()}
        faster = (max if higher else min)(dbos, key=dbos.__getitem__) if dbos else None
        best = dbos[faster] if faster else None
        ratio = None if best is None else (v / best if higher else best / v)
        if ratio_target is not None:
            target = f">= {ratio_target:g}x faster DBOS"
            met = None if ratio is None else ratio >= ratio_target
        else:
            assert bound is not None
            target = f"{bound[0]} {bound[1]:g} {unit}"
            met = v <= bound[1]
        rows.append(
            {
                "metric": key,
                "unit": unit,
                "higher_is_better": higher,
                "tierflow": v,
                "dbos": dbos,
                "faster_dbos": faster,
                "ratio_to_faster_dbos": ratio,
                "target": target,
                "met": met if judged else None,
                "tierflow_peak_rss_mb": ours[key]["rss_mb"],
            }
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, nothing judged")
    p.add_argument("--skip-peer", action="store_true", help="do not run DBOS")
    p.add_argument("--out", default=str(ROOT / "bench-results"), help="directory for the JSON")
    p.add_argument("--only", choices=sorted(ALONE), help="run one phase alone")
    args = p.parse_args()
    # Wide enough for the tables in logs (CI, a pipe): rich assumes 80 columns there.
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        if args.only:
            return run_alone(args, console)
        return run(args, console)
    except IncompleteRun as exc:
        console.print(f"[bold red]FAILED: a benchmarked workflow did not complete:[/] {exc}")
    except RuntimeError as exc:
        console.print(f"[bold red]FAILED:[/] {exc}")
    return 1


# Phases that stand alone (``--only``): a module with measure(quick, console) and
# report(console, figures, judged).
ALONE: dict[str, Any] = {
    "erasure": erasure_bench,
    "export": export_bench,
    "hot": hot_alone,
    "http": http_bench,
}


def run_alone(args: argparse.Namespace, console: Console) -> int:
    """Run one phase; its figures go to ``<out>/<phase>[-quick]-latest.json``."""
    phase = ALONE[args.only]
    console.print(f"[bold]{args.only}[/bold] ...")
    figs = phase.measure(args.quick, console)
    phase.report(console, figs, not args.quick)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.only}{'-quick' if args.quick else ''}-latest.json"
    path.write_text(json.dumps({"git": git_commit(), **figs}, indent=2, default=str) + "\n")
    console.print(f"figures written to {path}")
    return 0


def run(args: argparse.Namespace, console: Console) -> int:
    started = datetime.now(UTC)
    t_start = time.perf_counter()
    judged = not args.quick
    mode = "quick (smoke: tiny sizes, figures not judged)" if args.quick else "full"
    console.print(f"[bold]make bench[/bold], {mode}")
    console.print("[bold]hot engine[/bold] (durability=full: fsync per commit) ...")
    ours = hot_engine.measure(args.quick)
    peers: dict[str, dict[str, Any]] = {}
    if not args.skip_peer:
        for label, extra, expect in PEER_CONFIGS:
            console.print(f"[bold]DBOS[/bold], {PEER_DESCRIPTION[label]} ...")
            peers[label] = run_peer(args.quick, label, extra, expect)
    peer_meta = next(iter(peers.values()))["meta"] if peers else {}

    rows = compare(ours, peers, judged)
    table = Table(
        "metric",
        "tierflow",
        *(f"DBOS {label}" for label in peers),
        *(["faster DBOS", "ratio to it"] if peers else []),
        "target",
        "met",
        "peak RSS MB",
        title="issue 2: durable engine vs DBOS on SQLite (same machine, same run)"
        + ("" if judged else "; QUICK: smoke sizes, figures mean nothing"),
    )
    for r in rows:
        unit, ratio = r["unit"], r["ratio_to_faster_dbos"]
        ratio_text = (
            ""
            if ratio is None
            else (f"{ratio:.2f}x" if r["higher_is_better"] else f"{ratio:.2f}x faster")
        )
        met = {True: "yes", False: "[red]NO[/red]", None: "-"}[r["met"]]
        table.add_row(
            r["metric"],
            f"{r['tierflow']:.2f} {unit}",
            *(f"{r['dbos'][label]:.2f} {unit}" for label in peers),
            *([r["faster_dbos"], ratio_text] if peers else []),
            r["target"],
            met,
            f"{r['tierflow_peak_rss_mb']:.0f}",
        )

    def extra_row(
        name: str, value: str, dbos: list[str], faster: str, ratio: str, note: str
    ) -> None:
        """A row of floors beside the metrics: our share of the floor goes under the ratio."""
        if peers:
            table.add_row(name, value, *dbos, faster, ratio, note, "", "")
        else:
            table.add_row(name, value, f"{note}; {ratio}", "", "")

    no_dbos = [""] * len(peers)
    floors: dict[str, Any] = {}
    commits = ours["commits_per_wf"]["value"]
    commit_ms = ours["commit_ms"]["value"]
    floor_wps = 1000 / (commits * commit_ms)
    seq_wps = ours["seq_wps"]["value"]
    floors["seq"] = {
        "floor_wps": floor_wps,
        "ours_share": seq_wps / floor_wps,
        "commits_per_wf": commits,
        "commit_ms": commit_ms,
    }
    extra_row(
        "floor (seq)",
        f"{floor_wps:.0f} wf/s",
        no_dbos,
        "",
        f"ours = {seq_wps / floor_wps:.0%}",
        f"{commits:.1f} fsync'd commits/wf x {commit_ms:.3f} ms",
    )
    floor8 = ours["conc8_floor_wps"]["value"]
    floors["conc8"] = {"floor_wps": floor8, "ours_share": ours["conc8_wps"]["value"] / floor8}
    extra_row(
        "floor (conc8)",
        f"{floor8:.0f} wf/s",
        no_dbos,
        "",
        f"ours = {ours['conc8_wps']['value'] / floor8:.0%}",
        "8 threads: file + 3 fsync'd commits + close, no engine",
    )
    # What the machine's cores allow at all: CPU per workflow (process, all
    # threads) against cores x 1 s. If 10x DBOS needs less CPU per workflow
    # than the files alone cost, no engine on one file per instance reaches it here.
    cores = len(os.sched_getaffinity(0))
    cpu, fcpu = ours["conc8_cpu_ms"]["value"], ours["conc8_floor_cpu_ms"]["value"]
    ceiling = cores * 1000 / cpu
    c8 = {label: pr["conc8_wps"] for label, pr in peers.items()}
    faster_c8 = max(c8, key=c8.__getitem__) if c8 else ""
    best_c8 = c8.get(faster_c8)
    budget = cores * 1000 / (10 * best_c8) if best_c8 else None
    floors["cpu_conc8"] = {
        "ours_cpu_ms_per_wf": cpu,
        "dbos_cpu_ms_per_wf": {label: pr["conc8_cpu_ms"] for label, pr in peers.items()},
        "files_alone_cpu_ms_per_wf": fcpu,
        "cores": cores,
        "ceiling_wps": ceiling,
        "faster_dbos_conc8": faster_c8 or None,
        "ceiling_to_faster_dbos": ceiling / best_c8 if best_c8 else None,
        "cpu_budget_for_10x_ms": budget,
    }
    extra_row(
        "CPU per wf (conc8)",
        f"{cpu:.2f} ms",
        [f"{pr['conc8_cpu_ms']:.2f} ms" for pr in peers.values()],
        faster_c8,
        f"ceiling {ceiling:.0f} wf/s" + (f" = {ceiling / best_c8:.1f}x" if best_c8 else ""),
        f"{cores} cores; files alone {fcpu:.2f} ms/wf"
        + (f"; 10x DBOS needs <= {budget:.2f} ms/wf" if budget else ""),
    )
    sp50, sp99 = ours["start_floor_p50_ms"]["value"], ours["start_floor_p99_ms"]["value"]
    floors["start"] = {"floor_p50_ms": sp50, "floor_p99_ms": sp99}
    extra_row(
        "floor (start)",
        f"{sp50:.2f} / {sp99:.2f} ms",
        no_dbos,
        "",
        f"ours = {ours['start_p50_ms']['value'] / sp50:.1f}x / "
        f"{ours['start_p99_ms']['value'] / sp99:.1f}x",
        "p50 / p99 of one fsync'd commit under the same load",
    )
    console.print(table)
    for label, pr in peers.items():
        console.print(
            f"DBOS {label}: {PEER_DESCRIPTION[label]}; read back from DBOS's engine: "
            f"synchronous={pr['sqlite_synchronous']:.0f} (2 = FULL), "
            f"WAL={'yes' if pr['sqlite_wal'] else 'no'}"
        )
    hot_targets.report_cpu(console, ours, judged)
    hot_targets.report_python_floor(console, ours, judged)
    console.print(
        f"memory: {ours['paused_instances']['value']:.0f} paused instances -> process RSS "
        f"{ours['paused_rss_mb']['value']:.0f} MB (+{ours['paused_rss_delta_mb']['value']:.0f}"
        " MB for them); budget: 10,000 under 250 MB"
    )

    console.print("[bold]signals, queries, event stream[/bold] ...")
    figs = authoring.measure(args.quick)
    t3 = Table(
        "metric",
        "tierflow",
        "target",
        "peak RSS MB",
        title="issue 3: signals, queries, event stream",
    )
    for key, unit, target in [
        ("signal_resume_p50_ms", "ms", "<= 5 ms"),
        ("query_100_steps_ms", "ms", "<= 10 ms"),
        ("seq_wps_no_sink", "wf/s", ""),
        ("seq_wps_http_sink", "wf/s", ""),
        ("publish_overhead_pct", "%", "<= 10 %"),
    ]:
        t3.add_row(key, f"{figs[key]['value']:.2f} {unit}", target, f"{figs[key]['rss_mb']:.0f}")
    console.print(t3)

    console.print("[bold]warm tier[/bold] (hot -> warm, 20-event workflows) ...")
    tf = tiering_bench.measure(args.quick)
    t4 = Table(
        "metric",
        "file://",
        "moto s3://",
        "target",
        "peak RSS MB",
        title="issue 4: tiering hot -> warm",
    )
    for key, fmt, target in [
        ("wps", "{:.0f} wf/s", ">= 2000 wf/s"),
        ("floor_wps", "{:.0f} wf/s", "read same SQLite + write same Parquet"),
        ("puts_per_10k", "{:.1f}", "Temporal archival: ~50,000"),
        ("hot_bytes_per_event", "{:.0f} B", ""),
        ("warm_bytes_per_event", "{:.1f} B", ""),
    ]:
        t4.add_row(
            key,
            fmt.format(tf[f"file:{key}"]["value"]),
            fmt.format(tf[f"s3:{key}"]["value"]),
            target,
            f"{tf[f's3:{key}']['rss_mb']:.0f}",
        )
    for name in ("file", "s3"):
        ratio = tf[f"{name}:wps"]["value"] / tf[f"{name}:floor_wps"]["value"]
        floors[f"tiering_{name}"] = {"ours_share": ratio}
        t4.add_row(f"ratio to floor ({name})", f"{ratio:.0%}", "", "", "")
    t4.add_row(
        "workflows per run",
        f"{tf['file:workflows']['value']:.0f}",
        f"{tf['s3:workflows']['value']:.0f}",
        "",
        "",
    )
    console.print(t4)

    console.print("[bold]cold tier[/bold] (warm -> Iceberg, 20-event workflows) ...")
    cold = cold_bench.measure(args.quick, console)  # a failed check raises RuntimeError
    cold_bench.report(console, cold, judged)

    console.print("[bold]replay and reads[/bold] (history p50 per tier, 100-step replay) ...")
    rp = replay_bench.measure(args.quick)
    replay_bench.report(console, rp, judged)

    console.print("[bold]verified export[/bold] (a 1,001-event cold workflow) ...")
    ex = export_bench.measure(args.quick, console)
    export_bench.report(console, ex, judged)

    console.print("[bold]SQL across tiers[/bold] (GROUP BY event_type over hot, warm and cold) ...")
    sql_fig = sql_bench.measure(args.quick, console)
    sql_bench.report(console, sql_fig, judged)

    console.print("[bold]erasure[/bold] (one workflow out of a 1M archive; retention) ...")
    erase_fig = erasure_bench.measure(args.quick, console)
    erasure_bench.report(console, erase_fig, judged)

    console.print("[bold]cross-process[/bold] (a worker subprocess; commits from this one) ...")
    xp = cross_process.measure(args.quick)
    t5 = Table(
        "from a commit here to the worker acting",
        "p50",
        "p99",
        "target p50 / p99",
        title="issue 10: several processes on one data directory",
    )
    for kind in ("queued", "signal", "cancel", "terminate"):
        t5.add_row(
            kind,
            f"{xp[f'{kind}_p50_ms']:.2f} ms",
            f"{xp[f'{kind}_p99_ms']:.2f} ms",
            "<= 20 ms / <= 100 ms",
        )
    t5.add_row("idle worker CPU", f"{xp['idle_cpu_pct']:.2f} % of a core", "", "negligible")
    t5.add_row("samples per kind", f"{xp['samples']}", "", "")
    console.print(t5)

    console.print("[bold]HTTP API[/bold] (tierflow serve under 16 clients, beside FastAPI) ...")
    http_fig = http_bench.measure(args.quick, console)
    http_bench.report(console, http_fig, judged)

    checks = list(CHECKS)
    for pr in peers.values():
        checks.extend(pr["checks"])
    completed = {
        side: sum(c["expected"] for c in checks if c["side"] == side)
        for side in ("tierflow", "dbos")
    }
    console.print(
        f"completion: every benchmarked workflow completed: tierflow {completed['tierflow']} "
        f"instances in {sum(c['side'] == 'tierflow' for c in checks)} checks, DBOS "
        f"{completed['dbos']} in {sum(c['side'] == 'dbos' for c in checks)} checks "
        f"({len(peers)} configurations)"
    )

    result = {
        "format": 1,
        "mode": "quick" if args.quick else "full",
        "judged": judged,
        "started_utc": started.isoformat(),
        "duration_s": time.perf_counter() - t_start,
        "git": git_commit(),
        "machine": {
            "cores_available": cores,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "machine": platform.machine(),
        },
        "versions": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "dbos": peer_meta.get("dbos"),
            "dbos_sqlite": peer_meta.get("sqlite"),
        },
        "sizes": sizes_dict(args.quick),
        "dbos_configurations": {
            label: {
                "description": PEER_DESCRIPTION[label],
                "peer_args": extra,
                "sqlite_synchronous": peers[label]["sqlite_synchronous"],
                "sqlite_wal": bool(peers[label]["sqlite_wal"]),
            }
            for label, extra, _ in PEER_CONFIGS
            if label in peers
        },
        "issue2": rows,
        "floors": floors,
        "tierflow": {
            "hot": ours,
            "authoring": figs,
            "tiering": tf,
            "cold": cold,
            "cross_process": xp,
            "replay": rp,
            "sql": sql_fig,
            "erasure": erase_fig,
            "http": http_fig,
            "export": ex,
        },
        "dbos": {
            label: {k: v for k, v in pr.items() if k != "checks"} for label, pr in peers.items()
        },
        "completed": completed,
        "checks": checks,
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str) + "\n"
    if args.quick:
        paths = [out_dir / "quick-latest.json"]
    else:
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        paths = [out_dir / f"bench-{stamp}.json", out_dir / "latest.json"]
    for path in paths:
        path.write_text(text)
    console.print(f"figures written to {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
