"""Issue 12's read figures: ``history(id)`` p50 per tier, and replay of a 100-step workflow.

python -m tests.bench.replay_bench [--quick] [--workflows N] [--file]

Real workflows run through the facade (5 steps, 13 events each), tier to warm Parquet and
then to cold Iceberg on a moto S3 server (``--file``: ``file://``); ``Tierflow.history`` is
timed on a random sample of ids while they are warm, again once they are cold, and on as
many fresh hot instances. One 100-step workflow (203 events) is then replayed from cold
(``Tierflow.replay``: index lookup, the cold read and the replay itself). Each figure is a
p50 over the sample, after one warm-up read that opens the catalog and the store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from tierflow import Tierflow, WorkflowContext, workflow
from tierflow.tiering.policy import TieringPolicy

WEEK = 8 * 86400.0
TARGETS = {"hot": 1.0, "warm": 25.0, "cold": 50.0, "replay_100": 100.0}


def upper(x: str) -> str:
    return x.upper()


@workflow(name="bench_five")
async def five(ctx: WorkflowContext, n: int) -> list[str]:
    return [await ctx.step(f"s{i}", upper, f"w{n}-{i}") for i in range(5)]


@workflow(name="bench_hundred")
async def hundred(ctx: WorkflowContext, n: int) -> int:
    for i in range(100):
        await ctx.step(f"s{i}", upper, f"h{n}-{i}")
    return n


def p50(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


async def timed(tf: Tierflow, ids: list[str]) -> list[float]:
    await tf.history(ids[0])  # warm-up: opens the catalog, the store, the file lists
    out = []
    for wid in ids:
        t = time.perf_counter()
        events = await tf.history(wid)
        out.append((time.perf_counter() - t) * 1000)
        if len(events) != 13:
            raise RuntimeError(f"history of {wid}: {len(events)} events, expected 13")
    return out


async def run(data: Path, store: Any, n: int, sample: int, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    policy = TieringPolicy(min_age=0, cold_after="7d", max_workflows_per_batch=10_000)
    figures: dict[str, Any] = {"workflows": n, "sample": sample}
    async with Tierflow(data, [five, hundred], warm_store=store, tiering=policy) as tf:
        t = time.perf_counter()
        ids = [(await tf.run(five, i, workflow_id=f"five-{i:07d}")).workflow_id for i in range(n)]
        big = await tf.run(hundred, 1, workflow_id="hundred-1")
        figures["populate_s"] = time.perf_counter() - t
        picked = rng.sample(ids, min(sample, n))

        t = time.perf_counter()
        await tf.tier(now=time.time() + 60)
        figures["to_warm_s"] = time.perf_counter() - t
        figures["warm_ms"] = p50(await timed(tf, picked))

        t = time.perf_counter()
        await tf.tier(now=time.time() + WEEK)
        figures["to_cold_s"] = time.perf_counter() - t
        if (await tf.describe(big.workflow_id)).tier != "cold":
            raise RuntimeError("the 100-step workflow did not reach cold")
        figures["cold_ms"] = p50(await timed(tf, picked))

        await tf.replay(big.workflow_id)  # warm-up
        replays = []
        for _ in range(15):
            t = time.perf_counter()
            r = await tf.replay(big.workflow_id)
            replays.append((time.perf_counter() - t) * 1000)
            if r.result != 1 or len(r.events) != 203 or r.tier != "cold":
                raise RuntimeError(f"replay of the 100-step workflow: {r.result}, {r.tier}")
        figures["replay_100_ms"] = p50(replays)

        hot = [
            (await tf.run(five, i, workflow_id=f"hot-{i:05d}")).workflow_id for i in range(sample)
        ]
        figures["hot_ms"] = p50(await timed(tf, hot))
    return figures


def measure(quick: bool, workflows: int | None = None, use_moto: bool = True) -> dict[str, Any]:
    """Run the benchmark on moto (or ``file://``); return the figures (milliseconds)."""
    from tierflow.warm.storage import ObjectStore

    from tests.bench.cold_bench import Moto

    n = workflows or (300 if quick else 5_000)
    sample = 50 if quick else 200
    moto = Moto() if use_moto else None
    try:
        with tempfile.TemporaryDirectory(prefix="replay-bench-") as work:
            if moto is not None:
                store = moto.place("lake").open()
            else:
                store = ObjectStore.from_url(Path(work, "lake").as_uri())
            figures = asyncio.run(run(Path(work) / "d", store, n, sample))
    finally:
        if moto is not None:
            moto.stop()
    figures["backend"] = "moto s3://" if use_moto else "file://"
    return figures


def report(console: Any, figures: dict[str, Any], judged: bool) -> None:
    """Print the figures beside their targets."""
    from rich.table import Table

    t = Table(
        "figure",
        "p50",
        "target",
        "ok",
        title=f"issue 12: reads and replay ({figures['backend']}, "
        f"{figures['workflows']:,} archived workflows, {figures['sample']} sampled)",
    )
    for key, label in (
        ("hot", "history(id), hot"),
        ("warm", "history(id), warm"),
        ("cold", "history(id), cold"),
        ("replay_100", "replay of a 100-step workflow from cold"),
    ):
        value = figures[f"{key}_ms"]
        ok = "" if not judged else ("yes" if value <= TARGETS[key] else "NO")
        t.add_row(label, f"{value:.2f} ms", f"<= {TARGETS[key]:g} ms", ok)
    console.print(t)


def main() -> None:
    from rich.console import Console

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--workflows", type=int, default=None)
    p.add_argument("--file", action="store_true", help="file:// instead of moto")
    args = p.parse_args()
    figures = measure(args.quick, args.workflows, use_moto=not args.file)
    report(Console(), figures, not args.quick)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
