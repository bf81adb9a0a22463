"""Issue 12's read figures: ``history(id)`` p50 per tier, and replay of a 100-step workflow.

python -m tests.bench.replay_bench [--quick] [--archived N] [--hot N] [--file]

On a moto S3 server (``--file``: ``file://``), through the facade (``Tierflow.history``):

1. Real workflows (5 steps, 13 events each) and one 100-step workflow (203 events) run,
   tier to warm and then move to cold Iceberg (``Tierflow.tier``): the real read path
   end to end, and a check that each history is the same in every tier.
2. An archive of ``N`` warm and ``N`` cold workflows (20 events each; 1M each in the full
   run) is then written directly, as cold_bench does: warm batches of the policy's batch
   size (50k workflows, one finish date each) with the product's ``BatchWriter`` plus their
   ledger rows, and cold commits with ``cold_bench.write_archive`` (``ColdWriter``, one
   commit per three days) into the same Iceberg tables. Index rows exist for the sampled
   ids only (tier, batch, finish time: what ``history`` looks up).
3. Hot instances run for real (2,000 in the full run) and stay hot.

``history(id)`` is timed on a random sample of each tier (p50, p99; one warm-up read first,
which opens the catalog, the store and the file lists), and the 100-step workflow is
replayed from cold (``Tierflow.replay``: index lookup, the cold read, the replay itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from tierflow import Tierflow, WorkflowContext, workflow
from tierflow.hot.index import IndexDB
from tierflow.tiering.policy import TieringPolicy

from tests.bench.cold_bench import (
    EVENTS,
    FIRST_DAY,
    Sample,
    index_row,
    record_warm_batch,
    split_days,
    synth_day,
    write_archive,
)

WEEK = 8 * 86400.0
TARGETS = {"hot": 1.0, "warm": 25.0, "cold": 50.0, "replay_100": 100.0}


@dataclass(frozen=True)
class Sizes:
    archived: int  # synthetic workflows written to warm, and as many to cold
    hot: int  # hot instances run for real (and left hot)
    real: int  # real workflows tiered to warm then cold
    sample: int  # reads timed per tier
    warm_batch: int  # workflows per warm batch (TieringPolicy.max_workflows_per_batch)
    cold_days: int
    days_per_commit: int


FULL = Sizes(1_000_000, 2_000, 200, 200, 50_000, 30, 3)
QUICK = Sizes(3_000, 50, 30, 20, 1_000, 2, 2)


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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def p50(values: list[float]) -> float:
    return pct(values, 0.5)


async def timed(tf: Tierflow, ids: list[str], events: int) -> list[float]:
    """``history`` of each id (ms), after one warm-up read; checks the event ids."""
    await tf.history(ids[0])  # warm-up: opens the catalog, the store, the file lists
    out = []
    for wid in ids:
        t = time.perf_counter()
        got = await tf.history(wid)
        out.append((time.perf_counter() - t) * 1000)
        if [e.event_id for e in got] != list(range(1, events + 1)) or any(
            e.workflow_id != wid for e in got
        ):
            raise RuntimeError(f"history of {wid}: {len(got)} events, expected {events}")
    return out


def sample_of(w: pa.Table, i: int, day: str) -> Sample:
    r = w.slice(i, 1).to_pylist()[0]
    return Sample(
        r["workflow_id"],
        day,
        r["run_id"],
        r["workflow_type"],
        *(
            int(w.column(c)[i].cast(pa.int64()).as_py())
            for c in ("created_at", "started_at", "finished_at")
        ),
    )


def write_warm_archive(tf: Tierflow, sizes: Sizes, rng: random.Random) -> list[Sample]:
    """Warm batches written directly (BatchWriter + ledger); index rows for the samples."""
    batches = max(1, sizes.archived // sizes.warm_batch)
    samples = split_days(sizes.sample, batches)
    picked: list[Sample] = []
    first = 0
    for b, n in enumerate(split_days(sizes.archived, batches)):
        day = FIRST_DAY + timedelta(days=100 + b)
        w, h = synth_day(rng, day, n, first)
        first += n
        bid = record_warm_batch(tf, w, h).batch_id
        for i in rng.sample(range(n), samples[b]):
            s = sample_of(w, i, day.isoformat())
            picked.append(s)
            row = index_row(s)
            row.update(tier="warm", batch_id=bid)
            tf.index.write_now(IndexDB.insert_fn(row))
    return picked


async def run(data: Path, store: Any, sizes: Sizes, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    policy = TieringPolicy(min_age=0, cold_after="7d", max_workflows_per_batch=sizes.warm_batch)
    figures: dict[str, Any] = {"sizes": asdict(sizes), "loadavg_start": os.getloadavg()}
    async with Tierflow(data, [five, hundred], warm_store=store, tiering=policy) as tf:
        # 1. real workflows, tiered for real
        t = time.perf_counter()
        real = [
            (await tf.run(five, i, workflow_id=f"five-{i:07d}")).workflow_id
            for i in range(sizes.real)
        ]
        big = await tf.run(hundred, 1, workflow_id="hundred-1")
        hot_histories = {wid: await tf.history(wid) for wid in real}
        await tf.tier(now=time.time() + 60)
        await tf.tier(now=time.time() + WEEK)
        figures["real_tiering_s"] = time.perf_counter() - t

        # 2. the archive, written directly
        t = time.perf_counter()
        warm_picked = write_warm_archive(tf, sizes, rng)
        figures["setup_warm_s"] = time.perf_counter() - t
        t = time.perf_counter()
        cold_picked, _ = write_archive(
            tf.cold, sizes.archived, sizes.cold_days, sizes.days_per_commit, sizes.sample, rng
        )
        for s in cold_picked:
            tf.index.write_now(IndexDB.insert_fn(index_row(s)))
        figures["setup_cold_s"] = time.perf_counter() - t

        # 3. hot instances, run for real
        t = time.perf_counter()
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await tf.run(five, i, workflow_id=f"hot-{i:06d}")

        await asyncio.gather(*(one(i) for i in range(sizes.hot)))
        figures["setup_hot_s"] = time.perf_counter() - t
        hot_picked = rng.sample([f"hot-{i:06d}" for i in range(sizes.hot)], sizes.sample)

        # the same history in every tier (real workflows, now cold)
        if (await tf.describe(big.workflow_id)).tier != "cold":
            raise RuntimeError("the 100-step workflow did not reach cold")
        for wid, events in hot_histories.items():
            if (await tf.describe(wid)).tier != "cold" or await tf.history(wid) != events:
                raise RuntimeError(f"history of {wid} differs once cold")

        timings = {
            "hot": await timed(tf, hot_picked, 13),
            "warm": await timed(tf, [s.workflow_id for s in warm_picked], EVENTS),
            "cold": await timed(tf, [s.workflow_id for s in cold_picked], EVENTS),
            "cold_real": await timed(tf, rng.sample(real, min(sizes.sample, len(real))), 13),
        }
        for key, values in timings.items():
            figures[f"{key}_ms"] = p50(values)
            figures[f"{key}_p99_ms"] = pct(values, 0.99)

        await tf.replay(big.workflow_id)  # warm-up
        replays = []
        for _ in range(15):
            t = time.perf_counter()
            r = await tf.replay(big.workflow_id)
            replays.append((time.perf_counter() - t) * 1000)
            if r.result != 1 or len(r.events) != 203 or r.tier != "cold":
                raise RuntimeError(f"replay of the 100-step workflow: {r.result}, {r.tier}")
        figures["replay_100_ms"] = p50(replays)
        figures["replay_100_p99_ms"] = pct(replays, 0.99)
    figures["loadavg_end"] = os.getloadavg()
    figures["workflows"] = 2 * sizes.archived + sizes.real + 1
    figures["sample"] = sizes.sample
    return figures


def measure(
    quick: bool,
    archived: int | None = None,
    use_moto: bool = True,
    hot: int | None = None,
) -> dict[str, Any]:
    """Run the benchmark on moto (or ``file://``); return the figures (milliseconds)."""
    from tierflow.warm.storage import ObjectStore

    from tests.bench.cold_bench import Moto

    sizes = QUICK if quick else FULL
    changes = {k: v for k, v in (("archived", archived), ("hot", hot)) if v}
    if changes:
        sizes = Sizes(**{**asdict(sizes), **changes})
    sizes = Sizes(**{**asdict(sizes), "sample": min(sizes.sample, sizes.hot)})
    moto = Moto() if use_moto else None
    try:
        with tempfile.TemporaryDirectory(prefix="replay-bench-") as work:
            if moto is not None:
                store = moto.place("lake").open()
            else:
                store = ObjectStore.from_url(Path(work, "lake").as_uri())
            figures = asyncio.run(run(Path(work) / "d", store, sizes))
    finally:
        if moto is not None:
            moto.stop()
    figures["backend"] = "moto s3://" if use_moto else "file://"
    return figures


def report(console: Any, figures: dict[str, Any], judged: bool) -> None:
    """Print the figures beside their targets."""
    from rich.table import Table

    s = figures["sizes"]
    t = Table(
        "figure",
        "p50",
        "p99",
        "target (p50)",
        "ok",
        title=f"issue 12: reads and replay ({figures['backend']}, {s['archived']:,} warm + "
        f"{s['archived']:,} cold archived workflows, {s['hot']:,} hot instances, "
        f"{figures['sample']} sampled per tier)"
        + ("" if judged else "; QUICK: smoke sizes, figures mean nothing"),
    )
    for key, label in (
        ("hot", "history(id), hot"),
        ("warm", "history(id), warm"),
        ("cold", "history(id), cold"),
        ("cold_real", "history(id), cold (tiered for real)"),
        ("replay_100", "replay of a 100-step workflow from cold"),
    ):
        value = figures[f"{key}_ms"]
        target = TARGETS.get(key, TARGETS["cold"])
        ok = "" if not judged else ("yes" if value <= target else "[red]NO[/red]")
        t.add_row(
            label, f"{value:.2f} ms", f"{figures[f'{key}_p99_ms']:.2f} ms", f"<= {target:g} ms", ok
        )
    t.add_row(
        "setup: real tiering / warm / cold / hot",
        f"{figures['real_tiering_s']:.0f} / {figures['setup_warm_s']:.0f} / "
        f"{figures['setup_cold_s']:.0f} / {figures['setup_hot_s']:.0f} s",
    )
    t.add_row(
        "load average (1 min) start / end",
        f"{figures['loadavg_start'][0]:.1f} / {figures['loadavg_end'][0]:.1f}",
    )
    console.print(t)


def main() -> None:
    from rich.console import Console

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--archived", type=int, default=None, help="warm (and cold) workflows")
    p.add_argument("--hot", type=int, default=None)
    p.add_argument("--file", action="store_true", help="file:// instead of moto")
    args = p.parse_args()
    figures = measure(args.quick, args.archived, use_moto=not args.file, hot=args.hot)
    report(Console(), figures, not args.quick)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
