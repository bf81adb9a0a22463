"""Figures for the warm tier (issue 4): hot -> warm throughput, PUTs, bytes per event.

Runs on file:// and on a moto S3 server over HTTP (in this process, 127.0.0.1).
Every workflow of the backlog must complete, and every one must be moved, or the run fails.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tierflow import EngineOptions, Tierflow, WorkflowContext, workflow
from tierflow.hot.store import read_for_archive
from tierflow.warm import schema, writer
from tierflow.warm.storage import ObjectStore

from tests.bench.hot_engine import check_completed, peak_rss_mb
from tests.bench.workload import check, sizes


def upper(x: str) -> str:
    return x.upper()


@workflow
async def twenty_events(ctx: WorkflowContext, n: int) -> str:
    """queued, started, 8 steps x 2, one recorded value, completed: 20 events."""
    token = ctx.uuid()
    for i in range(8):
        await ctx.step(f"step-{i}", upper, f"{n}-{i}")
    return token


async def populate(data: Path, n: int) -> None:
    # Population is not what is measured: relax fsync to build the backlog faster.
    async with Tierflow(data, [twenty_events], options=EngineOptions(durability="normal")) as tf:

        async def caller(k: int) -> None:
            for i in range(k, n, 8):
                await tf.run(twenty_events, i, workflow_id=f"wf-{i:07d}")

        await asyncio.gather(*(caller(k) for k in range(8)))
        await check_completed(tf, "tier backlog", n)


def moto_store() -> tuple[ObjectStore, Any]:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    store = ObjectStore.from_url(
        f"s3://{bucket}/lake",
        endpoint=endpoint,
        region="us-east-1",
        access_key="testing",
        secret_key="testing",
    )
    return store, server


def columns(
    items: list[tuple[dict[str, Any], list[tuple[Any, ...]]]],
) -> tuple[dict[str, list[Any]], dict[str, list[Any]], dict[str, int]]:
    """The warm tables' columns from ``read_for_archive`` results (what the job writes)."""
    wf_cols = [c for c in schema.WORKFLOW_COLUMNS if c not in ("duration_ms", "tier")]
    wf: dict[str, list[Any]] = {c: [] for c in wf_cols}
    ev: dict[str, list[Any]] = {c: [] for c in schema.HISTORY_COLUMNS}
    finished: dict[str, int] = {}
    per_event = ("event_id", "event_type", "event_time", "step_name", "attempt", "payload")
    for row, events in items:
        for c in wf_cols:
            wf[c].append(row[c])
        finished[row["workflow_id"]] = row["finished_at"]
        for c in ("workflow_id", "run_id", "workflow_type"):
            ev[c].extend([row[c]] * len(events))
        for e in events:
            for c, v in zip(per_event, e, strict=True):
                ev[c].append(v)
    return wf, ev, finished


def floor(data: Path, store: ObjectStore) -> float:
    """Read the same SQLite files and write the same Parquet, with no protocol at all."""
    files = sorted((data / "hot" / "instances").rglob("*.sqlite"))
    t0 = time.perf_counter()
    items = []
    for f in files:
        try:
            items.append(read_for_archive(f))
        except Exception:
            continue  # unused spare files
    wf, ev, finished = columns(items)
    w = writer.BatchWriter(store, f"floor{uuid.uuid4().hex[:8]}")
    w.write(schema.workflows_table(wf), schema.history_table(ev, finished))
    return len(items) / (time.perf_counter() - t0)


async def tier_once(name: str, data: Path, store: ObjectStore, expected: int) -> dict[str, float]:
    hot_bytes = sum(p.stat().st_size for p in (data / "hot" / "instances").rglob("*.sqlite*"))
    async with Tierflow(data, [twenty_events], warm_store=store) as tf:
        t0 = time.perf_counter()
        report = await tf.tier(now=time.time() + 7200)
        elapsed = time.perf_counter() - t0
    n, events = report.workflows_moved, report.events_moved
    moved = {"moved": n, "not moved": expected - n}
    check("tierflow", f"tier to {name}", expected, moved, want="moved")
    return {
        "workflows": n,
        "wps": n / elapsed,
        "puts_per_10k": report.objects_put / n * 10_000,
        "hot_bytes_per_event": hot_bytes / events,
        "warm_bytes_per_event": report.bytes_written / events,
    }


def measure(quick: bool) -> dict[str, dict[str, float]]:
    """Populate once, then tier copies of the same backlog to file:// and to moto S3."""
    n = sizes(quick).tier
    work = Path(tempfile.mkdtemp(prefix="tierflow-bench4-"))
    out: dict[str, dict[str, float]] = {}
    server = None
    try:
        asyncio.run(populate(work / "seed", n))
        s3, server = moto_store()
        local = ObjectStore.from_url((work / "lake").as_uri())
        for name, store in (("file", local), ("s3", s3)):
            data = work / f"data-{name}"
            shutil.copytree(work / "seed", data)
            fl_data = work / f"floor-{name}"
            shutil.copytree(work / "seed", fl_data)
            figures = asyncio.run(tier_once(name, data, store, n))
            figures["floor_wps"] = floor(fl_data, store)
            for k, v in figures.items():
                out[f"{name}:{k}"] = {"value": v, "rss_mb": peak_rss_mb()}
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out
