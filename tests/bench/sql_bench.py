"""SQL across tiers: GROUP BY event_type over many history events, ours vs read_parquet.

Setup (synthetic, vectorised, so it fits in a few minutes on 2 cores): ``events``
history rows written as warm batches with the product's ``BatchWriter`` (so the files
are the archive's own format, with manifests) and recorded in the tiering ledger, as a
tiering pass would. ``Tierflow.sql`` then reads them through the ledger's manifests;
the floor is stock DuckDB ``read_parquet`` over the same file list.

Not covered here (say so in the figures): the cold share of the data (compaction of a
synthetic backlog needs index rows per workflow; cold_bench measures the cold scan) and
the moto figure. Run alone: ``python -m tests.bench.sql_bench [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table
from tierflow import Tierflow
from tierflow.tiering.ledger import BatchState, Ledger
from tierflow.warm import schema, writer
from tierflow.warm.storage import ObjectStore

TYPES = ["workflow.started", "step.started", "step.completed", "workflow.completed", "timer.fired"]
QUERY = "SELECT event_type, count(*) FROM history GROUP BY 1 ORDER BY 1"


def synth(first: int, workflows: int, per: int) -> tuple[pa.Table, pa.Table]:
    n = workflows * per
    ids = pa.array([f"wf-{i:09d}" for i in range(first, first + workflows)])
    base = 1_767_225_600_000_000 + first * 1_000
    finished = pa.array([base + i * 1_000 + per for i in range(workflows)], pa.int64())
    wf = schema.workflows_table(
        {
            "workflow_id": ids,
            "run_id": ids,
            "workflow_type": pa.array(["bench"] * workflows),
            "status": pa.array(["completed"] * workflows),
            "parent_workflow_id": pa.nulls(workflows, pa.string()),
            "input": pa.array(["{}"] * workflows),
            "result": pa.array(["1"] * workflows),
            "error": pa.nulls(workflows, pa.string()),
            "attributes": pa.array(["{}"] * workflows),
            "created_at": pc.subtract(finished, per).to_pylist(),
            "started_at": pc.subtract(finished, per).to_pylist(),
            "finished_at": finished.to_pylist(),
            "step_count": pa.array([per] * workflows, pa.int64()),
        }
    )
    rep = pa.array(range(workflows), pa.int64())
    idx = pc.cast(pc.divide(pa.array(range(n), pa.int64()), per), pa.int64())
    wid = pc.take(ids, idx)
    event_id = pc.add(pc.subtract(pa.array(range(n), pa.int64()), pc.multiply(idx, per)), 1)
    types = pc.take(pa.array(TYPES), pc.cast(pc.bit_wise_and(event_id, 3), pa.int64()))
    del rep
    ev = schema.history_table(
        {
            "workflow_id": wid,
            "run_id": wid,
            "event_id": event_id,
            "event_type": types,
            "event_time": pc.add(pc.take(finished, idx), event_id).to_pylist(),
            "step_name": pa.nulls(n, pa.string()),
            "attempt": pa.nulls(n, pa.int64()),
            "payload": pa.nulls(n, pa.string()),
            "workflow_type": pa.array(["bench"] * n),
        },
        dict(zip(ids.to_pylist(), finished.to_pylist(), strict=True)),
    )
    return wf, ev


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _measure(events: int, work: Path) -> dict[str, Any]:
    store = ObjectStore.from_url((work / "lake").as_uri())
    store.check()
    per, per_batch = 20, 25_000
    workflows = events // per
    t0 = time.perf_counter()
    async with Tierflow(work / "d", warm_store=store) as tf:
        ledger = Ledger(tf.index)
        keys: list[str] = []
        for first in range(0, workflows, per_batch):
            wf, ev = synth(first, min(per_batch, workflows - first), per)
            bid = writer.new_batch_id()
            ledger.begin(bid, tf.engine.now_us(), store.url)
            manifest = writer.BatchWriter(store, bid).write(wf, ev)
            writer.write_manifest(store, manifest)
            ledger.commit(bid, manifest.to_json(), [], wf.num_rows, ev.num_rows, 0)
            ledger.set_state(bid, BatchState.DONE)
            keys += manifest.keys("history")
        setup = time.perf_counter() - t0
        ours: list[float] = []
        for _ in range(3):
            r = await tf.sql(QUERY)
            ours.append(r.elapsed)
        total = sum(n for _, n in r.rows)
        assert total == workflows * per, (total, workflows * per)
        paths = [store.path(k) for k in keys]
        floor: list[float] = []
        for _ in range(3):
            con = duckdb.connect()
            t = time.perf_counter()
            rows = con.execute(
                "SELECT event_type, count(*) FROM read_parquet(?) GROUP BY 1 ORDER BY 1", [paths]
            ).fetchall()
            floor.append(time.perf_counter() - t)
            con.close()
        assert rows == r.rows
    return {
        "events": workflows * per,
        "files": len(keys),
        "setup_s": setup,
        "ours_s": min(ours),
        "read_parquet_s": min(floor),
        "ratio": min(ours) / min(floor),
        "peak_rss_mb": rss_mb(),
    }


def measure(quick: bool, console: Console | None = None) -> dict[str, Any]:
    """Run the SQL phase (``quick``: 200k events, else 10M)."""
    events = 200_000 if quick else 10_000_000
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_measure(events, Path(tmp)))


def report(console: Console, fig: dict[str, Any], judged: bool) -> None:
    t = Table(
        "events (warm)",
        "files",
        "ours",
        "read_parquet",
        "ratio",
        "peak RSS",
        "setup",
        title="issue 12: SQL across tiers, GROUP BY event_type (file://)",
    )
    t.add_row(
        f"{fig['events']:,}",
        str(fig["files"]),
        f"{fig['ours_s'] * 1000:.0f} ms",
        f"{fig['read_parquet_s'] * 1000:.0f} ms",
        f"{fig['ratio']:.2f}x" + ("" if not judged or fig["ratio"] <= 1.3 else " (over 1.3x)"),
        f"{fig['peak_rss_mb']:.0f} MB",
        f"{fig['setup_s']:.0f} s",
    )
    console.print(t)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--events", type=int, default=0)
    a = p.parse_args()
    c = Console()
    if a.events:
        with tempfile.TemporaryDirectory() as tmp:
            fig = asyncio.run(_measure(a.events, Path(tmp)))
    else:
        fig = measure(a.quick, c)
    report(c, fig, not a.quick)
