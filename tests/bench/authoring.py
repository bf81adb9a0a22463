"""Figures for signals, queries and the event stream (issue 3).

Sizes come from workload.py; every phase ends by checking, through ``Tierflow.list``,
that each instance it started completed.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tierflow import HttpSink, Tierflow, WorkflowContext, workflow

from tests.bench.hot_engine import check_completed, peak_rss_mb, three_steps
from tests.bench.workload import ITEMS, sizes


@workflow
async def waits_for_go(ctx: WorkflowContext) -> Any:
    return await ctx.wait_for_signal("go")


def add(a: int, b: int) -> int:
    return a + b


@workflow
async def hundred_steps(ctx: WorkflowContext) -> int:
    total = 0
    ctx.set_query_handler("total", lambda: total)
    for i in range(100):
        total = await ctx.step(f"add-{i}", add, total, i)
    await ctx.wait_for_signal("finish")
    return total


WORKFLOWS = [waits_for_go, hundred_steps, three_steps]


async def signal_to_resume(data: Path, n: int) -> dict[str, float]:
    async with Tierflow(data, WORKFLOWS) as tf:
        handles = [await tf.run(waits_for_go) for _ in range(n)]
        lat = []
        for h in handles:
            t0 = time.perf_counter()
            await h.signal("go", 1)
            await h.result(timeout=10)
            lat.append((time.perf_counter() - t0) * 1000)
        await check_completed(tf, "signal", n)
    return {"signal_resume_p50_ms": statistics.median(lat)}


async def query_latency(data: Path, n: int) -> dict[str, float]:
    async with Tierflow(data, WORKFLOWS) as tf:
        h = await tf.run(hundred_steps)
        assert await h.status() == "paused"
        await h.query("total")
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            await h.query("total")
            lat.append((time.perf_counter() - t0) * 1000)
        await h.signal("finish")
        total = await h.result(timeout=10)
        assert total == sum(range(100)), total
        await check_completed(tf, "query", 1)
    return {"query_100_steps_ms": statistics.median(lat)}


_SINK_SERVER = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as any real collector

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


async def _seq_rate(data: Path, warmup: int, n: int, sinks: list[Any], phase: str) -> float:
    async with Tierflow(data, WORKFLOWS, event_sinks=sinks) as tf:
        for _ in range(warmup):
            await tf.run(three_steps, ITEMS)
        t0 = time.perf_counter()
        for _ in range(n):
            await tf.run(three_steps, ITEMS)
        rate = n / (time.perf_counter() - t0)
        await check_completed(tf, phase, warmup + n)
        return rate


async def publish_overhead(work: Path, warmup: int, n: int, rounds: int) -> dict[str, float]:
    # The sink runs in its own process, as a real one would: sharing this
    # process's GIL would charge its work to tierflow.
    server = subprocess.Popen(
        [sys.executable, "-c", _SINK_SERVER], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    port = int(server.stdout.readline())
    try:
        rates_plain, rates_sink = [], []
        for r in range(rounds):  # interleave to share the machine's noise
            rates_plain.append(await _seq_rate(work / f"plain{r}", warmup, n, [], "no-sink"))
            sink = HttpSink(f"http://127.0.0.1:{port}/e")  # default batching
            rates_sink.append(await _seq_rate(work / f"sink{r}", warmup, n, [sink], "http-sink"))
    finally:
        server.kill()
        server.wait()
    plain, with_sink = statistics.median(rates_plain), statistics.median(rates_sink)
    return {
        "seq_wps_no_sink": plain,
        "seq_wps_http_sink": with_sink,
        "publish_overhead_pct": (plain / with_sink - 1) * 100,
    }


def measure(quick: bool) -> dict[str, dict[str, float]]:
    """Run every phase; return ``{metric: {"value": v, "rss_mb": peak}}``."""
    z = sizes(quick)
    work = Path(tempfile.mkdtemp(prefix="tierflow-bench3-"))
    out: dict[str, dict[str, float]] = {}
    try:
        for run in (
            lambda: asyncio.run(signal_to_resume(work / "sig", z.signals)),
            lambda: asyncio.run(query_latency(work / "query", z.queries)),
            lambda: asyncio.run(publish_overhead(work, z.warmup, z.publish, z.publish_rounds)),
        ):
            for k, v in run().items():
                out[k] = {"value": v, "rss_mb": peak_rss_mb()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
