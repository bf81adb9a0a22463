"""Figures for the hot engine (issue 2), measured the way peer_dbos.py measures DBOS.

Every phase uses a fresh data directory and the default durability (``full``:
fsync on every instance commit).
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
from pathlib import Path
from typing import Any

from tierflow import Tierflow, WorkflowContext, workflow
from tierflow.hot import store

ROOT = Path(__file__).resolve().parents[2]


def process_cpu_s() -> float:
    """User + system CPU seconds of this process so far, all threads.

    Kernel threads working for us (the ext4 journal, block I/O) are not
    counted, so a ceiling computed from this is optimistic.
    """
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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
async def noop(ctx: WorkflowContext) -> int:
    return 1


@workflow
async def sleeps_an_hour(ctx: WorkflowContext) -> None:
    await ctx.sleep("1h")


WORKFLOWS = [three_steps, sleep10, noop, sleeps_an_hour]


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
        paused = len((await tf.list(status="paused", limit=n)).items)
        assert paused == n, paused
        return {
            "paused_instances": float(n),
            "paused_rss_mb": current_rss_mb(),
            "paused_rss_delta_mb": current_rss_mb() - before,
        }


ITEMS = ["a", "b", "c"]


class _CommitCounter:
    """Counts instance-file commits (each is one fsync at durability=full)."""

    def __init__(self) -> None:
        self.count = 0
        self._orig = store.InstanceFile.commit

    def __enter__(self) -> _CommitCounter:
        orig = self._orig

        def counted(inst: store.InstanceFile, **kw: Any) -> int:
            self.count += 1
            return orig(inst, **kw)

        store.InstanceFile.commit = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        store.InstanceFile.commit = self._orig  # type: ignore[method-assign]


async def seq(data: Path, n: int) -> dict[str, float]:
    async with Tierflow(data, WORKFLOWS) as tf:
        for _ in range(20):
            await tf.run(three_steps, ITEMS)
        with _CommitCounter() as cc:
            t0 = time.perf_counter()
            for _ in range(n):
                await tf.run(three_steps, ITEMS)
            elapsed = time.perf_counter() - t0
    return {"seq_wps": n / elapsed, "commits_per_wf": cc.count / n}


async def conc8(data: Path, n: int) -> dict[str, float]:
    async with Tierflow(data, WORKFLOWS) as tf:
        for _ in range(20):
            await tf.run(three_steps, ITEMS)
        per = max(1, n // 8)

        async def caller() -> None:
            for _ in range(per):
                await tf.run(three_steps, ITEMS)

        t0, c0 = time.perf_counter(), process_cpu_s()
        await asyncio.gather(*(caller() for _ in range(8)))
        elapsed, cpu = time.perf_counter() - t0, process_cpu_s() - c0
        return {"conc8_wps": 8 * per / elapsed, "conc8_cpu_ms": cpu / (8 * per) * 1000}


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


async def start_latency(data: Path, samples: int, every: float = 0.02) -> dict[str, float]:
    """``start`` latency while 8 callers run workflows, beside its floor.

    The floor is what any durable ``start`` costs at least: one fsync'd
    one-row SQLite commit, sampled on the same loop right after each ``start``
    while the same load runs.
    """
    data.mkdir(parents=True, exist_ok=True)
    floor_conn = _floor_conn(data / "floor.sqlite")
    async with Tierflow(data, WORKFLOWS) as tf:
        stop = asyncio.Event()

        async def caller() -> None:
            while not stop.is_set():
                await tf.run(three_steps, ITEMS)

        callers = [asyncio.create_task(caller()) for _ in range(8)]
        await asyncio.sleep(0.2)
        lat: list[float] = []
        floor: list[float] = []
        handles = []
        for _ in range(samples):
            t0 = time.perf_counter()
            handles.append(await tf.start(noop))
            lat.append((time.perf_counter() - t0) * 1000)
            floor.append(_floor_commit(floor_conn))
            await asyncio.sleep(every)
        stop.set()
        await asyncio.gather(*callers)
        for h in handles:
            await h.result(timeout=60)
    floor_conn.close()
    return {
        "start_p50_ms": statistics.median(lat),
        "start_p99_ms": _pct(lat, 0.99),
        "start_floor_p50_ms": statistics.median(floor),
        "start_floor_p99_ms": _pct(floor, 0.99),
    }


def conc8_floor(work: Path, n: int) -> dict[str, float]:
    """Instance files alone, no engine: 8 threads each create a file, commit 3 times, close.

    The files are made the way the engine makes them (template image,
    fsync'd commits, checkpoint at close), so this is the ceiling of one file
    per instance on this machine, against which ``conc8_wps`` can be read.
    """
    root = work / "floor8"
    root.mkdir(parents=True, exist_ok=True)
    per = max(1, n // 8)

    def worker(k: int) -> None:
        for i in range(per):
            path = root / f"{k}-{i}.sqlite"
            path.write_bytes(store._template_image())
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous=FULL")
            for step in range(3):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT INTO events VALUES (?,?,?,?,?,?)",
                    (step + 1, "step.completed", 0, f"step-{step}", 1, '"A"'),
                )
                conn.execute("UPDATE instance SET step_count=? WHERE id=1", (step,))
                conn.execute("COMMIT")
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    t0, c0 = time.perf_counter(), process_cpu_s()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - t0, process_cpu_s() - c0
    return {
        "conc8_floor_wps": 8 * per / elapsed,
        "conc8_floor_cpu_ms": cpu / (8 * per) * 1000,
    }


async def sleep_latency(data: Path, runs: int = 20) -> dict[str, float]:
    async with Tierflow(data, WORKFLOWS) as tf:
        await tf.run(sleep10)
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            h = await tf.run(sleep10)
            await h.result(timeout=10)
            walls.append((time.perf_counter() - t0) * 1000)
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
    return {"recovery_s": float(json.loads(out.splitlines()[-1])["seconds"])}


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
    n = 100 if quick else 600
    samples = 50 if quick else 200
    work = Path(tempfile.mkdtemp(prefix="tierflow-bench-"))
    out: dict[str, dict[str, float]] = {}
    try:
        phases: list[tuple[str, Any]] = [
            ("seq", lambda: asyncio.run(seq(work / "seq", n))),
            ("conc8", lambda: asyncio.run(conc8(work / "conc8", 2 * n))),
            ("conc8_floor", lambda: conc8_floor(work, 2 * n)),
            ("start", lambda: asyncio.run(start_latency(work / "start", samples))),
            ("sleep", lambda: asyncio.run(sleep_latency(work / "sleep"))),
            ("recovery", lambda: recovery(work)),
            (
                "paused",
                lambda: asyncio.run(paused_memory(work / "paused", 2_000 if quick else 10_000)),
            ),
        ]
        for _, run in phases:
            figures = run()
            for k, v in figures.items():
                out[k] = {"value": v, "rss_mb": peak_rss_mb()}
        out["commit_ms"] = {"value": commit_latency_ms(work), "rss_mb": peak_rss_mb()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
