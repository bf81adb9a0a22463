"""Where a workflow's CPU goes in the hot engine: ``python -m tests.bench.hot_profile``.

Runs the benchmark's 3-step workflow sequentially and with 8 concurrent callers
and prints, per workflow: wall time, CPU of the event-loop thread and of every
other thread (user / system, from ``/proc/self/task``), voluntary context
switches, and the CPU the loop spent in each kind of SQLite statement (through
a ``sqlite3.Connection`` subclass that times ``execute`` on the loop thread).
The profiles in ``tests/bench/profiles/hot-engine-cpu.txt`` were taken with it.
Nothing here is judged; ``make bench`` prints the figures against their floors.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import resource
import sqlite3
import tempfile
import threading
import time
from typing import Any

_sql_cpu: collections.Counter[str] = collections.Counter()
_sql_calls: collections.Counter[str] = collections.Counter()


class _TimedConnection(sqlite3.Connection):
    """Counts the loop thread's CPU in each statement kind (first words of the SQL)."""

    tag = "?"

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        if threading.current_thread() is not threading.main_thread():
            return super().execute(sql, *args)
        t = time.thread_time()
        try:
            return super().execute(sql, *args)
        finally:
            key = f"{self.tag} {' '.join(sql.split()[:3])[:40]}"
            _sql_cpu[key] += time.thread_time() - t
            _sql_calls[key] += 1


def _install_timed_connections() -> None:
    connect = sqlite3.connect

    def timed(path: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs["factory"] = _TimedConnection
        conn = connect(path, *args, **kwargs)
        conn.tag = "index" if str(path).endswith("index.sqlite") else "instance"  # type: ignore[attr-defined]
        return conn

    sqlite3.connect = timed  # type: ignore[assignment]


def _threads_cpu() -> dict[int, tuple[int, int]]:
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]), int(fields[12]))
    return out


async def _phase(mode: str, n: int, warmup: int) -> None:
    from tierflow import Tierflow

    from tests.bench.hot_engine import ITEMS, WORKFLOWS, three_steps

    data = tempfile.mkdtemp(prefix="tierflow-profile-")
    async with Tierflow(data, WORKFLOWS) as tf:
        for _ in range(warmup):
            await tf.run(three_steps, ITEMS)
        _sql_cpu.clear()
        _sql_calls.clear()
        loop_tid = threading.get_native_id()
        c0, r0, t0 = _threads_cpu(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        if mode == "sequential":
            for _ in range(n):
                await tf.run(three_steps, ITEMS)
        else:

            async def caller() -> None:
                for _ in range(n // 8):
                    await tf.run(three_steps, ITEMS)

            await asyncio.gather(*(caller() for _ in range(8)))
        wall, c1 = time.perf_counter() - t0, _threads_cpu()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    ms = 1000 / os.sysconf("SC_CLK_TCK") / n

    def spent(tids: list[int], i: int) -> float:
        return sum(c1[t][i] - c0.get(t, (0, 0))[i] for t in tids) * ms

    others = [t for t in c1 if t != loop_tid]
    lu, ls = spent([loop_tid], 0), spent([loop_tid], 1)
    ou, os_ = spent(others, 0), spent(others, 1)
    print(
        f"{mode}: {n / wall:.0f} wf/s, {wall / n * 1000:.2f} ms/wf; CPU ms/wf: loop "
        f"{lu:.2f} user {ls:.2f} sys, other threads {ou:.2f} user {os_:.2f} sys, total "
        f"{lu + ls + ou + os_:.2f}; voluntary switches/wf {(r1.ru_nvcsw - r0.ru_nvcsw) / n:.1f}"
    )
    total = sum(_sql_cpu.values())
    print(f"  SQLite on the loop: {total / n * 1000:.3f} ms/wf")
    for key, cpu in _sql_cpu.most_common(12):
        print(
            f"    {cpu / n * 1e6:7.1f} us/wf  {_sql_calls[key] / n:4.1f}/wf  "
            f"{cpu / _sql_calls[key] * 1e6:6.1f} us each  {key}"
        )


def main() -> None:
    """Parse arguments and run the phases."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--phase", choices=["sequential", "8-callers", "both"], default="both")
    args = parser.parse_args()
    _install_timed_connections()
    for mode in ["sequential", "8-callers"]:
        if args.phase in (mode, "both"):
            asyncio.run(_phase(mode, args.workflows, args.warmup))


if __name__ == "__main__":
    main()
