"""SQL across tiers: GROUP BY event_type over 10M history events in cold, warm and hot.

python -m tests.bench.sql_bench [--quick] [--events N] [--no-moto]

Setup (the archive is written directly, as cold_bench does, so it fits in minutes on
2 cores), the same on ``file://`` and on a moto S3 server:

- **cold** (half the events): ``cold_bench.write_archive`` (``ColdWriter``, one commit per
  few days, as cold-move groups do), then the index state a cold move leaves behind and
  that ``Tierflow.sql`` reads: a ``cold_commits`` row in state ``done`` per commit found in
  the Iceberg snapshots (``tierflow.commit-id`` / ``tierflow.batches``), its
  ``cold_batches`` rows, and the moved batches in ``tier_batches`` (state
  ``cold``, which the SQL layer skips);
- **warm** (the rest of the Parquet events): batches written with the product's
  ``BatchWriter`` and recorded in the tiering ledger (``tier_batches``, state ``done``, with
  the manifest), as a tiering pass would;
- **hot**: a few thousand 8-step workflows run for real and left in the hot tier.

Figures: ``Tierflow.sql`` over ``history`` (every tier), over warm + cold only (the
Parquet share, like for like with the floors), and over ``hot_history``; on ``file://``
the floors over exactly the same Parquet files: DuckDB ``read_parquet`` on a fresh
connection (as each tierflow query gets a fresh sandbox; the target's denominator) and on
an already open one, ``read_parquet`` with ``allowed_paths`` = those files and
``enable_external_access`` off (how the product reads local files), and registered
``pyarrow.dataset`` objects (how it reads object stores). On moto (no httpfs): ours beside
a ``pyarrow.dataset`` on pyarrow's S3FileSystem + DuckDB. Ours is the caller's wall time
of ``await tf.sql(...)``. Peak RSS of the query: a subprocess that opens the data directory
and runs it (``ru_maxrss`` from ``os.wait4``), beside its RSS just before the query; its
first query also shows the cost of a cold hot-history cache (every hot file read).
Each time is the best of a few runs; every run's rows are checked against the truth.

Worker start (``--worker-start`` runs only this): ``Workers.take()`` eleven times in a
fresh process, forked from the template and as fresh interpreters
(``TIERFLOW_SQL_TEMPLATE=off``); wall and CPU (this process, the worker up to ready, the
template while it forks) of the first start (with the template's own) and the median of
the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
from rich.console import Console
from rich.table import Table
from tierflow import Tierflow, WorkflowContext, workflow
from tierflow.cold import tables as cold_tables
from tierflow.cold.reader import fs_path
from tierflow.cold.writer import BATCHES_PROPERTY, COMMIT_ID_PROPERTY
from tierflow.tiering.cold_ledger import ColdLedger, CommitState
from tierflow.tiering.sql import template
from tierflow.tiering.warm_ledger import BatchState, WarmLedger
from tierflow.warm import writer
from tierflow.warm.reader import analytic_dataset
from tierflow.warm.schema import schema_for

from tests.bench.child import require, run_child
from tests.bench.cold_bench import (
    FIRST_DAY,
    Moto,
    Place,
    record_warm_batch,
    split_days,
    synth_day,
    write_archive,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
QUERY = "SELECT event_type, count(*) FROM history GROUP BY 1 ORDER BY 1"
PARQUET_QUERY = (
    "SELECT event_type, count(*) FROM (SELECT event_type FROM warm_history UNION ALL "
    "SELECT event_type FROM cold_history) GROUP BY 1 ORDER BY 1"
)
HOT_QUERY = "SELECT event_type, count(*) FROM hot_history GROUP BY 1 ORDER BY 1"
TIERS_QUERY = "SELECT tier, count(*) FROM history GROUP BY 1 ORDER BY 1"
FLOOR_SQL = (
    "SELECT event_type, count(*) FROM (SELECT event_type FROM {warm} UNION ALL "
    "SELECT event_type FROM {cold}) GROUP BY 1 ORDER BY 1"
)
EVENTS_PER_WF = 20  # cold_bench.synth_day's workflows
TARGET_S = 1.0
TARGET_RATIO = 1.3
RSS_MB = 2048.0
REPEATS = 5


@dataclass(frozen=True)
class Sizes:
    events: int  # total history events, every tier
    hot: int  # hot instances run for real
    cold_days: int  # finish dates the cold archive spans
    days_per_commit: int
    warm_batches: int


FULL = Sizes(events=10_000_000, hot=2_000, cold_days=10, days_per_commit=3, warm_batches=5)
QUICK = Sizes(events=120_000, hot=40, cold_days=2, days_per_commit=2, warm_batches=2)


def upper(x: str) -> str:
    return x.upper()


@workflow(name="sql_bench_eight")
async def eight(ctx: WorkflowContext, n: int) -> int:
    for i in range(8):
        await ctx.step(f"step-{i}", upper, f"{n}-{i}")
    return n


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- setup -----------------------------------------------------------------------------


async def run_hot(tf: Tierflow, n: int) -> int:
    """``n`` 8-step workflows run for real (16 at a time); their history events in total."""
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with sem:
            await tf.run(eight, i, workflow_id=f"hot-{i:06d}")

    await asyncio.gather(*(one(i) for i in range(n)))
    per = len(await tf.history("hot-000000"))
    return n * per


def write_warm(tf: Tierflow, workflows: int, batches: int, first_day: int) -> tuple[list[str], int]:
    """Warm batches (one finish date each) through BatchWriter + the ledger; history keys."""
    rng = random.Random(5)
    keys: list[str] = []
    events = 0
    first = 0
    for b, n in enumerate(split_days(workflows, batches)):
        wf, ev = synth_day(rng, FIRST_DAY + timedelta(days=first_day + b), n, first)
        first += n
        manifest = record_warm_batch(tf, wf, ev)
        keys += manifest.keys("history")
        events += ev.num_rows
    return keys, events


def record_cold_commits(tf: Tierflow) -> int:
    """The index rows a cold move leaves for each commit in the cold tables; how many commits.

    ``Tierflow.sql`` reads ``cold_commits`` (state committed/done) to pick the snapshot;
    ``cold_batches`` and the ``cold`` ledger rows are what a cold move also leaves.
    """
    ColdLedger(tf.index)
    WarmLedger(tf.index)
    commits: dict[str, dict[str, Any]] = {}
    for dataset in ("workflows", "history"):
        table = tf.cold.table(dataset, refresh=True)
        for snap in table.snapshots():
            props = snap.summary.additional_properties if snap.summary else {}
            cid = props.get(COMMIT_ID_PROPERTY)
            if cid is None:
                continue
            c = commits.setdefault(cid, {"batches": props.get(BATCHES_PROPERTY, "").split(",")})
            c[dataset] = snap.snapshot_id
            c[f"{dataset}_rows"] = int(snap.summary.get("added-records", 0) or 0)
    now = tf.engine.now_us()

    def fn(c: Any) -> None:
        for cid, info in commits.items():
            c.execute(
                "INSERT INTO cold_commits (commit_id, state, created_at, committed_at, "
                "workflows_snapshot, history_snapshot, workflow_count, event_count, batch_ids) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    cid,
                    CommitState.DONE.value,
                    now,
                    now,
                    info.get("workflows"),
                    info.get("history"),
                    info.get("workflows_rows"),
                    info.get("history_rows"),
                    json.dumps(info["batches"]),
                ),
            )
            for bid in info["batches"]:
                c.execute("INSERT INTO cold_batches (batch_id, commit_id) VALUES (?,?)", (bid, cid))
                c.execute(
                    "INSERT INTO tier_batches (batch_id, state, created_at, committed_at, "
                    "store_url) VALUES (?,?,?,?,?)",
                    (bid, BatchState.COLD.value, now, now, tf.store.url),
                )

    tf.index.write_now(fn, durable=True)
    return len(commits)


def cold_history_paths(tf: Tierflow) -> list[str]:
    table = tf.cold.table("history", refresh=True)
    return [fs_path(t.file.file_path) for t in table.scan().plan_files()]


# -- the child that measures peak RSS -----------------------------------------------------


async def child_query(spec: dict[str, Any]) -> dict[str, Any]:
    place = Place(**spec["place"])
    async with Tierflow(spec["data"], [eight], warm_store=place.open()) as tf:
        before = current_rss_mb()
        t = time.perf_counter()
        r = await tf.sql(QUERY)
        elapsed = time.perf_counter() - t
        rows = [list(x) for x in r.rows]
    # The query ran in a worker forked from the template; stopping the template reaps both,
    # so the worker's peak is here.
    template.stop()
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"rows": rows, "before_mb": before, "elapsed_s": elapsed, "worker_peak_mb": worker_mb}


# -- worker start: forked from the template vs a fresh interpreter ----------------------

WORKER_STARTS = 11  # per mode: the first (the template starts with it) and 10 more


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a live process has used (``/proc``; 0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_start_child(n: int) -> dict[str, Any]:
    """Time ``Workers.take()`` ``n`` times in this fresh process, each on a new worker.

    CPU per start: this process's, the worker's up to ready (``/proc``, read
    before it is killed), and the template's while it forked it.
    """
    from tierflow.tiering.sql import template
    from tierflow.tiering.sql.pool import Workers

    pool = Workers(max_workers=1, keep=0)
    runs = []
    try:
        for _ in range(n):
            shared = template.shared()
            base = _cpu_s(shared.pid) if shared else 0.0
            cpu, wall = time.process_time(), time.perf_counter()
            worker = pool.take(None)
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
            assert worker.pid is not None
            cpu += _cpu_s(worker.pid) + (_cpu_s(shared.pid) - base if shared else 0.0)
            runs.append((wall, cpu, bool(shared)))
            pool.discard(worker)
    finally:
        pool.close()
    rest = runs[1:]
    return {
        "forked": all(f for _, _, f in runs),
        "first_wall_s": runs[0][0],
        "first_cpu_s": runs[0][1],
        "wall_s": statistics.median(w for w, _, _ in rest),
        "cpu_s": statistics.median(c for _, c, _ in rest),
    }


def worker_start() -> dict[str, Any]:
    """Worker start in a fresh process each: forked from the template, and fresh interpreters."""
    out = {}
    for mode, env in (("forked", {}), ("fresh", {"TIERFLOW_SQL_TEMPLATE": "off"})):
        done = subprocess.run(
            [sys.executable, "-m", "tests.bench.sql_bench", "--worker-start-child"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env={**os.environ, **env},
        )
        require(done.returncode == 0, f"worker start ({mode}): {done.stderr[-2000:]}")
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    require(out["forked"]["forked"] and not out["fresh"]["forked"], f"worker start: {out}")
    return out


def report_worker_start(console: Console, fig: dict[str, Any]) -> None:
    t = Table(
        "SQL worker start (Workers.take)",
        "wall, median",
        "CPU, median",
        "first in the process: wall / CPU",
        title=f"SQL worker start, {WORKER_STARTS} in a fresh process",
    )
    for mode, label in (("forked", "forked from the template"), ("fresh", "fresh interpreter")):
        f = fig[mode]
        t.add_row(
            label,
            f"{f['wall_s'] * 1000:.0f} ms",
            f"{f['cpu_s'] * 1000:.0f} ms",
            f"{f['first_wall_s'] * 1000:.0f} / {f['first_cpu_s'] * 1000:.0f} ms",
        )
    console.print(t)


# -- the floors ---------------------------------------------------------------------------


def best_of(fn: Any, expect: list[tuple[Any, ...]], what: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - t)
        require([tuple(r) for r in rows] == expect, f"{what}: {rows} != {expect}")
    return times


def floor_read_parquet(warm: list[str], cold: list[str]) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    try:
        sql = FLOOR_SQL.format(warm="read_parquet($w)", cold="read_parquet($c)")
        return con.execute(sql, {"w": warm, "c": cold}).fetchall()
    finally:
        con.close()


def floor_open_connection(
    warm: list[str], cold: list[str], repeats: int, expect: list[tuple[Any, ...]]
) -> list[float]:
    """``read_parquet`` on a connection opened once (the query alone, no connect/close)."""
    con = duckdb.connect()
    try:
        sql = FLOOR_SQL.format(warm="read_parquet($w)", cold="read_parquet($c)")
        con.execute(sql, {"w": warm, "c": cold}).fetchall()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            rows = con.execute(sql, {"w": warm, "c": cold}).fetchall()
            times.append(time.perf_counter() - t)
            require([tuple(r) for r in rows] == expect, f"open connection: {rows} != {expect}")
        return times
    finally:
        con.close()


def floor_allowed_paths(warm: list[str], cold: list[str]) -> list[tuple[Any, ...]]:
    """``read_parquet`` confined to exactly these files (``allowed_paths``, access off, locked).

    DuckDB refuses to change ``allowed_paths`` once external access is off, so the list is
    set first. Not the product's way: ``allowed_*`` also admits ``COPY ... TO`` an
    allowed path (an archive file can be overwritten).
    """
    con = duckdb.connect()
    try:
        con.execute("SET allowed_paths = ?", [warm + cold])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        sql = FLOOR_SQL.format(warm="read_parquet($w)", cold="read_parquet($c)")
        return con.execute(sql, {"w": warm, "c": cold}).fetchall()
    finally:
        con.close()


def floor_dataset(fs: Any, warm: list[str], cold: list[str]) -> list[tuple[Any, ...]]:
    """pyarrow datasets over the same files, registered in DuckDB (no tiers, no sandbox)."""
    con = duckdb.connect()
    try:
        con.register("w", ds.dataset(warm, schema=schema_for("history"), filesystem=fs))
        con.register(
            "c", ds.dataset(cold, schema=cold_tables.arrow_schema("history"), filesystem=fs)
        )
        return con.execute(FLOOR_SQL.format(warm="w", cold="c")).fetchall()
    finally:
        con.close()


def floor_dict_dataset(fs: Any, warm: list[str], cold: list[str]) -> list[tuple[Any, ...]]:
    """The product's ``analytic_dataset`` (strings as dictionaries), no tiers, no sandbox."""
    con = duckdb.connect()
    try:
        con.register("w", analytic_dataset(fs, warm, schema_for("history")))
        con.register("c", analytic_dataset(fs, cold, cold_tables.arrow_schema("history")))
        return con.execute(FLOOR_SQL.format(warm="w", cold="c")).fetchall()
    finally:
        con.close()


# -- one backend ----------------------------------------------------------------------------


async def _measure(sizes: Sizes, place: Place, work: Path, local: bool) -> dict[str, Any]:
    store = place.open()
    store.check()
    data = work / "d"
    fig: dict[str, Any] = {"backend": "file://" if local else "moto s3://"}
    async with Tierflow(data, [eight], warm_store=store) as tf:
        t = time.perf_counter()
        hot_events = await run_hot(tf, sizes.hot)
        fig["setup_hot_s"] = time.perf_counter() - t

        parquet_wfs = max(2, (sizes.events - hot_events) // EVENTS_PER_WF)
        cold_wfs = parquet_wfs // 2
        warm_wfs = parquet_wfs - cold_wfs

        t = time.perf_counter()
        tf.cold.tables(create=True)
        write_archive(
            tf.cold, cold_wfs, sizes.cold_days, sizes.days_per_commit, 0, random.Random(7)
        )
        fig["commits"] = record_cold_commits(tf)
        fig["setup_cold_s"] = time.perf_counter() - t

        t = time.perf_counter()
        warm_keys, warm_events = write_warm(tf, warm_wfs, sizes.warm_batches, sizes.cold_days)
        fig["setup_warm_s"] = time.perf_counter() - t

        cold_events = cold_wfs * EVENTS_PER_WF
        truth = {"cold": cold_events, "hot": hot_events, "warm": warm_events}
        fig.update(
            events=sum(truth.values()),
            hot_events=hot_events,
            warm_events=warm_events,
            cold_events=cold_events,
            hot_instances=sizes.hot,
        )
        tiers = await tf.sql(TIERS_QUERY)
        require(dict(tiers.rows) == truth, f"tiers {tiers.rows} != ground truth {truth}")

        async def ours(query: str) -> tuple[list[float], list[tuple[Any, ...]]]:
            times, rows = [], None
            for _ in range(REPEATS):
                t = time.perf_counter()
                r = await tf.sql(query)
                times.append(time.perf_counter() - t)  # the caller's wall time
                require(rows is None or r.rows == rows, f"{query}: rows changed between runs")
                rows = r.rows
            assert rows is not None
            return times, rows

        all_t, all_rows = await ours(QUERY)
        require(sum(n for _, n in all_rows) == fig["events"], f"history: {all_rows}")
        pq_t, pq_rows = await ours(PARQUET_QUERY)
        require(sum(n for _, n in pq_rows) == warm_events + cold_events, f"parquet: {pq_rows}")
        hot_t, hot_rows = await ours(HOT_QUERY)
        require(sum(n for _, n in hot_rows) == hot_events, f"hot_history: {hot_rows}")
        fig.update(
            ours_s=min(all_t),
            ours_median_s=statistics.median(all_t),
            ours_parquet_s=min(pq_t),
            ours_hot_s=min(hot_t),
        )

        cold_paths = cold_history_paths(tf)
        warm_paths = [writer.full_path(store.root, k) for k in warm_keys]
        fig["files"] = {"warm": len(warm_paths), "cold": len(cold_paths), "hot": sizes.hot}
        fs = store.fs
        fl = best_of(lambda: floor_dataset(fs, warm_paths, cold_paths), pq_rows, "dataset", REPEATS)
        fig["dataset_s"] = min(fl)
        fl = best_of(
            lambda: floor_dict_dataset(fs, warm_paths, cold_paths), pq_rows, "dict", REPEATS
        )
        fig["dict_dataset_s"] = min(fl)
        if local:
            fl = best_of(
                lambda: floor_read_parquet(warm_paths, cold_paths), pq_rows, "read_parquet", REPEATS
            )
            fig["read_parquet_s"] = min(fl)
            fig["open_read_parquet_s"] = min(
                floor_open_connection(warm_paths, cold_paths, REPEATS, pq_rows)
            )
            fl = best_of(
                lambda: floor_allowed_paths(warm_paths, cold_paths),
                pq_rows,
                "read_parquet allowed_paths",
                REPEATS,
            )
            fig["allowed_paths_s"] = min(fl)
    # Peak RSS: the same query in a fresh process on the same data directory.
    child = run_child(
        "tests.bench.sql_bench", {"data": str(data), "place": asdict(place)}, work, "SQL child"
    )
    require([tuple(r) for r in child["rows"]] == all_rows, f"child rows {child['rows']}")
    fig.update(
        child_peak_rss_mb=child["peak_rss_mb"] + child["worker_peak_mb"],
        child_engine_peak_mb=child["peak_rss_mb"],
        child_worker_peak_mb=child["worker_peak_mb"],
        child_rss_before_mb=child["before_mb"],
        child_query_s=child["elapsed_s"],
    )
    return fig


def measure(
    quick: bool,
    console: Console | None = None,
    events: int | None = None,
    use_moto: bool = True,
) -> dict[str, Any]:
    """Run the SQL phase on file:// and moto (``quick``: ~120k events, else 10M)."""
    say = console.print if console is not None else print
    sizes = QUICK if quick else FULL
    if events:
        sizes = Sizes(**{**asdict(sizes), "events": events})
    out: dict[str, Any] = {"sizes": asdict(sizes), "loadavg_start": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="tierflow-sqlbench-"))
    moto = None
    try:
        say("  SQL worker start: forked, then fresh ...")
        out["worker_start"] = worker_start()
        say(f"  {sizes.events:,} events across tiers, file:// ...")
        (work / "file").mkdir()
        out["file"] = asyncio.run(
            _measure(sizes, Place((work / "file" / "lake").as_uri()), work / "file", True)
        )
        shutil.rmtree(work / "file", ignore_errors=True)
        if use_moto:
            say(f"  {sizes.events:,} events across tiers, moto s3:// ...")
            moto = Moto()
            (work / "s3").mkdir()
            out["s3"] = asyncio.run(_measure(sizes, moto.place("lake"), work / "s3", False))
        out["loadavg_end"] = os.getloadavg()
    finally:
        if moto is not None:
            moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def report(console: Console, figs: dict[str, Any], judged: bool) -> None:
    if "worker_start" in figs:
        report_worker_start(console, figs["worker_start"])
    mark = (lambda ok: "yes" if ok else "[red]NO[/red]") if judged else (lambda ok: "-")
    f = figs["file"]
    s = figs.get("s3")
    t = Table(
        "figure",
        "file://",
        "moto s3://" if s else "",
        "target",
        "met",
        title=f"issue 12: SQL across tiers, GROUP BY event_type over {f['events']:,} events "
        f"(cold {f['cold_events']:,} / warm {f['warm_events']:,} / hot {f['hot_events']:,}"
        f" in {f['hot_instances']:,} instances)"
        + ("" if judged else "; QUICK: smoke sizes, figures mean nothing"),
    )

    def ms(v: float | None) -> str:
        return "" if v is None else f"{v * 1000:.0f} ms"

    def sv(key: str) -> float | None:
        return s.get(key) if s else None

    ratio = f["ours_s"] / f["read_parquet_s"]
    pq_ratio = f["ours_parquet_s"] / f["read_parquet_s"]
    t.add_row(
        "ours: history (all tiers)",
        ms(f["ours_s"]),
        ms(sv("ours_s")),
        "<= 1 s",
        mark(f["ours_s"] <= TARGET_S)
        + (f" / {mark(s['ours_s'] <= TARGET_S)}" if s else "")
        + (f" (moto floor: {ms(s['dict_dataset_s'])})" if s and s["ours_s"] > TARGET_S else ""),
    )
    t.add_row("  median of runs", ms(f["ours_median_s"]), ms(sv("ours_median_s")), "", "")
    t.add_row("ours: warm + cold views only", ms(f["ours_parquet_s"]), ms(sv("ours_parquet_s")))
    t.add_row(
        "ours: hot_history only (per instance)",
        f"{ms(f['ours_hot_s'])} ({f['ours_hot_s'] / f['hot_instances'] * 1e6:.0f} us)",
        f"{ms(s['ours_hot_s'])} ({s['ours_hot_s'] / s['hot_instances'] * 1e6:.0f} us)" if s else "",
    )
    t.add_row("read_parquet, same Parquet files", ms(f["read_parquet_s"]), "(no httpfs)")
    t.add_row(
        "  ratio ours (all tiers) / read_parquet",
        f"{ratio:.2f}x",
        "",
        "<= 1.3x",
        mark(ratio <= TARGET_RATIO),
    )
    t.add_row("  ratio ours (warm + cold) / read_parquet", f"{pq_ratio:.2f}x", "", "", "")
    if "open_read_parquet_s" in f:
        t.add_row(
            "read_parquet on an already open connection",
            ms(f["open_read_parquet_s"]),
            "",
            "(no connect/close)",
        )
        t.add_row(
            "  ratio ours (all tiers) / that",
            f"{f['ours_s'] / f['open_read_parquet_s']:.2f}x",
        )
    t.add_row(
        "read_parquet + allowed_paths, in process (issue 12's way)",
        ms(f["allowed_paths_s"]),
        "",
        "(no worker process, no kernel fence)",
        "",
    )
    previous = _previous_figure()
    if previous is not None:
        t.add_row("previous bench run: ours, all tiers", ms(previous), "", "(bench-results)")
    t.add_row("pyarrow dataset + DuckDB, same files", ms(f["dataset_s"]), ms(sv("dataset_s")))
    t.add_row(
        "  same, strings as dictionaries (analytic_dataset)",
        ms(f["dict_dataset_s"]),
        ms(sv("dict_dataset_s")),
    )
    t.add_row(
        "  ratio ours (warm + cold) / dictionary dataset",
        f"{f['ours_parquet_s'] / f['dict_dataset_s']:.2f}x",
        f"{s['ours_parquet_s'] / s['dict_dataset_s']:.2f}x" if s else "",
    )
    t.add_row(
        "  ratio ours (all tiers) / dataset",
        f"{f['ours_s'] / f['dataset_s']:.2f}x",
        f"{s['ours_s'] / s['dataset_s']:.2f}x" if s else "",
    )
    t.add_row(
        "peak RSS, query in a subprocess (engine + worker)",
        f"{f['child_peak_rss_mb']:.0f} MB",
        f"{s['child_peak_rss_mb']:.0f} MB" if s else "",
        "<= 2048 MB",
        mark(f["child_peak_rss_mb"] <= RSS_MB)
        + (f" / {mark(s['child_peak_rss_mb'] <= RSS_MB)}" if s else ""),
    )
    t.add_row(
        "  engine / worker process",
        f"{f['child_engine_peak_mb']:.0f} / {f['child_worker_peak_mb']:.0f} MB",
        f"{s['child_engine_peak_mb']:.0f} / {s['child_worker_peak_mb']:.0f} MB" if s else "",
    )
    t.add_row(
        "  its RSS before; its (first) query time",
        f"{f['child_rss_before_mb']:.0f} MB; {ms(f['child_query_s'])}",
        f"{s['child_rss_before_mb']:.0f} MB; {ms(s['child_query_s'])}" if s else "",
    )
    t.add_row(
        "files: warm / cold (history); hot instances",
        "{warm} / {cold}; {hot}".format(**f["files"]),
        "{warm} / {cold}; {hot}".format(**s["files"]) if s else "",
    )
    t.add_row(
        "setup: hot / cold (+ledger) / warm",
        f"{f['setup_hot_s']:.0f} / {f['setup_cold_s']:.0f} / {f['setup_warm_s']:.0f} s",
        f"{s['setup_hot_s']:.0f} / {s['setup_cold_s']:.0f} / {s['setup_warm_s']:.0f} s"
        if s
        else "",
    )
    console.print(t)
    if "loadavg_end" in figs:
        console.print(
            f"load average (1 min) at start / end of the SQL phase: {figs['loadavg_start'][0]:.1f}"
            f" / {figs['loadavg_end'][0]:.1f} on {os.cpu_count()} CPUs"
        )


def _previous_figure() -> float | None:
    """``ours_s`` on file:// of the last full bench run, if bench-results/latest.json has it."""
    try:
        doc = json.loads((ROOT / "bench-results" / "latest.json").read_text())
    except (OSError, ValueError):
        return None
    found: list[float] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("backend") == "file://" and isinstance(node.get("ours_s"), float):
                found.append(node["ours_s"])
            for v in node.values():
                walk(v)

    walk(doc)
    return found[0] if found else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--events", type=int, default=0)
    p.add_argument("--no-moto", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--worker-start", action="store_true", help="only the worker start figure")
    p.add_argument("--worker-start-child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker_start_child:
        print(json.dumps(worker_start_child(WORKER_STARTS)))
        return
    if a.worker_start:
        fig = worker_start()
        report_worker_start(Console(), fig)
        print(json.dumps(fig))
        return
    if a.child:
        print(json.dumps(asyncio.run(child_query(json.loads(Path(a.child).read_text())))))
        return
    c = Console(width=None if sys.stdout.isatty() else 160)
    figs = measure(a.quick, c, a.events or None, not a.no_moto)
    report(c, figs, not a.quick)
    print(json.dumps(figs, default=str))


if __name__ == "__main__":
    main()
