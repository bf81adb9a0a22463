"""Issue 10: from a commit in one process to the runner acting in another.

A ``tierflow worker`` subprocess runs ``tests.bench.xproc_app``; this process
(another owner on the same data directory, no scheduler, like a CLI command
or an HTTP server) queues, signals, cancels and terminates, one at a time.
Each workflow stamps ``time.time()`` where the runner acts (a step's first
line, or the ``CancelledError`` of a terminated step), so the latency is
that stamp minus the moment the commit returned here: same machine, same
clock. Also: the idle worker's CPU (what the change-feed poll costs).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tierflow import Tierflow

from tests.bench import xproc_app
from tests.bench.workload import IncompleteRun

ROOT = Path(__file__).resolve().parents[2]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


async def _wait(tf: Tierflow, wid: str, statuses: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = await tf.status(wid)
        if status in statuses:
            return status
        if time.monotonic() > deadline:
            info = await tf.describe(wid)
            raise IncompleteRun(f"cross-process: {wid} stuck in {status}: {info.error}")
        await asyncio.sleep(0.001)


async def _stamp(stamps: Path, wid: str, timeout: float = 30) -> float:
    """Wait for the line ``<wid> <time>`` the worker appends; return the time."""
    deadline = time.monotonic() + timeout
    while True:
        for line in stamps.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == wid:
                return float(value)
        if time.monotonic() > deadline:
            raise IncompleteRun(f"cross-process: the worker never acted on {wid}")
        await asyncio.sleep(0.001)


async def _measure(data: Path, stamps: Path, n: int, worker_pid: int) -> dict[str, Any]:
    tf = Tierflow(
        data_dir=data,
        workflows=[xproc_app.stamp_first, xproc_app.stamp_signal, xproc_app.stamp_terminated],
    )
    tf.open()
    # Signals, cancels and terminates come from a process that does not know the
    # types (as ``tierflow cancel ID`` without ``--app``): it cannot act itself.
    bare = Tierflow(data_dir=data)
    bare.open()
    lat: dict[str, list[float]] = {"queued": [], "signal": [], "cancel": [], "terminate": []}
    try:
        for i in range(n):
            wid = f"q-{i}"
            await tf.start("stamp_first", workflow_id=wid)
            t = time.time()
            lat["queued"].append(await _stamp(stamps, wid) - t)
            await _wait(tf, wid, {"completed"})
        for i in range(n):
            wid = f"s-{i}"
            await tf.start("stamp_signal", workflow_id=wid)
            await _wait(tf, wid, {"paused"})
            await bare.signal(wid, "go", None)
            t = time.time()
            lat["signal"].append(await _stamp(stamps, wid) - t)
            await _wait(tf, wid, {"completed"})
        for i in range(n):
            wid = f"c-{i}"
            await tf.start("stamp_signal", workflow_id=wid)
            await _wait(tf, wid, {"paused"})
            await bare.cancel(wid)
            t = time.time()
            lat["cancel"].append(await _stamp(stamps, wid) - t)
            await _wait(tf, wid, {"cancelled"})
        for i in range(n):
            wid = f"t-{i}"
            await tf.start("stamp_terminated", workflow_id=wid)
            await _stamp(stamps, f"{wid}-in")  # inside its step, in the worker
            await bare.terminate(wid)
            t = time.time()
            lat["terminate"].append(await _stamp(stamps, wid) - t)
        idle0, wall0 = _cpu_seconds(worker_pid), time.monotonic()
        await asyncio.sleep(3.0)
        idle_cpu = (_cpu_seconds(worker_pid) - idle0) / (time.monotonic() - wall0)
    finally:
        await bare.aclose()
        await tf.aclose()
    out: dict[str, Any] = {}
    for kind, values in lat.items():
        ms = [v * 1000 for v in values]
        out[f"{kind}_p50_ms"] = statistics.median(ms)
        out[f"{kind}_p99_ms"] = _pct(ms, 0.99)
    out["idle_cpu_pct"] = idle_cpu * 100
    out["samples"] = n
    return out


def measure(quick: bool) -> dict[str, Any]:
    """Start a worker subprocess, measure, stop it; return the figures."""
    n = 10 if quick else 200
    with tempfile.TemporaryDirectory(prefix="tierflow-xproc-") as work:
        data, stamps = Path(work) / "data", Path(work) / "stamps"
        stamps.touch()
        log = Path(work) / "worker.out"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TIERFLOW_BENCH_STAMPS": str(stamps),
            "TIERFLOW_DATA_DIR": str(data),
        }
        with log.open("wb") as sink:
            worker = subprocess.Popen(
                [sys.executable, "-m", "tierflow.cli", "worker", "--app", "tests.bench.xproc_app"],
                env=env,
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while b"worker running" not in log.read_bytes():
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start: {log.read_text()}")
                time.sleep(0.01)
            return asyncio.run(_measure(data, stamps, n, worker.pid))
        finally:
            worker.kill()
            worker.wait(timeout=30)
