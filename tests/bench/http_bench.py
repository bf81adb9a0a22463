"""The HTTP API under load: ``tierflow serve`` processes driven by httpx clients.

python -m tests.bench --only http [--quick]

* ``POST /v1/workflows`` (``mode: "start"``: queued and durable when it answers) from 16
  concurrent clients, beside the floor: the same clients against a FastAPI route that
  answers a constant (tests/bench/http_floor.py) under the same uvicorn configuration,
  measured in the same run. Twice: against ``tierflow serve --no-worker`` (the API alone,
  as in a deployment where ``tierflow worker`` processes run the workflows: the start
  path, judged against the floor) and against ``tierflow serve`` (the default: the same
  process also runs every workflow it was asked to start, on the same two cores as the
  clients).
* ``GET /v1/workflows/{id}`` of a cold workflow on file://: p50.
* A signal through the API until the worker acts on it (``serve --no-worker`` and one
  ``tierflow worker`` on the same data directory): the time from just before the POST
  to the worker's step after the wait, p50/p99.
* The server's RSS while idle, after start-up and a first request.

The clients run in this process (asyncio + httpx); the servers are separate processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 16
FULL = {"requests": 6000, "warmup": 300, "cold_reads": 200, "signals": 60}
QUICK = {"requests": 200, "warmup": 20, "cold_reads": 10, "signals": 4}
TARGETS = {"rps": 1000.0, "p99_ms": 20.0, "floor_ratio": 0.5, "cold_p50_ms": 20.0, "rss_mb": 200.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _process(args: list[str], env: dict[str, str], url: str | None) -> Iterator[int]:
    """Run a server or worker process; wait for ``url``/healthz (if given); yield its pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while url is not None:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[:3]} exited: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code in (200, 404):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[:3]} did not answer")
            time.sleep(0.05)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(url: str, total: int, warmup: int, body: Any) -> dict[str, float]:
    """``total`` POSTs from CLIENTS concurrent clients; requests/s and latency percentiles."""
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        latencies: list[float] = []
        counter = iter(range(total + warmup))

        async def one_client() -> None:
            for n in counter:
                began = time.perf_counter()
                resp = await client.post("/v1/workflows", json=body(n))
                if resp.status_code != 201:
                    raise RuntimeError(f"POST answered {resp.status_code}: {resp.text[:300]}")
                if n >= warmup:
                    latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
        seconds = time.perf_counter() - began
    return {
        "rps": (total + warmup) / seconds,
        "p50_ms": _pct(latencies, 0.5) * 1000,
        "p99_ms": _pct(latencies, 0.99) * 1000,
    }


async def _archive_cold(data: Path, n: int) -> list[str]:
    """Run ``n`` orders and tier them to cold; return their ids."""
    from tierflow import Tierflow
    from tierflow.tiering.policy import TieringPolicy

    from tests.http.http_app import WORKFLOWS, order

    ids = [f"cold-{i}" for i in range(n)]
    policy = TieringPolicy(min_age=0, cold_after=0)
    async with Tierflow(data, WORKFLOWS, tiering=policy) as tf:
        for i, wid in enumerate(ids):
            await tf.run(order, {"customer": f"c-{i}", "n": i}, workflow_id=wid)
        await tf.tier(now=time.time() + 3600)
        row = tf.index.get(ids[0])
        assert row is not None and row.tier == "cold", row
    return ids


def _cold_reads(url: str, ids: list[str], reads: int) -> float:
    with httpx.Client(base_url=url, timeout=30) as client:
        times = []
        for i in range(reads):
            began = time.perf_counter()
            resp = client.get(f"/v1/workflows/{ids[i % len(ids)]}")
            times.append(time.perf_counter() - began)
            if resp.status_code != 200 or resp.json()["tier"] != "cold":
                raise RuntimeError(f"cold read answered {resp.status_code}: {resp.text[:300]}")
    return statistics.median(times) * 1000


def _signals(url: str, samples: int) -> list[float]:
    """Signal paused instances through the API; ms until the worker's next step ran."""
    out = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(samples):
            wid = f"signalled-{i}"
            body = {"workflow_type": "first_then_signal", "workflow_id": wid}
            if client.post("/v1/workflows", json=body).status_code != 201:
                raise RuntimeError("start failed")
            _poll(client, wid, "paused")
            sent = time.time()
            if client.post(f"/v1/workflows/{wid}/signals/go", json=i).status_code != 202:
                raise RuntimeError("signal failed")
            info = _poll(client, wid, "completed")
            out.append((info["result"]["resumed"] - sent) * 1000)
    return out


def _poll(client: httpx.Client, wid: str, status: str) -> Any:
    deadline = time.monotonic() + 30
    while True:
        info = client.get(f"/v1/workflows/{wid}").json()
        if info["status"] == status:
            return info
        if time.monotonic() > deadline:
            raise RuntimeError(f"{wid} never reached {status}: {info}")
        time.sleep(0.005)


def measure(quick: bool, console: Any = None) -> dict[str, Any]:
    """Run every phase; return the figures."""
    sizes = QUICK if quick else FULL
    figures: dict[str, Any] = {"sizes": sizes, "clients": CLIENTS, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="http-bench-") as work:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TIERFLOW_TEST_LOG": str(Path(work, "steps.log")),
        }
        env.pop("TIERFLOW_API_KEYS", None)
        env.pop("TIERFLOW_API_KEYS_FILE", None)
        data = Path(work, "served")
        cold_ids = asyncio.run(_archive_cold(data, 20))

        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        floor = ["uvicorn", "tests.bench.http_floor:app", "--port", str(port), "--no-access-log"]
        with _process([*floor, "--log-level", "warning"], env, url):
            figures["floor"] = asyncio.run(
                _load(url, sizes["requests"], sizes["warmup"], lambda n: {})
            )

        serve = ["tierflow.cli", "serve", "--app", "tests.http.http_app", "--port", str(port)]
        with _process([*serve, "--data-dir", str(data)], env, url) as pid:
            httpx.get(f"{url}/v1/workflows?limit=1", timeout=10)
            time.sleep(1.0)  # idle: start-up work (recovery, the stream's backlog) is done
            figures["idle_rss_mb"] = _rss_mb(pid)
            figures["cold_get_p50_ms"] = _cold_reads(url, cold_ids, sizes["cold_reads"])

            def start(n: int) -> dict[str, Any]:
                return {
                    "workflow_type": "order",
                    "input": {"customer": f"c-{n % 100}", "n": n},
                    "workflow_id": f"bench-{n}",
                }

            figures["start_and_run"] = asyncio.run(
                _load(url, sizes["requests"], sizes["warmup"], start)
            )
            figures["loaded_rss_mb"] = _rss_mb(pid)

        api_only = ["tierflow.cli", "serve", "--app", "tests.http.http_app", "--no-worker"]
        with _process(
            [*api_only, "--port", str(port), "--data-dir", str(Path(work, "api"))], env, url
        ):
            figures["start"] = asyncio.run(_load(url, sizes["requests"], sizes["warmup"], start))

        split = Path(work, "split")
        worker = ["tierflow.cli", "worker", "--app", "tests.hot.proc_app"]
        api = ["tierflow.cli", "serve", "--app", "tests.hot.proc_app", "--no-worker"]
        with (
            _process([*api, "--port", str(port), "--data-dir", str(split)], env, url),
            _process([*worker, "--data-dir", str(split)], env, None),
        ):
            time.sleep(1.0)  # the worker's scheduler is up
            sig = _signals(url, sizes["signals"])
        figures["signal_p50_ms"] = _pct(sig, 0.5)
        figures["signal_p99_ms"] = _pct(sig, 0.99)
    figures["floor_ratio"] = figures["start"]["rps"] / figures["floor"]["rps"]
    figures["start_and_run_ratio"] = figures["start_and_run"]["rps"] / figures["floor"]["rps"]
    return figures


def report(console: Any, figures: dict[str, Any], judged: bool) -> None:
    """Print each figure beside its floor and target."""
    from rich.table import Table

    def ok(met: bool) -> str:
        return "" if not judged else (" ✓" if met else " [red]NOT MET[/red]")

    s, f = figures["start"], figures["floor"]
    t = Table(
        "figure",
        "tierflow serve",
        "floor: FastAPI constant route",
        "target",
        title=f"issue 20: the HTTP API, {figures['clients']} concurrent clients, "
        f"{figures['cores']} cores shared with the clients"
        + ("" if judged else "; QUICK: smoke sizes, figures mean nothing"),
    )
    t.add_row(
        "POST /v1/workflows (start), serve --no-worker, requests/s",
        f"{s['rps']:,.0f}{ok(s['rps'] >= TARGETS['rps'])}",
        f"{f['rps']:,.0f}",
        f">= {TARGETS['rps']:,.0f}",
    )
    t.add_row(
        "  ratio to the floor",
        f"{figures['floor_ratio']:.0%}{ok(figures['floor_ratio'] >= TARGETS['floor_ratio'])}",
        "100%",
        f">= {TARGETS['floor_ratio']:.0%}",
    )
    t.add_row("  p50", f"{s['p50_ms']:.1f} ms", f"{f['p50_ms']:.1f} ms", "")
    t.add_row(
        "  p99",
        f"{s['p99_ms']:.1f} ms{ok(s['p99_ms'] <= TARGETS['p99_ms'])}",
        f"{f['p99_ms']:.1f} ms",
        f"<= {TARGETS['p99_ms']:g} ms",
    )
    r = figures["start_and_run"]
    t.add_row(
        "the same, serve also running the workflows, requests/s",
        f"{r['rps']:,.0f} ({figures['start_and_run_ratio']:.0%} of the floor)",
        "",
        "",
    )
    t.add_row("  p50 / p99", f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms", "", "")
    cold = figures["cold_get_p50_ms"]
    t.add_row(
        "GET /v1/workflows/{id}, cold, file://, p50",
        f"{cold:.1f} ms{ok(cold <= TARGETS['cold_p50_ms'])}",
        "",
        f"<= {TARGETS['cold_p50_ms']:g} ms",
    )
    t.add_row(
        "signal via the API -> the worker acts, p50 / p99",
        f"{figures['signal_p50_ms']:.1f} / {figures['signal_p99_ms']:.1f} ms",
        "",
        "",
    )
    rss = figures["idle_rss_mb"]
    t.add_row(
        "server RSS, idle after start-up (after the load)",
        f"{rss:.0f} MB{ok(rss <= TARGETS['rss_mb'])} ({figures['loaded_rss_mb']:.0f} MB)",
        "",
        f"<= {TARGETS['rss_mb']:g} MB",
    )
    console.print(t)
