"""Figures for the hot engine (issue 2), measured the way peer_dbos.py measures DBOS.

Every phase uses a fresh data directory and the default durability (``full``:
fsync on every instance commit). Sizes and the workflow come from workload.py,
shared with peer_dbos.py; after each phase the instances are counted by status
through ``Tierflow.list`` and the run fails unless every one of them completed.
Only tierflow's public API is used.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tierflow import Tierflow, WorkflowContext, workflow

from tests.bench.python_floor import IndexShape, python_floor
from tests.bench.workload import CALLERS, ITEMS, STEPS, check, process_cpu_s, sizes

ROOT = Path(__file__).resolve().parents[2]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def upper(x: str) -> str:
    return x.upper()


@workflow
async def three_steps(ctx: WorkflowContext, items: list[str]) -> list[str]:
    return [await ctx.step(f"step-{i}", upper, x) for i, x in enumerate(items)]


@workflow
async def sleep10(ctx: WorkflowContext) -> None:
    await ctx.sleep(0.01)


@workflow
async def sleeps_an_hour(ctx: WorkflowContext) -> None:
    await ctx.sleep("1h")


WORKFLOWS = [three_steps, sleep10, sleeps_an_hour]


async def statuses(tf: Tierflow) -> Counter[str]:
    """Every instance in ``tf``'s index, counted by status (``list``, paged)."""
    found: Counter[str] = Counter()
    cursor: str | None = None
    while True:
        page = await tf.list(cursor=cursor, limit=10_000)
        found.update(info.status for info in page.items)
        cursor = page.next_cursor
        if cursor is None:
            return found


async def check_completed(tf: Tierflow, phase: str, expected: int, want: str = "completed") -> None:
    """Fail the run unless the phase's ``expected`` instances all reached ``want``."""
    check("tierflow", phase, expected, await statuses(tf), want)


async def check_steps(tf: Tierflow, workflow_id: str) -> None:
    """The benchmarked workflow ran STEPS steps (the same count as DBOS's)."""
    info = await tf.describe(workflow_id)
    if info.step_count != STEPS or info.result != [x.upper() for x in ITEMS]:
        raise AssertionError(f"{workflow_id}: {info.step_count} steps, result {info.result!r}")


def current_rss_mb() -> float:
    """Resident memory of this process now, in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def paused_memory(data: Path, n: int) -> dict[str, float]:
    """RSS with ``n`` instances paused on a 1 h timer (budget: 10,000 under 250 MB)."""
    async with Tierflow(data, WORKFLOWS) as tf:
        before = current_rss_mb()
        for _ in range(n):
            await tf.run(sleeps_an_hour)
        figures = {
            "paused_instances": float(n),
            "paused_rss_mb": current_rss_mb(),
            "paused_rss_delta_mb": current_rss_mb() - before,
        }
        await check_completed(tf, "paused", n, want="paused")
        return figures


class CountingTierflow(Tierflow):
    """Counts the instance commits that wrote events (each one fsync at durability=full).

    Through the engine's public hook ``Engine.events_committed``, called once after
    each such commit; ``commits`` is read around the timed loop.
    """

    commits = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hook = self.engine.events_committed

        def counted(workflow_id: str, written: Any = None) -> None:
            self.commits += 1
            hook(workflow_id, written)

        self.engine.events_committed = counted  # type: ignore[method-assign]


async def warm_up(tf: Tierflow, n: int) -> None:
    for _ in range(n):
        await tf.run(three_steps, ITEMS)


async def seq(data: Path, warmup: int, n: int) -> dict[str, float]:
    async with CountingTierflow(data, WORKFLOWS) as tf:
        await warm_up(tf, warmup)
        c0 = tf.commits
        t0, cpu0 = time.perf_counter(), process_cpu_s()
        for _ in range(n):
            h = await tf.run(three_steps, ITEMS)
        elapsed, cpu = time.perf_counter() - t0, process_cpu_s() - cpu0
        commits = tf.commits - c0
        await check_completed(tf, "seq", warmup + n)
        await check_steps(tf, h.workflow_id)
    return {"seq_wps": n / elapsed, "commits_per_wf": commits / n, "seq_cpu_ms": cpu / n * 1000}


async def conc8(data: Path, warmup: int, n: int) -> dict[str, float]:
    async with Tierflow(data, WORKFLOWS) as tf:
        await warm_up(tf, warmup)
        per = n // CALLERS

        async def caller() -> None:
            for _ in range(per):
                await tf.run(three_steps, ITEMS)

        t0, c0 = time.perf_counter(), process_cpu_s()
        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        elapsed, cpu = time.perf_counter() - t0, process_cpu_s() - c0
        await check_completed(tf, "conc8", warmup + CALLERS * per)
    return {
        "conc8_wps": CALLERS * per / elapsed,
        "conc8_cpu_ms": cpu / (CALLERS * per) * 1000,
    }


def _floor_conn(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    return conn


def _floor_commit(conn: sqlite3.Connection) -> float:
    """One fsync'd one-row commit; return its latency in ms."""
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("COMMIT")
    return (time.perf_counter() - t0) * 1000


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def start_latency(data: Path, warmup: int, samples: int, every: float) -> dict[str, float]:
    """``start`` latency while 8 callers run workflows, beside its floor.

    Each timed ``start`` queues the same 3-step workflow the callers run (as
    DBOS's ``start_workflow`` does in peer_dbos.py); they are awaited, untimed,
    at the end. The floor is what any durable ``start`` costs at least: one
    fsync'd one-row SQLite commit, sampled on the same loop right after each
    ``start`` while the same load runs.
    """
    data.mkdir(parents=True, exist_ok=True)
    floor_conn = _floor_conn(data / "floor.sqlite")
    async with Tierflow(data, WORKFLOWS) as tf:
        await warm_up(tf, warmup)
        stop = asyncio.Event()
        done = [0] * CALLERS

        async def caller(k: int) -> None:
            while not stop.is_set():
                await tf.run(three_steps, ITEMS)
                done[k] += 1

        callers = [asyncio.create_task(caller(k)) for k in range(CALLERS)]
        await asyncio.sleep(0.2)  # let the callers reach a steady state
        lat: list[float] = []
        floor: list[float] = []
        handles = []
        for _ in range(samples):
            t0 = time.perf_counter()
            handles.append(await tf.start(three_steps, ITEMS))
            lat.append((time.perf_counter() - t0) * 1000)
            floor.append(_floor_commit(floor_conn))
            await asyncio.sleep(every)
        stop.set()
        await asyncio.gather(*callers)
        for h in handles:
            await h.result(timeout=60)
        await check_completed(tf, "start", warmup + sum(done) + samples)
        await check_steps(tf, handles[-1].workflow_id)
    floor_conn.close()
    return {
        "start_p50_ms": statistics.median(lat),
        "start_p99_ms": _pct(lat, 0.99),
        "start_floor_p50_ms": statistics.median(floor),
        "start_floor_p99_ms": _pct(floor, 0.99),
    }


def _floor_template(engine_data: Path) -> bytes:
    """An empty database with the schema of an instance file the engine made, in WAL mode.

    The schema is read from a file under ``engine_data`` (no private API), so the floor's
    files have the same tables and page count as the engine's.
    """
    made = next((engine_data / "hot" / "instances").rglob("*.sqlite"))
    src = sqlite3.connect(made)
    try:
        ddl = [
            sql
            for (sql,) in src.execute(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
            )
        ]
    finally:
        src.close()
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for sql in ddl:
            conn.execute(sql)
        image = conn.serialize()
    finally:
        conn.close()
    # Bytes 18 and 19 of the header are the file-format read/write versions; 2 means WAL,
    # so the file opens in WAL mode with no header rewrite (as the engine's template).
    return bytes(image[:18] + b"\x02\x02" + image[20:])


def files_floor(work: Path, engine_data: Path, n: int, threads: int) -> dict[str, float]:
    """Instance files alone, no engine: each of ``threads`` threads makes files, commits 3x, closes.

    The files are made the way the engine makes them (an empty image of the
    instance schema, fsync'd commits, checkpoint at close), so this is the
    ceiling of one file per instance on this machine: with 8 threads against
    ``conc8_wps``, with one against ``seq_wps`` (closing a file checkpoints it:
    two more fsyncs, which the issue's sequential floor of 3 commits leaves out).
    """
    root = work / f"floor{threads}"
    root.mkdir(parents=True, exist_ok=True)
    per = n // threads
    template = _floor_template(engine_data)

    def worker(k: int) -> None:
        for i in range(per):
            path = root / f"{k}-{i}.sqlite"
            path.write_bytes(template)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous=FULL")
            for step in range(STEPS):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT INTO events VALUES (?,?,?,?,?,?)",
                    (step + 1, "step.completed", 0, f"step-{step}", 1, '"A"'),
                )
                conn.execute("UPDATE instance SET step_count=? WHERE id=1", (step,))
                conn.execute("COMMIT")
            conn.close()

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    t0, c0 = time.perf_counter(), process_cpu_s()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed, cpu = time.perf_counter() - t0, process_cpu_s() - c0
    name = "conc8" if threads == CALLERS else f"files{threads}"
    return {
        f"{name}_floor_wps": threads * per / elapsed,
        f"{name}_floor_cpu_ms": cpu / (threads * per) * 1000,
    }


def least_python(
    work: Path, engine_data: Path, n: int, callers: int, start_every: float
) -> dict[str, float]:
    """The same durable work in the least Python (python_floor.py), on the engine's schemas.

    The instance image and the index's schema and row are read from ``engine_data``, a
    data directory an engine phase just made, so both sides write the same pages; its
    ``start`` is sampled every ``start_every`` seconds, as :func:`start_latency` samples.
    """
    return python_floor(
        work / f"least-python{callers}",
        _floor_template(engine_data),
        IndexShape.read(engine_data),
        n,
        callers,
        start_every,
    )


async def sleep_latency(data: Path, warmup: int, runs: int) -> dict[str, float]:
    async with Tierflow(data, WORKFLOWS) as tf:
        for _ in range(warmup):
            await (await tf.run(sleep10)).result(timeout=10)
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            h = await tf.run(sleep10)
            await h.result(timeout=10)
            walls.append((time.perf_counter() - t0) * 1000)
        await check_completed(tf, "sleep", warmup + runs)
    return {"sleep10_ms": statistics.median(walls)}


def recovery(work: Path) -> dict[str, float]:
    """SIGKILL a process mid-step, restart it, time restart-to-completion."""
    data, marks = work / "recovery", work / "marks.txt"
    env = {**os.environ, "CRASH_MARKS": str(marks), "CRASH_BLOCK": "1"}
    cmd = [sys.executable, "-m", "tests.hot.crash_app"]
    proc = subprocess.Popen(
        [*cmd, "run", str(data)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready = Path(str(marks) + ".ready")
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("crash_app never reached the blocking step")
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    env.pop("CRASH_BLOCK")
    out = subprocess.run(
        [*cmd, "resume", str(data)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    resumed = json.loads(out.splitlines()[-1])
    # ``resume`` awaited the instance's result: it completed, with the three steps' values.
    ok = resumed["result"] == ["s1", "two", "s3"]
    check("tierflow", "recovery", 1, {"completed" if ok else repr(resumed["result"]): 1})
    return {"recovery_s": float(resumed["seconds"])}


def file_create_us(directory: Path, n: int = 200) -> float:
    """Time (µs) to create one empty file in ``directory`` now, nothing else running.

    Printed beside the CPU figures because it moves them: ext4 without a journal
    (this project's VMs) skips every inode freed in the last ~30 s when it looks
    for a free one, so a file creation costs tens of µs of kernel CPU on a settled
    filesystem and over 500 µs after a burst of deletions (a test run, a tiering
    pass, the previous run's cleanup). Each workflow creates three files (the
    instance, its WAL and its shared memory). Wall time, not the thread's system
    time: the kernel splits a thread's CPU between user and system by sampling
    ticks, too coarsely for this.
    """
    probe = directory / f"create-probe-{time.monotonic_ns()}"
    probe.mkdir(parents=True)
    names = [probe / str(i) for i in range(n)]
    t0 = time.perf_counter()
    for name in names:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    elapsed = time.perf_counter() - t0
    shutil.rmtree(probe)
    return elapsed / n * 1e6


def commit_latency_ms(work: Path, n: int = 500) -> float:
    """One-row fsync'd commit on a WAL SQLite file, the unit of the floor."""
    conn = sqlite3.connect(work / "floor.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (x INTEGER)")
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        conn.execute("COMMIT")
    conn.close()
    return (time.perf_counter() - t0) / n * 1000


def measure(quick: bool) -> dict[str, dict[str, float]]:
    """Run every phase; return ``{metric: {"value": v, "rss_mb": peak}}``."""
    z = sizes(quick)
    work = Path(tempfile.mkdtemp(prefix="tierflow-bench-"))
    out: dict[str, dict[str, float]] = {}
    try:
        phases: list[tuple[str, Any]] = [
            ("seq", lambda: asyncio.run(seq(work / "seq", z.warmup, z.seq))),
            (
                "conc8",
                lambda: {
                    "conc8_create_us": file_create_us(work),
                    **asyncio.run(conc8(work / "conc8", z.warmup, z.conc8)),
                },
            ),
            (
                "conc8_floor",
                lambda: {
                    "conc8_floor_create_us": file_create_us(work),
                    **files_floor(work, work / "conc8", z.conc8, CALLERS),
                },
            ),
            ("seq_floor", lambda: files_floor(work, work / "seq", z.seq, 1)),
            (
                "py_floor",
                lambda: {
                    "py_floor_create_us": file_create_us(work),
                    **least_python(work, work / "conc8", z.conc8, CALLERS, z.start_pacing_s),
                    **least_python(work, work / "seq", z.seq, 1, z.start_pacing_s),
                },
            ),
            (
                "start",
                lambda: asyncio.run(
                    start_latency(work / "start", z.warmup, z.start_samples, z.start_pacing_s)
                ),
            ),
            (
                "sleep",
                lambda: asyncio.run(sleep_latency(work / "sleep", z.sleep_warmup, z.sleep_runs)),
            ),
            ("recovery", lambda: recovery(work)),
            ("paused", lambda: asyncio.run(paused_memory(work / "paused", z.paused))),
        ]
        for _, run in phases:
            figures = run()
            for k, v in figures.items():
                out[k] = {"value": v, "rss_mb": peak_rss_mb()}
        out["commit_ms"] = {
            "value": commit_latency_ms(work, 50 if quick else 500),
            "rss_mb": peak_rss_mb(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
